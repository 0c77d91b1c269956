"""The SAT scheduler against exhaustive search on random small instances, both objectives,
with and without contention; proofs; time limits; infeasibility."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from planning_helpers import brute_force, random_profile

from hxsched.errors import HxschedError
from hxsched.scheduler.cost.contention import ContentionModel
from hxsched.scheduler.planning.problem import Instance, build_problem
from hxsched.scheduler.planning.simulate import evaluate
from hxsched.scheduler.planning.solver import solve


def make_problem(seed, objective, contention, n_inst, n_groups, k, accs, max_loadables=16):
    rng = np.random.default_rng(seed)
    insts = [
        Instance(f"m{i}#0", f"m{i}", random_profile(rng, n_groups, f"m{i}")) for i in range(n_inst)
    ]
    cm = ContentionModel(204.8, 0.3, 1.8) if contention else None
    return build_problem(
        insts,
        accs,
        objective=objective,
        max_switches=k,
        contention=cm,
        levels=2,
        max_loadables=max_loadables,
    )


SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(
    seed=st.integers(0, 10**6),
    contention=st.booleans(),
    n_inst=st.integers(1, 3),
    n_groups=st.integers(1, 4),
    k=st.integers(0, 2),
    accs=st.sampled_from([("gpu", "dla0"), ("gpu", "dla0", "dla1"), ("gpu",)]),
    loadables=st.sampled_from([16, 1]),
)
def test_throughput_optimum_equals_exhaustive_search(
    seed, contention, n_inst, n_groups, k, accs, loadables
):
    p = make_problem(seed, "throughput", contention, n_inst, n_groups, k, accs, loadables)
    r = solve(p, time_limit_s=None)
    assert r.optimal and r.proof in ("unsat", "lp-bound", "contention-lp") and r.proof_detail
    assert r.value == brute_force(p)
    # the solver's prediction is the simulator's number for the same plan
    assert evaluate(p, r.selection).period == r.value


@SETTINGS
@given(
    seed=st.integers(0, 10**6),
    contention=st.booleans(),
    n_inst=st.integers(1, 2),
    n_groups=st.integers(1, 3),
    k=st.integers(0, 1),
    accs=st.sampled_from([("gpu", "dla0"), ("gpu", "dla0", "dla1")]),
)
def test_latency_optimum_equals_exhaustive_search(seed, contention, n_inst, n_groups, k, accs):
    p = make_problem(seed, "latency", contention, n_inst, n_groups, k, accs)
    r = solve(p, time_limit_s=None)
    assert r.optimal
    assert r.value == brute_force(p)
    assert r.evaluation.period == r.value
    assert evaluate(p, r.selection, r.evaluation.edges).period == r.value


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 10**6),
    contention=st.booleans(),
    n_inst=st.integers(1, 2),
    n_groups=st.integers(1, 3),
    k=st.integers(0, 1),
)
def test_latency_coarse_pass_keeps_the_optimum(seed, contention, n_inst, n_groups, k):
    """The coarse-tick pass (forced on with tiny thresholds) never changes the optimum."""
    import hxsched.scheduler.planning.solver as solver_mod

    p = make_problem(seed, "latency", contention, n_inst, n_groups, k, ("gpu", "dla0", "dla1"))
    saved = solver_mod.COARSE_MIN_TICKS, solver_mod.COARSE_TARGET
    solver_mod.COARSE_MIN_TICKS, solver_mod.COARSE_TARGET = 4, 3
    try:
        r = solve(p, time_limit_s=None)
    finally:
        solver_mod.COARSE_MIN_TICKS, solver_mod.COARSE_TARGET = saved
    assert r.optimal and r.value == brute_force(p)
    assert evaluate(p, r.selection, r.evaluation.edges).period == r.value


@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_contention_without_slowdown_reduces_to_the_plain_model(objective):
    for seed in range(5):
        rng_args = (seed, objective)
        plain = make_problem(*rng_args, False, 2, 3, 1, ("gpu", "dla0", "dla1"))
        flat = make_problem(*rng_args, False, 2, 3, 1, ("gpu", "dla0", "dla1"))
        flat.contention = ContentionModel(204.8, 0.3, 1.0)  # slowdown 1: contention has no effect
        from hxsched.scheduler.planning.problem import build_problem as rebuild

        flat = rebuild(
            flat.instances,
            flat.accelerators,
            objective=objective,
            max_switches=1,
            contention=ContentionModel(204.8, 0.3, 1.0),
            levels=2,
        )
        assert solve(plain, time_limit_s=None).value == solve(flat, time_limit_s=None).value


def test_infeasible_pins_are_reported():
    rng = np.random.default_rng(1)
    prof = random_profile(rng, 3, "m")
    insts = [Instance(f"m#{i}", "m", prof, "dla0") for i in range(3)]
    # whole instances on dla0 only where every group can run there; force the loadable limit
    if not all("dla" in g.time_ms for g in prof.groups):
        with pytest.raises(HxschedError, match="no way to place"):
            build_problem(insts, ("gpu", "dla0"))
        return
    p = build_problem(insts, ("gpu", "dla0"), max_loadables=2)
    with pytest.raises(HxschedError, match="no plan satisfies"):
        solve(p, time_limit_s=5)


def test_loadable_limit_binds():
    p = make_problem(3, "throughput", False, 3, 4, 2, ("gpu", "dla0"), max_loadables=1)
    r = solve(p, time_limit_s=None)
    assert sum(c.loadables("dla0") for c in r.selection) <= 1


def test_problem_options_are_validated():
    rng = np.random.default_rng(0)
    inst = [Instance("m#0", "m", random_profile(rng, 2, "m"))]
    for kwargs in ({"objective": "energy"}, {"max_switches": 4}, {"resolution_ms": 0}):
        with pytest.raises(HxschedError):
            build_problem(inst, ("gpu",), **kwargs)
    with pytest.raises(HxschedError):
        build_problem([], ("gpu",))


def test_too_many_configurations_stops_with_the_best_plan(monkeypatch):
    """A bound that admits more segmentations than can be listed ends the search with the
    best plan and its gap, never an internal exception."""
    from hxsched.scheduler.planning import problem as problem_mod

    p = make_problem(7, "latency", False, 2, 4, 2, ("gpu", "dla0", "dla1"))

    def too_many(self, *args, **kwargs):
        raise problem_mod._TooMany

    monkeypatch.setattr(problem_mod.Chain, "enumerate", too_many)
    r = solve(p, time_limit_s=10)
    assert not r.optimal and r.value > 0
    assert r.calls[-1].result == "too many configurations"


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 10**6),
    n_inst=st.integers(1, 3),
    n_groups=st.integers(1, 4),
    k=st.integers(0, 2),
    accs=st.sampled_from([("gpu", "dla0"), ("gpu", "dla0", "dla1")]),
    loadables=st.sampled_from([16, 1]),
)
def test_contention_lp_bound_never_exceeds_the_exhaustive_optimum(
    seed, n_inst, n_groups, k, accs, loadables
):
    """The contention-aware LP at the true optimum T* is <= T*, and it admits every
    configuration of an optimal plan: it can never cut the optimum off."""
    from hxsched.scheduler.planning.bounds import ContentionLp, relax
    from hxsched.scheduler.planning.solver import _contention_candidates

    p = make_problem(seed, "throughput", True, n_inst, n_groups, k, accs, loadables)
    opt = brute_force(p)
    cl = ContentionLp(p, relax(p).columns)
    bound = cl.relax(opt)
    assert bound.complete and not bound.refuted and bound.value <= opt + 1e-6
    r = solve(p, time_limit_s=None)
    assert r.value == opt
    got = _contention_candidates(p, cl, opt, None)
    assert got is not None
    admitted, _ = got
    for i, cfg in enumerate(r.selection):
        # an optimal plan's configuration is admitted (pareto may later keep a dominator)
        assert any(x.segments == cfg.segments for x in admitted[i])


@pytest.mark.parametrize("contention", [False, True])
@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_more_switches_and_more_time_are_never_worse(objective, contention):
    """Monotone in k (proven optima) and in the time limit: the staged search starts every
    setting from the best plan of the cheaper ones, and a plan found under a short limit is
    never better than the proven optimum."""
    n_groups, n_inst = (4, 3) if objective == "throughput" else (3, 2)
    for seed in range(4):
        values = []
        for k in range(3 if objective == "throughput" else 2):
            p = make_problem(seed, objective, contention, n_inst, n_groups, k, ("gpu", "dla0"))
            full = solve(p, time_limit_s=None)
            assert full.optimal
            values.append(full.value)
            for limit in (1e-4, 0.05):
                short = solve(p, time_limit_s=limit)
                assert short.value >= full.value
                # every cheaper stage's plan was offered to the last search
                same = [v for name, v, _ in short.stages if name.startswith(objective)]
                assert all(short.value <= v for v in same)
        assert values == sorted(values, reverse=True)


def test_a_bound_whose_encoding_is_too_large_is_abandoned(monkeypatch):
    import hxsched.scheduler.planning.solver as solver_mod

    p = make_problem(11, "throughput", True, 3, 4, 2, ("gpu", "dla0", "dla1"))
    monkeypatch.setattr(solver_mod, "MAX_CLAUSES", 10)
    r = solve(p, time_limit_s=10)
    assert r.value is not None and r.selection is not None and r.peak_rss_mib > 0
    assert any("clauses" in c.result for c in r.calls) or r.optimal


def test_a_plan_with_more_switches_never_seeds_a_cheaper_stage():
    """The short search's plan (k switches) is not offered to the k-1 stage: there it is no
    plan, and a stage reporting it would claim a value its setting cannot reach."""
    from hxsched.scheduler.planning.solver import _reseed, _Seed, _variant

    p = make_problem(5, "throughput", True, 2, 4, 2, ("gpu", "dla0", "dla1"))
    sel = list(solve(p, time_limit_s=None).selection)
    two = [c for c in p.chains[0].enumerate({}, {}, 0.0, 10**9) if c.switches == 2]
    assert two
    sel[0] = two[0]
    seed = _Seed(sel, 1, None, "short search")
    assert _reseed(_variant(p, p.objective, 1), [seed]) == []
    assert len(_reseed(p, [seed])) == 1


@pytest.mark.parametrize("seed", range(6))
def test_the_latency_pool_search_only_offers_plans_it_scored(seed):
    """The latency primal heuristic (SAT restricted to a few configurations per instance)
    starts from a worse plan and ends with one no worse, whose value is the simulator's
    number for it, and never below the exhaustive optimum (its UNSATs prove nothing)."""
    from hxsched.scheduler.planning.bounds import relax
    from hxsched.scheduler.planning.solver import (
        DEFAULT_SAT_SOLVER,
        _latency_pool_search,
        _pools,
        _State,
    )

    p = make_problem(seed, "latency", True, 2, 3, 1, ("gpu", "dla0", "dla1"))
    opt = brute_force(p)
    rel = relax(p)
    lp = int(np.ceil(rel.value - 1e-9))
    pools = _pools(p, rel, lp, None)
    every = [chain.enumerate({}, {}, 0.0, 10**9) for chain in p.chains]
    worst = [max(cs, key=lambda c: c.chain_ticks) for cs in every]
    start = evaluate(p, worst)
    st_ = _State(lb=lp)
    st_.offer(worst, start.period, start.edges)
    _latency_pool_search(p, pools, [worst], st_, DEFAULT_SAT_SOLVER, None)
    assert st_.best_sel is not None and st_.best_value is not None
    assert opt <= st_.best_value <= start.period
    assert evaluate(p, st_.best_sel, st_.best_edges).period == st_.best_value


def test_the_cheaper_setting_is_solved_whole_inside_a_staged_run(monkeypatch):
    """With k switches and a short limit, the k-1 setting is itself a staged solve (its own
    short search and cheaper stages are listed under it) and its plan seeds the last search."""
    import hxsched.scheduler.planning.solver as solver_mod

    monkeypatch.setattr(solver_mod, "QUICK_S", 0.0)  # no short search proves it: stages run
    p = make_problem(3, "latency", True, 3, 4, 2, ("gpu", "dla0", "dla1"))
    r = solve(p, time_limit_s=0.5)
    names = [name for name, _, _ in r.stages]
    assert "latency k=1" in names and "throughput k=2" in names
    assert any(name.startswith("latency k=1: ") for name in names)
    # every latency plan a stage found was offered to the last search (throughput stages'
    # values are periods, not makespans)
    latency = [v for name, v, _ in r.stages if name.split(": ")[-1].startswith("latency")]
    assert latency and all(r.value <= v for v in latency)


@pytest.mark.parametrize("limit", [None, 0.05])
@pytest.mark.parametrize("seed", range(3))
def test_a_latency_run_starts_from_the_start_plans_of_fewer_switches(seed, limit):
    """A latency run at k first takes the start plan (the heuristics' plan) of 0, 1 ... k-1
    switches, each seeded with the one below: at any limit its plan is no worse than the
    start a run at fewer switches takes, and none of them is below the proven optimum."""
    p = make_problem(seed, "latency", True, 3, 4, 2, ("gpu", "dla0", "dla1"))
    r = solve(p, time_limit_s=limit)
    starts = [(name, v) for name, v, _ in r.stages if name.startswith("start k=")]
    assert [name for name, _ in starts] == ["start k=0", "start k=1"]
    values = [v for _, v in starts]
    assert values == sorted(values, reverse=True)  # each seeded with the one below
    assert r.value is not None and r.value <= values[-1]
    full = solve(p, time_limit_s=None)
    assert full.optimal and full.value <= r.value


def test_a_throughput_run_takes_no_ladder():
    p = make_problem(2, "throughput", True, 3, 4, 2, ("gpu", "dla0", "dla1"))
    r = solve(p, time_limit_s=0.05)
    assert not any(name.startswith("start k=") for name, _, _ in r.stages)
