"""Weights that keep activations alive: normalise each layer on sample inputs, as BatchNorm would.

With naive random weights a deep network's output barely depends on its input, and then a test
that compares two executions cannot fail. Here the network is run node by node on a few seeded
inputs; at every BatchNormalization the running statistics are set from the data that really
reaches it, and at every fused Conv the weight and bias are rescaled so that each output channel
has a chosen mean and spread. The result behaves like a trained network's activations do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hxsched._compat import require
from hxsched.errors import InternalError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchNormStats:
    """Set a BatchNormalization's running mean/var from its input; gamma/beta drawn at random."""

    gamma: tuple[float, float] = (0.7, 1.3)
    beta_std: float = 0.2


@dataclass(frozen=True)
class AffineOutput:
    """Rescale a Conv/ConvTranspose so each output channel has mean ~ N(mean, mean_std), given std."""

    std: float | tuple[float, float] = 1.0
    mean: float = 0.0
    mean_std: float = 0.0


Target = BatchNormStats | AffineOutput


def _run_node(node: onnx.NodeProto, feeds: Mapping[str, np.ndarray], inits, opset: int):
    require("onnxruntime", extra="ort")
    import onnxruntime as ort

    inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape)
        )
        for name, arr in feeds.items()
    ]
    outs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    initializers = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    model = helper.make_model(
        helper.make_graph([node], "step", inputs, outs, initializers),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return sess.run(None, dict(feeds))


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    return x64.mean(axis=axes), x64.std(axis=axes)


def calibrate(
    model: onnx.ModelProto,
    targets: Mapping[str, Target],
    sample_inputs: Mapping[str, np.ndarray],
    rng: np.random.Generator,
) -> onnx.ModelProto:
    """Return ``model`` with the weights of ``targets`` (node name -> policy) calibrated.

    ``sample_inputs`` are batched along axis 0 (the model is run node by node, so its own static
    batch size does not matter up to the last target node).
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    weights = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    remaining = set(targets)
    last_use: dict[str, int] = {}
    for idx, node in enumerate(model.graph.node):
        for inp in node.input:
            last_use[inp] = idx
    acts: dict[str, np.ndarray] = dict(sample_inputs)
    for idx, node in enumerate(model.graph.node):
        if not remaining:
            break
        feeds = {i: acts[i] for i in node.input if i and i in acts}
        inits = {i: weights[i] for i in node.input if i and i in weights}
        target = targets.get(node.name)
        if isinstance(target, BatchNormStats):
            x = feeds[node.input[0]]
            mean, std = _channel_stats(x)
            c = int(mean.shape[0])
            scale, bias, rmean, rvar = node.input[1:5]
            gamma_lo, gamma_hi = target.gamma
            weights[scale] = rng.uniform(gamma_lo, gamma_hi, size=c).astype(np.float32)
            weights[bias] = (rng.standard_normal(c) * target.beta_std).astype(np.float32)
            weights[rmean] = mean.astype(np.float32)
            weights[rvar] = np.maximum(std**2, 1e-4).astype(np.float32)
            inits = {i: weights[i] for i in node.input if i and i in weights}
        result = _run_node(node, feeds, inits, opset)
        if isinstance(target, AffineOutput):
            out = result[0]
            mean, std = _channel_stats(out)
            c = int(mean.shape[0])
            if isinstance(target.std, tuple):
                std_lo, std_hi = target.std
                want_std = rng.uniform(std_lo, std_hi, size=c)
            else:
                want_std = np.full(c, target.std)
            want_mean = target.mean + rng.standard_normal(c) * target.mean_std
            k = want_std / np.maximum(std, 1e-6)
            w_name = node.input[1]
            w = weights[w_name].astype(np.float64)
            axis = 1 if node.op_type == "ConvTranspose" else 0
            shape = [1] * w.ndim
            shape[axis] = c
            weights[w_name] = (w * k.reshape(shape)).astype(np.float32)
            b_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if b_name is not None:
                b = weights[b_name].astype(np.float64)
                weights[b_name] = ((b - mean) * k + want_mean).astype(np.float32)
            inits = {i: weights[i] for i in node.input if i and i in weights}
            result = _run_node(node, feeds, inits, opset)
        for name, value in zip(node.output, result, strict=False):
            if name:
                acts[name] = value
        for name in [n for n in acts if last_use.get(n, -1) <= idx and n not in sample_inputs]:
            del acts[name]
        if node.name in remaining:
            remaining.discard(node.name)
            log.debug("calibrated %s", node.name)
    if remaining:
        missing = ", ".join(sorted(remaining)[:3])
        raise InternalError(f"calibration targets not in the graph: {missing}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.initializer[:]
    out.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in weights.items())
    return out
