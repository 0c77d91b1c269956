"""Inputs and FP32 outputs in the JSON that ``polygraphy run --load-inputs/--load-outputs``
reads, so the same comparison runs against the real engines on the Jetson."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hxsched.files import atomic_write

# Polygraphy's JSON encoding (NVIDIA/TensorRT tools/Polygraphy/polygraphy/json/serde.py and
# comparator/struct.py): an ndarray is {"array": base64 of np.save (no pickle),
# "polygraphy_class": "ndarray"}; RunResults is {"lst": [[runner, [IterationResult...]]]} with
# each IterationResult's outputs as LazyArray {"values": ndarray}.
MARKER = "polygraphy_class"
RUNNER = "hxsched-onnxrt-fp32"


def encode_array(a: np.ndarray) -> dict[str, str]:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return {"array": base64.b64encode(buf.getvalue()).decode(), MARKER: "ndarray"}


def decode_array(d: Mapping[str, Any]) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(d["array"], validate=True)), allow_pickle=False)


def inputs_json(feeds: Sequence[Mapping[str, np.ndarray]]) -> str:
    """``--load-inputs``: a list of feed dicts, one per iteration."""
    return json.dumps([{k: encode_array(v) for k, v in f.items()} for f in feeds], indent=4)


def outputs_json(outputs: Sequence[Mapping[str, np.ndarray]], runner: str = RUNNER) -> str:
    """``--load-outputs``: RunResults with one runner and one IterationResult per input."""
    iters = [
        {
            "outputs": {k: {"values": encode_array(v), MARKER: "LazyArray"} for k, v in o.items()},
            "runtime": 0.0,
            "runner_name": runner,
            MARKER: "IterationResult",
        }
        for o in outputs
    ]
    return json.dumps({"lst": [[runner, iters]], MARKER: "RunResults"}, indent=4)


def save(
    out_dir: Path,
    stem: str,
    feeds: Sequence[Mapping[str, np.ndarray]],
    outputs: Sequence[Mapping[str, np.ndarray]],
) -> tuple[Path, Path]:
    ins, outs = out_dir / f"{stem}.inputs.json", out_dir / f"{stem}.fp32_outputs.json"
    atomic_write(ins, inputs_json(feeds).encode())
    atomic_write(outs, outputs_json(outputs).encode())
    return ins, outs


def load_inputs(path: Path) -> list[dict[str, np.ndarray]]:
    return [{k: decode_array(v) for k, v in f.items()} for f in json.loads(path.read_text())]


def load_outputs(path: Path) -> list[dict[str, np.ndarray]]:
    doc = json.loads(path.read_text())
    return [
        {k: decode_array(v["values"]) for k, v in it["outputs"].items()}
        for _, iters in doc["lst"]
        for it in iters
    ]
