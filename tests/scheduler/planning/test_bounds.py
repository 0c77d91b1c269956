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
