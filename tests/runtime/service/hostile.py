"""Hostile input files for the service's tests: pure functions that return the bytes of one
malformed or refused slice each, every DICOM one carrying PHI-like SENTINELS.

Import it from a test with ``sys.path.insert(0, str(Path(__file__).parent))``, then
``import hostile`` (the tests run with ``--import-mode=importlib``). Nothing here writes a file.
The names below are stable (another test suite builds on them):

- ``SENTINELS``: strings put into every DICOM file (patient name and id, an invalid DA birth
  date ``1961-02-03``, an invalid CS sex ``female``, ImageComments, a private tag); none may
  appear in a reason text or a log line. PNG/TIFF files carry one in a text chunk / tag.
- ``good_ct(size=64, index=0)``: a good CT slice (int16 HU, explicit VR little endian).
- ``ct(size=64, index=0, pixels=True, **attrs)``: a CT slice with header attributes replaced
  (``attrs`` by DICOM keyword; ``None`` deletes the attribute) and pixel data for its true size;
  ``pixels=False`` leaves out the pixel data. Rows/Columns etc. may lie about the pixel data.
- ``header_lie(keyword, value, size=64)``: ``ct`` with one of Rows, Columns, NumberOfFrames,
  SamplesPerPixel, BitsAllocated set to ``value`` (the pixel data keeps its true size).
- ``rle_bomb(rows=60000, cols=60000)``: RLE Lossless CT, header sizes huge, a tiny fragment.
- ``jpeg_bomb(width=60000, height=60000)``: JPEG Baseline CT, header 64x64, but its JPEG frame
  header (SOF0) says width x height (needs Pillow).
- ``deflate_bomb(inflated=300 << 20)``: deflated explicit VR little endian (PS3.5 A.5) dataset
  that inflates to about ``inflated`` bytes (trailing padding of zeros); the file is ~1 KB per
  MiB inflated; refusing it inflates up to the limit (about 1 s for the default 256 MiB: use
  a pipeline with a small ``limits.max_inflated_bytes`` where many are read).
  ``deflated_ct(size=64)``: a good slice in the deflated transfer syntax.
- ``png_bomb(width=60000, height=60000)``, ``tiff_bomb(width=32000, height=32000)``: an IHDR /
  first IFD claiming huge dimensions with a payload of a few bytes.
- ``good_png(size=64)``, ``good_tiff(size=64)``: small valid 8-bit greyscale images.
- ``other_object(kind)``: ``kind`` in OTHER_KINDS ("MR", "US", "SC", "SEG"): an image of that
  SOP class and modality (US is RGB, SEG is a 2-frame 1-bit segmentation).
- ``rescale_slope_zero()``, ``ybr_full_422()``, ``header_only_ct(image_attrs=False)``,
  ``truncated_pixels(cut=1000)``, ``garbage(n=4096, seed=0)``.
- ``CASES``: ``Case(name, make, reason, suffix)`` for each class with the reason code the
  service gives it under the default ``Limits()`` and ``Accept()`` (CT only).

Order of the checks that the reasons assume (dicom_io.read_slice): size of the file
(oversize); a deflated dataset's inflated length, while parsing (decode-limit); what the
object is (unreadable; truncated; not-an-image for no pixel data); accept (modality, SOP
class, photometric: not-accepted; PNG/TIFF when ``accept.images`` is false); header sizes
against the limits (decode-limit: Rows, Columns <= max_side, NumberOfFrames <= max_frames,
Rows x Columns x frames x SamplesPerPixel <= max_pixels; PNG/TIFF dimensions); header sanity
(bad-header: Rows/Columns 0, BitsAllocated not 8/16/32, BitsStored 0 or over BitsAllocated,
PixelRepresentation not 0/1, NumberOfFrames 0, SamplesPerPixel not fitting the photometric
interpretation, RescaleSlope 0 or not a number); more than one frame within the limits
(wrong-size); then the pixel data (truncated; a compressed frame larger than its header:
decode-limit).
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

SENTINELS = (
    "Zqxsentinel^Phiname",  # PatientName
    "PID-SENT-4417",  # PatientID
    "1961-02-03",  # PatientBirthDate: not a valid DA (YYYYMMDD)
    "female",  # PatientSex: not a valid CS (upper case, M/F/O)
    "odd-sentinel-q8z3",  # ImageComments
    "private-sentinel-k2v9",  # a private tag
)
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
OTHER_KINDS = ("MR", "US", "SC", "SEG")
_SOP = {
    "MR": ("1.2.840.10008.5.1.4.1.1.4", "MR"),
    "US": ("1.2.840.10008.5.1.4.1.1.6.1", "US"),
    "SC": ("1.2.840.10008.5.1.4.1.1.7", "OT"),
    "SEG": ("1.2.840.10008.5.1.4.1.1.66.4", "SEG"),
}
_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root (its generate_uid prefix)


def _uid(*parts: object) -> str:
    return _ROOT + str(int(hashlib.sha256(repr(parts).encode()).hexdigest()[:24], 16))


def _raw(ds: Dataset, keyword_tag: int, vr: str, value: Any) -> None:
    """Set an element without pydicom's value validation (invalid DA/CS on purpose)."""
    ds[keyword_tag] = DataElement(keyword_tag, vr, value, validation_mode=config.IGNORE)


def _sentinels(ds: Dataset) -> None:
    ds.PatientName = SENTINELS[0]
    ds.PatientID = SENTINELS[1]
    _raw(ds, 0x00100030, "DA", SENTINELS[2])
    _raw(ds, 0x00100040, "CS", SENTINELS[3])
    ds.ImageComments = SENTINELS[4]
    ds.add_new(0x00090010, "LO", "HXSCHED TEST")
    ds.add_new(0x00091001, "LO", SENTINELS[5])


def _base(size: int, index: int, kind: str = "CT") -> Dataset:
    sop, modality = _SOP.get(kind, (CT_IMAGE, "CT"))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(_uid("sop", kind, size, index))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = UID(_ROOT + "1")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid("study", kind)
    ds.SeriesInstanceUID = _uid("series", kind)
    ds.FrameOfReferenceUID = _uid("for", kind)
    ds.Modality = modality
    ds.InstanceNumber = index + 1
    _sentinels(ds)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    ds.PixelSpacing = ["0.5", "0.5"]
    return ds


def _pixels(size: int, index: int) -> bytes:
    y, x = np.mgrid[0:size, 0:size]
    hu = np.where((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 3) ** 2, 40, -1000)
    return (hu + index % 7).astype("<i2").tobytes()


def _file(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.preamble = b"\0" * 128
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _set(ds: Dataset, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)


def ct(size: int = 64, index: int = 0, pixels: bool = True, **attrs: Any) -> bytes:
    """A CT slice (sentinels included) with header attributes replaced or (None) deleted."""
    ds = _base(size, index)
    if pixels:
        ds.PixelData = _pixels(size, index)
        ds["PixelData"].VR = "OW"
    _set(ds, attrs)
    return _file(ds)


def good_ct(size: int = 64, index: int = 0) -> bytes:
    return ct(size, index)


def header_lie(keyword: str, value: int, size: int = 64) -> bytes:
    """A CT whose Rows/Columns/NumberOfFrames/SamplesPerPixel/BitsAllocated is ``value``."""
    assert keyword in ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated")
    extra: dict[str, Any] = {keyword: value}
    if keyword == "BitsAllocated":
        extra.update(BitsStored=min(value, 16), HighBit=min(value, 16) - 1)
    return ct(size, **extra)


def rle_bomb(rows: int = 60000, cols: int = 60000) -> bytes:
    """RLE Lossless (PS3.5 G): header of rows x cols, one fragment of a few bytes."""
    ds = _base(64, 0)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.Rows, ds.Columns = rows, cols
    # RLE header: 2 segments (16 bits), offsets 64 and 68; each segment "repeat 0 x 128"
    header = struct.pack("<16I", 2, 64, 68, *([0] * 13))
    ds.PixelData = encapsulate([header + b"\x81\x00\x81\x00" * 2])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return _file(ds)


def jpeg_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """JPEG Baseline CT of 64x64 whose JPEG frame header (SOF0) says width x height."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    k = jpeg.index(b"\xff\xc0")  # SOF0: marker, length, precision, height, width
    jpeg = jpeg[: k + 5] + struct.pack(">HH", height, width) + jpeg[k + 9 :]
    ds = _base(64, 0)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return _file(ds)


def _elements(ds: Dataset) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    for elem in ds:
        write_data_element(buf, elem)
    return buf.getvalue()


def _deflated(ds: Dataset, pad: int) -> bytes:
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_file_meta_info(head, meta, enforce_standard=True)
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = _elements(ds)
    if pad:  # Data Set Trailing Padding (FFFC,FFFC) OB: PS3.10 7.2, explicit VR header
        body += struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, pad)
    out = [c.compress(body), c.flush(zlib.Z_FULL_FLUSH)]
    mib, rest = divmod(pad, 1 << 20)
    if mib:  # after a full flush the same input compresses to the same bytes: repeat them
        chunk = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
        out.append(chunk * mib)
    out += [c.compress(bytes(rest)), c.flush()]
    return b"\0" * 128 + b"DICM" + head.getvalue() + b"".join(out)


def deflated_ct(size: int = 64, index: int = 0) -> bytes:
    """A good CT slice in the Deflated Explicit VR Little Endian transfer syntax."""
    ds = _base(size, index)
    ds.PixelData = _pixels(size, index)
    ds["PixelData"].VR = "OW"
    return _deflated(ds, 0)


def deflate_bomb(inflated: int = 300 << 20) -> bytes:
    """A deflated CT dataset whose stream inflates to about ``inflated`` bytes."""
    ds = _base(64, 0)
    ds.PixelData = _pixels(64, 0)
    ds["PixelData"].VR = "OW"
    return _deflated(ds, inflated)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    text = b"Comment\0" + SENTINELS[4].encode()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"tEXt", text)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A PNG whose IHDR says width x height; its IDAT holds a few rows' worth of zeros."""
    return _png(width, height, bytes(1024))


def good_png(size: int = 64) -> bytes:
    rows = b"".join(b"\0" + bytes((x * 4 + y) % 256 for x in range(size)) for y in range(size))
    return _png(size, size, rows)


def _tiff(width: int, height: int, strip: bytes) -> bytes:
    """Little-endian baseline TIFF 6.0, one uncompressed 8-bit grey strip."""
    desc = SENTINELS[4].encode() + b"\0"
    tags = [  # (tag, type, count, value): types 3 SHORT, 4 LONG, 2 ASCII
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (270, 2, len(desc), None),
        (273, 4, 1, None),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, len(strip)),
    ]
    ifd_size = 2 + 12 * len(tags) + 4
    desc_at = 8 + ifd_size
    strip_at = desc_at + len(desc)
    ifd = struct.pack("<H", len(tags))
    for tag, typ, count, value in tags:
        value = desc_at if tag == 270 else strip_at if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)  # no next IFD
    return b"II*\0" + struct.pack("<I", 8) + ifd + desc + strip


def tiff_bomb(width: int = 32000, height: int = 32000) -> bytes:
    """A TIFF whose first IFD says width x height, with a strip of 1 KB."""
    return _tiff(width, height, bytes(1024))


def good_tiff(size: int = 64) -> bytes:
    return _tiff(size, size, bytes((i * 7) % 256 for i in range(size * size)))


def other_object(kind: str, size: int = 64) -> bytes:
    """An image object of another SOP class: MR, US (RGB), SC (Secondary Capture), SEG."""
    assert kind in OTHER_KINDS, kind
    ds = _base(size, 0, kind)
    ds.PixelData = _pixels(size, 0)
    if kind == "US":
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(size * size * 3)
    elif kind == "SEG":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
        ds.NumberOfFrames = 2
        ds.PixelData = bytes(size * size * 2 // 8)
    ds["PixelData"].VR = "OB" if kind in ("US", "SEG") else "OW"
    for k in ("RescaleIntercept", "RescaleSlope") if kind != "MR" else ():
        delattr(ds, k)
    return _file(ds)


def rescale_slope_zero() -> bytes:
    return ct(RescaleSlope="0")


def ybr_full_422(size: int = 64) -> bytes:
    """A CT-labelled YBR_FULL_422 colour image (8 bits, 2 bytes per pixel, PS3.3 C.7.6.3.1.2)."""
    ds = _base(size, 0)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(size * size * 2)
    ds["PixelData"].VR = "OB"
    return _file(ds)


def header_only_ct(image_attrs: bool = False) -> bytes:
    """A complete CT Image Storage object without PixelData (and, by default, without the
    Image Pixel attributes either)."""
    gone: dict[str, Any] = {}
    if not image_attrs:
        for k in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns"):
            gone[k] = None
        gone.update(BitsAllocated=None, BitsStored=None, HighBit=None, PixelRepresentation=None)
    return ct(pixels=False, **gone)


def truncated_pixels(cut: int = 1000) -> bytes:
    """A good CT cut ``cut`` bytes before its end (inside the pixel data)."""
    return good_ct()[:-cut]


def garbage(n: int = 4096, seed: int = 0) -> bytes:
    """Random bytes (neither DICOM nor PNG/TIFF)."""
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return b"\x00GARBAGE" + data[8:]


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    reason: str  # the quarantine reason code under the default Limits() and Accept()
    suffix: str = ".dcm"


CASES: tuple[Case, ...] = (
    Case("rows-60000", lambda: header_lie("Rows", 60000), "decode-limit"),
    Case("cols-60000", lambda: header_lie("Columns", 60000), "decode-limit"),
    Case("frames-1000", lambda: header_lie("NumberOfFrames", 1000), "decode-limit"),
    Case("samples-65535", lambda: header_lie("SamplesPerPixel", 65535), "decode-limit"),
    Case("samples-3-monochrome", lambda: header_lie("SamplesPerPixel", 3), "bad-header"),
    Case("bits-64", lambda: header_lie("BitsAllocated", 64), "bad-header"),
    Case("bits-12", lambda: header_lie("BitsAllocated", 12), "bad-header"),
    Case("rows-0", lambda: header_lie("Rows", 0), "bad-header"),
    Case("pixel-representation-2", lambda: ct(PixelRepresentation=2), "bad-header"),
    Case("rows-4000-lie", lambda: ct(Rows=4000, Columns=4000), "truncated"),
    Case("rle-bomb", rle_bomb, "decode-limit"),
    Case("deflate-bomb", deflate_bomb, "decode-limit"),
    Case("jpeg-bomb", jpeg_bomb, "decode-limit"),
    Case("png-bomb", png_bomb, "decode-limit", ".png"),
    Case("tiff-bomb", tiff_bomb, "decode-limit", ".tiff"),
    Case("mr", lambda: other_object("MR"), "not-accepted"),
    Case("us", lambda: other_object("US"), "not-accepted"),
    Case("sc", lambda: other_object("SC"), "not-accepted"),
    Case("seg", lambda: other_object("SEG"), "not-accepted"),
    Case("rescale-slope-0", rescale_slope_zero, "bad-header"),
    Case("ybr-full-422", ybr_full_422, "not-accepted"),
    Case("header-only-ct", header_only_ct, "not-an-image"),
    Case("header-only-ct-with-image-attrs", lambda: header_only_ct(True), "not-an-image"),
    Case("truncated-pixels", truncated_pixels, "truncated"),
    Case("garbage", garbage, "unreadable"),
)
