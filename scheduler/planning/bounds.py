"""The LP relaxation of choosing one configuration per instance, solved by column generation.

min P subject to: for every accelerator, the (fractional) chosen configurations' loads sum to at
most P; at most the DLA loadable limit per core; one configuration per instance (convexly).
New columns come from each chain's pricing problem (a shortest path over its groups), so the
relaxation is solved over *all* configurations without enumerating them. Its optimum is a lower
bound no plan can beat (contention only adds time; a one-frame makespan is at least every
accelerator's load), and its duals give every configuration a reduced cost rc with

    value of any plan using configuration c  >=  LP + rc(c),

which lets the solver consider, for a bound T, only configurations with LP + rc <= T.

Column generation stops at convergence (no column of negative reduced cost left) or at its round
limit or deadline; either way the bound used is the Lagrangian one (see ``relax``), valid at any
round. ``ContentionLp`` is the same LP under contention, per vector of contention levels.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hxsched.errors import InternalError
from hxsched.scheduler.planning.problem import Config, Problem
from hxsched.scheduler.types import Accelerator, Objective

log = logging.getLogger(__name__)

RC_EPS = 1e-5  # slack on reduced-cost filters, per tick of the bound and per instance
PENALTY = 1e7  # cost of violating a loadable limit in the relaxation (phase-one slack)


class LpUnsolved(InternalError):
    """HiGHS ended without an answer (neither optimal nor infeasible)."""


@dataclass
class Relaxation:
    value: float  # LP optimum, ticks (fractional)
    w: dict[str, float]  # price of a tick of load per accelerator
    u: dict[str, float]  # price of a DLA loadable per core
    mu: list[float]  # per instance: least priced configuration cost (the convexity dual)
    columns: list[list[Config]]
    fractional: list[dict[int, float]] = field(default_factory=list)
    feasible: bool = True
    converged: bool = True  # no column of negative reduced cost was left
    rounds: int = 0
    master_value: float = 0.0  # the restricted master's optimum (== value when converged)
    # latency: per instance, the price of a tick of its chain (makespan >= every chain)
    sigma: list[float] = field(default_factory=list)

    def prices(self, i: int) -> dict[str, float]:
        """Instance ``i``'s price per tick of load on each accelerator: w, plus its chain's
        price (a chain's length is the sum of its loads)."""
        extra = self.sigma[i] if self.sigma else 0.0
        return {a: x + extra for a, x in self.w.items()} if extra else self.w

    def reduced_cost(self, i: int, cfg: Config, problem: Problem) -> float:
        w = self.prices(i)
        cost = sum(w[a] * cfg.load(a) for a in problem.accelerators)
        cost += sum(self.u[c] * cfg.loadables(c) for c in problem.dla_cores)
        return cost - self.mu[i]

    def bound_ticks(self) -> int:
        return max(1, math.ceil(self.value - 1e-6))

    def enumerate(
        self,
        problem: Problem,
        i: int,
        budget: float,
        load_cap: int,
        limit: int = 200_000,
        deadline: float | None = None,
    ) -> list[Config]:
        """Instance ``i``'s configurations of cost <= ``budget`` at these prices."""
        return problem.chains[i].enumerate(
            self.prices(i), self.u, budget, load_cap, limit=limit, deadline=deadline
        )

    def share_key(self, i: int) -> object:
        """Instances with the same key (and twins) have the same candidate listing."""
        return self.sigma[i] if self.sigma else 0.0


def _lp_min(
    cost: np.ndarray, a_ub: np.ndarray, b_ub: np.ndarray, a_eq: np.ndarray, b_eq: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = _lp_min_or_none(cost, a_ub, b_ub, a_eq, b_eq)
    if out is None:  # pragma: no cover - the master LP always has a solution
        raise InternalError("LP relaxation failed: HiGHS says infeasible")
    return out


def _lp_min_or_none(
    cost: np.ndarray, a_ub: np.ndarray, b_ub: np.ndarray, a_eq: np.ndarray, b_eq: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
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
    solver.setOptionValue("presolve", "off")  # tiny row counts: presolve costs more than it saves
    solver.passModel(lp)
    ran = solver.run()
    status = solver.getModelStatus()
    unanswered = (highs.HighsModelStatus.kUnknown, highs.HighsModelStatus.kNotset)
    for presolve, method in (("on", "simplex"), ("on", "ipm")):
        # rare without presolve (a badly scaled LP: the dual simplex may end in an error):
        # retry with it, then with the interior point method
        if ran != highs.HighsStatus.kError and status not in unanswered:
            break
        solver.clearSolver()
        solver.setOptionValue("presolve", presolve)
        solver.setOptionValue("solver", method)
        ran = solver.run()
        status = solver.getModelStatus()
    if status in (
        highs.HighsModelStatus.kInfeasible,
        highs.HighsModelStatus.kUnboundedOrInfeasible,  # P >= 0: never unbounded
    ):
        return None
    if status != highs.HighsModelStatus.kOptimal:  # pragma: no cover - always feasible
        raise LpUnsolved(f"LP relaxation failed: HiGHS says {status}")
    sol = solver.getSolution()
    duals = np.asarray(sol.row_dual, dtype=float)
    return np.asarray(sol.col_value, dtype=float), duals[: len(b_ub)], duals[len(b_ub) :]


LoadFn = Callable[[int, Config, Accelerator], float]


def _solve_master(
    problem: Problem,
    columns: list[list[Config]],
    load: LoadFn | None = None,
    chains: bool = False,
):
    """The restricted master LP over ``columns``; ``load(i, cfg, acc)`` (default: the load
    alone) is a column's coefficient in accelerator ``acc``'s row; ``chains`` adds a row per
    instance, its chain's length <= P (latency: one frame's makespan covers every chain)."""
    load = load or (lambda _i, c, acc: c.load(acc))
    accs = problem.accelerators
    cores = problem.dla_cores
    cols = [(i, c) for i, cs in enumerate(columns) for c in cs]
    n = len(cols) + 1 + len(cores)  # lambdas, P, loadable slacks
    cost = np.zeros(n)
    cost[len(cols)] = 1.0
    cost[len(cols) + 1 :] = PENALTY
    n_chain = len(columns) if chains else 0
    a_ub = np.zeros((len(accs) + len(cores) + n_chain, n))
    b_ub = np.zeros(len(accs) + len(cores) + n_chain)
    for r, acc in enumerate(accs):
        for k, (i, c) in enumerate(cols):
            a_ub[r, k] = load(i, c, acc)
        a_ub[r, len(cols)] = -1.0
    for r, core in enumerate(cores):
        row = len(accs) + r
        for k, (_, c) in enumerate(cols):
            a_ub[row, k] = c.loadables(core)
        a_ub[row, len(cols) + 1 + r] = -1.0
        b_ub[row] = problem.max_loadables
    base = len(accs) + len(cores)
    for k, (i, c) in enumerate(cols[:] if chains else []):
        a_ub[base + i, k] = c.chain_ticks
    for i in range(n_chain):
        a_ub[base + i, len(cols)] = -1.0
    a_eq = np.zeros((len(columns), n))
    for k, (i, _) in enumerate(cols):
        a_eq[i, k] = 1.0
    x, ineq, eq = _lp_min(cost, a_ub, b_ub, a_eq, np.ones(len(columns)))
    duals_ub = -ineq
    w = {acc: float(max(0.0, duals_ub[r])) for r, acc in enumerate(accs)}
    u = {core: float(max(0.0, duals_ub[len(accs) + r])) for r, core in enumerate(cores)}
    sigma = [float(max(0.0, duals_ub[base + i])) for i in range(n_chain)]
    mu = [float(v) for v in eq]
    frac: list[dict[int, float]] = [dict() for _ in columns]
    seen = [0] * len(columns)
    for k, (i, _) in enumerate(cols):
        if x[k] > 1e-9:
            frac[i][seen[i]] = float(x[k])
        seen[i] += 1
    slack = float(np.sum(x[len(cols) + 1 :]))
    return float(x[len(cols)]), w, u, mu, frac, slack, sigma


def relax(problem: Problem, max_rounds: int = 200, deadline: float | None = None) -> Relaxation:
    """Column generation to the LP optimum over every configuration.

    Whatever round it stops at, ``value`` is a valid lower bound: with the master's load duals
    w (w >= 0, sum w <= 1, the dual of P's column) and loadable duals u >= 0, every plan obeys
    P >= sum_a w_a load_a >= sum_i min_c (w.load(c) + u.loadables(c)) - u.max_loadables, the
    Lagrangian bound, in which each instance's minimum is exactly its pricing problem. At
    convergence it equals the LP optimum; ``mu`` are those minima, so reduced costs are >= 0
    and ``value + sum of reduced costs <= plan value`` holds for any stopping round.
    """
    columns = _initial_columns(problem)
    chains = problem.objective == Objective.LATENCY
    best: tuple[float, dict[str, float], dict[str, float], list[float], list[float]] | None
    best = None
    converged, rounds = False, 0
    while True:
        rounds += 1
        value, w, u, mu, frac, slack, sigma = _solve_master(problem, columns, chains=chains)
        priced = _price_each(problem, w, u, sigma)
        added = _add_columns(columns, priced, mu)
        scale, w_lp, sigma_lp = sum(w.values()) + sum(sigma), w, sigma
        if scale > 1.0 + 1e-12:  # keep sum w + sum sigma <= 1 exactly (see above)
            w = {a: x / scale for a, x in w.items()}
            sigma = [x / scale for x in sigma]
            priced = _price_each(problem, w, u, sigma)
        mins = [cost for cost, _ in priced]
        lagr = sum(mins) - sum(u.values()) * problem.max_loadables
        if best is None or lagr > best[0]:
            best = (lagr, w, u, mins, sigma)
        if not added:
            converged = True
            break
        if rounds >= max_rounds or (deadline is not None and time.monotonic() > deadline):
            break
    feasible = slack <= 1e-6
    if not chains:
        mu = _symmetric(problem, mu)
    if converged:
        bound, (dw, du, dmu, dsigma) = value, (w_lp, u, mu, sigma_lp)
    else:
        assert best is not None  # at least one round ran
        bound, dw, du, dmu, dsigma = best
    return Relaxation(
        bound if feasible else math.inf,
        dw,
        du,
        dmu,
        columns,
        frac,
        feasible,
        converged,
        rounds,
        value,
        dsigma,
    )


def _add_columns(
    columns: list[list[Config]], priced: list[tuple[float, Config | None]], mu: list[float]
) -> bool:
    """Each instance's priced configuration joins its columns where its reduced cost is
    negative (and it is not there yet); whether any joined."""
    added = False
    for i, (cost, cfg) in enumerate(priced):
        negative = cfg is not None and cost - mu[i] < -1e-7 * max(1.0, abs(mu[i]))
        if negative and cfg is not None and all(cfg.segments != c.segments for c in columns[i]):
            columns[i].append(cfg)
            added = True
    return added


def _price_each(problem: Problem, w, u, sigma: list[float]) -> list[tuple[float, Config | None]]:
    """Every instance's pricing problem; with chain prices ``sigma`` (latency), at its own
    prices w + sigma_i (then twins are not shared: their chain prices may differ)."""
    if not sigma or not any(sigma):
        return _price_all(problem, w, u)
    return [
        chain.price({a: x + sigma[i] for a, x in w.items()}, u)
        for i, chain in enumerate(problem.chains)
    ]


def twins(problem: Problem) -> list[int]:
    """Per instance, the first instance interchangeable with it (same chain, same pin)."""
    first: dict[tuple[int, str | None], int] = {}
    return [
        first.setdefault((id(chain), inst.pin), i)
        for i, (chain, inst) in enumerate(zip(problem.chains, problem.instances, strict=True))
    ]


def _symmetric(
    problem: Problem, mu: list[float], columns: list[list[Config]] | None = None
) -> list[float]:
    """Equal convexity duals for interchangeable instances (with the same ``columns``, when
    given): their mean is dual feasible too (every configuration's cost is >= each of them,
    so >= their mean) with the same objective, so twins get the same reduced costs."""
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(twins(problem)):
        if columns is not None and [c.segments for c in columns[i]] != [
            c.segments for c in columns[g]
        ]:
            g = i
        groups.setdefault(g, []).append(i)
    out = list(mu)
    for members in groups.values():
        mean = sum(mu[i] for i in members) / len(members)
        for i in members:
            out[i] = mean
    return out


def _initial_columns(problem: Problem) -> list[list[Config]]:
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
    return columns


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


# ---------------------------------------------------------------------------------------------
# Contention-aware relaxation by column generation, per vector of contention levels
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LevelBound:
    """One vector of contention levels at period T: its Lagrangian bound and duals."""

    levels: dict[str, int]  # per accelerator: the level its co-runners' traffic puts it at
    value: float  # lower bound on max load among plans with these levels at T (inf: none)
    w: dict[str, float]  # price of a tick of load (at these levels) per accelerator
    u: dict[str, float]  # price of a DLA loadable per core
    v: dict[str, float]  # price of a KiB of co-runner traffic per accelerator (its cap row)
    mins: list[float]  # per instance: its least priced configuration cost
    rounds: int
    converged: bool


@dataclass
class ContentionRelaxation:
    """``contention_relax``'s answer at one period: the level vectors it could not refute."""

    period: int
    open: list[LevelBound]  # vectors whose bound is <= period
    vectors: int  # level vectors considered (after symmetry)
    refuted: bool  # every vector's bound is > period: no plan of value <= period
    complete: bool  # every vector was examined (False: deadline, or stopped at the first open)
    value: float = math.inf  # least bound over the open vectors (inf when refuted)


def config_other_kib(cfg: Config, acc: str) -> float:
    """KiB ``cfg`` moves on the accelerators other than ``acc`` (unrounded)."""
    return sum(s.bytes for s in cfg.segments if s.accelerator != acc) / 1024


def least_other_kib(problem: Problem) -> list[float]:
    """Per accelerator: the least KiB per frame its co-runners can move in any plan (each
    instance's least, by pricing with a price on that traffic only; unrounded, so the rounded
    traffic of any plan is at least this)."""
    return [
        sum(cost for cost, _ in _price_all(problem, {}, {}, None, {a: 1.0}))
        for a in problem.accelerators
    ]


def level_vectors(
    problem: Problem, period: int, least: list[float] | None = None
) -> list[dict[str, int]]:
    """Every vector of contention levels a plan of value <= period can have at period, less
    the mirror images when dla0 and dla1 are interchangeable (no pins): swapping the cores
    maps plans of one vector onto plans of its mirror, with the same value. An accelerator's
    level is at least that of the least traffic its co-runners can move (``least``)."""
    accs = problem.accelerators
    least = least if least is not None else least_other_kib(problem)
    lows = []
    for traffic in least:
        low = 0
        for lv in range(1, problem.n_levels):
            if traffic > problem.traffic_threshold_kib(lv, period) + 1e-9:
                low = lv
        lows.append(range(low, problem.n_levels))
    cores = problem.dla_cores
    mirror = len(cores) == 2 and not any(inst.pin for inst in problem.instances)
    out = []
    for combo in itertools.product(*lows):
        levels: dict[str, int] = {a: lv for a, lv in zip(accs, combo, strict=True)}
        if mirror and levels[cores[0]] > levels[cores[1]]:
            continue
        out.append(levels)
    return out


def _level_master(problem: Problem, period: int, levels: dict[str, int], pool):
    """Restricted master LP at ``levels``: (optimum, w, u, v, mu) over the ``pool`` columns."""
    accs, cores = problem.accelerators, problem.dla_cores
    capped = [a for a in accs if levels[a] < problem.n_levels - 1]
    cols = [(i, c) for i, cs in enumerate(pool) for c in cs]
    nc = len(cols)
    n = nc + 1 + len(cores) + len(capped)  # lambdas, P, loadable slacks, traffic slacks
    cost = np.zeros(n)
    cost[nc] = 1.0
    cost[nc + 1 :] = PENALTY
    rows = len(accs) + len(cores) + len(capped)
    a_ub, b_ub = np.zeros((rows, n)), np.zeros(rows)
    for r, acc in enumerate(accs):
        a_ub[r, :nc] = [c.load(acc, levels[acc]) for _, c in cols]
        a_ub[r, nc] = -1.0
    for r, core in enumerate(cores, start=len(accs)):
        a_ub[r, :nc] = [c.loadables(core) for _, c in cols]
        a_ub[r, nc + 1 + r - len(accs)] = -1.0
        b_ub[r] = problem.max_loadables
    base = len(accs) + len(cores)
    scale = []  # traffic rows in units of their cap (or largest coefficient): HiGHS's
    for k, acc in enumerate(capped):  # simplex fails on KiB rows beside tick rows
        r = base + k
        row = np.array([config_other_kib(c, acc) for _, c in cols])
        cap = problem.traffic_threshold_kib(levels[acc] + 1, period)
        unit = max(float(cap), float(row.max(initial=0.0)), 1.0)
        scale.append(unit)
        a_ub[r, :nc] = row / unit
        a_ub[r, nc + 1 + len(cores) + k] = -1.0
        b_ub[r] = cap / unit
    a_eq = np.zeros((len(pool), n))
    for k, (i, _) in enumerate(cols):
        a_eq[i, k] = 1.0
    x, ineq, eq = _lp_min(cost, a_ub, b_ub, a_eq, np.ones(len(pool)))
    d = np.maximum(0.0, -ineq)
    w = {acc: float(d[r]) for r, acc in enumerate(accs)}
    u = {core: float(d[len(accs) + r]) for r, core in enumerate(cores)}
    v = {acc: float(d[base + k]) / scale[k] for k, acc in enumerate(capped)}  # per KiB
    return float(x[nc]), w, u, v, [float(m) for m in eq]


def level_bound(
    problem: Problem,
    period: int,
    levels: dict[str, int],
    pool: list[list[Config]],
    *,
    max_rounds: int = 60,
    decide_only: bool = False,
    deadline: float | None = None,
) -> LevelBound:
    """Column generation for the LP at ``levels`` and ``period``, growing ``pool`` (shared
    by every vector: a column's coefficients are recomputed per vector).

    The bound is Lagrangian, valid at any round: for duals w >= 0 with sum w <= 1, u, v >= 0,
    every plan whose levels at ``period`` are ``levels`` (so its co-runner traffic is within
    each capped row) has max load P >= sum_a w_a load_a >= sum_i min_c (w.load(c) +
    v.other(c) + u.loadables(c)) - v.cap - u.max_loadables, each minimum being the chain's
    pricing problem. ``decide_only`` stops as soon as the answer to "bound > period?" is
    known: the bound exceeds it (refuted), or the restricted master, an upper bound on the LP
    optimum, is within it (the LP cannot refute it)."""
    best: LevelBound | None = None
    eps = 1e-6 * max(1.0, period)
    for rounds in range(1, max_rounds + 1):
        master, w, u, v, mu = _level_master(problem, period, levels, pool)
        scale = sum(w.values())
        if scale > 1.0:
            w = {a: x / scale for a, x in w.items()}
        priced = _price_all(problem, w, u, levels, v)
        caps = sum(x * problem.traffic_threshold_kib(levels[a] + 1, period) for a, x in v.items())
        mins = [cost for cost, _ in priced]
        lagr = sum(mins) - caps - sum(u.values()) * problem.max_loadables
        added = _add_columns(pool, priced, mu)
        if best is None or lagr > best.value:
            best = LevelBound(dict(levels), lagr, w, u, v, mins, rounds, not added)
        done = not added or (deadline is not None and time.monotonic() > deadline)
        if decide_only and (best.value > period + eps or master <= period + eps):
            done = True
        if done:
            break
    assert best is not None
    return LevelBound(best.levels, best.value, best.w, best.u, best.v, best.mins, rounds, not added)


def _price_all(problem: Problem, w, u, levels=None, v=None) -> list[tuple[float, Config | None]]:
    """Every instance's pricing problem, solved once per distinct chain (twins share one)."""
    done: dict[int, tuple[float, Config | None]] = {}
    return [
        done[id(chain)]
        if id(chain) in done
        else done.setdefault(id(chain), chain.price(w, u, levels, v))
        for chain in problem.chains
    ]


class ContentionLp:
    """The contention-aware relaxation of one problem across periods: a column pool shared
    by every level vector and period, and each vector's last duals. Duals stay valid at any
    period (the pricing minima do not depend on it; only the caps do), so a vector they
    already refute at a period costs no LP there."""

    def __init__(self, problem: Problem, columns: list[list[Config]]) -> None:
        self.problem = problem
        self.pool = [list(c) for c in columns]
        self.least = least_other_kib(problem)
        self.duals: dict[tuple[int, ...], LevelBound] = {}
        self.searched = False  # the solver's restricted search over the pool has finished

    def bound_with(self, lb: LevelBound, period: int) -> float:
        """``lb``'s Lagrangian bound with its duals, at ``period``'s caps."""
        p = self.problem
        caps = sum(x * p.traffic_threshold_kib(lb.levels[a] + 1, period) for a, x in lb.v.items())
        return sum(lb.mins) - caps - sum(lb.u.values()) * p.max_loadables

    def relax(
        self, period: int, *, decide_only: bool = False, deadline: float | None = None
    ) -> ContentionRelaxation:
        """Is there possibly a plan of value <= ``period`` under contention? Every level
        vector is bounded (``level_bound``); ``refuted`` when every bound exceeds ``period``,
        the proof that no plan reaches it. ``decide_only`` stops at the first vector left
        open (enough to know the period is not refuted), else every open vector's duals are
        returned for the reduced-cost filter."""
        p = self.problem
        vectors = level_vectors(p, period, self.least)
        out = ContentionRelaxation(period, [], len(vectors), refuted=False, complete=False)
        eps = 1e-6 * max(1.0, period)
        # vectors whose last duals leave them open first (with decide_only one of them
        # usually settles it), then the ones never solved; those the duals refute are skipped
        vectors.sort(
            key=lambda lv: (
                min(self._cached(lv, period), period + 0.5)
                if self._cached(lv, period) > -math.inf
                else period + 0.5
            )
        )
        for levels in vectors:
            if deadline is not None and time.monotonic() > deadline:
                return out  # neither refuted nor complete: no claim
            if self._cached(levels, period) > period + eps:
                continue
            try:
                lb = level_bound(
                    p, period, levels, self.pool, decide_only=decide_only, deadline=deadline
                )
            except LpUnsolved:  # HiGHS gave no answer: no claim about this period
                log.warning(f"contention LP unsolved at {period} ticks, levels {levels}")
                return out
            self.duals[tuple(levels.values())] = lb
            if lb.value <= period + eps:
                out.open.append(lb)
                out.value = min(out.value, lb.value)
                if decide_only:
                    return out
        out.complete = True
        out.refuted = not out.open
        out.open += [m for lb in out.open if (m := self._mirror(lb)) is not None]
        return out

    def cached_open(self, period: int) -> list[LevelBound]:
        """The vectors whose kept duals leave ``period`` open, with their bounds there (no LP
        solved: for heuristics, which need sound formulas, not a complete list)."""
        out = []
        for lb in self.duals.values():
            value = self.bound_with(lb, period)
            if value <= period + 1e-6 * max(1.0, period):
                out.append(LevelBound(lb.levels, value, lb.w, lb.u, lb.v, lb.mins, 0, False))
        out.sort(key=lambda lb: lb.value)
        return out + [m for lb in out if (m := self._mirror(lb)) is not None]

    def _mirror(self, lb: LevelBound) -> LevelBound | None:
        """``lb`` with dla0 and dla1 swapped, where ``level_vectors`` left the mirror image
        out: a SAT search that also breaks the cores' symmetry its own way must see both."""
        cores = self.problem.dla_cores
        vectors_mirrored = len(cores) == 2 and not any(i.pin for i in self.problem.instances)
        if not vectors_mirrored or lb.levels[cores[0]] == lb.levels[cores[1]]:
            return None
        swap = {cores[0]: cores[1], cores[1]: cores[0]}

        def sw(d: dict) -> dict:
            return {swap.get(k, k): x for k, x in d.items()}

        return LevelBound(
            sw(lb.levels), lb.value, sw(lb.w), sw(lb.u), sw(lb.v), lb.mins, lb.rounds, lb.converged
        )

    def _cached(self, levels: dict[str, int], period: int) -> float:
        lb = self.duals.get(tuple(levels.values()))
        return -math.inf if lb is None else self.bound_with(lb, period)
