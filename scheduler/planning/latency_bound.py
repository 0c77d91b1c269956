"""A lower bound on one frame's makespan that knows contention (latency objective).

The plain latency relaxation (``bounds.relax``) prices loads and chains at their uncontended
times. Under contention a segment that overlaps another instance's segment runs at the level
that segment's traffic sets (any traffic sets level >= 1), and one that overlaps nothing runs
alone but then adds its whole time to the frame's span. This relaxation gives each segment of a
configuration a *mode* m (the level it runs at: duration d_m, its hand-over included) and lets
it spend up to d_m overlapped; for every plan of makespan M and its real modes and overlaps:

- every accelerator's load and every instance's chain, at the modes' durations, is <= M;
- M >= the time anything runs >= sum_s d_m(s) - (1 - 1/c) * sum_s o_s, where o_s is the time
  segment s runs while another instance runs and c the most segments that can run at once
  (min(instances, accelerators));
- overlap needs a partner: for instance i and level l, the time i's segments overlap a segment
  whose traffic is at level l is at most the time the other instances run such segments, and a
  segment overlaps level-l traffic only in a mode >= l (o at level l only from modes >= l).

The LP over configurations x modes x overlaps is solved by column generation (HiGHS); its
pricing is each chain's shortest path with one cost per segment: the least, over modes, of the
mode's duration times its dual prices (a hand-over's ticks are priced at the least of them, which
keeps the value a lower bound). The bound is the Lagrangian one, valid at any round, and each
configuration's reduced cost (its least over modes) filters candidates as the plain LP's does.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from hxsched.scheduler.planning.bounds import RC_EPS, Relaxation, _lp_min_or_none
from hxsched.scheduler.planning.problem import INF, Chain, Config, Problem
from hxsched.scheduler.types import Objective

log = logging.getLogger(__name__)

MAX_ROUNDS = 60


@dataclass
class ModalDuals:
    """The prices a chain is priced at: per tick of load (w), per DLA loadable (u), per tick of
    each instance's chain (sigma), of the frame's span (pi), and per tick of overlap with
    level-l traffic, per instance (kappa[i, l])."""

    w: dict[str, float]
    u: dict[str, float]
    sigma: np.ndarray
    pi: float
    kappa: np.ndarray
    concurrency: int

    def parts(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(pref[m], K[l]): the best price per tick of overlap a segment in mode m can get
        (<= 0), and what a tick of instance i's level-l traffic is worth to the others."""
        c = self.kappa[i] - self.pi * (1.0 - 1.0 / self.concurrency)
        pref = np.minimum.accumulate(np.minimum(c, 0.0))
        return pref, self.kappa.sum(axis=0) - self.kappa[i]


def _levels_of(problem: Problem, chain: Chain, acc: str) -> np.ndarray:
    """The traffic level (``Problem.level_of`` of ``Segment.bw``) of every segment [a, b] on
    ``acc``, computed with the same floating-point operations as ``Chain.segment``."""
    key = ("levels", acc)
    cache = chain.__dict__.setdefault("_modal_cache", {})
    if key in cache:
        return cache[key]
    from hxsched.scheduler.planning.problem import kind_of

    ms, _lv, by, _ok = chain.arrays[kind_of(acc)]
    ms_a, by_a = np.asarray(ms), np.asarray(by)
    n = chain.n
    out = np.zeros((n, n), dtype=int)
    assert problem.contention is not None
    peak = problem.contention.peak_gbs * 1e9
    for a in range(n):
        nbytes = by_a[a + 1 :] - by_a[a]
        t = ms_a[a + 1 :] - ms_a[a]
        with np.errstate(divide="ignore", invalid="ignore"):
            bw = np.where(t > 0, nbytes / (t / 1e3), 0.0)
        lv = np.ceil(bw / peak * problem.levels - 1e-12)
        lv = np.minimum(problem.levels, np.maximum(1, lv))
        out[a, a:] = np.where(bw > 0, lv, 0)
    cache[key] = out
    return out


def chain_costs(problem: Problem, chain: Chain, i: int, d: ModalDuals):
    """Per accelerator, the cost matrix of every segment [a, b] (least over modes) and the
    hand-over cost vectors, in the form ``Chain.completion`` and ``Chain.enumerate`` take."""
    pref, K = d.parts(i)
    seg = {}
    for acc in chain.accels:
        lev = _levels_of(problem, chain, acc)
        base = d.w.get(acc, 0.0) + d.sigma[i] + d.pi - K[lev]
        best = None
        cannot = None
        for m in range(problem.n_levels):
            finite, cannot = chain._finite_ticks(acc, m)
            cm = finite * (base + pref[m])
            best = cm if best is None else np.minimum(best, cm)
        assert best is not None and cannot is not None
        best = best + d.u.get(acc, 0.0)
        best[cannot] = INF
        seg[acc] = best
    least: dict[str, float] = {
        acc: d.w.get(acc, 0.0) + d.sigma[i] + d.pi - float(K.max()) + float(pref.min())
        for acc in chain.accels
    }
    hand = {key: least[key[1]] * t for key, t in chain.trans.items()}
    return seg, hand


def _modes(problem: Problem, cfg: Config, i: int, d: ModalDuals) -> tuple[tuple[int, ...], float]:
    """The cheapest mode of each segment of ``cfg`` and the configuration's cost at them."""
    pref, K = d.parts(i)
    modes, total = [], 0.0
    for s in cfg.segments:
        base = d.w.get(s.accelerator, 0.0) + d.sigma[i] + d.pi - K[problem.level_of(s.bw)]
        costs = [s.busy_at(m) * (base + pref[m]) for m in range(problem.n_levels)]
        m = int(np.argmin(costs))
        modes.append(m)
        total += costs[m] + d.u.get(s.accelerator, 0.0)
    return tuple(modes), total


@dataclass
class ModalRelaxation(Relaxation):
    """``Relaxation`` for the latency objective under contention (see the module)."""

    duals: ModalDuals | None = field(default=None, repr=False)
    costs: list = field(default_factory=list, repr=False)  # per instance: chain_costs

    def prices(self, i: int) -> dict[str, float]:  # pragma: no cover - not priced by loads
        raise NotImplementedError("a modal relaxation prices segments by mode")

    def reduced_cost(self, i: int, cfg: Config, problem: Problem) -> float:
        assert self.duals is not None
        return _modes(problem, cfg, i, self.duals)[1] - self.mu[i]

    def enumerate(
        self,
        problem: Problem,
        i: int,
        budget: float,
        load_cap: int,
        limit: int = 200_000,
        deadline: float | None = None,
    ) -> list[Config]:
        return problem.chains[i].enumerate(
            {}, {}, budget, load_cap, limit=limit, deadline=deadline, costs=self.costs[i]
        )

    def share_key(self, i: int) -> object:
        return i  # each instance has its own overlap prices: no two share a listing


@dataclass
class _Column:
    i: int
    cfg: Config
    modes: tuple[int, ...]


def _data(problem: Problem, col: _Column):
    durations = [s.busy_at(m) for s, m in zip(col.cfg.segments, col.modes, strict=True)]
    levels = [problem.level_of(s.bw) for s in col.cfg.segments]
    load = {
        a: sum(t for t, s in zip(durations, col.cfg.segments, strict=True) if s.accelerator == a)
        for a in problem.accelerators
    }
    total = float(sum(durations))
    traffic = [
        sum(t for t, lv in zip(durations, levels, strict=True) if lv == level)
        for level in range(problem.n_levels)
    ]
    room = [
        sum(t for t, m in zip(durations, col.modes, strict=True) if m >= level)
        for level in range(problem.n_levels)
    ]
    return load, total, traffic, room


def _master(problem: Problem, cols: list[_Column], concurrency: int):
    """The restricted master LP; returns (value, duals, x) or None when HiGHS fails."""
    accs, cores = problem.accelerators, problem.dla_cores
    n_i, NL, nc = len(problem.instances), problem.n_levels, len(cols)
    # variables: lambda[nc], omega[nc, NL], M, loadable slacks
    v_l, v_o, v_m = 0, nc, nc + nc * NL
    n = v_m + 1 + len(cores)
    cost = np.zeros(n)
    cost[v_m] = 1.0
    cost[v_m + 1 :] = 1e7
    rows: list[np.ndarray] = []
    rhs: list[float] = []

    def row() -> np.ndarray:
        r = np.zeros(n)
        rows.append(r)
        rhs.append(0.0)
        return r

    data = [_data(problem, c) for c in cols]
    r_load = {}
    for a in accs:
        r = r_load[a] = row()
        for k, (load, *_rest) in enumerate(data):
            r[v_l + k] = load[a]
        r[v_m] = -1.0
    for z, core in enumerate(cores):
        r = row()
        for k, c in enumerate(cols):
            r[v_l + k] = c.cfg.loadables(core)
        r[v_m + 1 + z] = -1.0
        rhs[-1] = problem.max_loadables
    chain_rows = []
    for i in range(n_i):
        r = row()
        chain_rows.append(len(rows) - 1)
        for k, c in enumerate(cols):
            if c.i == i:
                r[v_l + k] = data[k][1]
        r[v_m] = -1.0
    union = row()
    union_row = len(rows) - 1
    for k in range(nc):
        union[v_l + k] = data[k][1]
        union[v_o + k * NL : v_o + (k + 1) * NL] = -(1.0 - 1.0 / concurrency)
    union[v_m] = -1.0
    couple_rows = np.zeros((n_i, NL), dtype=int)
    for i in range(n_i):
        for level in range(NL):
            r = row()
            couple_rows[i, level] = len(rows) - 1
            for k, c in enumerate(cols):
                if c.i == i:
                    r[v_o + k * NL + level] = 1.0
                else:
                    r[v_l + k] = -data[k][2][level]
    for k in range(nc):
        for level in range(NL):
            r = row()
            r[v_o + k * NL + level] = 1.0
            r[v_l + k] = -data[k][3][level]
        r = row()
        r[v_o + k * NL : v_o + (k + 1) * NL] = 1.0
        r[v_l + k] = -data[k][1]
    a_ub = np.vstack(rows)
    b_ub = np.asarray(rhs)
    a_eq = np.zeros((n_i, n))
    for k, c in enumerate(cols):
        a_eq[c.i, v_l + k] = 1.0
    out = _lp_min_or_none(cost, a_ub, b_ub, a_eq, np.ones(n_i))
    if out is None:
        return None
    x, ineq, eq = out
    du = -ineq
    w: dict[str, float] = {a: float(max(0.0, du[r])) for r, a in enumerate(accs)}
    u: dict[str, float] = {c: float(max(0.0, du[len(accs) + z])) for z, c in enumerate(cores)}
    sigma = np.array([max(0.0, du[r]) for r in chain_rows])
    pi = float(max(0.0, du[union_row]))
    kappa = np.maximum(0.0, du[couple_rows])
    duals = ModalDuals(w, u, sigma, pi, kappa, concurrency)
    return float(x[v_m]), duals, x[:nc], [float(e) for e in eq]


def _scaled(d: ModalDuals) -> ModalDuals:
    """Duals with sum w + sum sigma + pi <= 1 (the Lagrangian bound needs it)."""
    scale = sum(d.w.values()) + float(d.sigma.sum()) + d.pi
    if scale <= 1.0 + 1e-12:
        return d
    return ModalDuals(
        {a: x / scale for a, x in d.w.items()},
        d.u,
        d.sigma / scale,
        d.pi / scale,
        d.kappa / scale,
        d.concurrency,
    )


def modal_relax(
    problem: Problem, plain: Relaxation, deadline: float | None = None
) -> ModalRelaxation | None:
    """The contention-aware latency relaxation, started from the plain one's columns; None
    where it does not apply (throughput, contention off) or HiGHS gives no answer."""
    if problem.objective != Objective.LATENCY or problem.contention is None:
        return None
    if len(problem.instances) < 2 or not plain.feasible:
        return None
    concurrency = min(len(problem.instances), len(problem.accelerators))
    cols: list[_Column] = []
    seen: set = set()

    def add(col: _Column) -> bool:
        key = (col.i, col.cfg.segments, col.modes)
        if key in seen:
            return False
        seen.add(key)
        cols.append(col)
        return True

    for i, cfgs in enumerate(plain.columns):
        for cfg in cfgs:
            add(_Column(i, cfg, tuple(0 for _ in cfg.segments)))
            add(_Column(i, cfg, tuple(1 for _ in cfg.segments)))
    best: tuple[float, ModalDuals, list[float], list] | None = None
    rounds, converged = 0, False
    frac: list[dict[int, float]] = [dict() for _ in problem.instances]
    while rounds < MAX_ROUNDS:
        rounds += 1
        got = _master(problem, cols, concurrency)
        if got is None:
            return None
        _value, duals, x, _mu = got
        d = _scaled(duals)
        mins, costs, found = [], [], []
        for i, chain in enumerate(problem.chains):
            cc = chain_costs(problem, chain, i, d)
            R = chain.completion({}, {}, costs=cc)
            A = len(chain.accels)
            least = float(R[0, A, 0])
            mins.append(least)
            costs.append(cc)
            if least < INF:
                cfg = chain.config(chain._trace(R, cc))
                found.append((i, cfg))
        lagr = sum(mins) - sum(d.u.values()) * problem.max_loadables
        if best is None or lagr > best[0]:
            best = (lagr, d, mins, costs)
            frac = [dict() for _ in problem.instances]
            seen_i = [0] * len(problem.instances)
            for k, c in enumerate(cols):
                if x[k] > 1e-9:
                    frac[c.i][seen_i[c.i]] = float(x[k])
                seen_i[c.i] += 1
        added = False
        for i, cfg in found:
            modes, exact = _modes(problem, cfg, i, duals)
            col_mu = _mu_of(cols, i, duals, problem)
            if exact < col_mu - 1e-7 * max(1.0, abs(col_mu)):
                added |= add(_Column(i, cfg, modes))
        if not added:
            converged = True
            break
        if deadline is not None and time.monotonic() > deadline:
            break
    assert best is not None
    lagr, d, mins, costs = best
    columns = [list(cfgs) for cfgs in plain.columns]
    for c in cols:
        if all(c.cfg.segments != o.segments for o in columns[c.i]):
            columns[c.i].append(c.cfg)
    log.info(
        f"latency LP with contention: {lagr:.2f} ticks ({rounds} rounds"
        f"{'' if converged else ', not converged'}; without contention {plain.value:.2f})"
    )
    return ModalRelaxation(
        value=max(lagr, 0.0),
        w=d.w,
        u=d.u,
        mu=mins,
        columns=columns,
        fractional=_fractions(columns, cols, frac),
        feasible=True,
        converged=converged,
        rounds=rounds,
        master_value=lagr,
        sigma=[float(s) for s in d.sigma],
        duals=d,
        costs=costs,
    )


def _mu_of(cols: list[_Column], i: int, d: ModalDuals, problem: Problem) -> float:
    """The least cost among instance i's columns at duals d (the master's convexity value
    at optimality, recomputed so that the comparison uses the same prices)."""
    return min(_cost_at(problem, c, d) for c in cols if c.i == i)


def _cost_at(problem: Problem, col: _Column, d: ModalDuals) -> float:
    pref, K = d.parts(col.i)
    total = 0.0
    for s, m in zip(col.cfg.segments, col.modes, strict=True):
        base = d.w.get(s.accelerator, 0.0) + d.sigma[col.i] + d.pi - K[problem.level_of(s.bw)]
        total += s.busy_at(m) * (base + pref[m]) + d.u.get(s.accelerator, 0.0)
    return total


def _fractions(
    columns: list[list[Config]], cols: list[_Column], frac: list[dict[int, float]]
) -> list[dict[int, float]]:
    """The master's weights per instance, indexed by position in ``columns``."""
    out: list[dict[int, float]] = [dict() for _ in columns]
    per_i: list[list[_Column]] = [[] for _ in columns]
    for c in cols:
        per_i[c.i].append(c)
    for i, weights in enumerate(frac):
        for pos, wgt in weights.items():
            cfg = per_i[i][pos].cfg
            k = next(k for k, o in enumerate(columns[i]) if o.segments == cfg.segments)
            out[i][k] = out[i].get(k, 0.0) + wgt
    return out


def bound_ticks(rel: ModalRelaxation) -> int:
    return max(1, math.ceil(rel.value - RC_EPS))
