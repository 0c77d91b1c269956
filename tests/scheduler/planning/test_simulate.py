"""The simulator: period rule, cyclic schedule, one-frame schedules with contention."""

from __future__ import annotations

import numpy as np
from planning_helpers import random_profile

from hxsched.scheduler.cost.contention import ContentionModel
from hxsched.scheduler.planning.problem import Instance, build_problem, config_from_spans
from hxsched.scheduler.planning.simulate import (
    busy_at,
    evaluate_throughput,
    list_schedule,
    schedule_with_edges,
    throughput_period,
)


def two(seed=0, contention=None, objective="throughput"):
    rng = np.random.default_rng(seed)
    insts = [Instance(f"m{i}#0", f"m{i}", random_profile(rng, 4, f"m{i}")) for i in range(2)]
    return build_problem(
        insts, ("gpu", "dla0"), objective=objective, max_switches=1, contention=contention, levels=2
    )


def test_period_is_the_bottleneck_without_contention():
    p = two()
    sel = [config_from_spans(p, i, [(0, 3, "gpu")]) for i in range(2)]
    ev = evaluate_throughput(p, sel)
    assert ev.period == sum(c.load("gpu") for c in sel)
    assert ev.idle()["dla0"] == ev.period and ev.busy["dla0"] == 0


def test_period_with_contention_is_the_least_fixpoint():
    p = two(1, ContentionModel(50.0, 0.1, 3.0))
    sel = []
    for i in range(2):
        groups = p.instances[i].profile.groups
        acc = "dla0" if i == 0 and all("dla" in g.time_ms for g in groups) else "gpu"
        sel.append(config_from_spans(p, i, [(0, 3, acc)]))
    period = throughput_period(p, sel)
    busy, _ = busy_at(p, sel, period)
    assert max(busy.values()) <= period
    if period > 1:
        busy_lower, _ = busy_at(p, sel, period - 1)
        assert max(busy_lower.values()) > period - 1


def test_cyclic_timeline_fits_one_period_per_accelerator():
    p = two(2)
    sel = [config_from_spans(p, 0, [(0, 3, "gpu")]), config_from_spans(p, 1, [(0, 3, "gpu")])]
    ev = evaluate_throughput(p, sel)
    gpu = sorted((a.start, a.end) for a in ev.timeline if a.accelerator == "gpu")
    assert sum(e - s for s, e in gpu) == ev.busy["gpu"] <= ev.period
    assert ev.latency >= max(c.chain_ticks for c in sel)


def test_one_frame_schedule_respects_order_and_contention():
    p = two(3, ContentionModel(20.0, 0.1, 2.0), "latency")
    sel = [config_from_spans(p, i, [(0, 3, "gpu")]) for i in range(2)]
    ev = list_schedule(p, sel)
    a, b = sorted(ev.timeline, key=lambda x: x.start)
    assert b.start >= a.end  # one GPU: serialised
    assert ev.period == a.end - a.start + b.end - b.start
    both = schedule_with_edges(p, sel, {((1, 0), (0, 0))})
    assert [x.instance for x in sorted(both.timeline, key=lambda x: x.start)] == [1, 0]
