"""The engine cache: one serialized TensorRT engine per (TensorRT version, device, compute
capability, DLA core, precision, build flags, segment), checked before TensorRT ever sees it."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hxsched.errors import HxschedError
from hxsched.files import atomic_write

ENGINE_SCHEMA = "hxsched.engine/1"


@dataclass(frozen=True)
class EngineKey:
    trt_version: str
    device_name: str
    compute_capability: str  # "8.7" on Orin
    dla_core: int | None
    precision: str
    segment_sha256: str
    gpu_fallback: bool = False
    direct_io: bool = False
    io_layout: str = ""  # boundary dtypes/formats, e.g. "in:x=float16/chw16;out:y=float32/linear"
    calibration_sha256: str = ""  # the INT8 calibration cache the engine was built from

    def digest(self) -> str:
        fields = asdict(self)
        if not fields["calibration_sha256"]:  # keys without one keep the digest they always had
            del fields["calibration_sha256"]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def filename(self) -> str:
        where = f"dla{self.dla_core}" if self.dla_core is not None else "gpu"
        return f"{self.segment_sha256[:12]}-{where}-{self.precision}-{self.digest()[:12]}.engine"


def io_layout_text(inputs: dict[str, Any], outputs: dict[str, Any]) -> str:
    """A stable text form of a BuildConfig's boundary layouts (part of the key)."""
    ins = ",".join(f"{k}={v.dtype}/{v.format}" for k, v in sorted(inputs.items()))
    outs = ",".join(f"{k}={v.dtype}/{v.format}" for k, v in sorted(outputs.items()))
    return f"in:{ins};out:{outs}"


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


class EngineCache:
    """Engines on disk with a JSON sidecar holding the key and the engine's sha256."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, key: EngineKey) -> Path:
        return self.root / key.filename()

    def get(self, key: EngineKey) -> bytes | None:
        """The cached engine for ``key``; None when absent. A corrupt or foreign file is an
        error that says what is wrong (it is never handed to TensorRT)."""
        path = self.path_for(key)
        if not path.exists():
            return None
        return load_engine_file(path, expect=key)

    def meta(self, key: EngineKey) -> dict[str, Any]:
        """The sidecar of a cached engine ({} when absent or unreadable)."""
        try:
            return json.loads(_meta_path(self.path_for(key)).read_text())
        except (OSError, ValueError):
            return {}

    def put(self, key: EngineKey, engine: bytes, extra: dict[str, Any] | None = None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        meta = {
            "schema": ENGINE_SCHEMA,
            "key": asdict(key),
            "sha256": hashlib.sha256(engine).hexdigest(),
            "bytes": len(engine),
            **(extra or {}),
        }
        atomic_write(path, engine)
        atomic_write(_meta_path(path), (json.dumps(meta, indent=1) + "\n").encode())
        return path


def _meta_path(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".json")


def load_engine_file(
    path: str | os.PathLike[str], *, expect: EngineKey | None = None, trt_version: str | None = None
) -> bytes:
    """Read an engine and its sidecar; refuse a missing, corrupt or stale engine with a
    one-line reason (other TensorRT version, other device, other DLA core, edited segment)."""
    path = Path(path)
    if not path.exists():
        raise HxschedError("engine file not found: build it with hxsched build", path=path)
    meta_file = _meta_path(path)
    try:
        meta = json.loads(meta_file.read_text())
        key = EngineKey(**meta["key"])
        want_sha = meta["sha256"]
    except FileNotFoundError:
        raise HxschedError(
            f"no sidecar {meta_file.name}: not an engine hxsched built; rebuild with hxsched build",
            path=path,
        ) from None
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise HxschedError(
            f"engine sidecar {meta_file.name} is unreadable ({exc}); rebuild", path=path
        ) from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HxschedError(f"cannot read the engine: {exc.strerror}", path=path) from None
    if hashlib.sha256(data).hexdigest() != want_sha:
        raise HxschedError(
            "engine file is corrupt (checksum differs from when it was built); "
            "delete it and rebuild",
            path=path,
        )
    version = trt_version or (expect.trt_version if expect else None)
    if version and key.trt_version != version:
        raise HxschedError(
            f"stale engine: built with TensorRT {key.trt_version}, this is "
            f"TensorRT {version}; rebuild with hxsched build",
            path=path,
        )
    if expect is not None and key != expect:
        diffs = [
            f"{k} {v!r} (want {getattr(expect, k)!r})"
            for k, v in asdict(key).items()
            if getattr(expect, k) != v
        ]
        raise HxschedError("stale engine: built for " + ", ".join(diffs) + "; rebuild", path=path)
    return data
