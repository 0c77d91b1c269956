"""A detector's findings on one slice as a DICOM Basic Text SR (PS3.3 A.35.1): machine-made,
referencing its source instance, with UIDs derived from the source (the same slice, the same SR)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

from hxsched._compat import require
from hxsched.runtime.service.dicom_io import (
    CT_IMAGE,
    LABEL,
    PATIENT_KEYS,
    Slice,
    _copy_value,
    _encode,
    _uid,
)
from hxsched.runtime.service.imaging import Detection
from hxsched.runtime.service.pipeline import PipelineModel

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR Storage (PS3.4 B.5)
DEVICE_NAME = "hxsched"


@dataclass(frozen=True)
class Findings:
    """What one detector instance found on one slice, and what made it."""

    detections: tuple[Detection, ...]
    model: str  # the pipeline's model name
    weights: str  # which weights: "sha256:<16 hex>" of the model file, or the zoo's name/seed
    instance: str  # the plan instance (``model#k``)
    index: int  # its position in the plan (the series number follows it)
    conf: float  # the score threshold the detections passed
    note: str = ""  # e.g. "sim backend: ..."


def sr_series_uid(source: Slice, instance: str) -> str:
    base = source.meta.get("SeriesInstanceUID") or source.content_sha
    return _uid("sr-series", base, instance)


def sr_sop_uid(source: Slice, instance: str) -> str:
    """The SR's SOP Instance UID: from the source instance and the detector instance only, so a
    slice processed again gives the same UID (a PACS keeps one copy)."""
    src = source.meta.get("SOPInstanceUID") or source.content_sha
    return _uid("sr", src, instance)


def encode_findings_sr(source: Slice, found: Findings) -> bytes:
    """The Basic Text SR file's bytes. ``source`` must be a DICOM slice (it has UIDs)."""
    require("pydicom", extra="service")
    if not source.meta.get("SOPInstanceUID"):
        raise ValueError("a findings SR needs a DICOM source instance to reference")
    ds = _header(source, found)
    ds.update(_content(source, found))
    return _encode(ds)


def _file_meta(sop_uid: str):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(BASIC_TEXT_SR)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid("implementation")
    return meta


def _header(source: Slice, found: Findings):
    """Patient and study (copied), a new SR series, the SR Document General module."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    sop_uid = sr_sop_uid(source, found.instance)
    ds = Dataset()
    ds.file_meta = _file_meta(sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 192"
    for k, v in source.patient.items():
        _copy_value(ds, k, v)
    for k in PATIENT_KEYS:  # Type 2 in the Patient and General Study modules
        if k not in ds:
            setattr(ds, k, "")
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = source.meta.get("StudyInstanceUID") or _uid("study", source.content_sha)
    ds.SeriesInstanceUID = sr_series_uid(source, found.instance)
    ds.Modality = "SR"
    ds.SeriesNumber = 2001 + found.index
    ds.SeriesDescription = f"hxsched {found.model} findings - NOT FOR DIAGNOSTIC USE"[:64]
    ds.InstanceNumber = int(source.meta.get("InstanceNumber") or 1)
    ds.Manufacturer = DEVICE_NAME
    ds.ReferencedPerformedProcedureStepSequence = Sequence()  # Type 2
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"  # nobody has verified a machine's findings
    _copy_value(ds, "ContentDate", str(source.patient.get("StudyDate") or "19700101"))
    _copy_value(ds, "ContentTime", str(source.patient.get("StudyTime") or "000000"))
    ds.PerformedProcedureCodeSequence = Sequence()  # Type 2
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([_evidence(source)])
    return ds


def _evidence(source: Slice):
    """The Hierarchical SOP Instance Reference of the source (PS3.3 C.17.2.1)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    inst = Dataset()
    inst.ReferencedSOPClassUID = source.meta.get("SOPClassUID") or CT_IMAGE
    inst.ReferencedSOPInstanceUID = source.meta["SOPInstanceUID"]
    series = Dataset()
    series.SeriesInstanceUID = source.meta.get("SeriesInstanceUID") or _uid(
        "series", source.content_sha
    )
    series.ReferencedSOPSequence = Sequence([inst])
    study = Dataset()
    study.StudyInstanceUID = source.meta.get("StudyInstanceUID") or _uid(
        "study", source.content_sha
    )
    study.ReferencedSeriesSequence = Sequence([series])
    return study


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _item(value_type: str, relation: str, concept: tuple[str, str, str]):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    it = Dataset()
    it.RelationshipType = relation
    it.ValueType = value_type
    it.ConceptNameCodeSequence = Sequence([_code(*concept)])
    return it


def _text(relation: str, concept: tuple[str, str, str], text: str):
    it = _item("TEXT", relation, concept)
    it.TextValue = text
    return it


# Concept names from the DICOM Content Mapping Resource (PS3.16, DCM and LOINC codes)
REPORT = ("18748-4", "LN", "Diagnostic Imaging Report")
OBSERVER_TYPE = ("121005", "DCM", "Observer Type")
DEVICE = ("121007", "DCM", "Device")
DEVICE_UID = ("121012", "DCM", "Device Observer UID")
DEVICE_OBSERVER = ("121013", "DCM", "Device Observer Name")
ALGORITHM_NAME = ("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = ("111003", "DCM", "Algorithm Version")
SOURCE_IMAGE = ("121112", "DCM", "Source of Measurement")
FINDING = ("121071", "DCM", "Finding")
COMMENT = ("121106", "DCM", "Comment")


def _content(source: Slice, found: Findings):
    """The content tree: the device observer (TID 1004), the algorithm and its weights, the
    source image, one TEXT finding per detection (Basic Text SR has no NUM items)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    observer = _item("CODE", "HAS OBS CONTEXT", OBSERVER_TYPE)
    observer.ConceptCodeSequence = Sequence([_code(*DEVICE)])
    device_uid = _item("UIDREF", "HAS OBS CONTEXT", DEVICE_UID)
    device_uid.UID = _uid("device", DEVICE_NAME)
    image = _item("IMAGE", "CONTAINS", SOURCE_IMAGE)
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.meta.get("SOPClassUID") or CT_IMAGE
    ref.ReferencedSOPInstanceUID = source.meta["SOPInstanceUID"]
    image.ReferencedSOPSequence = Sequence([ref])
    label = f"Machine-generated by {DEVICE_NAME}; {LABEL}{found.note}"
    items = [
        observer,
        device_uid,
        _text("HAS OBS CONTEXT", DEVICE_OBSERVER, DEVICE_NAME),
        _text("CONTAINS", COMMENT, label),
        _text("CONTAINS", ALGORITHM_NAME, found.model[:1024]),
        _text("CONTAINS", ALGORITHM_VERSION, found.weights),
        image,
        *_findings(found.detections, found.conf),
    ]
    root = Dataset()
    root.ValueType = "CONTAINER"
    root.ConceptNameCodeSequence = Sequence([_code(*REPORT)])
    root.ContinuityOfContent = "SEPARATE"
    root.ContentSequence = Sequence(items)
    return root


def finding_text(d: Detection) -> str:
    x0, y0, x1, y1 = (round(v, 1) for v in d.box_xyxy)
    return f"class {d.class_id}, score {d.score:.3f}, box x {x0}-{x1}, y {y0}-{y1} (source pixels)"


def _findings(found: Seq[Detection], conf: float) -> list:
    if not found:
        return [_text("CONTAINS", FINDING, f"no detections with a score of at least {conf:g}")]
    return [_text("CONTAINS", FINDING, finding_text(d)) for d in found]


@functools.lru_cache(maxsize=32)
def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def weights_label(model: PipelineModel) -> str:
    """Which weights made the findings: the model file's SHA-256 (first 16 hex digits), or the
    zoo model and seed it was generated from (the same name and seed: the same weights)."""
    if model.path:
        try:
            return f"{Path(model.path).name} sha256:{_file_digest(model.path)}"
        except OSError:
            return f"{Path(model.path).name} (unreadable)"
    return f"zoo {model.zoo} seed {model.seed}"
