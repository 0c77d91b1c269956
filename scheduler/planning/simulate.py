"""Discrete-event simulator: what a plan achieves, in the same ticks the solver uses.

Throughput: the steady-state period is the smallest T at which every accelerator's work per
frame (segments, hand-overs and their contention slowdown at the traffic the other accelerators
generate over T) fits in T; a pipelined event simulation of many frames then gives per-frame
latency, busy and idle time, and the timeline of one period. Latency: one frame of every
instance starts at time 0; segments run as early as their predecessors, the order on each
accelerator and any imposed waits allow, slowed by whatever overlaps them on other
accelerators (iterated to a fixpoint).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hxsched.errors import InternalError
from hxsched.scheduler.planning.problem import Config, Problem
from hxsched.scheduler.types import Accelerator, Objective

Slot = tuple[int, int]  # (instance index, segment index)


class CyclicOrder(InternalError, ValueError):
    """Ordering edges that form a cycle: a bug when the solver made them; a caller that explores
    orders (exhaustive search) catches it as a ValueError and moves on."""


@dataclass(frozen=True)
class Activity:
    instance: int
    segment: int
    accelerator: Accelerator
    start: int  # ticks
    end: int
    frame: int = 0
    transition: int = 0  # leading hand-over ticks inside [start, end)


@dataclass
class Evaluation:
    objective: Objective
    period: int  # ticks between frames in steady state (throughput) or makespan (latency)
    latency: int  # ticks, one frame end to end
    busy: dict[Accelerator, int]  # ticks per period (throughput) or in the frame (latency)
    timeline: list[Activity] = field(default_factory=list)
    levels: dict[Accelerator, int] = field(default_factory=dict)  # contention level per accelerator
    edges: frozenset[tuple[Slot, Slot]] = frozenset()  # latency: imposed order

    def idle(self) -> dict[Accelerator, int]:
        return {a: max(0, self.period - b) for a, b in self.busy.items()}


# ---------------------------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------------------------
def other_kib(problem: Problem, selection: Sequence[Config], accelerator: str) -> int:
    """KiB per frame moved by segments on the *other* accelerators (per-config rounding)."""
    return sum(
        problem.kib(c.bytes_on(a))
        for c in selection
        for a in problem.accelerators
        if a != accelerator
    )


def busy_at(problem: Problem, selection: Sequence[Config], ticks: int) -> tuple[dict, dict]:
    """Per accelerator: work per frame if frames come every ``ticks``, and its contention level."""
    busy, levels = {}, {}
    for acc in problem.accelerators:
        level = problem.traffic_level(other_kib(problem, selection, acc), ticks)
        levels[acc] = level
        busy[acc] = sum(c.load(acc, level) for c in selection)
    return busy, levels


def throughput_period(problem: Problem, selection: Sequence[Config]) -> int:
    """The smallest T with every accelerator's per-frame work <= T (work shrinks as T grows)."""
    lo = max((sum(c.load(a) for c in selection) for a in problem.accelerators), default=0)
    lo = max(lo, 1)
    if problem.contention is None:
        return lo
    hi = max(lo, max(busy_at(problem, selection, lo)[0].values()))
    while lo < hi:
        mid = (lo + hi) // 2
        if max(busy_at(problem, selection, mid)[0].values()) <= mid:
            hi = mid
        else:
            lo = mid + 1
    return lo


def evaluate_throughput(problem: Problem, selection: Sequence[Config]) -> Evaluation:
    """Period, busy time, and the steady-state cyclic schedule that achieves the period.

    Every accelerator's segments get a slot on a circle of length P (they fit: its work per
    frame is at most P); each frame runs every segment at its slot, in the first period after
    its predecessor finished. That gives one period's timeline and a frame's end-to-end latency.
    """
    period = throughput_period(problem, selection)
    busy, levels = busy_at(problem, selection, period)
    offset = _circle_offsets(problem, selection, period, levels)
    timeline: list[Activity] = []
    for (i, s), off in offset.items():
        seg = selection[i].segments[s]
        dur = seg.busy_at(levels[seg.accelerator])
        timeline.append(Activity(i, s, seg.accelerator, off, off + dur, 0, seg.transition))
    latency = 0
    for i, c in enumerate(selection):
        t = 0
        for s, seg in enumerate(c.segments):
            start = t + (offset[(i, s)] - t) % period
            t = start + seg.busy_at(levels[seg.accelerator])
        latency = max(latency, t)
    timeline.sort(key=lambda a: (a.accelerator, a.start))
    return Evaluation(Objective.THROUGHPUT, period, latency, busy, timeline, levels)


def _circle_offsets(
    problem: Problem, selection: Sequence[Config], period: int, levels: dict
) -> dict:
    """Slots on each accelerator's circle: first fit after the predecessor's end (mod P), in
    order of the chain; if the circle fragments, pack that accelerator back to back instead."""
    dur = {
        (i, s): seg.busy_at(levels[seg.accelerator])
        for i, c in enumerate(selection)
        for s, seg in enumerate(c.segments)
    }
    # by segment, then instance name: the schedule does not depend on the order models are given
    order = sorted(dur, key=lambda p: (p[1], problem.instances[p[0]].name, p[0]))
    used: dict[str, list[tuple[int, int]]] = {a: [] for a in problem.accelerators}
    offset: dict[Slot, int] = {}
    prev_end: dict[int, int] = {}
    failed: set[Accelerator] = set()
    for i, s in order:
        acc = selection[i].segments[s].accelerator
        want = prev_end.get(i, 0) % period if period else 0
        d = dur[(i, s)]
        spot = _first_fit(used[acc], want, d, period)
        if spot is None:
            failed.add(acc)
            spot = 0
        offset[(i, s)] = spot
        used[acc].append((spot, spot + d))
        prev_end[i] = spot + d
    for acc in failed:  # fall back to packing the accelerator back to back
        cursor = 0
        for p in sorted(
            (p for p in offset if selection[p[0]].segments[p[1]].accelerator == acc),
            key=lambda p: (offset[p], p),
        ):
            offset[p] = cursor
            cursor += dur[p]
    return offset


def _first_fit(used: list[tuple[int, int]], want: int, d: int, period: int) -> int | None:
    """The earliest start >= want (cyclically) where [start, start+d) avoids ``used``."""
    if d == 0:
        return want
    candidates = sorted({want, *(e % period for _, e in used)})
    ordered = sorted(candidates, key=lambda c: (c - want) % period)
    for start in ordered:
        if all(not _overlap_cyclic(start, d, a, b - a, period) for a, b in used):
            return start
    return None


def _overlap_cyclic(s1: int, d1: int, s2: int, d2: int, period: int) -> bool:
    if d1 == 0 or d2 == 0:
        return False
    for shift in (-period, 0, period):
        a, b = s1, s1 + d1
        c, e = s2 + shift, s2 + d2 + shift
        if a < e and c < b:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Latency (one frame)
# ---------------------------------------------------------------------------------------------
def slot_levels(problem: Problem, selection: Sequence[Config]) -> dict[Slot, int]:
    """The traffic level each segment imposes on segments overlapping it elsewhere."""
    return {
        (i, s): problem.level_of(seg.bw) if problem.contention is not None else 0
        for i, c in enumerate(selection)
        for s, seg in enumerate(c.segments)
    }


def schedule_with_edges(
    problem: Problem, selection: Sequence[Config], edges: Iterable[tuple[Slot, Slot]]
) -> Evaluation:
    """Earliest start times of one frame given ordering edges (p before q)."""
    edges = frozenset(edges)
    slots = [(i, s) for i, c in enumerate(selection) for s in range(len(c.segments))]
    preds: dict[Slot, list[Slot]] = {p: [] for p in slots}
    for i, c in enumerate(selection):
        for s in range(1, len(c.segments)):
            preds[(i, s)].append((i, s - 1))
    for p, q in edges:
        preds[q].append(p)
    order = _topological(slots, preds)
    traffic = slot_levels(problem, selection)
    level = {p: 0 for p in slots}
    for _ in range(64):  # durations only grow; converges in a few rounds
        start: dict[Slot, int] = {}
        end: dict[Slot, int] = {}
        for p in order:
            seg = selection[p[0]].segments[p[1]]
            start[p] = max((end[q] for q in preds[p]), default=0)
            end[p] = start[p] + seg.busy_at(level[p])
        new_level = {}
        for p in slots:
            acc = selection[p[0]].segments[p[1]].accelerator
            lv = 0
            for q in slots:
                if q[0] == p[0] or selection[q[0]].segments[q[1]].accelerator == acc:
                    continue
                if start[p] < end[q] and start[q] < end[p]:
                    lv = max(lv, traffic[q])
            new_level[p] = max(level[p], lv)
        if new_level == level:
            break
        level = new_level
    makespan = max(end.values(), default=0)
    busy = {a: 0 for a in problem.accelerators}
    timeline = []
    for p in slots:
        seg = selection[p[0]].segments[p[1]]
        busy[seg.accelerator] += end[p] - start[p]
        timeline.append(Activity(p[0], p[1], seg.accelerator, start[p], end[p], 0, seg.transition))
    timeline.sort(key=lambda a: (a.start, a.instance))
    return Evaluation(Objective.LATENCY, makespan, makespan, busy, timeline, {}, edges)


def _topological(slots: list[Slot], preds: dict[Slot, list[Slot]]) -> list[Slot]:
    indeg = {p: len(set(preds[p])) for p in slots}
    succ: dict[Slot, list[Slot]] = {p: [] for p in slots}
    for q in slots:
        for p in set(preds[q]):
            succ[p].append(q)
    queue = sorted(p for p in slots if indeg[p] == 0)
    out = []
    while queue:
        p = queue.pop(0)
        out.append(p)
        for q in succ[p]:
            indeg[q] -= 1
            if indeg[q] == 0:
                queue.append(q)
        queue.sort()
    if len(out) != len(slots):
        raise CyclicOrder("ordering edges form a cycle")
    return out


def same_accelerator_edges(selection: Sequence[Config], timeline: Sequence[Activity]) -> set:
    """The order each accelerator ran its segments in, as edges between consecutive ones."""
    by_acc: dict[str, list[Activity]] = {}
    for a in sorted(timeline, key=lambda a: (a.start, a.instance, a.segment)):
        by_acc.setdefault(a.accelerator, []).append(a)
    edges = set()
    for acts in by_acc.values():
        for x, y in zip(acts, acts[1:], strict=False):
            if x.instance != y.instance:
                edges.add(((x.instance, x.segment), (y.instance, y.segment)))
    return edges


def list_schedule(problem: Problem, selection: Sequence[Config]) -> Evaluation:
    """A greedy one-frame schedule: run each ready segment as soon as its accelerator is free
    (longest remaining chain first); then evaluate it with contention."""
    remaining = {
        (i, s): sum(seg.busy for seg in c.segments[s:])
        for i, c in enumerate(selection)
        for s in range(len(c.segments))
    }
    free = {a: 0 for a in problem.accelerators}
    ready = [(0, -remaining[(i, 0)], i, 0) for i in range(len(selection))]
    heapq.heapify(ready)
    acts = []
    while ready:
        t, _, i, s = heapq.heappop(ready)
        seg = selection[i].segments[s]
        start = max(t, free[seg.accelerator])
        end = start + seg.busy
        free[seg.accelerator] = end
        acts.append(Activity(i, s, seg.accelerator, start, end))
        if s + 1 < len(selection[i].segments):
            heapq.heappush(ready, (end, -remaining[(i, s + 1)], i, s + 1))
    return schedule_with_edges(problem, selection, same_accelerator_edges(selection, acts))


def evaluate(problem: Problem, selection: Sequence[Config], edges=None) -> Evaluation:
    """Evaluate a selection under the problem's objective."""
    if problem.objective == Objective.THROUGHPUT:
        return evaluate_throughput(problem, selection)
    if edges is None:
        return list_schedule(problem, selection)
    return schedule_with_edges(problem, selection, edges)
