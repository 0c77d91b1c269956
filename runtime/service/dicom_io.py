"""Slices in and synthetic MRI out: DICOM CT (Hounsfield units), PNG/TIFF, Secondary Capture
writing with deterministic UIDs, a synthetic head phantom, and a reason for every bad input."""

from __future__ import annotations

import copy
import enum
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hxsched._compat import require
from hxsched.errors import HxschedError
from hxsched.files import atomic_write

if TYPE_CHECKING:
    from pydicom.uid import UID

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
LABEL = "SYNTHETIC - NOT FOR DIAGNOSTIC USE"


class Reason(str, enum.Enum):
    """Why a slice was quarantined (the reason code in its reason file and in the metrics)."""

    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    NOT_AN_IMAGE = "not-an-image"
    WRONG_SIZE = "wrong-size"
    NAN = "nan"
    OVERSIZE = "oversize"
    UNSUPPORTED = "unsupported"
    PROCESSING_ERROR = "processing-error"  # preparing a readable slice failed
    INFERENCE_ERROR = "inference-error"
    OUTPUT_ERROR = "output-error"
    # added for hostile input: a header whose sizes exceed the pipeline's limits (or a worker
    # killed by its memory/time limit while decoding it)
    DECODE_LIMIT = "decode-limit"
    NOT_ACCEPTED = "not-accepted"  # a modality, SOP class or photometric the models do not take
    BAD_HEADER = "bad-header"  # a header value that makes no sense (RescaleSlope 0, Rows 0, ...)
    CRASHED_REPEATEDLY = "crashed-repeatedly"  # its processing took a worker down repeatedly
    SPOOL_MISSING = "spool_missing"  # its spooled bytes vanished before processing

    def __str__(self) -> str:
        return self.value


REASONS = tuple(Reason)[:7]  # what reading a slice can find wrong with it


class SliceKind(str, enum.Enum):
    DICOM = "dicom"
    IMAGE = "image"  # PNG or TIFF: no Hounsfield units, no UIDs

    def __str__(self) -> str:
        return self.value


PATIENT_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
)
REF_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "FrameOfReferenceUID",
    "InstanceNumber",
    "Modality",
)


_PNG = b"\x89PNG\r\n\x1a\n"
_TIFF = (b"II*\x00", b"MM\x00*")


class BadInput(HxschedError):
    """A slice the service cannot use; ``reason`` is one of REASONS (the quarantine code)."""

    def __init__(self, reason: Reason, message: str, *, path: str | os.PathLike[str] | None = None):
        message = " ".join(str(message).split())  # one line, whatever the parser said
        super().__init__(message, path=Path(path).name if path is not None else None)
        self.reason = reason


@dataclass
class Slice:
    pixels: np.ndarray  # float32, 2-D
    kind: SliceKind
    is_hu: bool
    source_name: str
    meta: dict[str, Any] = field(default_factory=dict)  # UIDs and geometry (no patient data)
    patient: dict[str, Any] = field(default_factory=dict, repr=False)  # copied into outputs only
    content_sha: str = ""

    @property
    def log_id(self) -> str:
        """A short id that is safe to log (a hash, never a name or an id from the file)."""
        base = self.meta.get("SOPInstanceUID") or self.content_sha
        return hashlib.sha256(str(base).encode()).hexdigest()[:12]

    @property
    def modality(self) -> str:
        """The DICOM Modality ("CT", "MR", ...); "OT" for plain images."""
        return str(self.meta.get("Modality") or "OT")

    def __repr__(self) -> str:
        return (
            f"Slice({self.kind}, {self.pixels.shape[1]}x{self.pixels.shape[0]}, "
            f"hu={self.is_hu}, id={self.log_id})"
        )


def read_slice(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = 64 << 20,
    min_side: int = 32,
    max_side: int = 4096,
) -> Slice:
    """One slice from a DICOM file or a PNG/TIFF image; BadInput with its reason otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadInput(Reason.UNREADABLE, f"cannot read: {exc.strerror}", path=path) from None
    if size > max_bytes:
        raise BadInput(Reason.OVERSIZE, f"{size} bytes is over the limit of {max_bytes}", path=path)
    data = path.read_bytes()
    if size == 0:
        raise BadInput(Reason.UNREADABLE, "empty file", path=path)
    sha = hashlib.sha256(data).hexdigest()
    try:
        if len(data) >= 132 and data[128:132] == b"DICM":
            sl = _read_dicom(data, path)
        elif data[:8] == _PNG or data[:4] in _TIFF:
            sl = _read_image(data, path, max_side)
        else:
            try:  # DICOM without a preamble still reads
                sl = _read_dicom(data, path)
            except BadInput:
                raise BadInput(
                    Reason.UNREADABLE, "neither DICOM nor a PNG/TIFF image", path=path
                ) from None
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom/OpenCV raise anything on corrupt bytes
        raise BadInput(
            Reason.UNREADABLE, f"cannot be parsed ({type(exc).__name__}: {exc})", path=path
        ) from None
    sl.content_sha = sha
    px = sl.pixels
    if px.ndim != 2:
        raise BadInput(
            Reason.WRONG_SIZE, f"expected one 2-D slice, got shape {px.shape}", path=path
        )
    h, w = px.shape
    if min(h, w) < min_side:
        raise BadInput(Reason.WRONG_SIZE, f"{w}x{h} is smaller than {min_side} pixels", path=path)
    if max(h, w) > max_side:
        raise BadInput(Reason.OVERSIZE, f"{w}x{h} is larger than {max_side} pixels", path=path)
    if not np.all(np.isfinite(px)):
        raise BadInput(Reason.NAN, "pixel values include NaN or infinity", path=path)
    return sl


def _read_dicom(data: bytes, path: Path) -> Slice:
    require("pydicom", extra="service")
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises anything on garbage
        raise BadInput(
            Reason.UNREADABLE, f"not readable DICOM ({type(exc).__name__})", path=path
        ) from None
    if "PixelData" not in ds:
        if _cut_short(ds):
            raise BadInput(Reason.TRUNCATED, "DICOM file ends before its pixel data", path=path)
        if not ds or "SOPClassUID" not in ds and "Rows" not in ds:
            raise BadInput(Reason.UNREADABLE, "not readable DICOM", path=path)
        raise BadInput(Reason.NOT_AN_IMAGE, "DICOM object without pixel data", path=path)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    except (AttributeError, ValueError, TypeError):
        raise BadInput(
            Reason.NOT_AN_IMAGE, "image attributes (Rows, Columns, Bits) missing", path=path
        ) from None
    if frames > 1:
        raise BadInput(Reason.WRONG_SIZE, f"a {frames}-frame volume, not one slice", path=path)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None and ts.is_compressed:
        try:
            arr = ds.pixel_array
        except Exception:  # noqa: BLE001 - no decoder for this compression
            raise BadInput(
                Reason.UNSUPPORTED,
                f"compressed pixel data ({ts.name}) has no decoder here",
                path=path,
            ) from None
    else:
        need = rows * cols * spp * bits // 8
        if len(ds.PixelData) < need:
            raise BadInput(
                Reason.TRUNCATED, f"pixel data has {len(ds.PixelData)} of {need} bytes", path=path
            )
        try:
            native = _native_pixels(ds, ts, rows, cols, bits, spp)
            arr = native if native is not None else ds.pixel_array
        except Exception as exc:  # noqa: BLE001
            raise BadInput(
                Reason.UNREADABLE, f"pixel data cannot be decoded ({type(exc).__name__})", path=path
            ) from None
    px = np.asarray(arr, dtype=np.float32)
    if px.ndim == 3 and spp > 1:
        px = px.mean(axis=-1)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    px = px * slope + intercept
    modality = str(getattr(ds, "Modality", "") or "")
    is_hu = modality == "CT" or (not modality and "RescaleIntercept" in ds)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1" and not is_hu:
        px = px.max() + px.min() - px  # display polarity; HU keep their physical meaning
    meta: dict[str, Any] = {k: str(ds.get(k)) for k in REF_KEYS if ds.get(k) not in (None, "")}
    if "PixelSpacing" in ds:
        meta["PixelSpacing"] = [float(v) for v in ds.PixelSpacing]
    for k in ("ImagePositionPatient", "ImageOrientationPatient"):
        if ds.get(k):
            meta[k] = [float(v) for v in ds[k].value]
    if ds.get("RecognizableVisualFeatures"):
        meta["RecognizableVisualFeatures"] = str(ds.RecognizableVisualFeatures)
    meta["Rows"], meta["Columns"] = rows, cols
    patient = {k: ds.get(k) for k in PATIENT_KEYS if k in ds}
    return Slice(px, SliceKind.DICOM, is_hu, path.name, meta, patient)


def _native_pixels(ds, ts, rows: int, cols: int, bits: int, spp: int) -> np.ndarray | None:
    """Uncompressed little-endian grey pixels read in place (one view, no copy), with the
    unused high bits masked or sign-extended as PS3.5 8.1.1 says; None for any other case
    (pydicom's ``pixel_array`` decodes those)."""
    if spp != 1 or bits not in (8, 16) or (ts is not None and ts == "1.2.840.10008.1.2.2"):
        return None
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    stored = int(getattr(ds, "BitsStored", bits) or bits)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    arr = np.frombuffer(ds.PixelData, dtype, count=rows * cols).reshape(rows, cols)
    if stored < bits:
        if signed:
            shift = bits - stored
            arr = (arr << shift) >> shift
        else:
            arr = arr & ((1 << stored) - 1)
    return arr


def _cut_short(ds) -> bool:
    """Whether a dataset without pixel data shows signs of a file cut off part-way."""
    require("pydicom", extra="service")
    from pydicom.dataelem import RawDataElement
    from pydicom.uid import UID

    if not ds:
        return True
    last = ds.get_item(max(ds.keys()))  # raw: the element the parser stopped in
    if (
        isinstance(last, RawDataElement)
        and last.value is not None
        and last.length != 0xFFFFFFFF  # undefined length: sequences, encapsulated data
        and len(last.value) < last.length
    ):
        return True
    # An image object that stops before even its image attributes
    sop = str(ds.get("SOPClassUID", "") or "")
    return bool(sop) and "Image Storage" in UID(sop).name and "Rows" not in ds


def _read_image(data: bytes, path: Path, max_side: int) -> Slice:
    require("cv2", extra="service")
    import cv2

    if data[:8] == _PNG and len(data) >= 24:  # check the header before decoding a PNG bomb
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if max(w, h) > max_side:
            raise BadInput(Reason.OVERSIZE, f"{w}x{h} is larger than {max_side} pixels", path=path)
    if data[:4] in _TIFF and (pages := cv2.imcount(str(path))) > 1:
        raise BadInput(Reason.WRONG_SIZE, f"a {pages}-page TIFF, not one slice", path=path)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None:
        raise BadInput(
            Reason.TRUNCATED, "image data cannot be decoded (truncated or corrupt)", path=path
        )
    px = np.asarray(arr, dtype=np.float32)
    if px.ndim == 3:
        px = px[..., :3].mean(axis=-1)
    return Slice(px, SliceKind.IMAGE, False, path.name)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _uid(*parts: object) -> UID:
    require("pydicom", extra="service")
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["hxsched|" + "|".join(map(str, parts))])


def default_series_uid(source: Slice, instance: str = "") -> str:
    """The synthetic series of a source series (deterministic)."""
    base = source.meta.get("SeriesInstanceUID") or source.content_sha
    return _uid("series", base, instance)


def write_secondary_capture(
    image_uint8: np.ndarray,
    source: Slice,
    out_path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    series_number: int = 1001,
    series_description: str = "hxsched synthetic MRI (Pix2Pix) - NOT FOR DIAGNOSTIC USE",
) -> Path:
    """The synthetic image as DICOM Secondary Capture in a new series of the source's study,
    DERIVED, referencing the source, labelled as not for diagnosis; written atomically with
    UIDs derived from the source, so writing the same slice again gives the same file."""
    data = encode_secondary_capture(
        image_uint8,
        source,
        series_uid=series_uid,
        series_number=series_number,
        series_description=series_description,
    )
    return atomic_write(out_path, data)


def encode_secondary_capture(
    image_uint8: np.ndarray,
    source: Slice,
    *,
    series_uid: str | None = None,
    series_number: int = 1001,
    series_description: str = "hxsched synthetic MRI (Pix2Pix) - NOT FOR DIAGNOSTIC USE",
    templates: ScTemplates | None = None,
    derivation_note: str = "",
) -> bytes:
    """The Secondary Capture file's bytes; with ``templates``, the series' constant elements
    are encoded once and only the per-slice ones (UIDs, position, references, pixels) again."""
    img = np.ascontiguousarray(np.asarray(image_uint8, dtype=np.uint8))
    if img.ndim != 2:
        raise HxschedError(f"expected a 2-D image, got shape {img.shape}")
    uid = series_uid or default_series_uid(source)
    args = (uid, series_number, series_description[:64], derivation_note)
    key = _series_key(img, source, args) if templates is not None else None
    if templates is None or key is None:
        return _encode(_sc_dataset(img, source, *args))
    tpl = templates.get(key)
    if tpl is None:
        tpl = templates.put(key, _ScTemplate(_sc_dataset(img, source, *args)))
    return tpl.encode(_sc_per_slice(img, source, args))


def _sop_uid(source: Slice, series_uid: str, series_number: int) -> UID:
    src_sop = source.meta.get("SOPInstanceUID") or source.content_sha
    return _uid("sop", src_sop, series_uid, series_number)


def _sc_dataset(
    img: np.ndarray, source: Slice, series_uid: str, series_number: int, desc: str, note: str = ""
):
    """The whole Secondary Capture dataset of one slice (file meta included)."""
    require("pydicom", extra="service")
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.file_meta = _sc_file_meta(_sop_uid(source, series_uid, series_number))
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: copied names keep their accents
    for k, v in source.patient.items():
        setattr(ds, k, v)
    if "PatientName" not in ds:
        ds.PatientName = "ANONYMOUS"
        ds.PatientID = "hxsched-" + source.content_sha[:12]
    for k in PATIENT_KEYS:  # Type 2 in the Patient and General Study modules
        if k not in ds:
            setattr(ds, k, "")
    ds.StudyInstanceUID = source.meta.get("StudyInstanceUID") or _uid("study", source.content_sha)
    ds.SeriesInstanceUID = series_uid
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesNumber = series_number
    ds.SeriesDescription = desc
    ds.DerivationDescription = (
        "Synthetic MRI generated from CT by a neural network (hxsched). " + LABEL + note
    )
    ds.ImageComments = LABEL
    ds.BurnedInAnnotation = "NO"  # the label is in the header, not burned into the pixels
    ds.RecognizableVisualFeatures = source.meta.get("RecognizableVisualFeatures") or "NO"
    ds.PatientOrientation = ""  # Type 2C: no Image Orientation module in an SC
    ds.Manufacturer = "hxsched"
    date = str(source.patient.get("StudyDate") or "19700101")
    ds.ContentDate, ds.ContentTime = date, str(source.patient.get("StudyTime") or "000000")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = img.shape
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    src_h, src_w = source.pixels.shape[:2]
    if "PixelSpacing" in source.meta:  # still right when the image was resized
        sy, sx = (float(v) for v in source.meta["PixelSpacing"])
        ds.PixelSpacing = [_ds(sy * src_h / img.shape[0]), _ds(sx * src_w / img.shape[1])]
    if _same_grid(img, source):
        # Same pixel grid as the CT: viewers can link and scroll the two series together.
        ds.FrameOfReferenceUID = source.meta["FrameOfReferenceUID"]
    ds.update(_sc_per_slice(img, source, (series_uid, series_number, desc, note)))
    return ds


def _same_grid(img: np.ndarray, source: Slice) -> bool:
    return img.shape == source.pixels.shape[:2] and "FrameOfReferenceUID" in source.meta


def _sc_file_meta(sop_uid: UID):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SECONDARY_CAPTURE)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid("implementation")
    return meta


PER_SLICE: tuple[str, ...] = ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient")
PER_SLICE += ("ImageOrientationPatient", "SourceImageSequence", "ReferencedImageSequence")
PER_SLICE += ("PixelData",)


def _sc_per_slice(img: np.ndarray, source: Slice, args: tuple[str, int, str, str]):
    """The elements that change from slice to slice of a series (PER_SLICE, where present)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = Dataset()
    ds.SOPInstanceUID = _sop_uid(source, args[0], args[1])
    ds.InstanceNumber = int(source.meta.get("InstanceNumber") or 1)
    if _same_grid(img, source):
        for k in ("ImagePositionPatient", "ImageOrientationPatient"):
            if k in source.meta:
                setattr(ds, k, [_ds(v) for v in source.meta[k]])
    if source.meta.get("SOPInstanceUID"):
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.meta.get("SOPClassUID", CT_IMAGE)
        ref.ReferencedSOPInstanceUID = source.meta["SOPInstanceUID"]
        purpose = Dataset()
        purpose.CodeValue = "121322"
        purpose.CodingSchemeDesignator = "DCM"
        purpose.CodeMeaning = "Source image for image processing operation"
        ref.PurposeOfReferenceCodeSequence = Sequence([purpose])
        ds.SourceImageSequence = Sequence([ref])
        ref2 = Dataset()
        ref2.ReferencedSOPClassUID = ref.ReferencedSOPClassUID
        ref2.ReferencedSOPInstanceUID = ref.ReferencedSOPInstanceUID
        ds.ReferencedImageSequence = Sequence([ref2])
    ds.add_new(0x7FE00010, "OB", img.tobytes())  # PixelData: 8 bits allocated -> OB (PS3.5 8.2)
    return ds


def _series_key(img: np.ndarray, source: Slice, args: tuple) -> tuple | None:
    """What a series template depends on, or None where a slice has no series of its own."""
    m = source.meta
    if not (
        m.get("StudyInstanceUID") and m.get("SeriesInstanceUID") and "PatientName" in source.patient
    ):
        return None
    constant = {k: v for k, v in m.items() if k not in PER_SLICE and k != "InstanceNumber"}
    patient = tuple((k, str(v)) for k, v in source.patient.items())
    return (args, img.shape, source.pixels.shape[:2], repr(sorted(constant.items())), patient)


class ScTemplates:
    """Secondary Capture templates per series (a few recent series kept)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._by_key: dict[tuple, _ScTemplate] = {}

    def get(self, key: tuple) -> _ScTemplate | None:
        return self._by_key.get(key)

    def put(self, key: tuple, tpl: _ScTemplate) -> _ScTemplate:
        if len(self._by_key) >= self.keep:
            self._by_key.pop(next(iter(self._by_key)))
        self._by_key[key] = tpl
        return tpl


class _ScTemplate:
    """A series' dataset encoded element by element (explicit VR little endian), so that a
    slice is the constant elements' bytes merged in tag order with its own (PS3.5 7.1)."""

    def __init__(self, ds) -> None:
        self.meta = ds.file_meta
        self.parts = [(int(e.tag), _elem_bytes(e)) for e in ds if e.keyword not in PER_SLICE]

    def encode(self, per_slice) -> bytes:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info

        meta = copy.copy(self.meta)
        meta.MediaStorageSOPInstanceUID = per_slice.SOPInstanceUID
        head = DicomBytesIO()
        head.is_little_endian, head.is_implicit_VR = True, False
        write_file_meta_info(head, meta, enforce_standard=True)
        own = [(int(e.tag), _elem_bytes(e)) for e in per_slice]
        body = b"".join(b for _, b in sorted(self.parts + own, key=lambda p: p[0]))
        return b"\0" * 128 + b"DICM" + head.getvalue() + body


def _elem_bytes(elem) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_data_element(buf, elem)
    return buf.getvalue()


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{float(value):.9g}"


def _encode(ds) -> bytes:
    """A dataset as a DICOM file (preamble, file meta), in memory."""
    buf = io.BytesIO()
    ds.preamble = b"\0" * 128
    try:
        ds.save_as(buf, enforce_file_format=True)
    except TypeError:  # pydicom < 3
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(buf, write_like_original=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# A synthetic head phantom (demos, soak runs)
# ---------------------------------------------------------------------------------------------
def synthetic_phantom(index: int, size: int = 512, seed: int = 0) -> Slice:
    """A CT-like axial head slice in HU: air, skull, brain, ventricles, and on every third slice
    a small hyperdense "bleed"; deterministic per index. Fake patient, synthetic UIDs."""
    rng = np.random.default_rng(seed * 100003 + index)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    z = (index % 40) / 40.0 - 0.5
    a, b = 0.36 - 0.05 * z * z, 0.44 - 0.06 * z * z
    hu = np.full((size, size), -1000.0, np.float32)
    head = (x / a) ** 2 + (y / b) ** 2
    hu[head <= 1.0] = 1000.0  # skull
    hu[head <= 0.85] = 35.0  # brain
    vent = ((x - 0.06) / 0.05) ** 2 + (y / 0.12) ** 2 <= 1.0
    vent |= ((x + 0.06) / 0.05) ** 2 + (y / 0.12) ** 2 <= 1.0
    hu[vent & (head <= 0.85)] = 5.0
    if index % 3 == 0:
        cx, cy = rng.uniform(-0.2, 0.2), rng.uniform(-0.25, 0.25)
        bleed = ((x - cx) / 0.04) ** 2 + ((y - cy) / 0.03) ** 2 <= 1.0
        hu[bleed & (head <= 0.8)] = 70.0
    hu += rng.normal(0.0, 4.0, hu.shape).astype(np.float32) * (head <= 1.0)
    study = _uid("phantom-study", seed)
    meta = {
        "StudyInstanceUID": study,
        "SeriesInstanceUID": _uid("phantom-series", seed),
        "SOPInstanceUID": _uid("phantom-sop", seed, index),
        "SOPClassUID": CT_IMAGE,
        "FrameOfReferenceUID": _uid("phantom-for", seed),
        "InstanceNumber": str(index + 1),
        "Modality": "CT",
        "PixelSpacing": [0.5, 0.5],
        "Rows": size,
        "Columns": size,
    }
    patient = {
        "PatientName": "PHANTOM^HXSCHED",
        "PatientID": "PHANTOM-0001",
        "StudyDate": "20260101",
        "StudyTime": "120000",
    }
    return Slice(hu, SliceKind.DICOM, True, f"phantom_{index:06d}.dcm", meta, patient)


def encode_ct_dicom(sl: Slice) -> bytes:
    """A slice in HU as a CT Image Storage file (int16 with rescale), e.g. a phantom."""
    require("pydicom", extra="service")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE)
    meta.MediaStorageSOPInstanceUID = UID(sl.meta["SOPInstanceUID"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid("implementation")
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    for k, v in sl.patient.items():
        setattr(ds, k, v)
    for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        setattr(ds, k, sl.meta[k])
    ds.SOPClassUID = CT_IMAGE
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = int(sl.meta.get("InstanceNumber", 1))
    ds.SeriesDescription = "hxsched synthetic phantom"
    ds.Manufacturer = "hxsched"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = sl.pixels.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelSpacing = sl.meta.get("PixelSpacing", [1.0, 1.0])
    ds.PixelData = np.clip(np.rint(sl.pixels), -32768, 32767).astype("<i2").tobytes()
    return _encode(ds)
