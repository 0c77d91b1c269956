"""Small models for the fake's end-to-end runs, and the recorded TensorRT versions the code
claims to support."""

from __future__ import annotations

import numpy as np
from onnx import helper
from onnx_builders import graph, w

from fakes.surface import TRT_VERSIONS
from hxsched.runtime.backends.trt.engine import SUPPORTED_TRT


def supported(version: str) -> bool:
    """Whether a recorded TensorRT version is one the code claims (``SUPPORTED_TRT``)."""
    return any(version == p or version.startswith(p + ".") for p in SUPPORTED_TRT)


SUPPORTED_RECORDED = tuple(v for v in TRT_VERSIONS if supported(v))


def tiny_graph(depth: int = 3, size: int = 32):
    """``depth`` Conv+Relu (DLA-capable) then Tanh and a channel Gather (GPU only): an
    image-to-image model shaped like the synth role's ([1, 3, size, size] in, the same out)."""
    nodes, inits, prev = [], {}, "x"
    for i in range(depth):
        cout = 3 if i == depth - 1 else 8
        cin = 3 if i == 0 else 8
        inits[f"w{i}"] = w(cout, cin, 3, 3, seed=i)
        nodes.append(
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"Conv_{i}", pads=[1] * 4)
        )
        act = "Tanh" if i == depth - 1 else "Relu"
        nodes.append(helper.make_node(act, [f"c{i}"], [f"a{i}"], name=f"{act}_{i}"))
        prev = f"a{i}"
    inits["idx"] = np.array([2, 1, 0], np.int64)
    nodes.append(helper.make_node("Gather", [prev, "idx"], ["y"], name="Gather_out", axis=1))
    return graph(nodes, {"x": [1, 3, size, size]}, ["y"], inits)
