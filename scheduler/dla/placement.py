"""TensorRT's default DLA placement: every DLA-capable layer on DLA, GPU fallback for the rest.

TensorRT groups consecutive DLA-capable layers into DLA loadables (``{ForeignNode[a...b]}``) and
runs the rest on the GPU. A loadable must be convex: no path may leave it through a GPU layer
and come back, or the two engines would wait on each other. We grow loadables greedily in
topological order, joining a node to a neighbour's loadable only when that keeps it convex.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hxsched.scheduler.graph.graph import Graph

MAX_LOADABLES_PER_CORE = 16


@dataclass(frozen=True)
class Island:
    """A run of nodes on one device under the default placement (node names in graph order)."""

    device: str  # "dla" or "gpu"
    nodes: tuple[str, ...]

    @property
    def first(self) -> str:
        return self.nodes[0]

    @property
    def last(self) -> str:
        return self.nodes[-1]

    def to_dict(self) -> dict[str, object]:
        return {"first": self.first, "last": self.last, "nodes": len(self.nodes)}


@dataclass(frozen=True)
class Placement:
    dla_loadables: tuple[Island, ...]
    gpu_islands: tuple[Island, ...]

    @property
    def over_limit(self) -> int:
        """Loadables beyond the 16 one DLA core can hold (TensorRT moves them to the GPU)."""
        return max(0, len(self.dla_loadables) - MAX_LOADABLES_PER_CORE)

    def to_dict(self) -> dict[str, object]:
        return {
            "dla_loadables": [i.to_dict() for i in self.dla_loadables],
            "gpu_islands": [i.to_dict() for i in self.gpu_islands],
            "max_loadables_per_core": MAX_LOADABLES_PER_CORE,
            "over_limit": self.over_limit,
        }


def default_placement(graph: Graph, dla_ok: Mapping[str, bool]) -> Placement:
    """Split ``graph`` as TensorRT's default DLA placement would, given per-node verdicts."""
    part: dict[str, int] = {}  # DLA node name -> loadable id
    reach: dict[str, frozenset[int]] = {}  # node -> loadables with a path into it (incl. own)
    members: dict[int, list[str]] = {}
    next_id = 0
    for node in graph.nodes:
        producers = (graph.producer(i) for i in node.inputs if i)
        preds = [p for p in producers if p is not None]
        incoming: set[int] = set()
        for p in preds:
            incoming |= reach[p.name]
        if dla_ok.get(node.name, False):
            chosen = None
            candidates = sorted({part[p.name] for p in preds if p.name in part})
            for cand in candidates:
                # Joining is safe if no predecessor outside the loadable is reachable from it.
                if all(
                    p.name in part and part[p.name] == cand or cand not in reach[p.name]
                    for p in preds
                ):
                    chosen = cand
                    break
            if chosen is None:
                chosen = next_id
                next_id += 1
                members[chosen] = []
            part[node.name] = chosen
            members[chosen].append(node.name)
            incoming.add(chosen)
        reach[node.name] = frozenset(incoming)
    loadables = sorted(
        (Island("dla", tuple(names)) for names in members.values()),
        key=lambda isl: graph.index_of(isl.first),
    )
    return Placement(tuple(loadables), tuple(_gpu_islands(graph, dla_ok)))


def _gpu_islands(graph: Graph, dla_ok: Mapping[str, bool]) -> list[Island]:
    """Weakly connected groups of GPU nodes."""
    gpu = [n for n in graph.nodes if not dla_ok.get(n.name, False)]
    parent = {n.name: n.name for n in gpu}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for node in gpu:
        for inp in node.inputs:
            p = graph.producer(inp) if inp else None
            if p is not None and p.name in parent:
                parent[find(p.name)] = find(node.name)
    groups: dict[str, list[str]] = {}
    for node in gpu:
        groups.setdefault(find(node.name), []).append(node.name)
    return [Island("gpu", tuple(v)) for v in groups.values()]
