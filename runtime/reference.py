"""Whole-model reference runs on ONNX Runtime (CPU), used to prove rewrites and plans exact."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hxsched._compat import require
from hxsched.errors import HxschedError, ModelError
from hxsched.scheduler.graph.graph import Graph, elem_name
from hxsched.scheduler.graph.onnx_io import EXTERNAL_DATA_THRESHOLD, save_model, to_model_proto

_NP_TYPES = {1: np.float32, 10: np.float16, 11: np.float64, 6: np.int32, 7: np.int64, 9: np.bool_}


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input: standard normal floats, small non-negative ints."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        dtype = _NP_TYPES.get(t.elem_type)
        if dtype is None or t.shape is None:
            raise HxschedError(
                f"cannot make a test input for {name!r} ({elem_name(t.elem_type)})",
                path=graph.path,
            )
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(t.shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[name] = rng.integers(0, 2, t.shape).astype(np.bool_)
        else:
            feeds[name] = rng.integers(0, 4, t.shape).astype(dtype)
    return feeds


class OrtModel:
    """An ONNX Runtime CPU session for a Graph (large models go through a temporary file)."""

    def __init__(self, graph: Graph, *, threads: int = 0) -> None:
        require("onnxruntime", extra="ort")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        weight_bytes = sum(t.nbytes or 0 for t in graph.tensors.values() if t.const)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        try:
            if weight_bytes > EXTERNAL_DATA_THRESHOLD:
                self._tmp = tempfile.TemporaryDirectory(prefix="hxsched-ort-")
                path = save_model(graph, os.path.join(self._tmp.name, "model.onnx"))
                self.session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
            else:
                blob = to_model_proto(graph).SerializeToString()
                self.session = ort.InferenceSession(
                    blob, options, providers=["CPUExecutionProvider"]
                )
        except HxschedError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ModelError(
                f"ONNX Runtime cannot run this model: {detail}", path=graph.path
            ) from None
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(None, dict(feeds))
        except Exception as exc:  # ONNX Runtime's own errors: report, don't crash
            detail = " ".join(str(exc).split())[:300]
            raise HxschedError(f"ONNX Runtime failed to run the model: {detail}") from None
        return dict(zip(self.outputs, values, strict=True))

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@dataclass(frozen=True)
class Comparison:
    max_abs_diff: dict[str, float]
    tolerance: float
    samples: int
    seed: int

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)

    @property
    def passed(self) -> bool:
        return self.worst <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "worst": self.worst,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "samples": self.samples,
            "seed": self.seed,
            "backend": "onnxruntime CPUExecutionProvider, FP32 (measured on this machine)",
        }


def compare_graphs(
    reference: Graph,
    candidate: Graph,
    *,
    samples: int = 2,
    seed: int = 0,
    tolerance: float = 1e-4,
) -> Comparison:
    """Run both graphs on the same seeded inputs; max |difference| per output over all samples."""
    ref = OrtModel(reference)
    cand = OrtModel(candidate)
    worst: dict[str, float] = {}
    try:
        for k in range(samples):
            feeds = random_inputs(reference, seed + k)
            a = ref.run(feeds)
            b = cand.run({n: feeds[n] for n in candidate.inputs})
            for name, value in a.items():
                if name not in b:
                    raise HxschedError(f"rewritten model lost output {name!r}")
                diff = float(np.max(np.abs(value.astype(np.float64) - b[name].astype(np.float64))))
                worst[name] = max(worst.get(name, 0.0), diff)
    finally:
        ref.close()
        cand.close()
    return Comparison(worst, tolerance, samples, seed)
