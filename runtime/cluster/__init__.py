"""Several hxsched nodes behind a DICOM router (Orthanc)."""
