"""A small ONNX writer that names nodes and tensors the way ``torch.onnx.export`` does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 17


def param_prefix(scope: str) -> str:
    """The state-dict prefix of the module at ONNX scope ``scope``.

    torch names a container's children ``<container>.<i>`` inside the container's own scope, so
    ``/model.22/cv2.0/cv2.0.0/conv`` is module ``model.22.cv2.0.0.conv`` and
    ``/model/model/model.1`` is ``model.model.1``.
    """
    parts = [p for p in scope.split("/") if p]
    keep = [
        p
        for i, p in enumerate(parts)
        if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))
    ]
    return ".".join(keep)


class ModelBuilder:
    """Accumulates nodes and initializers; ``scope`` paths give torch-style names.

    A node made in scope ``/model.2/cv1/conv`` with op ``Conv`` is named ``/model.2/cv1/conv/Conv``
    and writes ``/model.2/cv1/conv/Conv_output_0``; a second Conv in the same scope gets ``Conv_1``,
    as the exporter does.
    """

    def __init__(self, graph_name: str, *, seed: int, opset: int = OPSET) -> None:
        self.graph_name = graph_name
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    # -- naming ------------------------------------------------------------------------------
    def _node_name(self, scope: str, op: str) -> str:
        base = f"{scope}/{op}" if scope else f"/{op}"
        k = self._used.get(base, 0)
        self._used[base] = k + 1
        return base if k == 0 else f"{base}_{k}"

    # -- graph pieces --------------------------------------------------------------------------
    def input(self, name: str, shape: Sequence[int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape))
        self.shapes[name] = tuple(shape)
        return name

    def output(self, tensor: str, name: str, shape: Sequence[int]) -> None:
        """Expose ``tensor`` as graph output ``name`` by renaming its producer's output."""
        for node in self.nodes:
            for i, out in enumerate(node.output):
                if out == tensor:
                    node.output[i] = name
            for i, inp in enumerate(node.input):
                if inp == tensor:
                    node.input[i] = name
        self.outputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape))

    def weight(self, name: str, value: np.ndarray) -> str:
        self.initializers[name] = np.ascontiguousarray(value)
        return name

    def const(self, scope: str, value: Any, dtype: Any = np.int64) -> str:
        """A constant the exporter would emit as a Constant node (shapes, scales, indices)."""
        arr = np.asarray(value, dtype=dtype)
        name = self._node_name(scope, "Constant")
        out = f"{name}_output_0"
        self.nodes.append(
            helper.make_node(
                "Constant", [], [out], name=name, value=numpy_helper.from_array(arr, out)
            )
        )
        return out

    def unscoped_const(self, value: Any, consumer: str, dtype: Any = np.int64) -> str:
        """A constant torch emits outside any module scope (e.g. Split sizes): ``Constant_<k>``
        writing ``onnx::<Consumer>_<k>`` (torch's own numbering differs; only the form matters)."""
        k = self._used.get("#unscoped", 0)
        self._used["#unscoped"] = k + 1
        name = f"Constant_{k}"
        out = f"onnx::{consumer}_{k}"
        arr = np.asarray(value, dtype=dtype)
        self.nodes.append(
            helper.make_node(
                "Constant", [], [out], name=name, value=numpy_helper.from_array(arr, out)
            )
        )
        return out

    def op(self, scope: str, op: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any):
        name = self._node_name(scope, op)
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    # -- weights -------------------------------------------------------------------------------
    def he(self, shape: Sequence[int], fan_in: int) -> np.ndarray:
        std = np.sqrt(2.0 / max(fan_in, 1))
        return (self.rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    def build(self, doc: str = "") -> onnx.ModelProto:
        inits = [numpy_helper.from_array(v, k) for k, v in self.initializers.items()]
        graph = helper.make_graph(self.nodes, self.graph_name, self.inputs, self.outputs, inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset)],
            producer_name="hxsched.zoo",
        )
        model.ir_version = 8
        if doc:
            model.doc_string = doc
        return model


def count_parameters(model: onnx.ModelProto) -> int:
    """Trainable parameters as PyTorch counts them: float initializers read by Conv, ConvTranspose,
    Gemm/MatMul and BatchNormalization's scale and bias (running statistics are buffers)."""
    buffers: set[str] = set()
    params: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            params.update(node.input[1:3])
            buffers.update(node.input[3:5])
        elif node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            params.update(i for i in node.input[1:] if i)
    total = 0
    for init in model.graph.initializer:
        if init.name in params and init.name not in buffers and init.data_type == 1:
            total += int(np.prod(init.dims, dtype=np.int64))
    return total
