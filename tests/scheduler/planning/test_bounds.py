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
