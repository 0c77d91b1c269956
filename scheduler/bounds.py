"""Lower bounds no plan can beat: the LP relaxation of choosing one configuration per instance.

Throughput: min P subject to sum over instances of the (fractional) chosen configurations'
loads <= P on every accelerator, without contention (which only adds time) and with the DLA
loadable limits. Latency: the frame must also fit every instance's shortest chain, so the bound
is the larger of that and the same LP.
"""

from __future__ import annotations

import math

import numpy as np

from hxsched.scheduler.problem import Problem


def lp_load_bound(problem: Problem) -> float:
    """The LP relaxation's optimum in (fractional) ticks."""
    from scipy.optimize import linprog

    accs = problem.accelerators
    cols = [(i, c) for i, cfgs in enumerate(problem.configs) for c in cfgs]
    n = len(cols) + 1  # last variable: P
    cost = np.zeros(n)
    cost[-1] = 1.0
    a_ub, b_ub = [], []
    for acc in accs:
        row = np.zeros(n)
        for k, (_, c) in enumerate(cols):
            row[k] = c.load(acc)
        row[-1] = -1.0
        a_ub.append(row)
        b_ub.append(0.0)
    for core in problem.dla_cores:
        row = np.zeros(n)
        for k, (_, c) in enumerate(cols):
            row[k] = c.loadables(core)
        a_ub.append(row)
        b_ub.append(problem.max_loadables)
    a_eq = np.zeros((len(problem.configs), n))
    for k, (i, _) in enumerate(cols):
        a_eq[i, k] = 1.0
    b_eq = np.ones(len(problem.configs))
    res = linprog(cost, A_ub=np.array(a_ub), b_ub=np.array(b_ub), A_eq=a_eq, b_eq=b_eq,
                  bounds=[(0, None)] * n, method="highs")  # fmt: skip
    if res.status == 2:  # infeasible even fractionally
        return math.inf
    if res.status != 0:  # pragma: no cover - HiGHS failure: fall back to a trivial bound
        return 0.0
    return float(res.fun)


def lower_bound_ticks(problem: Problem) -> int:
    """An integer lower bound on the objective, in ticks."""
    lp = lp_load_bound(problem)
    if math.isinf(lp):
        return -1  # infeasible
    bound = math.ceil(lp - 1e-6)
    if problem.objective == "latency":
        chains = max(min(c.chain_ticks for c in cfgs) for cfgs in problem.configs)
        bound = max(bound, chains)
    return max(bound, 1)
