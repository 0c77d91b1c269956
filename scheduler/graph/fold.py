"""Constant folding and no-op removal, so shape arithmetic never reaches the DLA checker."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from hxsched.scheduler.graph.graph import Graph, Node

# Ops whose meaning would change if evaluated ahead of time, or that we cannot hold as tensors.
NEVER_FOLD = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "If",
        "Loop",
        "Scan",
        "SequenceConstruct",
        "SequenceAt",
        "SplitToSequence",
        "ConcatFromSequence",
        "Optional",
        "OptionalGetElement",
    }
)
# Cheap data movement that may run on large weights (e.g. a transposed MatMul weight).
CHEAP_ON_WEIGHTS = frozenset(
    {
        "Identity",
        "Transpose",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Cast",
        "Concat",
        "Slice",
        "Split",
        "Gather",
        "Neg",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "Sqrt",
        "Reciprocal",
    }
)
# Folded outputs larger than this are kept as nodes unless they are no larger than the inputs.
MAX_FOLD_BYTES = 1 << 20
MAX_REFERENCE_INPUT_BYTES = 4 << 20


def _constant_value(node: Node) -> np.ndarray | None:
    attrs = node.attrs
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    if "value_float" in attrs:
        return np.array(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], dtype=np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], dtype=np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], dtype=np.int64)
    return None  # strings and sparse constants stay as they are


def _reference_eval(graph: Graph, node: Node, feeds: dict[str, np.ndarray]) -> list[Any] | None:
    from onnx.reference import ReferenceEvaluator

    proto = helper.make_node(
        node.op_type, node.inputs, node.outputs, name=node.name, domain=node.domain or None
    )
    for key, value in node.attrs.items():
        ap = node.attr_protos.get(key)
        proto.attribute.append(ap if ap is not None else helper.make_attribute(key, value))
    inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)
        )
        for name, value in feeds.items()
    ]
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.outputs if o]
    model = helper.make_model(
        helper.make_graph([proto], "fold", inputs, outputs),
        opset_imports=[helper.make_opsetid(d, v) for d, v in graph.opset.items()],
    )
    try:
        return list(ReferenceEvaluator(model).run(None, feeds))
    except Exception:  # an op the reference cannot evaluate: leave the node in the graph
        return None


def _evaluate(graph: Graph, node: Node) -> list[np.ndarray] | None:
    op = node.op_type
    if op == "Constant":
        value = _constant_value(node)
        return None if value is None else [value]
    if op in ("Shape", "Size"):
        src = graph.tensors.get(node.inputs[0])
        if src is None or src.shape is None:
            return None
        if op == "Size":
            return [np.array(src.numel, dtype=np.int64)]
        rank = len(src.shape)
        start = int(node.attr("start", 0))
        end = node.attr("end")
        start = max(0, start + rank if start < 0 else start)
        stop = rank if end is None else int(end)
        stop = max(0, stop + rank if stop < 0 else min(stop, rank))
        return [np.array(src.shape[start:stop], dtype=np.int64)]
    live = [i for i in node.inputs if i]
    if not live or not all(graph.is_const(i) for i in live):
        return None
    if op == "Identity":
        value = graph.const_value(live[0])
        return None if value is None else [value]
    in_bytes = sum(graph.tensors[i].nbytes or 0 for i in live)
    if in_bytes > MAX_REFERENCE_INPUT_BYTES and op not in CHEAP_ON_WEIGHTS:
        return None
    limit = max(MAX_FOLD_BYTES, in_bytes)
    for out in node.outputs:
        t = graph.tensors.get(out) if out else None
        if t is not None and t.nbytes is not None and t.nbytes > limit:
            return None
    feeds: dict[str, np.ndarray] = {}
    for name in live:
        value = graph.const_value(name)
        if value is None:
            return None
        feeds[name] = np.asarray(value)
    results = _reference_eval(graph, node, feeds)
    if results is None or not all(isinstance(r, np.ndarray) for r in results):
        return None
    if sum(r.nbytes for r in results) > limit:
        return None
    return results


def fold_constants(graph: Graph) -> int:
    """Evaluate every node whose inputs are constants or static shapes; returns nodes folded."""
    folded: list[Node] = []
    for node in graph.nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type in NEVER_FOLD:
            continue
        values = _evaluate(graph, node)
        if values is None:
            continue
        real_outputs = [o for o in node.outputs if o]
        if len(values) < len(real_outputs):
            continue
        for out, value in zip(node.outputs, values, strict=False):
            if not out:
                continue
            t = graph.tensors[out]
            t.const = True
            t.set_value(np.asarray(value))
            t.elem_type = helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)
        folded.append(node)
    if folded:
        graph.remove_nodes(folded)
        graph.model_meta["folded_nodes"] = graph.model_meta.get("folded_nodes", 0) + len(folded)
    return len(folded)


def _dropout_is_identity(graph: Graph, node: Node) -> bool:
    if len(node.outputs) > 1 and node.outputs[1] and graph.consumers(node.outputs[1]):
        return False
    if len(node.inputs) > 2 and node.inputs[2]:
        training = graph.const_value(node.inputs[2])
        return training is not None and not bool(np.asarray(training).any())
    return True


def bypass_passthrough(graph: Graph) -> int:
    """Remove Identity and inference-mode Dropout on activations (TensorRT drops them too)."""
    removed = 0
    for node in list(graph.nodes):
        if node.op_type not in ("Identity", "Dropout") or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Dropout" and not _dropout_is_identity(graph, node):
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst not in graph.outputs:
            graph.remove_nodes([node])
            graph.replace_uses(dst, src)
        elif (
            src not in graph.inputs
            and src not in graph.outputs
            and graph.producer(src) is not None
            and not graph.is_const(src)
        ):
            producer = graph.producer(src)
            assert producer is not None
            graph.remove_nodes([node])
            producer.outputs = [dst if o == src else o for o in producer.outputs]
            for reader in graph.consumers(src):
                reader.inputs = [dst if i == src else i for i in reader.inputs]
            graph.tensors[dst].shape = graph.tensors[src].shape
            graph.tensors[dst].elem_type = graph.tensors[src].elem_type
            del graph.tensors[src]
            graph.reindex()
        else:
            continue
        removed += 1
    return removed
