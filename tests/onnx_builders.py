"""Tiny ONNX models for tests, written with onnx.helper (no torch needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hxsched.scheduler.graph.graph import Graph
from hxsched.scheduler.graph.onnx_io import graph_from_proto


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[Any] | None],
    outputs: Sequence[str] | Mapping[str, Sequence[Any]],
    inits: Mapping[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    elem: int = onnx.TensorProto.FLOAT,
    input_types: Mapping[str, int] | None = None,
) -> onnx.ModelProto:
    """A model from nodes; outputs may be names (shape left to inference) or name -> shape."""
    input_types = dict(input_types or {})
    ins = [helper.make_tensor_value_info(n, input_types.get(n, elem), s) for n, s in inputs.items()]
    if isinstance(outputs, Mapping):
        outs = [helper.make_tensor_value_info(n, elem, s) for n, s in outputs.items()]
    else:
        outs = [helper.make_tensor_value_info(n, elem, None) for n in outputs]
    inits_p = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    model = helper.make_model(
        helper.make_graph(list(nodes), "test", ins, outs, inits_p),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = 8
    return model


def graph(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[Any] | None],
    outputs: Sequence[str],
    inits: Mapping[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    **kw: Any,
) -> Graph:
    """The normalised Graph of a small model."""
    return graph_from_proto(
        make_model(nodes, inputs, outputs, inits, opset=opset, **kw), shapes=shapes
    )


def w(*shape: int, seed: int = 0) -> np.ndarray:
    """Seeded float32 weights."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.1


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def one_op(
    op: str,
    x_shape: Sequence[int],
    consts: Mapping[str, np.ndarray] | None = None,
    *,
    const_order: Sequence[str] | None = None,
    extra_inputs: Mapping[str, Sequence[int]] | None = None,
    n_out: int = 1,
    opset: int = 17,
    input_types: Mapping[str, int] | None = None,
    **attrs: Any,
) -> Graph:
    """A graph with one ``op`` node reading ``x`` (then extra inputs, then constants in order)."""
    consts = dict(consts or {})
    extra = dict(extra_inputs or {})
    order = list(const_order) if const_order is not None else list(consts)
    node_inputs = ["x", *extra, *order]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, node_inputs, outs, name=f"the_{op.lower()}", **attrs)
    inputs = {"x": list(x_shape), **{k: list(v) for k, v in extra.items()}}
    inits = {k: v for k, v in consts.items() if k}
    return graph([node], inputs, outs, inits, opset=opset, input_types=input_types)


def from_structure_record(path: Any) -> onnx.ModelProto:
    """The model a recorded real export describes (tests/data/exports/*.structure.json: nodes,
    attributes, float initializer shapes), with zero weights."""
    import json
    from pathlib import Path

    rec = json.loads(Path(path).read_text())
    f32 = onnx.TensorProto.FLOAT
    nodes = [
        helper.make_node(n["op_type"], n["inputs"], n["outputs"], name=n["name"], **n["attrs"])
        for n in rec["nodes"]
    ]
    inits = [
        numpy_helper.from_array(np.zeros(i["shape"], np.float32), i["name"])
        for i in rec["initializers"]
    ]
    ins = [helper.make_tensor_value_info(i["name"], f32, i["shape"]) for i in rec["inputs"]]
    outs = [helper.make_tensor_value_info(i["name"], f32, i["shape"]) for i in rec["outputs"]]
    model = helper.make_model(
        helper.make_graph(nodes, "torch_jit", ins, outs, inits),
        opset_imports=[helper.make_opsetid("", rec["opset"])],
    )
    model.ir_version = 8
    return model
