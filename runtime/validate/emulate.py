"""FP16 and INT8 emulation of a TensorRT engine in an FP32 graph: BatchNorm folded into the
convolution, weights rounded (FP16) or fake-quantized per channel (INT8), and a round trip
through the low precision on every tensor that crosses a TensorRT fusion boundary."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hxsched.scheduler.cost.groups import breaks_fusion
from hxsched.scheduler.graph.graph import Graph, Node, Tensor

FLOAT, FLOAT16, INT8 = 1, 10, 3  # ONNX TensorProto element types
# Ops whose weight (input 1) TensorRT quantizes per output channel in INT8 (explicit
# quantization rules, "Working with Quantized Types", TensorRT developer guide), and its axis.
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}
# Layers that read INT8: a stored tensor is INT8 only when every reader is one of them; other
# tensors stay FP16, as TensorRT picks INT8 per layer only where an INT8 kernel exists and keeps
# network outputs in higher precision (implicit quantization, "Working with Quantized Types").
INT8_READERS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "Concat", "Resize"}
)


class Mode(str, enum.Enum):
    """What a segment is emulated in."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Emulated:
    """An emulation graph and the tensors whose storage precision it models."""

    graph: Graph
    mode: Mode
    boundaries: tuple[str, ...]
    folded_bn: int
    quantized: tuple[str, ...] = ()  # tensors with an INT8 scale (others stay FP16)


def fold_batchnorm(graph: Graph) -> int:
    """Fold every BatchNormalization that reads a Conv/ConvTranspose output (and nothing else
    reads it) into the convolution's weights and bias, as TensorRT's builder does."""
    folded = 0
    for bn in [n for n in graph.nodes if n.op_type == "BatchNormalization"]:
        conv = graph.producer(bn.inputs[0])
        if conv is None or conv.op_type not in ("Conv", "ConvTranspose"):
            continue
        if len(graph.consumers(bn.inputs[0])) != 1 or bn.inputs[0] in graph.outputs:
            continue
        if conv.op_type == "ConvTranspose" and int(conv.attr("group", 1)) != 1:
            continue
        vals = [graph.const_value(t) for t in bn.inputs[1:5]]
        w = graph.const_value(conv.inputs[1])
        if w is None or any(v is None for v in vals):
            continue
        gamma, beta, mean, var = (np.asarray(v, np.float64) for v in vals)
        s = gamma / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
        axis = 0 if conv.op_type == "Conv" else 1
        shape = [1] * w.ndim
        shape[axis] = -1
        b = graph.const_value(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
        b0 = np.zeros(s.shape) if b is None else np.asarray(b, np.float64)
        _set_const(graph, conv, 1, (w * s.reshape(shape)).astype(np.float32), "folded_w")
        _set_const(graph, conv, 2, ((b0 - mean) * s + beta).astype(np.float32), "folded_b")
        conv.outputs = [bn.outputs[0]]
        graph.remove_nodes([bn])
        folded += 1
    return folded


def _set_const(graph: Graph, node: Node, slot: int, value: np.ndarray, tag: str) -> None:
    name = graph.unique_name(f"{node.name}/{tag}")
    graph.tensors[name] = Tensor(name, FLOAT, tuple(value.shape), True, value)
    while len(node.inputs) <= slot:
        node.inputs.append("")
    node.inputs[slot] = name


def fusion_groups(graph: Graph) -> list[int]:
    """Per node, the TensorRT fused layer it belongs to: a node joins its predecessor's layer
    when the layer-group rules say a cut there would break a fusion (activation, BatchNorm,
    residual Add fused into the layer)."""
    gid = [0] * len(graph.nodes)
    for i in range(1, len(graph.nodes)):
        gid[i] = gid[i - 1] if breaks_fusion(graph, i - 1) else gid[i - 1] + 1
    return gid


def boundary_tensors(graph: Graph) -> dict[str, set[int]]:
    """Float activations stored between fused layers: name -> indices of the nodes that read
    the stored value (graph inputs and outputs are stored too; readers inside the producer's
    fused layer read the unrounded value)."""
    gid = fusion_groups(graph)
    index = {id(n): k for k, n in enumerate(graph.nodes)}
    out: dict[str, set[int]] = {}
    for name in graph.inputs:
        if graph.tensors[name].elem_type == FLOAT:
            out[name] = {index[id(c)] for c in graph.consumers(name)}
    for k, node in enumerate(graph.nodes):
        for t in node.outputs:
            if not t or graph.tensors.get(t) is None or graph.tensors[t].elem_type != FLOAT:
                continue
            readers = {index[id(c)] for c in graph.consumers(t) if gid[index[id(c)]] != gid[k]}
            if readers or t in graph.outputs:
                out[t] = readers
    return out


def _fp16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float32)


def per_channel_fake_quant(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel INT8 (scale = max|w| / 127 per output channel): the fake-quantized
    weights and the scales."""
    red = tuple(d for d in range(w.ndim) if d != axis)
    amax = np.max(np.abs(w), axis=red) if red else np.abs(w)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127)
    return (q * scale.reshape(shape)).astype(np.float32), scale


def _weight_axis(graph: Graph, name: str) -> int | None:
    """The output-channel axis if ``name`` is a weight TensorRT quantizes per channel."""
    for c in graph.consumers(name):
        axis = _WEIGHT_AXIS.get(c.op_type)
        if axis is not None and len(c.inputs) > 1 and c.inputs[1] == name:
            if c.op_type == "Gemm" and int(c.attr("transB", 0)):
                axis = 0
            elif c.op_type == "Gemm":
                axis = 1
            return axis
    return None


def _round_weights(graph: Graph, mode: Mode) -> None:
    for t in list(graph.tensors.values()):
        if not t.const or t.elem_type != FLOAT or t.value is None:
            continue
        v = np.asarray(t.value, np.float32)
        axis = _weight_axis(graph, t.name) if mode is Mode.INT8 else None
        new = per_channel_fake_quant(v, axis)[0] if axis is not None and v.ndim > 1 else _fp16(v)
        graph.tensors[t.name] = Tensor(t.name, FLOAT, tuple(v.shape), True, new)


def _insert_round_trip(
    graph: Graph, name: str, readers: set[int], scale: float | None, producer: int | None
) -> list[tuple[int, Node]]:
    """Nodes that store ``name`` in FP16 (Cast pair) or INT8 (Quantize/Dequantize); the
    readers outside the producer's fused layer are pointed at the stored value."""
    stored = graph.unique_name(f"{name}/stored")
    t = graph.tensors[name]
    if scale is None:
        mid = graph.unique_name(f"{name}/fp16")
        a = Node(f"{name}/to_fp16", "Cast", [name], [mid], {"to": FLOAT16})
        b = Node(f"{name}/to_fp32", "Cast", [mid], [stored], {"to": FLOAT})
        graph.tensors[mid] = Tensor(mid, FLOAT16, t.shape)
    else:
        mid = graph.unique_name(f"{name}/int8")
        s, z = graph.unique_name(f"{name}/scale"), graph.unique_name(f"{name}/zero")
        graph.tensors[s] = Tensor(s, FLOAT, (), True, np.array(scale, np.float32))
        graph.tensors[z] = Tensor(z, INT8, (), True, np.array(0, np.int8))
        a = Node(f"{name}/quantize", "QuantizeLinear", [name, s, z], [mid])
        b = Node(f"{name}/dequantize", "DequantizeLinear", [mid, s, z], [stored])
        graph.tensors[mid] = Tensor(mid, INT8, t.shape)
    graph.tensors[stored] = Tensor(stored, FLOAT, t.shape)
    for k in readers:
        node = graph.nodes[k]
        node.inputs = [stored if i == name else i for i in node.inputs]
    if name in graph.outputs:  # the graph output is the stored value, under its own name
        pre = graph.unique_name(f"{name}/fp32")
        graph.tensors[pre] = Tensor(pre, FLOAT, t.shape)
        if producer is not None:
            prod = graph.nodes[producer]
            prod.outputs = [pre if o == name else o for o in prod.outputs]
            for c in graph.nodes:
                if c is not prod and c is not a:
                    c.inputs = [pre if i == name else i for i in c.inputs]
        a.inputs[0] = pre
        b.outputs = [name]
        del graph.tensors[stored]
        for k in readers:
            node = graph.nodes[k]
            node.inputs = [name if i == stored else i for i in node.inputs]
    where = -1 if producer is None else producer
    return [(where, a), (where, b)]


def _reads_int8(g: Graph, name: str, readers: set[int]) -> bool:
    if name in g.outputs or not readers:
        return False
    return all(g.nodes[k].op_type in INT8_READERS for k in readers)


def emulate(graph: Graph, mode: Mode, scales: Mapping[str, float] | None = None) -> Emulated:
    """The emulation of ``graph`` (not modified) in ``mode``. INT8: ``scales`` (tensor ->
    amax / 127) for the stored activations that INT8 layers read; any other stored tensor, and
    one without a scale, is FP16, as TensorRT runs a layer without INT8 scales or kernel in
    FP16 when both are enabled."""
    g = graph.copy()
    if mode is Mode.FP32:
        return Emulated(g, mode, (), 0)
    folded = fold_batchnorm(g)
    _round_weights(g, mode)
    bounds = boundary_tensors(g)
    producers = {o: k for k, n in enumerate(g.nodes) for o in n.outputs if o}
    inserts: list[tuple[int, Node]] = []
    quantized = []
    for name, readers in bounds.items():
        int8 = mode is Mode.INT8 and _reads_int8(g, name, readers)
        scale = (scales or {}).get(name) if int8 else None
        if scale is not None and scale <= 0:
            scale = None
        if scale is not None:
            quantized.append(name)
        inserts += _insert_round_trip(g, name, readers, scale, producers.get(name))
    after: dict[int, list[Node]] = {}
    for k, node in inserts:
        after.setdefault(k, []).append(node)
    nodes = list(after.get(-1, []))
    for k, node in enumerate(g.nodes):
        nodes.append(node)
        nodes.extend(after.get(k, []))
    g.nodes = nodes
    g.reindex()
    if mode is Mode.INT8 and g.opset.get("", 0) < 13:
        g.opset[""] = 13  # QuantizeLinear with a scalar scale: opset 10+, kept plain
    return Emulated(g, mode, tuple(bounds), folded, tuple(quantized))


def insert_qdq(g: Graph, scales: Mapping[str, float]) -> Graph:
    """Q/DQ on every activation of ``g`` with a positive scale (all its readers), per-channel
    INT8 weights with a DequantizeLinear (``g`` is modified and returned)."""
    producers = {o: k for k, n in enumerate(g.nodes) for o in n.outputs if o}
    index = {id(n): k for k, n in enumerate(g.nodes)}
    inserts: list[tuple[int, Node]] = []
    for name, scale in scales.items():
        if scale <= 0 or name not in g.tensors or g.tensors[name].const:
            continue
        readers = {index[id(c)] for c in g.consumers(name)}
        inserts += _insert_round_trip(g, name, readers, scale, producers.get(name))
    for t in list(g.tensors.values()):
        axis = _weight_axis(g, t.name) if t.const and t.elem_type == FLOAT else None
        if axis is None or t.value is None or np.ndim(t.value) < 2:
            continue
        w = np.asarray(t.value, np.float32)
        _, s = per_channel_fake_quant(w, axis)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / s.reshape(shape)), -127, 127).astype(np.int8)
        qn, sn, zn = (g.unique_name(f"{t.name}/{x}") for x in ("int8", "scale", "zero"))
        g.tensors[qn] = Tensor(qn, INT8, q.shape, True, q)
        g.tensors[sn] = Tensor(sn, FLOAT, s.shape, True, s)
        g.tensors[zn] = Tensor(zn, INT8, s.shape, True, np.zeros(s.shape, np.int8))
        dq = Node(
            f"{t.name}/dequantize", "DequantizeLinear", [qn, sn, zn], [t.name], {"axis": axis}
        )
        g.tensors[t.name] = Tensor(t.name, FLOAT, w.shape)
        inserts.append((-1, dq))
    after: dict[int, list[Node]] = {}
    for k, node in inserts:
        after.setdefault(k, []).append(node)
    nodes = list(after.get(-1, []))
    for k, node in enumerate(g.nodes):
        nodes.append(node)
        nodes.extend(after.get(k, []))
    g.nodes = nodes
    g.reindex()
    return g
