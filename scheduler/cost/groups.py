"""Layer groups: the units the planner places, cut where handing over is cheap.

Groups are maximal runs of nodes (in topological order) with one DLA verdict, refined by a
dynamic programme that picks the remaining boundaries: it balances the groups' work and
charges every boundary for the bytes that cross it (and for breaking a Conv+activation fusion),
so groups end at cheap cuts and none is so small that its boundary costs dominate. A layer is
never cut from the activation, BatchNorm or residual Add that TensorRT fuses into it (unless the
DLA verdict changes there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hxsched.errors import HxschedError
from hxsched.scheduler.cost.costs import NodeCost, node_cost
from hxsched.scheduler.graph.graph import Graph

DEFAULT_MAX_GROUPS = 40
# One byte moved weighs as much as this many FLOPs when balancing groups (a Jetson GPU's
# FP16 compute / DRAM bandwidth ratio is ~200; a lower weight favours memory-bound layers less).
BYTE_WEIGHT = 50.0
BOUNDARY_WEIGHT = 0.3  # cost of a boundary whose crossing bytes equal the median cut
MAX_CANDIDATES = 600  # cheapest boundaries the programme considers in very large graphs
_FUSED_AFTER = frozenset(
    {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Mul", "Add", "BatchNormalization", "PRelu"}
)


@dataclass(frozen=True)
class LayerGroup:
    """A run of consecutive nodes that the planner places as one unit."""

    id: int
    first: str
    last: str
    nodes: tuple[str, ...]
    dla: bool
    flops: float
    bytes: int  # weights + activations read + written, at the model's precision
    weight_bytes: int
    out_bytes: int  # activations crossing the cut after this group (graph outputs for the last)

    @property
    def name(self) -> str:
        return f"g{self.id:02d}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "first": self.first,
            "last": self.last,
            "nodes": len(self.nodes),
            "dla": self.dla,
            "flops": self.flops,
            "bytes": self.bytes,
            "weight_bytes": self.weight_bytes,
            "out_bytes": self.out_bytes,
        }


def _boundary_costs(cut_bytes: np.ndarray) -> np.ndarray:
    positive = cut_bytes[cut_bytes > 0]
    ref = float(np.median(positive)) if positive.size else 1.0
    return BOUNDARY_WEIGHT * cut_bytes / max(ref, 1.0)


def breaks_fusion(graph: Graph, i: int) -> bool:
    """Would a boundary after node ``i`` separate it from an op fused into it?"""
    nodes = graph.nodes
    nxt = nodes[i + 1]
    return nxt.op_type in _FUSED_AFTER and any(o in nxt.inputs for o in nodes[i].outputs if o)


def make_groups(
    graph: Graph,
    dla_ok: Mapping[str, bool],
    *,
    max_groups: int = DEFAULT_MAX_GROUPS,
    costs: Mapping[str, NodeCost] | None = None,
) -> list[LayerGroup]:
    """Split ``graph`` into at most ``max_groups`` groups (more only if the DLA verdict changes
    more often than that), each with one DLA verdict; groups aim at 1/max_groups of the work."""
    if max_groups < 1:
        raise HxschedError(f"--max-groups must be at least 1 (got {max_groups})")
    nodes = graph.nodes
    n = len(nodes)
    if n == 0:
        raise HxschedError("the model has no nodes to group", path=graph.path)
    costs = costs or {node.name: node_cost(graph, node) for node in nodes}
    work = np.array(
        [max(costs[nd.name].flops, BYTE_WEIGHT * costs[nd.name].bytes) for nd in nodes], float
    )
    cuts = graph.cut_points()
    cut_bytes = np.array([c.bytes for c in cuts], dtype=float)
    verdict = [bool(dla_ok.get(nd.name, False)) for nd in nodes]
    mandatory = [i for i in range(n - 1) if verdict[i] != verdict[i + 1]]
    k_target = max(min(max_groups, n), len(mandatory) + 1)

    bcost = _boundary_costs(cut_bytes) if n > 1 else np.zeros(0)
    optional = [
        i for i in range(n - 1) if verdict[i] == verdict[i + 1] and not breaks_fusion(graph, i)
    ]
    if len(optional) > MAX_CANDIDATES:
        optional = sorted(sorted(optional, key=lambda i: (bcost[i], i))[:MAX_CANDIDATES])
    # candidate boundary positions: -1 (start), the chosen cuts, n-1 (end)
    cand = [-1, *sorted(set(mandatory) | set(optional)), n - 1]
    m = len(cand)
    prefix = np.concatenate([[0.0], np.cumsum(work)])
    total = prefix[-1]
    target = total / k_target if total > 0 else 1.0
    pos = np.array(cand)
    w_at = prefix[pos + 1]  # work up to and including node cand[j]
    is_mand = np.array([c in set(mandatory) for c in cand])
    # lo[j]: the earliest start candidate for a group ending at cand[j] (no mandatory inside)
    lo = np.zeros(m, dtype=int)
    last_mand = 0
    for j in range(1, m):
        lo[j] = last_mand
        if is_mand[j]:
            last_mand = j
    bc = np.array([bcost[c] if 0 <= c < n - 1 else 0.0 for c in cand])

    k_max = min(k_target, m - 1)
    inf = np.inf
    dp = np.full((k_max + 1, m), inf)
    back = np.full((k_max + 1, m), -1, dtype=int)
    dp[0, 0] = 0.0
    for k in range(1, k_max + 1):
        for j in range(1, m):
            i0 = lo[j]
            prev = dp[k - 1, i0:j]
            if not np.isfinite(prev).any():
                continue
            size = (w_at[j] - w_at[i0:j]) / target
            total_cost = prev + (size - 1.0) ** 2 + bc[j]
            best = int(np.argmin(total_cost))
            dp[k, j] = total_cost[best]
            back[k, j] = i0 + best
    finals = dp[:, m - 1]
    if not np.isfinite(finals).any():  # pragma: no cover - mandatory cuts make this impossible
        raise HxschedError("could not split the model into groups", path=graph.path)
    # The number of groups is free up to the bound: the balance term already rewards
    # splitting groups larger than the target and penalises ones much smaller.
    k = int(np.argmin(np.where(np.isfinite(finals), finals, np.inf)))
    bounds = []
    j = m - 1
    while k > 0:
        bounds.append(cand[j])
        j = back[k, j]
        k -= 1
    bounds.reverse()

    groups: list[LayerGroup] = []
    start = 0
    for gid, end in enumerate(bounds):
        members = nodes[start : end + 1]
        cs = [costs[x.name] for x in members]
        if end < n - 1:
            out_bytes = int(cut_bytes[end])
        else:
            out_bytes = sum(graph.tensors[o].nbytes or 0 for o in graph.outputs)
        groups.append(
            LayerGroup(
                id=gid,
                first=members[0].name,
                last=members[-1].name,
                nodes=tuple(x.name for x in members),
                dla=all(verdict[start : end + 1]),
                flops=float(sum(c.flops for c in cs)),
                bytes=int(sum(c.bytes for c in cs)),
                weight_bytes=int(sum(c.weight_bytes for c in cs)),
                out_bytes=out_bytes,
            )
        )
        start = end + 1
    return groups
