"""Work per node: floating-point operations and bytes moved, from shapes alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hxsched.scheduler.graph.graph import Graph, Node, elem_bytes

# FLOPs per output element of element-wise ops (transcendentals cost a few).
_ELEMENTWISE_FLOPS = {
    "Relu": 1,
    "LeakyRelu": 2,
    "PRelu": 2,
    "Clip": 2,
    "Add": 1,
    "Sub": 1,
    "Mul": 1,
    "Div": 1,
    "Max": 1,
    "Min": 1,
    "Sum": 1,
    "Abs": 1,
    "Neg": 1,
    "Sigmoid": 4,
    "Tanh": 4,
    "Exp": 4,
    "Log": 4,
    "Sqrt": 2,
    "Reciprocal": 1,
    "Pow": 4,
    "Erf": 8,
    "HardSigmoid": 3,
    "HardSwish": 4,
    "Elu": 4,
    "Selu": 4,
    "Softplus": 4,
    "Mish": 8,
    "Gelu": 8,
    "BatchNormalization": 2,
    "InstanceNormalization": 4,
    "LayerNormalization": 5,
    "Softmax": 5,
    "Resize": 4,
    "Equal": 1,
    "Greater": 1,
    "Less": 1,
    "Where": 1,
    "Cast": 1,
}
# Pure data movement: no arithmetic, only bytes.
_MOVEMENT = frozenset(
    {
        "Reshape",
        "Transpose",
        "Concat",
        "Split",
        "Slice",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Gather",
        "Identity",
        "Expand",
        "Tile",
        "Pad",
        "Shape",
        "Dropout",
    }
)


@dataclass(frozen=True)
class NodeCost:
    """What one node computes and moves (bytes at the model's own precision)."""

    flops: float
    weight_bytes: int
    in_bytes: int
    out_bytes: int

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.in_bytes + self.out_bytes

    def scaled(self, element_bytes: int, model_bytes: int = 4) -> NodeCost:
        """The same node at another precision (e.g. FP16: 2 bytes per element instead of 4)."""
        if element_bytes == model_bytes:
            return self
        k = element_bytes / model_bytes
        return NodeCost(
            self.flops, int(self.weight_bytes * k), int(self.in_bytes * k), int(self.out_bytes * k)
        )


def _numel(shape: tuple[int, ...] | None) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else (1 if shape == () else 0)


def node_cost(graph: Graph, node: Node) -> NodeCost:
    """FLOPs (multiply-add = 2) and bytes of one node; unknown shapes count as zero."""
    t = graph.tensors
    outs = [t[o] for o in node.outputs if o and o in t]
    ins = [t[i] for i in node.inputs if i and i in t]
    out_elems = sum(_numel(o.shape) for o in outs)
    weight_bytes = sum(x.nbytes or 0 for x in ins if x.const)
    in_bytes = sum(x.nbytes or 0 for x in ins if not x.const)
    out_bytes = sum(x.nbytes or 0 for x in outs)
    op = node.op_type
    flops = 0.0
    if op in ("Conv", "ConvTranspose") and len(ins) > 1 and ins[1].shape:
        w = ins[1].shape
        kernel = _numel(w[2:])
        if op == "Conv":
            # each output element: C_in/group * kH * kW multiply-adds
            flops = 2.0 * out_elems * w[1] * kernel
        else:
            # each input element scatters into C_out/group * kH * kW outputs
            x_elems = _numel(ins[0].shape)
            flops = 2.0 * x_elems * w[1] * kernel
        if len(ins) > 2:
            flops += out_elems
    elif op in ("Gemm", "MatMul") and len(ins) > 1 and ins[0].shape and ins[1].shape:
        k = ins[0].shape[-1] if not (op == "Gemm" and node.attr("transA", 0)) else ins[0].shape[0]
        flops = 2.0 * out_elems * k
    elif op in ("MaxPool", "AveragePool"):
        flops = float(out_elems * _numel(tuple(node.attr("kernel_shape", [1]))))
    elif op in ("GlobalAveragePool", "GlobalMaxPool") or op.startswith("Reduce"):
        flops = float(sum(_numel(x.shape) for x in ins if not x.const))
    elif op in _ELEMENTWISE_FLOPS:
        flops = float(out_elems * _ELEMENTWISE_FLOPS[op])
    elif op in _MOVEMENT:
        flops = 0.0
    else:
        flops = float(out_elems)
    return NodeCost(flops, weight_bytes, in_bytes, out_bytes)


def model_element_bytes(graph: Graph) -> int:
    """Bytes per element of the model's activations (4 for an FP32 export)."""
    for name in graph.inputs:
        b = elem_bytes(graph.tensors[name].elem_type)
        if b:
            return b
    return 4
