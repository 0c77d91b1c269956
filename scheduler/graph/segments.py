"""Cutting a model into segments: a contiguous run of nodes as a standalone graph.

A segment's inputs are the activations it reads that come from before it (or the model's
inputs); its outputs are what later segments read and the model outputs it produces. Chained
in order, the segments compute exactly what the whole model computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hxsched.errors import HxschedError
from hxsched.scheduler.graph.graph import Graph, Tensor


@dataclass(frozen=True)
class SegmentIO:
    first: int  # index of the first node in the model's topological order
    last: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def segment_io(graph: Graph, first: int, last: int) -> SegmentIO:
    """Which tensors cross into and out of nodes ``first..last`` (inclusive)."""
    n = len(graph.nodes)
    if not 0 <= first <= last < n:
        raise HxschedError(
            f"segment {first}..{last} is outside the model's {n} nodes", path=graph.path
        )
    inside = graph.nodes[first : last + 1]
    produced = {o for node in inside for o in node.outputs if o}
    later = {i for node in graph.nodes[last + 1 :] for i in node.inputs if i}
    inputs: list[str] = []
    for node in inside:
        for name in node.inputs:
            if name and name not in produced and not graph.is_const(name) and name not in inputs:
                inputs.append(name)
    outputs: list[str] = []
    for node in inside:
        for name in node.outputs:
            if name and (name in later or name in graph.outputs) and name not in outputs:
                outputs.append(name)
    return SegmentIO(first, last, tuple(inputs), tuple(outputs))


def extract_segment(graph: Graph, first: int, last: int, *, name: str | None = None) -> Graph:
    """Nodes ``first..last`` of ``graph`` as a standalone Graph (constants shared, not copied)."""
    io = segment_io(graph, first, last)
    nodes = [n.copy() for n in graph.nodes[first : last + 1]]
    used = {i for n in nodes for i in n.inputs if i} | {o for n in nodes for o in n.outputs if o}
    tensors: dict[str, Tensor] = {}
    for key in used | set(io.inputs) | set(io.outputs):
        t = graph.tensors[key]
        tensors[key] = Tensor(t.name, t.elem_type, t.shape, t.const, t._value, t.loader, t.proto)
    meta = {k: v for k, v in graph.model_meta.items() if k not in ("warnings", "folded_nodes")}
    return Graph(
        name or f"{graph.name}_{first}_{last}",
        nodes,
        tensors,
        list(io.inputs),
        list(io.outputs),
        dict(graph.opset),
        path=graph.path,
        model_meta=meta,
    )


def split_at(graph: Graph, boundaries: Sequence[int]) -> list[Graph]:
    """Cut after each node index in ``boundaries``: len(boundaries) + 1 segments."""
    cuts = sorted(set(boundaries))
    if any(not 0 <= c < len(graph.nodes) - 1 for c in cuts):
        raise HxschedError(f"cut positions {cuts} must lie between 0 and {len(graph.nodes) - 2}")
    starts = [0, *(c + 1 for c in cuts)]
    ends = [*cuts, len(graph.nodes) - 1]
    return [extract_segment(graph, a, b) for a, b in zip(starts, ends, strict=True)]
