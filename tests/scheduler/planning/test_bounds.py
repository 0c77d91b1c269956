"""The LP relaxation by column generation: it matches the LP over every configuration."""

from __future__ import annotations

import numpy as np
import pytest
from planning_helpers import all_configs, random_profile
from scipy.optimize import linprog

from hxsched.scheduler.planning.bounds import lower_bound_ticks, relax
from hxsched.scheduler.planning.problem import Instance, build_problem


def full_lp(p):
    cols = [(i, c) for i in range(len(p.instances)) for c in all_configs(p, i)]
    n = len(cols) + 1
    cost = np.zeros(n)
    cost[-1] = 1
    a_ub = [[c.load(a) for _, c in cols] + [-1] for a in p.accelerators]
    a_eq = [[1 if i == k else 0 for i, _ in cols] + [0] for k in range(len(p.instances))]
    res = linprog(
        cost, A_ub=a_ub, b_ub=[0] * len(a_ub), A_eq=a_eq, b_eq=[1] * len(a_eq), method="highs"
    )
    return res.fun


@pytest.mark.parametrize("seed", range(6))
def test_column_generation_reaches_the_full_lp(seed):
    rng = np.random.default_rng(seed)
    insts = [Instance(f"m{i}#0", f"m{i}", random_profile(rng, 4, f"m{i}")) for i in range(3)]
    p = build_problem(insts, ("gpu", "dla0", "dla1"), max_switches=2)
    rel = relax(p)
    assert rel.value == pytest.approx(full_lp(p), abs=1e-6)
    # reduced costs are non-negative for every configuration (dual feasibility)
    for i in range(3):
        for c in all_configs(p, i):
            assert rel.reduced_cost(i, c, p) >= -1e-6
    assert lower_bound_ticks(p, rel) >= rel.value - 1e-9


@pytest.mark.parametrize("seed", range(20))
def test_highs_lp_matches_scipy_primal_and_duals(seed):
    """The direct HiGHS call gives SciPy's answer: optimum, and the duals the pricing uses."""
    from hxsched.scheduler.planning.bounds import _lp_min

    rng = np.random.default_rng(seed)
    n, m_ub, m_eq = rng.integers(3, 9), rng.integers(1, 5), rng.integers(1, 3)
    cost = rng.uniform(0.1, 2.0, n)
    a_ub = rng.uniform(-1.0, 1.0, (m_ub, n)) * (rng.random((m_ub, n)) < 0.7)
    b_ub = rng.uniform(0.5, 2.0, m_ub)
    a_eq = (rng.random((m_eq, n)) < 0.6).astype(float)
    a_eq[:, 0] = 1.0  # every equality row can be met
    b_eq = np.ones(m_eq)
    ref = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, method="highs")
    if ref.status != 0:
        pytest.skip("random LP infeasible")
    x, ineq, eq = _lp_min(cost, a_ub, b_ub, a_eq, b_eq)
    assert float(cost @ x) == pytest.approx(ref.fun, abs=1e-7)
    # duals are unique only at a non-degenerate optimum: compare the dual objective instead
    assert float(b_ub @ ineq + b_eq @ eq) == pytest.approx(ref.fun, abs=1e-7)
    assert np.all(ineq <= 1e-9)
    assert float(b_ub @ ref.ineqlin.marginals + b_eq @ ref.eqlin.marginals) == pytest.approx(
        float(b_ub @ ineq + b_eq @ eq), abs=1e-7
    )


@pytest.mark.parametrize("seed", range(6))
def test_column_generation_stopped_early_is_still_a_lower_bound(seed):
    """Stopped at its round limit, the LP says so and its (Lagrangian) bound stays valid."""
    rng = np.random.default_rng(seed)
    insts = [Instance(f"m{i}#0", f"m{i}", random_profile(rng, 5, f"m{i}")) for i in range(3)]
    p = build_problem(insts, ("gpu", "dla0", "dla1"), max_switches=2)
    full = relax(p)
    assert full.converged and full.rounds >= 1
    early = relax(p, max_rounds=1)
    assert early.value <= full.value + 1e-6
    if not early.converged:
        assert early.rounds == 1
    # reduced costs against the early duals are non-negative and add to a valid bound
    for i in range(3):
        for c in all_configs(p, i):
            assert early.reduced_cost(i, c, p) >= -1e-6


# -- the contention-aware relaxation (column generation per vector of contention levels) -----
def _contention_problem(seed, n_inst=2, n_groups=4, k=1, accs=("gpu", "dla0", "dla1")):
    from hxsched.scheduler.cost.contention import ContentionModel

    rng = np.random.default_rng(seed)
    insts = [
        Instance(f"m{i}#0", f"m{i}", random_profile(rng, n_groups, f"m{i}")) for i in range(n_inst)
    ]
    cm = ContentionModel(204.8, 0.3, 1.8)
    return build_problem(insts, accs, max_switches=k, contention=cm, levels=2)


@pytest.mark.parametrize("seed", range(8))
def test_pricing_with_levels_and_traffic_prices_is_the_least_cost_configuration(seed):
    """The chain's pricing (a shortest path) with loads at given levels and a price on the
    traffic a configuration adds beside the other accelerators is the minimum over every
    configuration, computed the long way."""
    from hxsched.scheduler.planning.bounds import config_other_kib

    p = _contention_problem(seed, k=2)
    rng = np.random.default_rng(100 + seed)
    levels = {a: int(rng.integers(0, p.n_levels)) for a in p.accelerators}
    w = {a: float(rng.uniform(0, 1)) for a in p.accelerators}
    u = {c: float(rng.uniform(0, 5)) for c in p.dla_cores}
    v = {a: float(rng.uniform(0, 0.01)) for a in p.accelerators}
    for i, chain in enumerate(p.chains):
        best, cfg = chain.price(w, u, levels, v)

        def cost(c):
            return (
                sum(w[a] * c.load(a, levels[a]) for a in p.accelerators)
                + sum(v[a] * config_other_kib(c, a) for a in p.accelerators)
                + sum(u[x] * c.loadables(x) for x in p.dla_cores)
            )

        assert best == pytest.approx(min(cost(c) for c in all_configs(p, i)), rel=1e-9)
        assert cfg is not None and cost(cfg) == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_contention_relaxation_never_refutes_a_period_a_plan_reaches(seed):
    """At the exhaustive optimum T*, the relaxation leaves T* open, the optimal plan's own
    level vector is among the open ones (mirror images included), and that vector's reduced
    costs of the plan's configurations fit its budget: the filters never cut the optimum."""
    from planning_helpers import brute_force

    from hxsched.scheduler.planning.bounds import ContentionLp, config_other_kib
    from hxsched.scheduler.planning.simulate import busy_at, evaluate
    from hxsched.scheduler.planning.solver import solve

    p = _contention_problem(seed, n_inst=int(2 + seed % 2), k=int(seed % 3))
    opt = brute_force(p)
    r = solve(p, time_limit_s=None)
    assert r.value == opt
    cl = ContentionLp(p, relax(p).columns)
    out = cl.relax(opt)
    assert out.complete and not out.refuted and out.value <= opt + 1e-6
    _, levels = busy_at(p, r.selection, opt)
    own = [lb for lb in out.open if lb.levels == levels]
    assert own, f"the plan's levels {levels} are not among the open vectors"
    lb = own[0]
    total = 0.0
    for i, c in enumerate(r.selection):
        cost = sum(lb.w[a] * c.load(a, levels[a]) for a in p.accelerators)
        cost += sum(lb.v.get(a, 0.0) * config_other_kib(c, a) for a in p.accelerators)
        cost += sum(lb.u[x] * c.loadables(x) for x in p.dla_cores)
        total += cost - lb.mins[i]
    assert total <= opt - lb.value + 1e-6
    assert evaluate(p, r.selection).period == opt


def test_duals_kept_from_one_period_bound_another_validly():
    """A vector's duals give a valid bound at any period (only the caps change): the cached
    bound at T never exceeds what column generation proves at T."""
    from hxsched.scheduler.planning.bounds import ContentionLp, level_bound, level_vectors

    p = _contention_problem(3, n_inst=3, k=1)
    cl = ContentionLp(p, relax(p).columns)
    t0 = 400
    cl.relax(t0)
    for t in (t0 - 50, t0, t0 + 80):
        for levels in level_vectors(p, t):
            cached = cl.duals.get(tuple(levels.values()))
            if cached is None:
                continue
            fresh = level_bound(p, t, levels, [list(c) for c in cl.pool], max_rounds=200)
            if fresh.converged:
                assert cl.bound_with(cached, t) <= fresh.value + 1e-6


@pytest.mark.parametrize("seed", range(6))
def test_latency_relaxation_with_chain_rows_reaches_the_full_lp(seed):
    """Latency: the makespan covers every accelerator's work and every instance's chain; the
    column generation (chain prices added to each instance's pricing) reaches the LP over
    every configuration, and reduced costs at its duals are non-negative."""
    rng = np.random.default_rng(seed)
    insts = [Instance(f"m{i}#0", f"m{i}", random_profile(rng, 4, f"m{i}")) for i in range(3)]
    p = build_problem(insts, ("gpu", "dla0", "dla1"), objective="latency", max_switches=2)
    cols = [(i, c) for i in range(3) for c in all_configs(p, i)]
    n = len(cols) + 1
    cost = np.zeros(n)
    cost[-1] = 1
    a_ub = [[c.load(a) for _, c in cols] + [-1] for a in p.accelerators]
    a_ub += [[c.chain_ticks if i == k else 0 for i, c in cols] + [-1] for k in range(3)]
    a_eq = [[1 if i == k else 0 for i, _ in cols] + [0] for k in range(3)]
    full = linprog(
        cost, A_ub=a_ub, b_ub=[0] * len(a_ub), A_eq=a_eq, b_eq=[1] * 3, method="highs"
    ).fun
    rel = relax(p)
    assert rel.converged and rel.value == pytest.approx(full, abs=1e-6)
    for i in range(3):
        for c in all_configs(p, i):
            assert rel.reduced_cost(i, c, p) >= -1e-6
