"""Slices in and synthetic MRI out: DICOM CT (Hounsfield units), PNG/TIFF, Secondary Capture
writing with deterministic UIDs, a synthetic head phantom, and a reason for every bad input."""

from __future__ import annotations

import contextlib
import copy
import enum
import functools
import hashlib
import io
import logging
import math
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hxsched._compat import require
from hxsched.errors import HxschedError
from hxsched.files import atomic_write
from hxsched.runtime.service.pipeline import Accept, Limits

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


# what reading a slice can find wrong with it
REASONS = tuple(Reason)[:7] + (Reason.DECODE_LIMIT, Reason.NOT_ACCEPTED, Reason.BAD_HEADER)


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
    # the file's bytes until ``content_sha`` is first asked for: hashed only when a file lacks
    # the UIDs that name its outputs (0.4 ms a 512 x 512 slice, on every slice otherwise)
    content: bytes | None = field(default=None, repr=False, compare=False)
    _sha: str = field(default="", repr=False, compare=False)
    finite: bool = field(default=False, repr=False, compare=False)  # known free of NaN/inf

    @property
    def content_sha(self) -> str:
        """The SHA-256 of the file's bytes ("" for a slice made in memory)."""
        if not self._sha and self.content is not None:
            self._sha = hashlib.sha256(self.content).hexdigest()
            self.content = None
        return self._sha

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


DEFAULT_LIMITS, DEFAULT_ACCEPT = Limits(), Accept()


def read_slice(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = 64 << 20,
    limits: Limits = DEFAULT_LIMITS,
    accept: Accept = DEFAULT_ACCEPT,
    min_side: int = 32,
) -> Slice:
    """One slice from a DICOM file or a PNG/TIFF image; BadInput with its reason otherwise.
    Every size that decides an allocation is checked against ``limits`` before it is made,
    and what is not in ``accept`` is refused; reason texts never quote a value of the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadInput(Reason.UNREADABLE, f"cannot read: {exc.strerror}", path=path) from None
    if size > max_bytes:
        raise BadInput(Reason.OVERSIZE, f"{size} bytes is over the limit of {max_bytes}", path=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(Reason.UNREADABLE, f"cannot read: {exc.strerror}", path=path) from None
    if not data:
        raise BadInput(Reason.UNREADABLE, "empty file", path=path)
    with _quiet():
        sl = _read_any(data, path, limits, accept)
    sl.content = data  # hashed if ever needed (content_sha)
    px = sl.pixels
    if px.ndim != 2:
        raise BadInput(
            Reason.WRONG_SIZE, f"expected one 2-D slice, got shape {px.shape}", path=path
        )
    h, w = px.shape
    if min(h, w) < min_side:
        raise BadInput(Reason.WRONG_SIZE, f"{w}x{h} is smaller than {min_side} pixels", path=path)
    if not sl.finite and not np.all(np.isfinite(px)):
        raise BadInput(Reason.NAN, "pixel values include NaN or infinity", path=path)
    return sl


def _read_any(data: bytes, path: Path, limits: Limits, accept: Accept) -> Slice:
    try:
        if len(data) >= 132 and data[128:132] == b"DICM":
            return _read_dicom(data, path, limits, accept)
        if data[:8] == _PNG or data[:4] in _TIFF:
            if not accept.images:
                raise BadInput(Reason.NOT_ACCEPTED, "PNG/TIFF images are not accepted", path=path)
            return _read_image(data, path, limits)
        try:  # DICOM without a preamble still reads
            return _read_dicom(data, path, limits, accept)
        except BadInput as exc:
            if exc.reason == Reason.DECODE_LIMIT:
                raise
            raise BadInput(
                Reason.UNREADABLE, "neither DICOM nor a PNG/TIFF image", path=path
            ) from None
    except BadInput:
        raise
    except MemoryError:
        raise BadInput(Reason.DECODE_LIMIT, "decoding ran out of memory", path=path) from None
    except Exception as exc:  # noqa: BLE001 - pydicom/OpenCV raise anything on corrupt bytes
        # the type only: parser messages quote values from the file
        raise BadInput(
            Reason.UNREADABLE, f"cannot be parsed ({type(exc).__name__})", path=path
        ) from None


class _Hush(logging.Filter):
    """Drops pydicom's log records while this thread reads a slice: they quote values."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "on", False)


_HUSH = _Hush()
# a logger's filters see only its own records: pydicom's and its modules' own loggers
_PYDICOM_LOGGERS = ("pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No pydicom validation, warning or log record (they quote values, e.g. ``Invalid value
    for VR DA: '...'``) while a slice is read."""
    try:
        from pydicom import config
    except ImportError:  # PNG/TIFF only here; DICOM asks for pydicom when it gets there
        pass
    else:
        config.settings.reading_validation_mode = config.IGNORE  # process-wide, idempotent
    for name in _PYDICOM_LOGGERS:
        logger = logging.getLogger(name)
        if _HUSH not in logger.filters:
            logger.addFilter(_HUSH)
    _HUSH.local.on = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _HUSH.local.on = False


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------
# PS3.3 C.7.3.1.1.1 Modality defined terms (current and retired): what a refusal may name
# fmt: off
MODALITIES = frozenset((
    "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CFM", "CT", "CTPROTOCOL", "DMS", "DG", "DOC", "DX",
    "ECG", "EEG", "EMG", "EOG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS",
    "KER", "KO", "LEN", "LS", "MG", "MR", "M3D", "NM", "OAM", "OCT", "OP", "OPM", "OPT", "OPTBSV",
    "OPTENF", "OPV", "OSS", "OT", "PA", "PLAN", "POS", "PR", "PT", "PX", "REG", "RESP", "RF", "RG",
    "RTDOSE", "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD", "RTSEGANN", "RTSTRUCT", "RWV",
    "SEG", "SM", "SMR", "SR", "SRF", "STAIN", "TEXTUREMAP", "TG", "US", "VA", "XA", "XAPROTOCOL",
    "XC", "AS", "CD", "CF", "CP", "CS", "DD", "DF", "DM", "DS", "EC", "FA", "FS", "LP", "MA", "MS",
    "OPR", "ST", "VF",
))
# fmt: on
# PS3.3 C.7.6.3.1.2 Photometric Interpretation enumerated values, with their samples per pixel
PHOTOMETRIC = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_PARTIAL_422": 3,
    "YBR_PARTIAL_420": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
    "XYB": 3,
    "HSV": 3,
    "ARGB": 4,
    "CMYK": 4,
}
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian (PS3.5 A.5)


def _read_dicom(data: bytes, path: Path, limits: Limits, accept: Accept) -> Slice:
    ds, size = _parse(data, path, limits)
    if "PixelData" not in ds:
        if not ds or "SOPClassUID" not in ds and "Rows" not in ds:  # "DICM", then garbage
            raise BadInput(Reason.UNREADABLE, "not readable DICOM", path=path)
        if _cut_short(ds, size):
            raise BadInput(Reason.TRUNCATED, "DICOM file ends before its pixel data", path=path)
        raise BadInput(Reason.NOT_AN_IMAGE, "no pixel data (a header-only DICOM object)", path=path)
    key = _header_key(ds, accept)
    last = _SERIES.last
    shared = last[1] if last is not None and last[0] == key else None
    if shared is None:  # a new series (or its first slice): every header check
        refused = _refusal(ds, accept)
        if refused:
            raise BadInput(Reason.NOT_ACCEPTED, f"{refused} is not accepted", path=path)
        g = _geometry(ds, path)
    else:  # the same header bytes as a slice that passed them: the same values
        g = shared.geometry
    _check_limits(g, limits, path)
    if shared is None:
        _check_header(ds, g, path)
    if g.frames > 1:
        raise BadInput(Reason.WRONG_SIZE, f"a {g.frames}-frame volume, not one slice", path=path)
    arr = np.asarray(_pixels(ds, g, limits, path))
    if arr.ndim == 3 and g.spp > 1:
        px = arr.astype(np.float32).mean(axis=-1, dtype=np.float32)
        if g.slope != 1.0:
            px *= np.float32(g.slope)
    elif g.slope != 1.0:  # the cast and the scaling in one pass (the same float32 values)
        px = np.multiply(arr, np.float32(g.slope), dtype=np.float32)
    else:
        px = arr.astype(np.float32)  # always a copy of its own: changed in place
    if g.intercept != 0.0:
        px += np.float32(g.intercept)
    if shared is None:
        shared = _shared(ds, g)
    if g.photometric == "MONOCHROME1" and not shared.is_hu:
        px = px.max() + px.min() - px  # display polarity; HU keep their physical meaning
    meta: dict[str, Any] = {}
    for k in META_KEYS:  # each element looked up (and its value converted) once
        v = _meta_value(ds, k) if k in PER_SLICE_META else shared.meta.get(k, _ABSENT)
        if v is not _ABSENT:
            meta[k] = list(v) if isinstance(v, list) else v  # no list shared between slices
    meta["Rows"], meta["Columns"] = g.rows, g.cols
    patient = dict(shared.patient)
    sl = Slice(px, SliceKind.DICOM, shared.is_hu, path.name, meta, patient)
    if key is not None:
        _SERIES.last = (key, shared)
    sl.finite = arr.dtype.kind in "iu" and _bounded(arr.dtype, g.slope, g.intercept)
    return sl


# What a slice's meta holds, in order (Rows and Columns follow), and which of it changes from
# slice to slice of a series; the rest is decoded once per series (_Shared)
META_KEYS: tuple[str, ...] = (*REF_KEYS, "PixelSpacing", "ImagePositionPatient")
META_KEYS += ("ImageOrientationPatient", "RecognizableVisualFeatures")
PER_SLICE_META = frozenset(("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient"))
_ABSENT = object()


def _meta_value(ds, k: str) -> Any:
    """One meta entry as ``Slice.meta`` holds it, or _ABSENT."""
    if k in ("ImagePositionPatient", "ImageOrientationPatient"):
        return [float(v) for v in ds[k].value] if ds.get(k) else _ABSENT
    if k == "PixelSpacing":
        return [float(v) for v in ds.PixelSpacing] if "PixelSpacing" in ds else _ABSENT
    v = ds.get(k)
    return str(v) if v not in (None, "") else _ABSENT


@dataclass(frozen=True)
class _Shared:
    """What the slices of a series share, decoded from a header that passed every check."""

    geometry: _Geometry
    is_hu: bool
    meta: dict[str, Any]  # the META_KEYS not in PER_SLICE_META
    patient: dict[str, Any]


def _shared(ds, g: _Geometry) -> _Shared:
    modality = str(ds.get("Modality", "") or "")
    is_hu = modality == "CT" or (not modality and "RescaleIntercept" in ds)
    meta = {k: _meta_value(ds, k) for k in META_KEYS if k not in PER_SLICE_META}
    patient = {k: v for k in PATIENT_KEYS if (v := ds.get(k)) is not None or k in ds}
    return _Shared(g, is_hu, meta, patient)


class _Series(threading.local):
    """The last series read in this thread: (header key, what its slices share)."""

    last: tuple[tuple, _Shared] | None = None


_SERIES = _Series()
# Every element the header checks and _Shared read: the same raw bytes (and encoding) of all
# of them give the same refusal, geometry, header verdict, meta and patient values. pydicom
# decodes an element on its first access (~15-20 us each, most of a slice's read after the
# parse); a series' slices repeat all of these but a few (PER_SLICE_META)
_HEADER_KEYWORDS = (
    "SpecificCharacterSet",
    "Modality",
    "SOPClassUID",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    *(k for k in META_KEYS if k not in PER_SLICE_META),
    *PATIENT_KEYS,
)


@functools.lru_cache(maxsize=1)
def _header_tags() -> tuple[Any, ...]:
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

    tags = (tag_for_keyword(k) for k in dict.fromkeys(_HEADER_KEYWORDS))
    return tuple(Tag(t) for t in tags if t is not None)  # every keyword is in the dictionary


def _header_key(ds, accept: Accept) -> tuple | None:
    """The raw bytes (VR, length, encoding) of every _HEADER_KEYWORDS element and of the file
    meta's SOP class (decoded ones by their value), with ``accept``: equal keys, equal header
    verdicts and values. None (no reuse) for a deferred element."""
    from pydicom.dataelem import RawDataElement

    parts: list[Any] = [accept]
    meta = getattr(ds, "file_meta", None)
    for holder, tags in ((ds, _header_tags()), (meta, (_MEDIA_SOP_CLASS,))):
        for tag in tags:
            e = holder.get_item(tag) if holder is not None else None
            if e is None:
                parts.append(None)
            elif isinstance(e, RawDataElement):
                if e.value is None:  # a deferred read: not compared
                    return None
                parts.append((e.VR, e.length, e.value, e.is_implicit_VR, e.is_little_endian))
            else:  # decoded while reading (the character set, the file meta): its value
                parts.append((e.VR, repr(e.value)))
    return tuple(parts)


_MEDIA_SOP_CLASS = 0x00020002


def _bounded(dtype: np.dtype, slope: float, intercept: float) -> bool:
    """Whether every integer of ``dtype`` rescaled stays far inside float32 (no check of the
    pixels for inf needed: a finite slope and intercept were checked in ``_check_header``)."""
    top = float(max(abs(np.iinfo(dtype).min), np.iinfo(dtype).max))
    return top * abs(slope) + abs(intercept) < 1e37


def _parse(data: bytes, path: Path, limits: Limits) -> tuple[Any, int | None]:
    """The dataset, pixel data as bytes (reading allocates no more than the file's size, but
    a deflated dataset is inflated here, bounded, before pydicom would inflate it whole), and
    the length of the stream it was read from (None: an inflated one)."""
    require("pydicom", extra="service")
    import pydicom

    try:
        if data.find(DEFLATED.encode()) >= 0:  # cheap: a deflated file names it in its meta
            ds = _parse_deflated(data, path, limits)
            if ds is not None:
                return ds, None
        return pydicom.dcmread(io.BytesIO(data), force=True), len(data)
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises anything on garbage
        raise BadInput(
            Reason.UNREADABLE, f"not readable DICOM ({type(exc).__name__})", path=path
        ) from None


def _parse_deflated(data: bytes, path: Path, limits: Limits):
    """A Deflated Explicit VR Little Endian dataset, or None when the file is not one."""
    from pydicom.dataset import FileDataset
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    fp = io.BytesIO(data)
    preamble = read_preamble(fp, force=True)
    meta = _read_file_meta_info(fp)
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
        return None
    raw = data[fp.tell() :]
    _check_inflated(raw, limits.max_inflated_bytes, path)
    plain = zlib.decompress(raw, -zlib.MAX_WBITS)  # within the limit: checked just above
    ds = read_dataset(io.BytesIO(plain), is_implicit_VR=False, is_little_endian=True)
    return FileDataset(path.name, ds, preamble, meta, is_implicit_VR=False, is_little_endian=True)


def _check_inflated(raw: bytes, limit: int, path: Path) -> None:
    """Inflate in 1 MiB pieces, keeping none: DECODE_LIMIT past ``limit`` bytes."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    total, rest = 0, raw
    while rest and not d.eof:
        total += len(d.decompress(rest, 1 << 20))
        if total > limit:
            raise BadInput(
                Reason.DECODE_LIMIT,
                f"deflated dataset inflates past the limit of {limit} bytes",
                path=path,
            )
        rest = d.unconsumed_tail


@dataclass(frozen=True)
class _Geometry:
    rows: int
    cols: int
    bits: int
    frames: int
    spp: int
    signed: int
    photometric: str
    slope: float
    intercept: float


def _geometry(ds, path: Path) -> _Geometry:
    """The header's sizes (as integers: no other value of the file reaches a reason text)."""
    try:
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        frames = int(_given(ds, "NumberOfFrames", 1))  # a 0 stays 0: bad-header below
        spp = int(_given(ds, "SamplesPerPixel", 1))
        signed = int(_given(ds, "PixelRepresentation", 0))
        slope = float(_given(ds, "RescaleSlope", 1.0))
        intercept = float(_given(ds, "RescaleIntercept", 0.0))
    except (AttributeError, ValueError, TypeError, OverflowError):
        raise BadInput(
            Reason.BAD_HEADER,
            "image attributes (Rows, Columns, Bits, Frames, Rescale) missing or not numbers",
            path=path,
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    return _Geometry(rows, cols, bits, frames, spp, signed, photometric, slope, intercept)


def _given(ds, keyword: str, default: Any) -> Any:
    """An attribute's value, ``default`` when it is absent or empty (Type 2/3 attributes)."""
    value = ds.get(keyword)
    return default if value is None or value == "" else value


def _refusal(ds, accept: Accept) -> str:
    """What of the object is not in ``accept``, named only by a coded value from a fixed
    vocabulary (never the file's own text); "" when all is accepted."""
    modality = str(ds.get("Modality", "") or "")
    if modality not in accept.modalities:
        return "modality " + _coded(modality, MODALITIES, "modality")
    sop = str(ds.get("SOPClassUID", "") or "")
    if not sop and hasattr(ds, "file_meta"):
        sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    keyword = _sop_keyword(sop)
    if sop not in accept.sop_classes and (not keyword or keyword not in accept.sop_classes):
        return "SOP class " + (keyword or ("an unrecognised one" if sop else "(none)"))
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if photometric not in accept.photometric:
        return "photometric " + _coded(photometric, PHOTOMETRIC, "interpretation")
    return ""


def _coded(value: str, vocabulary: Collection[str], what: str) -> str:
    if not value:
        return f"(none): no {what}"
    return value if value in vocabulary else f"an unrecognised {what}"


def _sop_keyword(uid: str) -> str:
    """A SOP class's keyword in pydicom's UID dictionary (PS3.6 Table A-1); "" if unknown."""
    from pydicom.uid import UID_dictionary

    entry = UID_dictionary.get(uid)
    return entry[4] if entry is not None and entry[1] == "SOP Class" else ""


def _check_limits(g: _Geometry, limits: Limits, path: Path) -> None:
    """DECODE_LIMIT for header sizes over the limits, before anything is allocated."""
    if max(g.rows, g.cols) > limits.max_side:
        msg = f"{g.cols}x{g.rows} is over the limit of {limits.max_side} pixels a side"
    elif g.frames > limits.max_frames:
        msg = f"{g.frames} frames is over the limit of {limits.max_frames}"
    elif g.rows * g.cols * max(g.frames, 1) * max(g.spp, 1) > limits.max_pixels:
        msg = f"rows x columns x frames x samples is over the limit of {limits.max_pixels}"
    else:
        return
    raise BadInput(Reason.DECODE_LIMIT, msg, path=path)


def _check_header(ds, g: _Geometry, path: Path) -> None:
    """BAD_HEADER for values that make no sense (PS3.3 C.7.6.3, C.11.1)."""
    stored = ds.get("BitsStored")
    if g.rows <= 0 or g.cols <= 0:
        msg = "Rows or Columns is 0"
    elif g.bits not in (8, 16, 32):
        msg = f"BitsAllocated {g.bits} is not 8, 16 or 32"
    elif stored is not None and not 0 < int(stored) <= g.bits:
        msg = "BitsStored is 0 or more than BitsAllocated"
    elif g.signed not in (0, 1):
        msg = "PixelRepresentation is not 0 or 1"
    elif g.frames < 1:
        msg = "NumberOfFrames is below 1"
    elif PHOTOMETRIC.get(g.photometric, g.spp) != g.spp:
        msg = "SamplesPerPixel does not fit the photometric interpretation"
    elif g.slope == 0 or not math.isfinite(g.slope) or not math.isfinite(g.intercept):
        msg = "RescaleSlope is 0 or RescaleSlope/RescaleIntercept is not finite"
    else:
        return
    raise BadInput(Reason.BAD_HEADER, msg, path=path)


def _pixels(ds, g: _Geometry, limits: Limits, path: Path) -> np.ndarray:
    """The pixel array; compressed data only after its header sizes passed the limits."""
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None and not ts.is_transfer_syntax:  # a private one: its UID is not named
        msg = "pixel data in an unrecognised transfer syntax"
        raise BadInput(Reason.UNSUPPORTED, msg, path=path)
    if ts is not None and ts.is_compressed:
        try:
            with _pillow_bounded(limits.max_pixels):
                return ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - no decoder, or a decoder refused it
            if _is_bomb(exc):
                msg = "compressed frame is larger than the limits"
                raise BadInput(Reason.DECODE_LIMIT, msg, path=path) from None
            raise BadInput(
                Reason.UNSUPPORTED,
                f"compressed pixel data ({ts.name}) has no decoder here",
                path=path,
            ) from None
    per_sample = 2 if g.photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") else g.spp
    need = g.rows * g.cols * per_sample * g.bits // 8
    have = len(ds.PixelData)
    if have < need:
        raise BadInput(Reason.TRUNCATED, f"pixel data has {have} of {need} bytes", path=path)
    try:
        native = _native_pixels(ds, ts, g.rows, g.cols, g.bits, g.spp)
        return native if native is not None else ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise BadInput(
            Reason.UNREADABLE, f"pixel data cannot be decoded ({type(exc).__name__})", path=path
        ) from None


@contextlib.contextmanager
def _pillow_bounded(max_pixels: int) -> Iterator[None]:
    """Pillow (pydicom's JPEG decoder) refuses a frame over ``max_pixels`` before decoding
    it (its decompression bomb check, PIL.Image.MAX_IMAGE_PIXELS), whatever the DICOM says."""
    try:
        from PIL import Image
    except ImportError:
        yield
        return
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def _is_bomb(exc: BaseException | None) -> bool:
    for _ in range(8):  # the exception and what caused it
        if exc is None:
            return False
        if isinstance(exc, MemoryError) or "DecompressionBomb" in type(exc).__name__:
            return True
        if "decompression bomb" in str(exc).lower():  # pydicom re-raises Pillow's refusal
            return True
        exc = exc.__cause__ or exc.__context__
    return False


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


def _cut_short(ds, size: int | None) -> bool:
    """Whether a dataset without pixel data shows signs of a file cut off part-way: its last
    element is shorter than its length says, or bytes follow it that did not parse (a cut
    element header). A complete header-only object ends exactly with its last element."""
    require("pydicom", extra="service")
    from pydicom.dataelem import RawDataElement

    if not ds:
        return True
    last = ds.get_item(max(ds.keys()))  # raw: the element the parser stopped in
    if (
        not isinstance(last, RawDataElement)
        or last.value is None
        or last.length == 0xFFFFFFFF  # undefined length: sequences, encapsulated data
    ):
        return False
    if len(last.value) < last.length:
        return True
    return size is not None and last.value_tell is not None and last.value_tell + last.length < size


# ---------------------------------------------------------------------------------------------
# PNG and TIFF
# ---------------------------------------------------------------------------------------------
# OpenCV's own bound on an image's pixels, read once at its first decode in the process
# (OPENCV_IO_MAX_IMAGE_PIXELS, "OpenCV environment variables", docs.opencv.org); a backstop
# behind the header checks below, which bound images by the smaller of it and the limits
CV2_MAX_PIXELS = 1 << 28
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(CV2_MAX_PIXELS))


@dataclass(frozen=True)
class _ImageHeader:
    width: int
    height: int
    samples: int
    pages: int  # 1, or 2 for "more than one"


def _image_header(data: bytes) -> _ImageHeader | None:
    """PNG IHDR (PNG spec 11.2.2) or the first TIFF IFD (TIFF 6.0 section 2); None if cut."""
    if data[:8] == _PNG:
        if len(data) < 26 or data[12:16] != b"IHDR":
            return None
        w, h = struct.unpack(">II", data[16:24])
        samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(data[25], 4)  # colour type
        return _ImageHeader(w, h, samples, 1)
    return _tiff_header(data)


def _tiff_header(data: bytes) -> _ImageHeader | None:
    end = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(end + "I", data, 4)
        (count,) = struct.unpack_from(end + "H", data, ifd)
        tags: dict[int, int] = {}
        for k in range(count):
            tag, typ, n = struct.unpack_from(end + "HHI", data, ifd + 2 + 12 * k)
            if typ == 3:  # SHORT: the first value, in the entry's value field
                (tags[tag],) = struct.unpack_from(end + "H", data, ifd + 10 + 12 * k)
            elif typ == 4:  # LONG
                (tags[tag],) = struct.unpack_from(end + "I", data, ifd + 10 + 12 * k)
        (nxt,) = struct.unpack_from(end + "I", data, ifd + 2 + 12 * count)
    except struct.error:
        return None
    if 256 not in tags or 257 not in tags:  # ImageWidth, ImageLength
        return None
    pages = 2 if 0 < nxt < len(data) - 2 else 1
    return _ImageHeader(tags[256], tags[257], tags.get(277, 1), pages)


def _read_image(data: bytes, path: Path, limits: Limits) -> Slice:
    head = _image_header(data)
    if head is None:
        raise BadInput(Reason.TRUNCATED, "image header is cut short or corrupt", path=path)
    w, h = head.width, head.height
    if max(w, h) > limits.max_side:
        msg = f"{w}x{h} is over the limit of {limits.max_side} pixels a side"
        raise BadInput(Reason.DECODE_LIMIT, msg, path=path)
    if w * h * max(head.samples, 1) > min(limits.max_pixels, CV2_MAX_PIXELS):
        msg = f"width x height x samples is over the limit of {limits.max_pixels}"
        raise BadInput(Reason.DECODE_LIMIT, msg, path=path)
    if w == 0 or h == 0:
        raise BadInput(Reason.BAD_HEADER, "image width or height is 0", path=path)
    if head.pages > 1:
        raise BadInput(Reason.WRONG_SIZE, "a multi-page TIFF, not one slice", path=path)
    require("cv2", extra="service")
    import cv2

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
    return tpl.encode_bytes(img, source, args)


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
        _copy_value(ds, k, v)
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
    _copy_value(ds, "ContentDate", date)
    _copy_value(ds, "ContentTime", str(source.patient.get("StudyTime") or "000000"))
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


def _copy_value(ds, keyword: str, value: Any) -> None:
    """A value copied from a source file, as it was: no validation, whose warning would quote
    it (``Invalid value for VR DA: '...'``)."""
    from pydicom import config
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import DataElement

    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword  # PATIENT_KEYS and the Content Date/Time: all known
    ds[tag] = DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE)


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

    def encode_bytes(
        self, img: np.ndarray, source: Slice, args: tuple[str, int, str, str]
    ) -> bytes:
        """``encode(_sc_per_slice(...))`` without a pydicom dataset per slice: the per-slice
        elements written as bytes (explicit VR little endian, PS3.5 7.1.2; sequences and items
        of defined length, as pydicom writes them), the file meta spliced at its SOP Instance
        UID, the pixels appended as they are. Byte-identical to ``encode`` (tested)."""
        if self._meta_split is None:
            self._meta_split = _split_meta(self.encode_meta(_sop_uid(source, args[0], args[1])))
        sop = str(_sop_uid(source, args[0], args[1]))
        own = _per_slice_bytes(img, source, sop)
        before, after = self._meta_split
        meta = before + _el(0x00020003, "UI", sop) + after
        length = _el(0x00020000, "UL", struct.pack("<I", len(meta)))
        chunks = [b"\0" * 128 + b"DICM", length, meta]
        chunks += [b for _, b in sorted(self.parts + own, key=lambda p: p[0])]
        pixels = img.tobytes()  # PixelData, the last element (7FE0,0010): its value appended
        chunks += [_head(0x7FE00010, "OB", len(pixels) + len(pixels) % 2), pixels]
        chunks += [b"\0"] if len(pixels) % 2 else []
        return b"".join(chunks)  # the one copy of the pixels

    _meta_split: tuple[bytes, bytes] | None = None

    def encode_meta(self, sop_uid: str) -> bytes:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info

        meta = copy.copy(self.meta)
        meta.MediaStorageSOPInstanceUID = sop_uid
        head = DicomBytesIO()
        head.is_little_endian, head.is_implicit_VR = True, False
        write_file_meta_info(head, meta, enforce_standard=True)
        return bytes(head.getvalue())


_LONG_VRS = frozenset(
    ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
)


def _el(tag: int, vr: str, value: str | bytes) -> bytes:
    """One data element, explicit VR little endian (PS3.5 7.1.2), padded to even length (UI
    with NUL, other text with a space, binary with NUL: PS3.5 6.2)."""
    raw = value.encode("ascii") if isinstance(value, str) else value
    if len(raw) % 2:
        raw += b"\0" if vr in ("UI", "OB", "UN") or isinstance(value, bytes) else b" "
    return _head(tag, vr, len(raw)) + raw


def _head(tag: int, vr: str, length: int) -> bytes:
    """A data element's tag, VR and (even) value length, explicit VR little endian."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, length)
    return head + struct.pack("<H", length)


def _item(body: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


_PURPOSE = _item(
    _el(0x00080100, "SH", "121322")
    + _el(0x00080102, "SH", "DCM")
    + _el(0x00080104, "LO", "Source image for image processing operation")
)


def _per_slice_bytes(img: np.ndarray, source: Slice, sop: str) -> list[tuple[int, bytes]]:
    """``_sc_per_slice`` but PixelData as (tag, bytes) pairs, written directly."""
    own = [(0x00080018, _el(0x00080018, "UI", sop))]
    number = int(source.meta.get("InstanceNumber") or 1)
    own.append((0x00200013, _el(0x00200013, "IS", str(number))))
    if _same_grid(img, source):
        for tag, k in (
            (0x00200032, "ImagePositionPatient"),
            (0x00200037, "ImageOrientationPatient"),
        ):
            if k in source.meta:
                own.append((tag, _el(tag, "DS", "\\".join(_ds(v) for v in source.meta[k]))))
    ref_sop = source.meta.get("SOPInstanceUID")
    if ref_sop:
        refs = _el(0x00081150, "UI", str(source.meta.get("SOPClassUID", CT_IMAGE)))
        refs += _el(0x00081155, "UI", str(ref_sop))
        purpose = _el(0x0040A170, "SQ", _PURPOSE)
        own.append((0x00082112, _el(0x00082112, "SQ", _item(refs + purpose))))
        own.append((0x00081140, _el(0x00081140, "SQ", _item(refs))))
    return own  # PixelData follows, written by the caller


def _split_meta(meta: bytes) -> tuple[bytes, bytes]:
    """A file meta group's bytes (group length first) split around (0002,0003): the elements
    before it and after it, the group length left out."""
    pos, before, after = 0, b"", b""
    while pos < len(meta):
        tag = struct.unpack_from("<HH", meta, pos)
        vr = meta[pos + 4 : pos + 6].decode("ascii")
        if vr in _LONG_VRS:
            end = pos + 12 + struct.unpack_from("<I", meta, pos + 8)[0]
        else:
            end = pos + 8 + struct.unpack_from("<H", meta, pos + 6)[0]
        if tag == (2, 3):
            before, after = meta[12:pos], meta[end:]
        pos = end
    return before, after


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
        _copy_value(ds, k, v)
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
