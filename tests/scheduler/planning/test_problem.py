"""Chains: segment costs, pricing and enumeration against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from planning_helpers import all_configs, random_profile

from hxsched.errors import HxschedError
from hxsched.scheduler.planning.problem import (
    Instance,
    build_problem,
    config_from_spans,
    merge_spans,
    pareto,
    to_ticks,
)


def problem(seed=0, n=5, k=2, objective="throughput", accs=("gpu", "dla0", "dla1")):
    rng = np.random.default_rng(seed)
    return build_problem(
        [Instance("m#0", "m", random_profile(rng, n, "m"))],
        accs,
        objective=objective,
        max_switches=k,
    )


def test_enumeration_matches_brute_force():
    for seed in range(8):
        p = problem(seed)
        chain = p.chains[0]
        w = {"gpu": 0.3, "dla0": 0.5, "dla1": 0.2}
        u = {"dla0": 0.0, "dla1": 0.0}
        brute = all_configs(p, 0)
        costs = [sum(w[a] * c.load(a) for a in p.accelerators) for c in brute]
        best, cfg = chain.price(w, u)
        assert best == pytest.approx(min(costs))
        assert sum(w[a] * cfg.load(a) for a in p.accelerators) == pytest.approx(best)
        budget = best + 5
        got = {
            tuple((s.first, s.last, s.accelerator) for s in c.segments)
            for c in chain.enumerate(w, u, budget, 10**9)
        }
        want = {
            tuple((s.first, s.last, s.accelerator) for s in c.segments)
            for c, cost in zip(brute, costs, strict=True)
            if cost <= budget + 1e-9
        }
        assert got == want


def test_segments_round_up_once_and_charge_hand_overs():
    p = problem(3, n=4, k=1, accs=("gpu", "dla0"))
    prof = p.instances[0].profile
    chain = p.chains[0]
    gpu = chain.segment("gpu", 0, 3, None)
    assert gpu.ticks[0] == to_ticks(sum(g.time_ms["gpu"] for g in prof.groups), 0.01)
    assert gpu.transition == 0
    if all("dla" in g.time_ms for g in prof.groups[2:]):
        cfg = config_from_spans(p, 0, [(0, 1, "gpu"), (2, 3, "dla0")])
        assert cfg.segments[1].transition == to_ticks(prof.transitions[1].gpu_to_dla_ms, 0.01)


def test_pareto_keeps_every_optimum():
    p = problem(5, n=5, k=2)
    brute = all_configs(p, 0)
    kept = pareto(p, brute)
    for w in ({"gpu": 1, "dla0": 0, "dla1": 0}, {"gpu": 0.5, "dla0": 0.25, "dla1": 0.25}):

        def cost(c, w=w):
            return sum(w[a] * c.load(a) for a in p.accelerators)

        assert min(map(cost, kept)) == min(map(cost, brute))
    assert len(kept) <= len(brute)


def test_merge_spans_and_bad_spans():
    assert merge_spans(["gpu", "gpu", "dla0", "gpu"]) == [
        (0, 1, "gpu"),
        (2, 2, "dla0"),
        (3, 3, "gpu"),
    ]
    p = problem(1, n=3)
    with pytest.raises(HxschedError):
        config_from_spans(p, 0, [(0, 2, "tpu")])


def test_pins():
    rng = np.random.default_rng(0)
    prof = random_profile(rng, 3, "m")
    p = build_problem([Instance("m#0", "m", prof, "gpu")], ("gpu", "dla0"))
    assert p.chains[0].accels == ["gpu"]
    with pytest.raises(HxschedError, match="has no dla1"):
        build_problem([Instance("m#0", "m", prof, "dla1")], ("gpu", "dla0"))
