"""The LP relaxation of choosing one configuration per instance, solved by column generation.

min P subject to: for every accelerator, the (fractional) chosen configurations' loads sum to at
most P; at most the DLA loadable limit per core; one configuration per instance (convexly).
New columns come from each chain's pricing problem (a shortest path over its groups), so the
relaxation is solved over *all* configurations without enumerating them. Its optimum is a lower
bound no plan can beat (contention only adds time; a one-frame makespan is at least every
accelerator's load), and its duals give every configuration a reduced cost rc with

    value of any plan using configuration c  >=  LP + rc(c),

which lets the solver consider, for a bound T, only configurations with LP + rc <= T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hxsched.errors import InternalError
from hxsched.scheduler.planning.problem import Config, Problem
from hxsched.scheduler.types import Objective

PENALTY = 1e7  # cost of violating a loadable limit in the relaxation (phase-one slack)


@dataclass
class Relaxation:
    value: float  # LP optimum, ticks (fractional)
    w: dict[str, float]  # price of a tick of load per accelerator
    u: dict[str, float]  # price of a DLA loadable per core
    mu: list[float]  # per instance: least priced configuration cost (the convexity dual)
    columns: list[list[Config]]
    fractional: list[dict[int, float]] = field(default_factory=list)
    feasible: bool = True

    def reduced_cost(self, i: int, cfg: Config, problem: Problem) -> float:
        cost = sum(self.w[a] * cfg.load(a) for a in problem.accelerators)
        cost += sum(self.u[c] * cfg.loadables(c) for c in problem.dla_cores)
        return cost - self.mu[i]

    def bound_ticks(self) -> int:
        return max(1, math.ceil(self.value - 1e-6))


def _lp_min(
    cost: np.ndarray, a_ub: np.ndarray, b_ub: np.ndarray, a_eq: np.ndarray, b_eq: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """min cost·x, A_ub x <= b_ub, A_eq x = b_eq, x >= 0 with HiGHS (the dual simplex).

    Returns x, the duals of the <= rows and those of the = rows, in HiGHS's sign convention
    (d objective / d right-hand side, so <= duals are <= 0), which is what SciPy's
    ``linprog(method="highs")`` reports as marginals. HiGHS is called directly: importing
    ``scipy.optimize`` costs more than the whole LP (0.5 s against milliseconds).
    """
    from highspy import _core as highs  # the plain C++ binding: no banner on stdout

    a = np.vstack([a_ub, a_eq])
    m, n = a.shape
    lp = highs.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = m
    lp.col_cost_ = np.asarray(cost, dtype=float)
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.full(n, highs.kHighsInf)
    lp.row_lower_ = np.concatenate([np.full(len(b_ub), -highs.kHighsInf), b_eq])
    lp.row_upper_ = np.concatenate([b_ub, b_eq]).astype(float)
    rows, cols = np.nonzero(a.T)  # column-wise: for each column, its rows
    lp.a_matrix_.format_ = highs.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(rows, np.arange(n + 1)).astype(np.int32)
    lp.a_matrix_.index_ = cols.astype(np.int32)
    lp.a_matrix_.value_ = a.T[rows, cols].astype(float)
    solver = highs._Highs()
    solver.setOptionValue("output_flag", False)
    solver.passModel(lp)
    solver.run()
    status = solver.getModelStatus()
    if status != highs.HighsModelStatus.kOptimal:  # pragma: no cover - always feasible
        raise InternalError(f"LP relaxation failed: HiGHS says {status}")
    sol = solver.getSolution()
    duals = np.asarray(sol.row_dual, dtype=float)
    return np.asarray(sol.col_value, dtype=float), duals[: len(b_ub)], duals[len(b_ub) :]


def _solve_master(problem: Problem, columns: list[list[Config]]):
    accs = problem.accelerators
    cores = problem.dla_cores
    cols = [(i, c) for i, cs in enumerate(columns) for c in cs]
    n = len(cols) + 1 + len(cores)  # lambdas, P, loadable slacks
    cost = np.zeros(n)
    cost[len(cols)] = 1.0
    cost[len(cols) + 1 :] = PENALTY
    a_ub = np.zeros((len(accs) + len(cores), n))
    b_ub = np.zeros(len(accs) + len(cores))
    for r, acc in enumerate(accs):
        for k, (_, c) in enumerate(cols):
            a_ub[r, k] = c.load(acc)
        a_ub[r, len(cols)] = -1.0
    for r, core in enumerate(cores):
        row = len(accs) + r
        for k, (_, c) in enumerate(cols):
            a_ub[row, k] = c.loadables(core)
        a_ub[row, len(cols) + 1 + r] = -1.0
        b_ub[row] = problem.max_loadables
    a_eq = np.zeros((len(columns), n))
    for k, (i, _) in enumerate(cols):
        a_eq[i, k] = 1.0
    x, ineq, eq = _lp_min(cost, a_ub, b_ub, a_eq, np.ones(len(columns)))
    duals_ub = -ineq
    w = {acc: float(max(0.0, duals_ub[r])) for r, acc in enumerate(accs)}
    u = {core: float(max(0.0, duals_ub[len(accs) + r])) for r, core in enumerate(cores)}
    mu = [float(v) for v in eq]
    frac: list[dict[int, float]] = [dict() for _ in columns]
    for k, (i, _) in enumerate(cols):
        if x[k] > 1e-9:
            frac[i][sum(1 for ii, _ in cols[:k] if ii == i)] = float(x[k])
    slack = float(np.sum(x[len(cols) + 1 :]))
    return float(x[len(cols)]), w, u, mu, frac, slack


def relax(problem: Problem, max_rounds: int = 200) -> Relaxation:
    """Column generation to the LP optimum over every configuration."""
    columns: list[list[Config]] = []
    for chain in problem.chains:
        # start with the cheapest chain (least total busy time) and the fewest loadables
        _, c1 = chain.price({a: 1.0 for a in problem.accelerators}, {})
        _, c2 = chain.price(
            {a: 1.0 for a in problem.accelerators}, {c: 1e4 for c in problem.dla_cores}
        )
        cols = [c for c in (c1, c2) if c is not None]
        if not cols:  # pragma: no cover - Chain raises earlier when nothing can run
            raise InternalError("no configuration")
        columns.append(_unique(cols))
    for _ in range(max_rounds):
        value, w, u, mu, frac, slack = _solve_master(problem, columns)
        added = False
        for i, chain in enumerate(problem.chains):
            cost, cfg = chain.price(w, u)
            negative = cfg is not None and cost - mu[i] < -1e-7 * max(1.0, abs(mu[i]))
            if negative and cfg is not None and all(cfg.segments != c.segments for c in columns[i]):
                columns[i].append(cfg)
                added = True
        if not added:
            break
    feasible = slack <= 1e-6
    return Relaxation(value if feasible else math.inf, w, u, mu, columns, frac, feasible)


def _unique(cfgs: list[Config]) -> list[Config]:
    out: list[Config] = []
    for c in cfgs:
        if all(c.segments != o.segments for o in out):
            out.append(c)
    return out


def lower_bound_ticks(problem: Problem, relaxation: Relaxation | None = None) -> int:
    """An integer lower bound on the objective, in ticks (-1 if nothing is feasible)."""
    rel = relaxation or relax(problem)
    if not rel.feasible:
        return -1
    bound = rel.bound_ticks()
    if problem.objective == Objective.LATENCY:
        chains = 0
        for chain in problem.chains:
            cost, _ = chain.price({a: 1.0 for a in problem.accelerators}, {})
            chains = max(chains, math.ceil(cost - 1e-9))
        bound = max(bound, chains)
    return bound
