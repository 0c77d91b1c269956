"""The findings Basic Text SR: pydicom reads it back, it references its source, it is labelled
as machine-made with its weights, and the same slice gives the same SOP Instance UID."""

from __future__ import annotations

import io

import pydicom
import pytest

from hxsched.runtime.service.dicom_io import synthetic_phantom
from hxsched.runtime.service.imaging import Detection
from hxsched.runtime.service.pipeline import PipelineModel
from hxsched.runtime.service.roles import Role
from hxsched.runtime.service.sr import (
    BASIC_TEXT_SR,
    Findings,
    encode_findings_sr,
    sr_sop_uid,
    weights_label,
)


def _findings(dets=(), instance="yolo#0") -> Findings:
    return Findings(tuple(dets), "yolo", "yolo.onnx sha256:0123456789abcdef", instance, 1, 0.25)


def _items(ds) -> list:
    return list(ds.ContentSequence)


def _concept(item) -> str:
    return item.ConceptNameCodeSequence[0].CodeMeaning


def test_sr_reads_back_with_references_and_labels():
    src = synthetic_phantom(3, size=64)
    dets = [Detection((1.0, 2.0, 30.5, 40.25), 0.875, 2), Detection((5, 6, 7, 8), 0.5, 0)]
    ds = pydicom.dcmread(io.BytesIO(encode_findings_sr(src, _findings(dets))))
    assert ds.SOPClassUID == BASIC_TEXT_SR and ds.file_meta.MediaStorageSOPClassUID == BASIC_TEXT_SR
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.Modality == "SR" and ds.VerificationFlag == "UNVERIFIED"
    assert ds.StudyInstanceUID == src.meta["StudyInstanceUID"]
    assert ds.SeriesInstanceUID != src.meta["SeriesInstanceUID"]  # a new series
    assert ds.PatientName == src.patient["PatientName"]
    assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
    study = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert study.StudyInstanceUID == src.meta["StudyInstanceUID"]
    series = study.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == src.meta["SeriesInstanceUID"]
    ref = series.ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.meta["SOPInstanceUID"]
    assert ref.ReferencedSOPClassUID == src.meta["SOPClassUID"]
    items = _items(ds)
    by = {_concept(i): i for i in items}
    assert by["Observer Type"].ConceptCodeSequence[0].CodeMeaning == "Device"
    assert by["Device Observer Name"].TextValue == "hxsched"
    assert by["Algorithm Name"].TextValue == "yolo"
    assert by["Algorithm Version"].TextValue.endswith("sha256:0123456789abcdef")
    assert "Machine-generated" in by["Comment"].TextValue
    assert "NOT FOR DIAGNOSTIC USE" in by["Comment"].TextValue
    image = by["Source of Measurement"]
    assert image.ValueType == "IMAGE"
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.meta["SOPInstanceUID"]
    found = [i.TextValue for i in items if _concept(i) == "Finding"]
    assert len(found) == 2 and "class 2, score 0.875" in found[0] and "30.5" in found[0]
    # the observation context comes first in its container (PS3.3 C.17.3.2.1)
    kinds = [i.RelationshipType for i in items]
    assert kinds[:3] == ["HAS OBS CONTEXT"] * 3 and "HAS OBS CONTEXT" not in kinds[3:]
    assert all(i.ValueType in ("TEXT", "CODE", "UIDREF", "IMAGE") for i in items)  # Basic Text


def test_same_slice_same_uid_and_no_findings_said():
    src = synthetic_phantom(5, size=64)
    a = encode_findings_sr(src, _findings())
    b = encode_findings_sr(src, _findings())
    assert a == b  # deterministic: re-sending it gives the PACS the same object
    ds = pydicom.dcmread(io.BytesIO(a))
    assert ds.SOPInstanceUID == sr_sop_uid(src, "yolo#0")
    assert "no detections" in [i for i in _items(ds) if _concept(i) == "Finding"][0].TextValue
    other = pydicom.dcmread(io.BytesIO(encode_findings_sr(src, _findings(instance="yolo#1"))))
    assert other.SOPInstanceUID != ds.SOPInstanceUID
    assert sr_sop_uid(synthetic_phantom(6, size=64), "yolo#0") != ds.SOPInstanceUID


def test_an_image_without_uids_gets_no_sr():
    src = synthetic_phantom(1, size=64)
    src.meta.clear()
    with pytest.raises(ValueError):
        encode_findings_sr(src, _findings())


def test_weights_label_names_the_file_digest_or_the_zoo_model(tmp_path):
    f = tmp_path / "det.onnx"
    f.write_bytes(b"weights")
    by_file = weights_label(PipelineModel(name="d", role=Role.DETECT, path=str(f)))
    assert by_file.startswith("det.onnx sha256:") and len(by_file.split(":")[1]) == 16
    assert weights_label(PipelineModel(name="d", role=Role.DETECT, zoo="yolov8n", seed=3)) == (
        "zoo yolov8n seed 3"
    )


def test_the_detect_role_writes_the_sr_only_for_the_pacs_sink(tmp_path):
    import numpy as np

    from hxsched.runtime.service.imaging import letterbox
    from hxsched.runtime.service.pipeline import PacsSink, Sinks
    from hxsched.runtime.service.roles import SliceContext, role_handler

    model = PipelineModel(name="det", role=Role.DETECT, zoo="yolov8n")
    src = synthetic_phantom(2, size=64)
    _, info = letterbox(np.zeros((64, 64), np.float32), size=model.size)
    out = np.zeros((1, 84, 8400), np.float32)
    pacs = PacsSink(host="127.0.0.1", port=104, ae_title="PACS")
    for sinks, want in ((Sinks(), False), (Sinks(pacs=pacs), True)):
        ctx = SliceContext("abc", src, tmp_path, sinks, "sim", "det#0", 1)
        files = role_handler(Role.DETECT).finish(out, info, model, ctx).files
        assert ("sr:det#0" in files) is want
    ds = pydicom.dcmread(files["sr:det#0"])
    assert ds.SOPInstanceUID == sr_sop_uid(src, "det#0") and ds.SeriesNumber == 2002
    comment = [i.TextValue for i in _items(ds) if _concept(i) == "Comment"][0]
    assert "sim backend" in comment
