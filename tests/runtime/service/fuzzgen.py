"""Generated inputs for the service's fuzz and chaos suites (good CT slices; hostile inputs by
class, each unique, built on hostile.py's pieces) and a live ``hxsched serve`` to feed them."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import hostile  # noqa: E402 - tests/runtime/service/hostile.py (H1's hostile classes)

from hxsched.runtime.service.dicom_io import Slice, encode_ct_dicom, synthetic_phantom  # noqa: E402

# PHI-like values put into every generated DICOM file; none may reach a log line or a reason
SENTINELS = (*hostile.SENTINELS, "Zqxfuzz")
# our UIDs: 2.25.<decimal> (ISO/IEC 9834-8); "31337" SOP, "31338" study, "31339" series
UID_MARK = "2.25.3133"
_SOP_RE = re.compile(rb"2\.25\.31337(\d{3})(\d{6})")
_STUDY_RE = re.compile(r"2\.25\.31338(\d{3})(\d{6})")
CT_IMAGE = hostile.CT_IMAGE
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
DEFLATED = "1.2.840.10008.1.2.1.99"
# outcomes besides the reason codes
DONE, DUPLICATE, SKIPPED = "done", "duplicate", "skipped"
REJECTED, CTX_REJECTED, REFUSED, ABORTED = "rejected", "ctx-rejected", "refused", "aborted"


def uid(kind: str, cls: int, k: int) -> str:
    digit = {"sop": "7", "study": "8", "series": "9"}[kind]
    return f"2.25.3133{digit}{cls:03d}{k:06d}"


def sop_in(data: bytes) -> tuple[int, int] | None:
    """(class number, index) of the first of our SOP Instance UIDs in some bytes (the file
    meta is never deflated, so this finds it even in a bomb or a truncated file)."""
    m = _SOP_RE.search(data[:8192])
    return (int(m.group(1)), int(m.group(2))) if m else None


def study_of(study_uid: str) -> tuple[int, int] | None:
    m = _STUDY_RE.fullmatch(study_uid)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class Input:
    """One generated input, where it goes and what may become of it."""

    cls: str
    via: str  # "folder" or "scp"
    name: str  # file name in the inbox (folder) or on disk for the SCU (scp)
    data: bytes
    expect: frozenset[str]  # allowed outcomes: reason codes, DONE, DUPLICATE, ...
    key: tuple[int, int] | None = None  # (class number, index) of its SOP Instance UID
    good: bool = False
    tokens: tuple[str, ...] = ()  # its reason text must contain one of these


# -- good slices ---------------------------------------------------------------------------
_PHANTOMS: dict[int, Slice] = {}


def good_ct(k: int, cls: int = 0, size: int = 512) -> bytes:
    """A real-header CT slice from the synthetic phantom encoder with our UIDs and sentinels."""
    key = (cls, k % 8, size)
    if key not in _GOOD:
        base = synthetic_phantom(k % 8, size=size)
        meta = dict(base.meta)
        meta.update(
            SOPInstanceUID=uid("sop", cls, 0),
            StudyInstanceUID=uid("study", cls, 0),
            SeriesInstanceUID=uid("series", cls, 0),
        )
        patient = {"PatientName": SENTINELS[0], "PatientID": SENTINELS[1]}
        patient["StudyDate"], patient["StudyTime"] = "20260101", "120000"
        data = encode_ct_dicom(replace(base, meta=meta, patient=patient))
        extra = {"PatientBirthDate": SENTINELS[2], "PatientSex": SENTINELS[3]}
        _GOOD[key] = retag(data, None, None, ImageComments=_comment(0), **extra)
    return unique(_GOOD[key], cls, k)


_GOOD: dict[tuple[int, int, int], bytes] = {}


def _comment(k: int) -> str:
    return f"{SENTINELS[4]} {SENTINELS[6]}{k:06d}"


def unique(data: bytes, cls: int, k: int) -> bytes:
    """A template made for (cls, 0) as (cls, k): our UIDs and the comment have fixed lengths,
    so swapping their bytes keeps every element length right."""
    for kind in ("sop", "study", "series"):
        data = data.replace(uid(kind, cls, 0).encode(), uid(kind, cls, k).encode())
    return data.replace(_comment(0).encode(), _comment(k).encode())


# -- re-tagging hostile.py's files -----------------------------------------------------------
def _dcm(data: bytes):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _save(ds) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def retag(data: bytes, cls: int | None, k: int | None, **attrs: Any) -> bytes:
    """``data`` (a DICOM file) with our UIDs for (cls, k) and ``attrs`` set (None deletes;
    MediaStorageSOPClassUID / TransferSyntaxUID go to the file meta)."""
    from pydicom import config
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import DataElement

    ds = _dcm(data)
    if cls is not None and k is not None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("sop", cls, k)
        ds.StudyInstanceUID = uid("study", cls, k)
        ds.SeriesInstanceUID = uid("series", cls, k)
    for key, value in attrs.items():
        if key in ("MediaStorageSOPClassUID", "TransferSyntaxUID"):
            setattr(ds.file_meta, key, value)
        elif value is None:
            if key in ds:
                delattr(ds, key)
        else:
            tag = tag_for_keyword(key)
            assert tag is not None, key
            vr = ds[tag].VR if tag in ds else dictionary_VR(tag)
            ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
    return _save(ds)


_TEMPLATES: dict[tuple[Any, ...], bytes] = {}


def templated(key: tuple[Any, ...], cls: int, k: int, make: Any) -> bytes:
    """``make()`` (a DICOM file) retagged for (cls, 0) once, then made unique for k."""
    if (key, cls) not in _TEMPLATES:
        _TEMPLATES[key, cls] = retag(make(), cls, 0, ImageComments=_comment(0))
    return unique(_TEMPLATES[key, cls], cls, k)


def hostile_ct(cls: int, k: int, size: int = 64, pixels: bool = True, **attrs: Any) -> bytes:
    """hostile.ct with our UIDs and sentinels (every attribute lie goes through ``attrs``)."""
    key = ("ct", size, pixels, tuple(sorted(attrs.items())))
    return templated(key, cls, k, lambda: retag(hostile.ct(size, 0, pixels), None, None, **attrs))


def other(kind: str, cls: int, k: int) -> bytes:
    """hostile.other_object(kind) with our UIDs (a unique SOP Instance UID)."""
    return templated(("other", kind), cls, k, lambda: hostile.other_object(kind))


def deflate_bomb(cls: int, k: int, inflated: int) -> bytes:
    """A deflated explicit VR little endian CT (PS3.5 A.5) whose stream inflates to about
    ``inflated`` bytes: dataset trailing padding (FFFC,FFFC) of zeros (PS3.10 7.2)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element, write_file_meta_info

    ds = _dcm(hostile_ct(cls, k))
    ds.file_meta.TransferSyntaxUID = DEFLATED
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for elem in ds:
            write_data_element(body, elem)
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [c.compress(body.getvalue() + struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, inflated))]
    out.append(c.flush(zlib.Z_FULL_FLUSH))
    mib, rest = divmod(inflated, 1 << 20)
    chunk = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    out += [chunk * mib, c.compress(bytes(rest)), c.flush()]
    return b"\0" * 128 + b"DICM" + head.getvalue() + b"".join(out)


def with_text(png: bytes, k: int) -> bytes:
    """A PNG with one more tEXt chunk after IHDR (to make its bytes unique)."""
    text = b"Comment\0" + f"{SENTINELS[6]}{k}".encode()
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + text))
    return png[:33] + chunk + png[33:]


def tiff_unique(tiff: bytes, k: int) -> bytes:
    return tiff + f"{SENTINELS[6]}{k}".encode()  # bytes past the last strip: ignored


def pixel_offset(data: bytes) -> int:
    """Where the (last) PixelData element starts."""
    return data.rfind(b"\xe0\x7f\x10\x00")


# -- the classes ----------------------------------------------------------------------------
HEADER = frozenset({"unreadable", "truncated", "not-an-image", "bad-header"})
IMAGE_BAD = frozenset({"unreadable", "truncated"})
# (name, class number, attrs for hostile_ct, allowed reasons)
HEADER_LIES: tuple[tuple[str, dict[str, Any], frozenset[str]], ...] = (
    ("rows-60000", {"Rows": 60000}, frozenset({"decode-limit"})),
    ("cols-60000", {"Columns": 60000}, frozenset({"decode-limit"})),
    ("rows-cols-5000", {"Rows": 5000, "Columns": 5000}, frozenset({"decode-limit"})),
    ("frames-5000", {"NumberOfFrames": "5000"}, frozenset({"decode-limit"})),
    ("frames-2", {"NumberOfFrames": "2"}, frozenset({"decode-limit", "wrong-size"})),
    ("samples-65535", {"SamplesPerPixel": 65535}, frozenset({"decode-limit", "bad-header"})),
    ("bits-64", {"BitsAllocated": 64, "BitsStored": 16}, frozenset({"bad-header"})),
    ("bits-12", {"BitsAllocated": 12, "BitsStored": 12, "HighBit": 11}, frozenset({"bad-header"})),
    ("rows-0", {"Rows": 0}, frozenset({"bad-header"})),
    ("cols-0", {"Columns": 0}, frozenset({"bad-header"})),
    ("pixrep-2", {"PixelRepresentation": 2}, frozenset({"bad-header"})),
    ("slope-0", {"RescaleSlope": "0"}, frozenset({"bad-header"})),
    ("rows-4000-short", {"Rows": 4000, "Columns": 4000}, frozenset({"truncated"})),
    ("rows-200-short", {"Rows": 200}, frozenset({"truncated"})),
    ("header-only", {"PixelData": None}, frozenset({"not-an-image"})),
)
# non-CT objects and photometric interpretations: (name, kind or attrs, tokens in the reason)
NOT_ACCEPTED: tuple[tuple[str, str | dict[str, Any], tuple[str, ...]], ...] = (
    ("mr", "MR", ("MR",)),
    ("us", "US", ("US", "Ultrasound", "RGB")),
    ("sc", "SC", ("OT", "Secondary Capture")),
    ("seg", "SEG", ("SEG", "Segmentation")),
    ("ct-sop-mr-modality", {"Modality": "MR"}, ("MR",)),
    ("modality-free-text", {"Modality": "ZQXMODAL"}, ("unrecogni",)),
    ("photometric-rgb", {"PhotometricInterpretation": "RGB"}, ("RGB",)),
    ("photometric-free-text", {"PhotometricInterpretation": "ZQXPHOTO"}, ("unrecogni",)),
)


class Counter:
    """Unique (class number, index) pairs."""

    def __init__(self) -> None:
        self.k = 0

    def __call__(self) -> int:
        self.k += 1
        return self.k


def header_inputs(via: str, cls0: int, reps: int, nxt: Counter) -> list[Input]:
    out = []
    for j, (name, attrs, expect) in enumerate(HEADER_LIES):
        for _ in range(reps):
            k = nxt()
            data = hostile_ct(cls0 + j, k, **attrs)
            out.append(Input(name, via, f"{name}-{k}.dcm", data, expect, (cls0 + j, k)))
    return out


def not_accepted_inputs(via: str, cls0: int, reps: int, nxt: Counter) -> list[Input]:
    out = []
    for j, (name, what, tokens) in enumerate(NOT_ACCEPTED):
        for _ in range(reps):
            k = nxt()
            expect = frozenset({"not-accepted"})
            if isinstance(what, str):
                data = other(what, cls0 + j, k)
                if via == "scp":  # its own SOP class: the SCP does not offer it
                    expect = frozenset({CTX_REJECTED})
            else:
                data = hostile_ct(cls0 + j, k, **what)
            key = (cls0 + j, k)
            out.append(Input(name, via, f"{name}-{k}.dcm", data, expect, key, tokens=tokens))
    for _ in range(reps):
        k = nxt()
        ybr = templated(("ybr",), cls0 + 20, k, hostile.ybr_full_422)
        expect = frozenset({"not-accepted"})
        out.append(Input("ybr-full-422", via, f"ybr-{k}.dcm", ybr, expect, (cls0 + 20, k)))
        out[-1] = replace(out[-1], tokens=("YBR_FULL_422",))
    return out


def truncations(via: str, cls: int, n: int, rng: np.random.Generator, nxt: Counter) -> list[Input]:
    """A good 64x64 CT cut at ``n`` offsets: in the preamble, the file meta, the dataset
    header and the pixel data (the last must be 'truncated'; the others any header reason)."""
    out = []
    for i in range(n):
        k = nxt()
        full = f"FUZZ{k:08d}".encode() + hostile_ct(cls, k)[12:]  # the preamble is free
        pix = pixel_offset(full)
        region = i % 4 if via == "folder" else 3
        if region == 0:  # before the end of "DICM": not DICOM at all (the preamble varies)
            cut = int(rng.integers(12, 132))
            data = full[:cut]
            expect = frozenset({"unreadable"})
        elif region == 1:  # in the file meta or the first elements
            cut = int(rng.integers(132, 400))
            data, expect = full[:cut], HEADER
        elif region == 2:  # in the dataset, before the pixel data
            cut = int(rng.integers(400, pix + 1))
            data, expect = full[:cut], HEADER
        else:  # in the pixel data element
            cut = int(rng.integers(pix + 12, len(full) - 1))
            data, expect = full[:cut], frozenset({"truncated"})
        if via == "folder" and region < 2:
            expect = expect | {"unreadable"}
        out.append(Input(f"truncated-{'pmhx'[region]}", via, f"cut-{k}.dcm", data, expect, None))
        if region >= 1:
            out[-1] = replace(out[-1], key=(cls, k) if sop_in(data) else None)
    return out


def image_inputs(cls: int, reps: int, nxt: Counter) -> list[Input]:
    """PNG/TIFF dimension lies (decode-limit) and broken images (folder only)."""
    out = []
    limit = frozenset({"decode-limit"})
    for _ in range(reps):
        k = nxt()
        png = with_text(hostile.png_bomb(60000 - k, 60000), k)
        out.append(Input("png-60000", "folder", f"png-bomb-{k}.png", png, limit))
        k = nxt()
        png = with_text(hostile.png_bomb(5000 + k, 64), k)
        out.append(Input("png-wide", "folder", f"png-wide-{k}.png", png, limit))
        k = nxt()
        tif = tiff_unique(hostile.tiff_bomb(32000 - k, 32000), k)
        out.append(Input("tiff-32000", "folder", f"tiff-bomb-{k}.tiff", tif, limit))
        k = nxt()
        good = with_text(hostile.good_png(64), k)
        cut = good[: 80 + k % 50]  # past the unique tEXt chunk
        out.append(Input("png-cut", "folder", f"png-cut-{k}.png", cut, IMAGE_BAD))
        k = nxt()
        tif = hostile.good_tiff(64)
        tif = tif[: 60 + (k * 37) % (len(tif) - 200)] + f"{k}".encode()
        out.append(Input("tiff-cut", "folder", f"tiff-cut-{k}.tif", tif, IMAGE_BAD | limit))
    return out


def garbage_inputs(reps: int, max_bytes: int, nxt: Counter) -> list[Input]:
    out = []
    unreadable = frozenset({"unreadable"})
    for i in range(reps):
        k = nxt()
        data = hostile.garbage(int(16 + (k * 997) % 4000), seed=k)
        out.append(Input("garbage", "folder", f"garbage-{k}.dcm", data, unreadable))
        k = nxt()
        text = f"PatientName={SENTINELS[0]} ID={SENTINELS[1]} {SENTINELS[6]}{k}\n" * (1 + i)
        out.append(Input("text", "folder", f"notes-{k}.txt", text.encode(), unreadable))
        k = nxt()
        dicm = b"\0" * 128 + b"DICM" + hostile.garbage(300, seed=k)[8:]
        out.append(Input("dicm-garbage", "folder", f"dicm-{k}.dcm", dicm, unreadable))
        k = nxt()
        magic = (b"PK\x03\x04", b"%PDF-1.4", b"\xff\xd8\xff\xe0", b"GIF89a")[i % 4]
        out.append(Input("other-format", "folder", f"other-{k}.dcm", magic + bytes(k), unreadable))
    out.append(Input("empty", "folder", "empty.dcm", b"", unreadable))
    for j in range(3):
        k = nxt()
        big = hostile.garbage(max_bytes + 1 + j * 4096, seed=k)
        out.append(Input("oversize", "folder", f"big-{k}.dcm", big, frozenset({"oversize"})))
    k = nxt()
    padded = hostile_ct(99, k) + bytes(max_bytes)
    out.append(Input("oversize", "folder", f"big-{k}.dcm", padded, frozenset({"oversize"})))
    return out


def bomb_inputs(via: str, cls: int, reps: int, inflated: int, nxt: Counter) -> list[Input]:
    out = []
    for _ in range(reps):
        k = nxt()
        data = deflate_bomb(cls, k, inflated)
        expect = frozenset({"decode-limit"}) | ({REFUSED, CTX_REJECTED} if via == "scp" else set())
        out.append(Input("deflate-bomb", via, f"deflate-{k}.dcm", data, expect, (cls, k)))
        k = nxt()
        rle = templated(("rle",), cls + 1, k, hostile.rle_bomb)
        expect = frozenset({"decode-limit"}) | ({CTX_REJECTED} if via == "scp" else set())
        out.append(Input("rle-bomb", via, f"rle-{k}.dcm", rle, expect, (cls + 1, k)))
    return out


ODD_NAMES = (
    "ünïcødé_çt.dcm",
    "名前の画像.dcm",
    "with space .dcm",
    " leading space.dcm",
    "-rf.dcm",
    "--help",
    "a" * 240 + ".dcm",
    "new\nline.dcm",
    "tab\tname.dcm",
    "semi;colon$(id)`x`.dcm",
    "noext",
    "UPPER.DCM",
    "weird.dcm.exe",
    "emoji😀.dcm",
    "back\\slash.dcm",
    "%s%n%x.dcm",
    "quote'\".dcm",
    "dots..in..name.dcm",
)
# names that are not valid UTF-8 (bytes; the file system allows them)
ODD_BYTE_NAMES = (b"bad\xff\xfename.dcm", b"latin1-\xe9t\xe9.dcm")


# -- a live service (``hxsched serve`` as a subprocess) -------------------------------------
def pipeline_dict(plan: Any, sources: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    models = []
    for inst in plan.instances:
        role = "detect" if "yolo" in inst.model else "synth"
        models.append({"name": inst.model, "role": role, "path": inst.model_path})
    d = {"schema": "hxsched.pipeline/1", "name": "fuzz", "backend": "sim", "plan": plan.path}
    d.update(models=models, sources=sources, **extra)
    return d


class LiveService:
    """``hxsched serve`` in a subprocess; every stdout and stderr line is kept (all runs)."""

    def __init__(self, pipeline: Path, out: Path, *args: str) -> None:
        self.cmd = [sys.executable, "-m", "hxsched", "serve", str(pipeline), "--output", str(out)]
        self.cmd += ["--port", "0", "--backend", "sim", "--log-level", "INFO", *args]
        self.out = out
        self.lines: list[str] = []  # stderr
        self.stdout: list[str] = []
        self.proc: Any = None
        self.scp_port: int | None = None
        self.http_port: int | None = None
        self.starts = 0

    def spawn(self) -> None:
        import subprocess
        import threading

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.starts += 1
        self.scp_port = self.http_port = None
        for stream, sink in ((self.proc.stderr, self.lines), (self.proc.stdout, self.stdout)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream: Any, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            sink.append(line)
            if '"service ready"' in line:
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                self.scp_port, self.http_port = doc.get("scp_port"), doc.get("http_port")

    def start(self, timeout_s: float = 90.0) -> None:
        """Spawn and wait for the ready line."""
        self.spawn()
        t0 = time.monotonic()
        while self.http_port is None:
            if self.proc.poll() is not None:
                tail = "\n".join(self.lines[-15:])
                raise AssertionError(f"the service exited ({self.proc.returncode}):\n{tail}")
            if time.monotonic() - t0 > timeout_s:
                raise AssertionError("the service did not get ready in time")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout_s: float = 10.0) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            url = f"http://127.0.0.1:{self.http_port}{path}"
            with urllib.request.urlopen(url, timeout=timeout_s) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except OSError as exc:
            return 0, type(exc).__name__

    def kill9(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def term(self, timeout_s: float = 60.0) -> int:
        import signal

        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a drain that hangs: kill, report it as -9
            self.kill9()
            return -9


def journal_rows(out: Path) -> list[dict[str, Any]]:
    """Every journal row (a read-only look, as an operator would)."""
    import sqlite3

    db = out / "journal" / "journal.sqlite3"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM items")]
    except sqlite3.Error:
        return []
    finally:
        con.close()


def journal_counter(out: Path, name: str) -> int:
    import sqlite3

    db = out / "journal" / "journal.sqlite3"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def outputs(out: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """item id -> studies of its Secondary Captures; item id -> its detection files."""
    import pydicom

    sc: dict[str, list[str]] = {}
    for p in sorted((out / "dicom").rglob("*.dcm")) if (out / "dicom").exists() else []:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        sc.setdefault(p.stem, []).append(str(ds.StudyInstanceUID))
    det: dict[str, int] = {}
    for p in (out / "detections").glob("*.json") if (out / "detections").exists() else []:
        item = p.name.split(".", 1)[0]
        det[item] = det.get(item, 0) + 1
    return sc, det


def temp_files(out: Path) -> list[str]:
    return [
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.name.endswith(".tmp") or p.name.startswith(".tmp-") or ".tmp." in p.name
    ]


def h1_cases(cls0: int, nxt: Counter) -> list[Input]:
    """hostile.CASES once each, with our UIDs (its reasons assume the default limits)."""
    out = []
    for j, case in enumerate(hostile.CASES):
        if case.name == "deflate-bomb":  # 300 MiB inflated: ours are smaller (bomb_inputs)
            continue
        k = nxt()
        dicom = case.suffix == ".dcm" and case.name != "garbage"
        data = templated(("case", case.name), cls0 + j, k, case.make) if dicom else case.make()
        key = (cls0 + j, k) if dicom else None
        name = f"h1-{case.name}-{k}{case.suffix}"
        out.append(Input(f"h1-{case.name}", "folder", name, data, frozenset({case.reason}), key))
    return out
