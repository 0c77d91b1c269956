"""Baselines every plan is reported beside, evaluated by the same simulator on the same profile.

- ``gpu-only``: every instance whole on the GPU.
- ``naive``: every instance whole on one accelerator (DLA only if all its groups can run
  there), the best such assignment.
- ``trt-default``: TensorRT's default placement as ``hxsched check`` reports it (every
  DLA-capable layer on one DLA core, GPU fallback for the rest: its DLA loadables and GPU
  islands; loadables beyond the limit fall back to the GPU), run as TensorRT runs an engine:
  each model one engine on its own stream, its layers one after another, the next frame once
  the previous one is done (no pipelining inside an engine), the engines sharing the GPU and
  the DLA core first come, first served (TensorRT developer guide, "Working with DLA" and
  "Streaming"; ``IExecutionContext::enqueueV3`` runs one inference at a time per context).
Every figure is independent of the order the models are given in: instances are evaluated in
the order of their names and ties go by name.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from hxsched.errors import HxschedError
from hxsched.scheduler.planning.problem import Config, Problem, config_from_spans, merge_spans
from hxsched.scheduler.planning.simulate import Activity, Evaluation, busy_at, evaluate
from hxsched.scheduler.types import Accelerator, AcceleratorKind, Objective

MAX_NAIVE_ASSIGNMENTS = 20_000
ENGINE_FRAMES = 24  # frames simulated per engine for the steady state (the last half measured)


@dataclass(frozen=True)
class BaselineRun:
    """A baseline's selection and its evaluation (the plan file keeps only its figures)."""

    name: str
    selection: list[Config]
    evaluation: Evaluation
    note: str = ""


def name_order(problem: Problem) -> list[int]:
    """Instance indices in the order of their names: what every baseline is evaluated in."""
    return sorted(range(len(problem.instances)), key=lambda i: problem.instances[i].name)


def evaluate_by_name(problem: Problem, selection: Sequence[Config]) -> Evaluation:
    """``evaluate`` with the instances in name order, mapped back to the caller's indices
    (throughput: the cyclic schedule already places instances by name)."""
    if problem.objective == Objective.THROUGHPUT:
        return evaluate(problem, selection)
    order = name_order(problem)
    ev = evaluate(problem, [selection[i] for i in order])
    return _renumber(ev, order)


def _renumber(ev: Evaluation, order: Sequence[int]) -> Evaluation:
    timeline = [dataclasses.replace(a, instance=order[a.instance]) for a in ev.timeline]
    edges = frozenset(((order[p[0]], p[1]), (order[q[0]], q[1])) for p, q in ev.edges)
    return dataclasses.replace(ev, timeline=timeline, edges=edges)


def gpu_only(problem: Problem) -> BaselineRun | None:
    if Accelerator.GPU not in problem.accelerators:  # e.g. --device cpu
        return None
    sel = [
        config_from_spans(problem, i, [(0, inst.n_groups - 1, Accelerator.GPU)])
        for i, inst in enumerate(problem.instances)
    ]
    return BaselineRun("gpu-only", sel, evaluate_by_name(problem, sel))


def naive(problem: Problem) -> BaselineRun | None:
    options = []
    for i, inst in enumerate(problem.instances):
        opts = []
        for acc in problem.accelerators:
            try:
                opts.append(config_from_spans(problem, i, [(0, inst.n_groups - 1, acc)]))
            except HxschedError:
                continue
        options.append(opts)
    total = 1
    for o in options:
        total *= len(o)
    if total > MAX_NAIVE_ASSIGNMENTS:
        return None
    best: BaselineRun | None = None
    for combo in itertools.product(*options):
        sel = list(combo)
        if any(
            sum(c.loadables(core) for c in sel) > problem.max_loadables
            for core in problem.dla_cores
        ):
            continue
        ev = evaluate_by_name(problem, sel)
        if best is None or (ev.period, ev.latency) < (
            best.evaluation.period,
            best.evaluation.latency,
        ):
            best = BaselineRun(
                "naive", sel, ev, "each model whole on one accelerator, best assignment"
            )
    return best


def trt_default(problem: Problem) -> BaselineRun | None:
    if not problem.dla_cores:
        return None
    core = problem.dla_cores[0]
    sel: dict[int, Config] = {}
    used = 0
    for i in name_order(problem):  # which loadables fall back does not depend on model order
        inst = problem.instances[i]
        assign = [
            core if AcceleratorKind.DLA in g.time_ms else Accelerator.GPU
            for g in inst.profile.groups
        ]
        spans = merge_spans(assign)
        for k, (a, b, acc) in enumerate(spans):
            if acc == core:
                if used >= problem.max_loadables:
                    spans[k] = (a, b, Accelerator.GPU)
                else:
                    used += 1
        flat = [acc for a, b, acc in spans for _ in range(a, b + 1)]
        sel[i] = config_from_spans(problem, i, merge_spans(flat))
    selection = [sel[i] for i in range(len(problem.instances))]
    return BaselineRun(
        "trt-default",
        selection,
        serial_engines(problem, selection),
        f"TensorRT's default placement: DLA-capable layers on {core}, GPU fallback; one "
        "engine per model, frames one after another",
    )


def serial_engines(problem: Problem, selection: Sequence[Config]) -> Evaluation:
    """Each instance one engine on its own stream (segments in turn, a frame after the previous
    one); accelerators shared first come, first served, ties by name. Throughput: the slowest
    engine's steady period; latency: one frame of every engine from time 0."""
    frames = ENGINE_FRAMES if problem.objective == Objective.THROUGHPUT else 1
    levels = {a: 0 for a in problem.accelerators}
    acts = _engine_run(problem, selection, levels, frames)
    period, latency = _engine_figures(acts, len(selection), frames)
    if problem.contention is not None:  # durations at the traffic of that period, once more
        levels = busy_at(problem, selection, max(1, period))[1]
        acts = _engine_run(problem, selection, levels, frames)
        period, latency = _engine_figures(acts, len(selection), frames)
    busy = {a: sum(c.load(a, levels[a]) for c in selection) for a in problem.accelerators}
    last = [a for a in acts if a.frame == frames - 1]
    t0 = min((a.start for a in last), default=0)
    timeline = sorted(
        (dataclasses.replace(a, start=a.start - t0, end=a.end - t0, frame=0) for a in last),
        key=lambda a: (a.start, a.instance),
    )
    if frames > 1:  # a frame of every engine released together, as the executor runs it
        latency = cyclic_latency(timeline, period)
    return Evaluation(problem.objective, period, latency, busy, timeline, levels)


def cyclic_latency(timeline: Sequence[Activity], period: int) -> int:
    """One frame's latency when each segment runs at its offset in every period, in the first
    period after its predecessor ends (``simulate.evaluate_throughput``'s rule)."""
    latency = 0
    for inst in {a.instance for a in timeline}:
        t = 0
        for a in sorted((a for a in timeline if a.instance == inst), key=lambda a: a.segment):
            start = t + (a.start - t) % period
            t = start + (a.end - a.start)
        latency = max(latency, t)
    return latency


def _engine_run(
    problem: Problem, selection: Sequence[Config], levels: dict, frames: int
) -> list[Activity]:
    rank = {i: r for r, i in enumerate(name_order(problem))}
    free = {a: 0 for a in problem.accelerators}
    heap = [(0, rank[i], i, 0, 0) for i in range(len(selection))]
    heapq.heapify(heap)
    acts = []
    while heap:
        ready, r, i, s, f = heapq.heappop(heap)
        seg = selection[i].segments[s]
        start = max(ready, free[seg.accelerator])
        end = start + seg.busy_at(levels[seg.accelerator])
        free[seg.accelerator] = end
        acts.append(Activity(i, s, seg.accelerator, start, end, f, seg.transition))
        if s + 1 < len(selection[i].segments):
            heapq.heappush(heap, (end, r, i, s + 1, f))
        elif f + 1 < frames:
            heapq.heappush(heap, (end, r, i, 0, f + 1))
    return acts


def _engine_figures(acts: Sequence[Activity], n: int, frames: int) -> tuple[int, int]:
    """(period, latency) in ticks: per engine, frame ends over the last half of the run; a
    frame's latency is from the previous frame's end (its release) to its own end."""
    ends = {(a.instance, a.frame): a.end for a in acts}
    for a in acts:
        ends[(a.instance, a.frame)] = max(ends[(a.instance, a.frame)], a.end)
    if frames == 1:
        span = max(ends.values(), default=0)
        return span, span
    w = frames // 2
    period = max(-(-(ends[(i, frames - 1)] - ends[(i, frames - 1 - w)]) // w) for i in range(n))
    latency = max(ends[(i, f)] - ends[(i, f - 1)] for i in range(n) for f in range(w, frames))
    return period, latency


def all_baselines(problem: Problem) -> list[BaselineRun]:
    """Those that apply to the problem's accelerators (a CPU-only device has only ``naive``)."""
    out = [b for b in (gpu_only(problem), naive(problem), trt_default(problem)) if b is not None]
    if not out:
        raise HxschedError("no baseline applies: no model can run whole on one accelerator")
    return out
