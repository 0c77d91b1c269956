"""Structural hash: the same architecture with other weights, names or BatchNorm folding hashes
the same (TensorRT folds an inference BatchNorm into the Conv before it either way)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from hxsched.scheduler.graph.graph import Graph, Node

# Integer constants up to this many elements define architecture (reshape shapes, split sizes,
# slice bounds); float constants and larger tensors are weights, hashed by shape and type only.
_ARCH_CONST_ELEMS = 64
# An inference BatchNormalization right after a Conv is folded into it (a bias of its width), as
# torch.onnx's default eval-mode export and onnxoptimizer's fuse_bn_into_conv do, and as
# TensorRT's builder fuses the Scale layer it parses a BatchNormalization into with the
# convolution before it (TensorRT Developer Guide, "Layer Fusion"). A ConvTranspose's
# BatchNorm is left as it is: those exporters keep it, and a profile may place it apart.
_FOLDS_INTO = frozenset({"Conv"})


@dataclass(frozen=True)
class Canonical:
    """The canonical node order: every node's position in it (a folded BatchNorm shares its
    convolution's), and which nodes were folded away."""

    position: tuple[int, ...]
    folded: frozenset[int]

    @property
    def size(self) -> int:
        return len(self.position) - len(self.folded)


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return [_attr(v) for v in value]
    if isinstance(value, float | int | str) or value is None:
        return value
    return type(value).__name__  # tensors/graphs in attributes: their kind only


def _out_channels(graph: Graph, conv: Node) -> int | None:
    if len(conv.inputs) < 2 or not graph.is_const(conv.inputs[1]):
        return None
    shape = graph.tensors[conv.inputs[1]].shape or ()
    return int(shape[0]) if shape else None  # weight (C_out, C_in / group, k...)


def _folds(graph: Graph, prev: Node, bn: Node) -> bool:
    """Is ``bn`` an inference BatchNormalization that folds into ``prev`` (the node before it)?"""
    if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
        return False
    if prev.op_type not in _FOLDS_INTO or prev.domain not in ("", "ai.onnx"):
        return False
    if bn.attr("training_mode", 0) or len([o for o in bn.outputs if o]) != 1:
        return False
    x = bn.inputs[0] if bn.inputs else ""
    if len(prev.outputs) != 1 or prev.outputs[0] != x or x in graph.outputs:
        return False
    if len(graph.consumers(x)) != 1 or len(bn.inputs) != 5:
        return False
    stats = bn.inputs[1:]
    if not all(s and graph.is_const(s) for s in stats):
        return False
    cout = _out_channels(graph, prev)
    return cout is not None and all(graph.tensors[s].numel == cout for s in stats)


def canonical(graph: Graph) -> Canonical:
    """Fold each inference BatchNormalization into the Conv right before it."""
    position: list[int] = []
    folded: set[int] = set()
    k = -1
    for i, node in enumerate(graph.nodes):
        if i and i - 1 not in folded and _folds(graph, graph.nodes[i - 1], node):
            folded.add(i)
        else:
            k += 1
        position.append(k)
    return Canonical(tuple(position), frozenset(folded))


def _input(graph: Graph, name: str, ids: dict[str, str]) -> str | dict[str, Any]:
    if not name:
        return "-"
    t = graph.tensors[name]
    if not t.const:
        return ids.get(name, "?")
    desc: dict[str, Any] = {"const": list(t.shape or ()), "type": t.elem_type}
    if t.elem_type in (6, 7) and (t.numel or 0) <= _ARCH_CONST_ELEMS:
        value = t.value
        if value is not None:
            desc["value"] = np.asarray(value).ravel().tolist()
    return desc


def _ids(graph: Graph, canon: Canonical) -> dict[str, str]:
    ids: dict[str, str] = {name: f"in{i}" for i, name in enumerate(graph.inputs)}
    for i, node in enumerate(graph.nodes):
        for j, out in enumerate(node.outputs):
            if out:  # a folded BatchNorm's output is its convolution's
                ids[out] = f"n{canon.position[i]}.{0 if i in canon.folded else j}"
    return ids


def structural_hash(graph: Graph) -> str:
    """``sha256:<hex>`` of op types, attributes, wiring, shapes and architecture constants of the
    canonical form (BatchNorm folded: the Conv it folds into gains a bias of its width)."""
    canon = canonical(graph)
    ids = _ids(graph, canon)
    records: list[dict[str, Any]] = []
    for i, node in enumerate(graph.nodes):
        if i in canon.folded:
            conv = graph.nodes[i - 1]
            inputs = records[-1]["in"]
            if len(inputs) < 3 or inputs[2] == "-":
                w = graph.tensors[conv.inputs[1]]
                bias = {"const": [_out_channels(graph, conv)], "type": w.elem_type}
                records[-1]["in"] = [*inputs[:2], bias]
            continue
        records.append(
            {
                "op": f"{node.domain}::{node.op_type}",
                "attrs": {k: _attr(v) for k, v in sorted(node.attrs.items())},
                "in": [_input(graph, name, ids) for name in node.inputs],
                "out": [list(graph.tensors[o].shape or ()) for o in node.outputs if o],
            }
        )
    outputs = [ids.get(o, "const") for o in graph.outputs]
    shapes_in = [list(graph.tensors[i].shape or ()) for i in graph.inputs]
    blob = json.dumps({"in": shapes_in, "nodes": records, "out": outputs}, sort_keys=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
