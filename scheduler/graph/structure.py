"""Structural hash: the same architecture with other weights (or other names) hashes the same."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from hxsched.scheduler.graph.graph import Graph

# Integer constants up to this many elements define architecture (reshape shapes, split sizes,
# slice bounds); float constants and larger tensors are weights, hashed by shape and type only.
_ARCH_CONST_ELEMS = 64


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return [_attr(v) for v in value]
    if isinstance(value, float | int | str) or value is None:
        return value
    return type(value).__name__  # tensors/graphs in attributes: their kind only


def structural_hash(graph: Graph) -> str:
    """``sha256:<hex>`` of op types, attributes, wiring, shapes and architecture constants."""
    ids: dict[str, str] = {}
    for i, name in enumerate(graph.inputs):
        ids[name] = f"in{i}"
    for i, node in enumerate(graph.nodes):
        for j, out in enumerate(node.outputs):
            if out:
                ids[out] = f"n{i}.{j}"
    records = []
    for node in graph.nodes:
        inputs: list[str | dict[str, Any]] = []
        for name in node.inputs:
            if not name:
                inputs.append("-")
                continue
            t = graph.tensors[name]
            if t.const:
                desc: dict[str, Any] = {"const": list(t.shape or ()), "type": t.elem_type}
                if t.elem_type in (6, 7) and (t.numel or 0) <= _ARCH_CONST_ELEMS:
                    value = t.value
                    if value is not None:
                        desc["value"] = np.asarray(value).ravel().tolist()
                inputs.append(desc)
            else:
                inputs.append(ids.get(name, "?"))
        shapes = [list(graph.tensors[o].shape or ()) for o in node.outputs if o]
        records.append(
            {
                "op": f"{node.domain}::{node.op_type}",
                "attrs": {k: _attr(v) for k, v in sorted(node.attrs.items())},
                "in": inputs,
                "out": shapes,
            }
        )
    outputs = [ids.get(o, "const") for o in graph.outputs]
    shapes_in = [list(graph.tensors[i].shape or ()) for i in graph.inputs]
    blob = json.dumps({"in": shapes_in, "nodes": records, "out": outputs}, sort_keys=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
