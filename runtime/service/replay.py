"""``sim`` replaying real outputs: each model is run once on ONNX Runtime over a few phantom
slices, its outputs stored in the cache folder keyed by the model file's hash, then replayed."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from hxsched._compat import require
from hxsched.config import settings
from hxsched.runtime.service.imaging import window_hu
from hxsched.runtime.service.pipeline import PipelineModel
from hxsched.runtime.service.roles import role_handler

log = logging.getLogger("hxsched.service")

SAMPLES = 6  # recorded slices per model (phantoms with and without a "bleed")


def file_hash(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def recording(
    model: PipelineModel, path: str | os.PathLike[str], cache: Path | None = None
) -> Path:
    """The recorded outputs of ``model`` (the ONNX file ``path``) on SAMPLES phantom slices, as
    one .npy array [SAMPLES, ...] of its first output; recorded on ONNX Runtime if missing."""
    cache = cache or settings().cache_dir / "replay"
    target = cache / f"{file_hash(path)}-{model.role}-{model.size}-{model.window}.npy"
    if target.exists():
        return target
    require("onnxruntime", extra="ort")
    import onnxruntime as ort

    from hxsched.runtime.service.dicom_io import synthetic_phantom

    log.info(
        "recording outputs on ONNX Runtime for sim replay", extra={"fields": {"model": model.name}}
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    handler = role_handler(model.role)
    outs = []
    for k in range(SAMPLES):
        hu = synthetic_phantom(k * 7).pixels  # every third phantom has a hyperdense "bleed"
        assert model.window is not None  # every role has a default window
        x = handler.prepare(window_hu(hu, preset=model.window), model).array
        outs.append(np.asarray(sess.run(None, {name: x})[0], np.float32))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.npy")
    np.save(tmp, np.stack(outs))
    os.replace(tmp, target)
    return target


def replay_files(service: Any) -> dict[str, str]:
    """Per plan instance, its recorded outputs; {} when replay is off (sim then stands in with
    each role's passthrough, labelled so)."""
    if not service.opts.replay:
        return {}
    from hxsched.runtime.service.pipeline import model_files

    files = model_files(service.pipe, service.out / "work" / "models")
    out = {}
    for inst in service.plan.instances:
        m = service.instance_models[inst.name]
        path = (
            inst.model_path if inst.model_path and Path(inst.model_path).exists() else files[m.name]
        )
        out[inst.name] = str(recording(m, path))
    return out
