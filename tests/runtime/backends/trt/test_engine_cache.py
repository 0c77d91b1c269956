"""The engine cache: key digests and file names, round trips, and refusing bad engines."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.backends.trt import engine_cache as ec
from hxsched.runtime.backends.trt.engine import TensorIO
from hxsched.runtime.backends.trt.engine_cache import (
    ENGINE_SCHEMA,
    EngineCache,
    EngineKey,
    io_layout_text,
    load_engine_file,
    trt_major,
)

KEY = EngineKey(
    trt_version="10.3.0",
    device_name="Orin",
    compute_capability="8.7",
    dla_core=0,
    precision="fp16",
    segment_sha256="ab" * 32,
    gpu_fallback=False,
    direct_io=True,
    io_layout="in:x=float16/chw16;out:y=float16/chw16",
)
BLOB = bytes(range(256)) * 8

# One changed value per field (every field must reach the digest).
CHANGES = {
    "trt_version": "10.3.1",
    "device_name": "Xavier",
    "compute_capability": "7.2",
    "dla_core": 1,
    "precision": "int8",
    "segment_sha256": "cd" * 32,
    "gpu_fallback": True,
    "direct_io": False,
    "io_layout": "in:x=float16/chw16;out:y=float32/linear",
    "calibration_sha256": "ef" * 32,
}


def _one_line(exc: pytest.ExceptionInfo[HxschedError]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# --- keys ----------------------------------------------------------------------------------------


def test_every_key_field_is_covered_by_the_table():
    assert set(CHANGES) == {f.name for f in dataclasses.fields(EngineKey)}


def test_digest_is_stable():
    # Pinned: a change here silently orphans every engine users have built (minutes each).
    assert KEY.digest() == "c924e6924b7c38e46e52e97a4308759f"
    assert KEY.filename() == "abababababab-dla0-fp16-c924e6924b7c.engine"
    again = EngineKey(**dataclasses.asdict(KEY))
    assert again.digest() == KEY.digest() and again.filename() == KEY.filename()
    assert len(KEY.digest()) == 32 and int(KEY.digest(), 16) >= 0


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_field_changes_digest_and_file_name(field):
    other = dataclasses.replace(KEY, **{field: CHANGES[field]})
    assert other.digest() != KEY.digest()
    assert other.filename() != KEY.filename()


def test_dla_core_and_precision_are_in_the_file_name():
    assert "-dla0-fp16-" in KEY.filename()
    assert "-dla1-" in dataclasses.replace(KEY, dla_core=1).filename()
    gpu = dataclasses.replace(KEY, dla_core=None, precision="int8")
    assert "-gpu-int8-" in gpu.filename()
    assert gpu.filename().startswith(KEY.segment_sha256[:12]) and gpu.filename().endswith(".engine")


def test_io_layout_text_is_sorted_and_stable():
    ins = {"b": TensorIO("float16", "chw16"), "a": TensorIO("float32", "linear")}
    outs = {"z": TensorIO("int8", "chw32"), "y": TensorIO("float16", "linear")}
    text = io_layout_text(ins, outs)
    assert text == "in:a=float32/linear,b=float16/chw16;out:y=float16/linear,z=int8/chw32"
    assert io_layout_text(dict(reversed(ins.items())), dict(reversed(outs.items()))) == text
    assert io_layout_text({}, {}) == "in:;out:"


@pytest.mark.parametrize(
    ("version", "major"),
    [("10.3.0", 10), ("8.6.2.3", 8), ("11", 11), ("10.0.0b6", 10), ("", 0), ("dev", 0)],
)
def test_trt_major(version, major):
    assert trt_major(version) == major


# --- cache ---------------------------------------------------------------------------------------


def test_put_get_round_trip(tmp_path):
    cache = EngineCache(tmp_path / "engines")  # created on the first put
    assert cache.get(KEY) is None
    path = cache.put(KEY, BLOB, {"segment": "m/s0", "build_s": 12.5})
    assert path == tmp_path / "engines" / KEY.filename() == cache.path_for(KEY)
    assert path.read_bytes() == BLOB
    assert cache.get(KEY) == BLOB
    meta = json.loads(Path(f"{path}.json").read_text())
    assert meta["schema"] == ENGINE_SCHEMA
    assert meta["key"] == dataclasses.asdict(KEY)
    assert meta["bytes"] == len(BLOB) and meta["segment"] == "m/s0"
    # Another key (other DLA core) is a miss, not the same file.
    assert cache.get(dataclasses.replace(KEY, dla_core=1)) is None


def test_get_absent_in_missing_root(tmp_path):
    assert EngineCache(tmp_path / "nowhere").get(KEY) is None


def test_put_overwrites_and_leaves_no_temp_files(tmp_path):
    cache = EngineCache(tmp_path)
    cache.put(KEY, b"old engine")
    cache.put(KEY, BLOB)
    assert cache.get(KEY) == BLOB
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [KEY.filename(), KEY.filename() + ".json"]


def test_failed_atomic_write_removes_its_temp_file(tmp_path, monkeypatch):
    cache = EngineCache(tmp_path)
    cache.put(KEY, BLOB)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ec.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.put(KEY, b"new engine")
    monkeypatch.undo()
    # The old engine is intact and no half-written file is left behind.
    assert cache.get(KEY) == BLOB
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY.filename(), KEY.filename() + ".json"]


def test_corrupt_engine_is_refused(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.put(KEY, BLOB)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(HxschedError, match="corrupt") as exc:
        cache.get(KEY)
    assert exc.value.path == os.fspath(path)
    assert "rebuild" in _one_line(exc)


def test_truncated_engine_is_refused(tmp_path):
    path = EngineCache(tmp_path).put(KEY, BLOB)
    path.write_bytes(BLOB[:-1])
    with pytest.raises(HxschedError, match="corrupt"):
        load_engine_file(path)


def test_engine_of_another_tensorrt_is_stale(tmp_path):
    path = EngineCache(tmp_path).put(KEY, BLOB)
    with pytest.raises(HxschedError, match="stale") as exc:
        load_engine_file(path, trt_version="10.7.0")
    text = _one_line(exc)
    assert "TensorRT 10.3.0" in text and "TensorRT 10.7.0" in text
    # The same version passes.
    assert load_engine_file(path, trt_version="10.3.0") == BLOB


def _plant(cache: EngineCache, built: EngineKey, wanted: EngineKey) -> Path:
    """An engine built for ``built`` sitting where ``wanted``'s engine belongs (a copied cache,
    a renamed file)."""
    src = cache.put(built, BLOB)
    dst = cache.path_for(wanted)
    src.rename(dst)
    Path(f"{src}.json").rename(f"{dst}.json")
    return dst


def test_sidecar_of_another_tensorrt_version_is_stale_through_get(tmp_path):
    cache = EngineCache(tmp_path)
    wanted = dataclasses.replace(KEY, trt_version="10.7.0")
    _plant(cache, KEY, wanted)
    with pytest.raises(HxschedError, match="stale") as exc:
        cache.get(wanted)
    text = _one_line(exc)
    assert "built with TensorRT 10.3.0" in text and "this is TensorRT 10.7.0" in text


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("dla_core", 1, ["dla_core 0 (want 1)"]),
        ("device_name", "Xavier", ["device_name 'Orin' (want 'Xavier')"]),
        ("compute_capability", "7.2", ["compute_capability '8.7' (want '7.2')"]),
        ("segment_sha256", "cd" * 32, ["segment_sha256"]),
    ],
)
def test_sidecar_for_another_device_or_core_is_stale(tmp_path, field, value, words):
    cache = EngineCache(tmp_path)
    wanted = dataclasses.replace(KEY, **{field: value})
    _plant(cache, KEY, wanted)
    with pytest.raises(HxschedError, match="stale engine: built for") as exc:
        cache.get(wanted)
    text = _one_line(exc)
    for word in words:
        assert word in text
    # Only the differing field is named.
    others = {f.name for f in dataclasses.fields(EngineKey)} - {field}
    assert not any(f"{name} " in text for name in others)


def test_missing_engine_file(tmp_path):
    with pytest.raises(HxschedError, match="not found") as exc:
        load_engine_file(tmp_path / "x.engine")
    assert "hxsched build" in _one_line(exc)


def test_missing_sidecar(tmp_path):
    path = EngineCache(tmp_path).put(KEY, BLOB)
    Path(f"{path}.json").unlink()
    with pytest.raises(HxschedError, match="no sidecar") as exc:
        load_engine_file(path)
    assert KEY.filename() + ".json" in _one_line(exc)


@pytest.mark.parametrize(
    "sidecar",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"a string"',
        b"{}",
        b'{"key": {"trt_version": "10.3.0"}, "sha256": "00"}',  # key fields missing
        json.dumps({"key": {**dataclasses.asdict(KEY), "extra": 1}, "sha256": "00"}).encode(),
        json.dumps({"key": dataclasses.asdict(KEY)}).encode(),  # no sha256
        json.dumps({"key": None, "sha256": "00"}).encode(),
    ],
)
def test_garbage_sidecar_is_one_line_error(tmp_path, sidecar):
    path = EngineCache(tmp_path).put(KEY, BLOB)
    Path(f"{path}.json").write_bytes(sidecar)
    with pytest.raises(HxschedError, match="unreadable") as exc:
        load_engine_file(path, expect=KEY)
    assert "rebuild" in _one_line(exc)
