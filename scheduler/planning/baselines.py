"""Baselines every plan is reported beside, evaluated by the same simulator on the same profile.

- ``gpu-only``: every instance whole on the GPU.
- ``naive``: every instance whole on one accelerator (DLA only if all its groups can run
  there), the best such assignment.
- ``trt-default``: TensorRT's greedy default: every DLA-capable group on one DLA core, the rest
  on the GPU (GPU fallback), whatever the number of switches; DLA segments beyond the loadable
  limit fall back to the GPU as TensorRT does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hxsched.errors import HxschedError
from hxsched.scheduler.planning.problem import Config, Problem, config_from_spans, merge_spans
from hxsched.scheduler.planning.simulate import Evaluation, evaluate
from hxsched.scheduler.types import Accelerator, AcceleratorKind

MAX_NAIVE_ASSIGNMENTS = 20_000


@dataclass(frozen=True)
class BaselineRun:
    """A baseline's selection and its evaluation (the plan file keeps only its figures)."""

    name: str
    selection: list[Config]
    evaluation: Evaluation
    note: str = ""


def gpu_only(problem: Problem) -> BaselineRun:
    sel = [
        config_from_spans(problem, i, [(0, inst.n_groups - 1, Accelerator.GPU)])
        for i, inst in enumerate(problem.instances)
    ]
    return BaselineRun("gpu-only", sel, evaluate(problem, sel))


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
        ev = evaluate(problem, sel)
        if best is None or ev.period < best.evaluation.period:
            best = BaselineRun(
                "naive", sel, ev, "each model whole on one accelerator, best assignment"
            )
    return best


def trt_default(problem: Problem) -> BaselineRun | None:
    if not problem.dla_cores:
        return None
    core = problem.dla_cores[0]
    sel, used = [], 0
    for i, inst in enumerate(problem.instances):
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
        sel.append(
            config_from_spans(
                problem, i, merge_spans([acc for a, b, acc in spans for _ in range(a, b + 1)])
            )
        )
    return BaselineRun(
        "trt-default",
        sel,
        evaluate(problem, sel),
        f"every DLA-capable group on {core}, GPU fallback for the rest",
    )


def all_baselines(problem: Problem) -> list[BaselineRun]:
    out = [gpu_only(problem)]
    for b in (naive(problem), trt_default(problem)):
        if b is not None:
            out.append(b)
    return out
