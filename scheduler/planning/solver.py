"""The SAT scheduler: pick one configuration per instance (and, for latency, an order of the
segments), searched to the optimum, which is proven by an UNSAT answer one tick below.

Throughput ("is there a selection with every accelerator's per-frame work <= T?"): each
instance's load on each accelerator is a one-hot choice turned into a binary number; the loads
are summed by an adder tree and compared with T through a comparator switched on by an
assumption literal, so one incremental solver answers every bound and keeps what it learned.
Contention (levels of other-accelerator traffic, see ``problem``) adds, per level, a second sum
that must fit T whenever the other accelerators' traffic over T reaches that level.

Latency ("does one frame of every instance finish by T?"): start and end of every segment slot
are order-encoded integers in [0, T]; a slot's end follows its start by the chosen
configuration's duration; slots on one accelerator are ordered one way or the other; slots on
different accelerators that are not ordered may overlap and then run at the contention level of
the other slot's traffic. A fresh encoding per bound.

Both searches start from the LP lower bound and the best plan of the cheaper settings solved
first (fewer switches; for latency, the throughput plan), bisect between them, and stop at a
proof (the plan's value equals a proven lower bound: UNSAT one tick below, by the SAT solver,
the coarse pass or the contention-aware LP of ``bounds.ContentionLp``, or the LP bound) or at
the time limit, reporting the proven gap. Encodings are built against the deadline and a
clause budget; a bound whose encoding cannot finish is abandoned with the best plan so far.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pysat.solvers import Solver

from hxsched.errors import HxschedError, InternalError
from hxsched.scheduler.planning.bounds import (
    ContentionLp,
    LevelBound,
    config_other_kib,
    lower_bound_ticks,
    relax,
    twins,
)
from hxsched.scheduler.planning.encodings import Cnf, EncodingAbandoned, OrderInt
from hxsched.scheduler.planning.latency_bound import modal_relax
from hxsched.scheduler.planning.plan import SatCall
from hxsched.scheduler.planning.problem import Config, Problem, _OutOfTime, _TooMany
from hxsched.scheduler.planning.simulate import Evaluation, evaluate
from hxsched.scheduler.types import Objective

# as SolverReport.proof in plan.py: UNSAT one tick below (SAT solver, fine or coarse encoding),
# the LP bound met (or its reduced costs leave no configuration), the contention-aware LP one
# tick below, or "" when not proven; ``SolveResult.proof_detail`` says which and its size
Proof = Literal["unsat", "lp-bound", "contention-lp", ""]

DEFAULT_SAT_SOLVER = "glucose4"  # interruptible, so --time-limit is honoured inside a call
log = logging.getLogger(__name__)

INTERRUPTIBLE = {"glucose3", "glucose4", "minisat22", "maplechrono", "maplecm", "mergesat3"}


@dataclass
class SolveResult:
    objective: Objective
    selection: list[Config] | None
    evaluation: Evaluation | None
    value: int | None  # ticks (period or makespan) of the plan
    lower_bound: int  # proven lower bound, ticks
    lp_bound: int
    optimal: bool
    proof: Proof  # "unsat" (UNSAT one tick below), "lp-bound", or "" when not proven
    solve_time_s: float
    calls: list[SatCall] = field(default_factory=list)
    variables: int = 0
    clauses: int = 0
    configs: list[int] = field(default_factory=list)
    proof_detail: str = ""
    lp_converged: bool = True
    lp_rounds: int = 0
    peak_rss_mib: float = 0.0  # the process's peak resident memory when the solve ended
    # the cheaper settings solved first: (setting, value in ticks, proven optimal)
    stages: list[tuple[str, int, bool]] = field(default_factory=list)
    # the lower bound's own proof: the bound shown infeasible and how (None: the LP bound)
    unsat_below: tuple[int | None, str] = (None, "")
    # the contention-aware relaxation it built (columns, duals): a later search of the same
    # problem resumes from it
    contention_lp: ContentionLp | None = field(default=None, repr=False, compare=False)

    @property
    def gap(self) -> float:
        if not self.value:
            return float("inf")
        return max(0.0, (self.value - self.lower_bound) / self.value)


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------
def _twin_order(cnf: Cnf, problem: Problem, y: list[list[int]]) -> bool:
    """Interchangeable instances (same chain and pin, the same candidates and reduced costs)
    choose non-decreasing configuration indices: any plan, its twins sorted, is still a plan
    of the same value. Returns whether any such order was imposed."""
    last: dict[int, int] = {}
    imposed = False
    rcs = problem.reduced_costs
    for i, g in enumerate(twins(problem)):
        prev = last.get(g)
        last[g] = i
        if prev is None or len(problem.configs[i]) != len(problem.configs[prev]):
            continue
        same = all(
            a.segments == b.segments
            for a, b in zip(problem.configs[i], problem.configs[prev], strict=True)
        )
        if not same or (rcs is not None and rcs[i] != rcs[prev]):
            last[g] = i
            continue
        # ge[c] -> index of instance i >= c; y[prev][c] -> ge[c]
        n = len(y[i])
        ge = [cnf.var() for _ in range(n)]
        for c in range(n):
            cnf.add([-ge[c], y[i][c], *([ge[c + 1]] if c + 1 < n else [])])
            cnf.add([-y[prev][c], ge[c]])
        imposed = True
    return imposed


def _symmetry_breaking(cnf: Cnf, problem: Problem, y: list[list[int]]) -> None:
    """Twins in order (``_twin_order``); else, dla0 and dla1 being interchangeable, the first
    instance that uses a DLA uses dla0 (the two rules are not combined: sorting twins and
    swapping the cores need not commute)."""
    if _twin_order(cnf, problem, y):
        return
    if len(problem.dla_cores) != 2 or any(inst.pin for inst in problem.instances):
        return
    d0, d1 = problem.dla_cores
    uses = []
    for i, cfgs in enumerate(problem.configs):
        uses.append(
            cnf.or_of([y[i][c] for c, cfg in enumerate(cfgs) if cfg.uses(d0) or cfg.uses(d1)])
        )
        earlier = uses[:-1]
        for c, cfg in enumerate(cfgs):
            if cfg.uses(d1) and not cfg.uses(d0):
                cnf.add([-y[i][c], *earlier])


def _loadables(cnf: Cnf, problem: Problem, y: list[list[int]]) -> None:
    for core in problem.dla_cores:
        lits, weights = [], []
        for i, cfgs in enumerate(problem.configs):
            for c, cfg in enumerate(cfgs):
                n = cfg.loadables(core)
                if n:
                    lits.append(y[i][c])
                    weights.append(n)
        cnf.at_most(lits, weights, problem.max_loadables)


def _choices(cnf: Cnf, problem: Problem) -> list[list[int]]:
    y = [[cnf.var(("y", i, c)) for c in range(len(cfgs))] for i, cfgs in enumerate(problem.configs)]
    for row in y:
        cnf.exactly_one(row)
    _loadables(cnf, problem, y)
    _symmetry_breaking(cnf, problem, y)
    _reduced_cost_cut(cnf, problem, y)
    return y


CUT_RESOLUTION = 160  # steps the reduced-cost budget is divided into
COARSE_STEPS = 128
HEURISTIC_POOL = 400  # near-optimal configurations per instance the heuristic may draw on  # steps an accelerator's capacity is divided into for the implied cuts


def _reduced_cost_cut(cnf: Cnf, problem: Problem, y: list[list[int]]) -> None:
    """LP duality: a plan of value <= T satisfies sum of its configurations' reduced costs
    <= T - LP. Rounded down onto a grid, which keeps the cut valid."""
    if problem.reduced_costs is None or problem.rc_budget is None:
        return
    budget = max(problem.rc_budget, 0.0)
    scale = CUT_RESOLUTION / budget if budget > 1e-9 else 1e6
    bound = int(math.floor(budget * scale + 1e-9))
    weights = [
        [max(0, int(math.floor(rc * scale - 1e-9))) for rc in row] for row in problem.reduced_costs
    ]
    if bound == 0:
        for row, ws in zip(y, weights, strict=True):
            for lit, w in zip(row, ws, strict=True):
                if w > 0:
                    cnf.add([-lit])
        return
    cnf.choice_sum_at_most(y, weights, bound)


def _selection(problem: Problem, y: list[list[int]], model: set[int]) -> list[Config]:
    out = []
    for i, row in enumerate(y):
        c = next(c for c, lit in enumerate(row) if lit in model)
        out.append(problem.configs[i][c])
    return out


LOAD_CHUNK = 65536  # clauses handed to the SAT solver between two looks at the clock


def _load_solver(name: str, clauses: list[list[int]], deadline: float | None) -> Solver:
    """A solver holding ``clauses``, loaded in chunks against the deadline (a formula of
    millions of clauses takes seconds to hand over): EncodingAbandoned past it."""
    solver = Solver(name=name)
    for start in range(0, len(clauses), LOAD_CHUNK):
        if deadline is not None and time.monotonic() > deadline:
            solver.delete()
            raise EncodingAbandoned("timeout while loading the SAT solver")
        solver.append_formula(clauses[start : start + LOAD_CHUNK])
    return solver


class _Timer:
    """Interrupts a solver when the deadline passes (for solvers that support it)."""

    def __init__(self, solver: Solver, name: str, deadline: float | None) -> None:
        self.timer = None
        self.fired = False
        if deadline is not None and name in INTERRUPTIBLE:
            delay = max(0.0, deadline - time.monotonic())
            self.timer = threading.Timer(delay, self._fire, args=(solver,))
            self.timer.start()

    def _fire(self, solver: Solver) -> None:
        self.fired = True
        solver.interrupt()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def _decide(solver: Solver, name: str, assumptions: list[int], deadline: float | None):
    """True (SAT), False (UNSAT) or None (out of time)."""
    if deadline is not None and time.monotonic() >= deadline:
        return None
    timer = _Timer(solver, name, deadline)
    try:
        if name in INTERRUPTIBLE:
            result = solver.solve_limited(assumptions=assumptions, expect_interrupt=True)
        else:
            result = solver.solve(assumptions=assumptions)
    finally:
        timer.cancel()
    if name in INTERRUPTIBLE:
        solver.clear_interrupt()
        if result is False and timer.fired:
            # the interrupt fired: an answer that raced it is not trusted as a proof
            # (observed: glucose4 reporting False for a satisfiable call cut at the deadline)
            return None
    return result


# ---------------------------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------------------------
class ThroughputEncoding:
    def __init__(
        self,
        problem: Problem,
        solver_name: str,
        deadline: float | None = None,
        caps: dict[str, int] | None = None,
    ) -> None:
        """``caps``: per accelerator, the co-runner traffic (KiB) a plan may put beside it."""
        self.p = problem
        cnf = self.cnf = Cnf(deadline, MAX_CLAUSES)
        self.y = _choices(cnf, problem)
        self.load_bits: dict[tuple[str, int], list[int]] = {}
        for acc in problem.accelerators:
            for level in range(problem.n_levels):
                numbers = [
                    cnf.one_hot_number(self.y[i], [c.load(acc, level) for c in cfgs])
                    for i, cfgs in enumerate(problem.configs)
                ]
                self.load_bits[(acc, level)] = cnf.sum_numbers(numbers)
        self.other_bits: dict[str, list[int]] = {}
        traffic: list[str] = list(problem.accelerators if problem.contention else caps or {})
        for name in traffic:
            numbers = [
                cnf.one_hot_number(
                    self.y[i],
                    [
                        sum(problem.kib(c.bytes_on(b)) for b in problem.accelerators if b != name)
                        for c in cfgs
                    ],
                )
                for i, cfgs in enumerate(problem.configs)
            ]
            self.other_bits[name] = cnf.sum_numbers(numbers)
        for name, cap in (caps or {}).items():
            cnf.add([cnf.leq_const(self.other_bits[name], cap)])
        self.name = solver_name
        self.solver = _load_solver(solver_name, cnf.clauses, deadline)
        self._added = len(cnf.clauses)

    def _flush(self) -> None:
        for clause in self.cnf.clauses[self._added :]:
            self.solver.add_clause(clause)
        self._added = len(self.cnf.clauses)

    def add_coarse_load_cuts(self, ticks: int) -> None:
        """Implied constraints for the bound: sum of floor(load / g) <= floor(ticks / g) on every
        accelerator, order-encoded so that propagation sees each accelerator's capacity (the
        exact binary sums alone propagate weakly). Only for a fixed bound (fresh encodings)."""
        g = max(1, math.ceil(ticks / COARSE_STEPS))
        for acc in self.p.accelerators:
            weights = [[c.load(acc) // g for c in cfgs] for cfgs in self.p.configs]
            self.cnf.choice_sum_at_most(self.y, weights, ticks // g)
        self._flush()

    def decide(self, ticks: int, deadline: float | None):
        cnf, p = self.cnf, self.p
        guard = cnf.var()
        for acc in p.accelerators:
            cnf.add([-guard, cnf.leq_const(self.load_bits[(acc, 0)], ticks)])
            for level in range(1, p.n_levels):
                below = cnf.leq_const(self.other_bits[acc], p.traffic_threshold_kib(level, ticks))
                fits = cnf.leq_const(self.load_bits[(acc, level)], ticks)
                cnf.add([-guard, below, fits])
        self._flush()
        result = _decide(self.solver, self.name, [guard], deadline)
        if result:
            model = set(lit for lit in self.solver.get_model() if lit > 0)
            return True, _selection(p, self.y, model)
        return result, None

    @property
    def size(self) -> tuple[int, int]:
        return self.cnf.pool.top, len(self.cnf.clauses)


def _loadables_ok(problem: Problem, sel: Sequence[Config]) -> bool:
    return all(
        sum(c.loadables(core) for c in sel) <= problem.max_loadables for core in problem.dla_cores
    )


def _heuristic(
    problem: Problem,
    pools: list[list[Config]],
    weights: list[dict[int, float]],
    start: list[Config] | None = None,
    deadline: float | None = None,
) -> tuple[list[Config], Evaluation] | None:
    """Coordinate descent over each instance's candidate configurations (the LP's columns),
    starting from ``start`` (an earlier stage's plan) or the column the LP weighs most;
    evaluated by the simulator; stops improving at ``deadline``."""
    sel = [
        pool[max(w, key=lambda g: w[g]) if w else 0] for pool, w in zip(pools, weights, strict=True)
    ]
    if start is not None:
        sel = list(start)
        for i, cfg in enumerate(start):
            if all(cfg.segments != o.segments for o in pools[i]):
                pools[i].append(cfg)
    if not _loadables_ok(problem, sel):
        sel = [
            min(pool, key=lambda c: sum(c.loadables(x) for x in problem.dla_cores))
            for pool in pools
        ]
        if not _loadables_ok(problem, sel):
            return None
    best = evaluate(problem, sel)
    improved = True
    while improved:
        improved = False
        for i, pool in enumerate(pools):
            for cfg in pool:
                if deadline is not None and time.monotonic() > deadline:
                    return sel, best
                if cfg is sel[i]:
                    continue
                trial = sel[:i] + [cfg] + sel[i + 1 :]
                if not _loadables_ok(problem, trial):
                    continue
                ev = evaluate(problem, trial)
                if ev.period < best.period:
                    best, sel, improved = ev, trial, True
    return sel, best


# ---------------------------------------------------------------------------------------------
# Latency
# ---------------------------------------------------------------------------------------------
class LatencyEncoding:
    def __init__(
        self, problem: Problem, horizon: int, solver_name: str, deadline: float | None = None
    ) -> None:
        self.p = problem
        cnf = self.cnf = Cnf(deadline, MAX_CLAUSES)
        T = horizon
        self.y = _choices(cnf, problem)
        n = len(problem.configs)
        self.k = [max(len(c.segments) for c in cfgs) for cfgs in problem.configs]
        L = problem.n_levels - 1
        self.S = {(i, s): OrderInt(cnf, T, ("S", i, s)) for i in range(n) for s in range(self.k[i])}
        self.E = {(i, s): OrderInt(cnf, T, ("E", i, s)) for i in range(n) for s in range(self.k[i])}
        self.lv = {key: OrderInt(cnf, L, ("lv", *key)) for key in self.S} if L else {}
        acc_of: dict[tuple[int, int, str], list[int]] = {}
        traffic: dict[tuple[int, int, int], list[int]] = {}
        for i, cfgs in enumerate(problem.configs):
            for s in range(self.k[i]):
                S, E = self.S[(i, s)], self.E[(i, s)]
                for u in range(1, T + 1):
                    cnf.add([-S.ge(u), E.ge(u)])  # E >= S
                if s + 1 < self.k[i]:
                    nxt = self.S[(i, s + 1)]
                    for v in range(1, T + 1):
                        cnf.add([-E.ge(v), nxt.ge(v)])
            # configurations that give a slot the same durations share one set of clauses
            by_duration: dict[tuple[int, tuple[int, ...]], list[int]] = {}
            for c, cfg in enumerate(cfgs):
                yc = self.y[i][c]
                for s, seg in enumerate(cfg.segments):
                    acc_of.setdefault((i, s, seg.accelerator), []).append(yc)
                    tr = problem.level_of(seg.bw) if problem.contention is not None else 0
                    for level in range(1, tr + 1):
                        traffic.setdefault((i, s, level), []).append(yc)
                    durations = tuple(seg.busy_at(level) for level in range(problem.n_levels))
                    by_duration.setdefault((s, durations), []).append(yc)
            for (s, durations), lits in by_duration.items():
                S, E = self.S[(i, s)], self.E[(i, s)]
                chosen = cnf.or_of(lits)
                previous = -1
                for level, d in enumerate(durations):
                    if d == previous:
                        continue
                    previous = d
                    cond = [-chosen] if level == 0 else [-chosen, -self.lv[(i, s)].ge(level)]
                    for u in range(0, T + 1):
                        if u + d > T:
                            cnf.add([*cond, -S.ge(u)] if u > 0 else cond)
                            break
                        if d > 0:
                            cnf.add([*cond, -S.ge(u), E.ge(u + d)] if u > 0 else [*cond, E.ge(d)])
        self.acc = {key: cnf.or_of(lits) for key, lits in acc_of.items()}
        self.tr = {key: cnf.or_of(lits) for key, lits in traffic.items()}
        self.b: dict[tuple, int] = {}
        slots = list(self.S)
        for x, p in enumerate(slots):
            for q in slots[x + 1 :]:
                if p[0] == q[0]:
                    continue
                bpq, bqp = cnf.var(("b", p, q)), cnf.var(("b", q, p))
                self.b[(p, q)], self.b[(q, p)] = bpq, bqp
                for first, second, lit in ((p, q, bpq), (q, p, bqp)):
                    Ef, Ss = self.E[first], self.S[second]
                    for v in range(1, T + 1):
                        cnf.add([-lit, -Ef.ge(v), Ss.ge(v)])
                for acc in problem.accelerators:
                    ap, aq = self.acc.get((*p, acc)), self.acc.get((*q, acc))
                    if ap is not None and aq is not None:
                        cnf.add([-ap, -aq, bpq, bqp])
                if L:
                    for level in range(1, L + 1):
                        for me, other in ((p, q), (q, p)):
                            t = self.tr.get((*other, level))
                            if t is not None:
                                cnf.add([bpq, bqp, -t, self.lv[me].ge(level)])
        self.name = solver_name
        self.solver = _load_solver(solver_name, cnf.clauses, deadline)

    def decide(self, deadline: float | None):
        result = _decide(self.solver, self.name, [], deadline)
        if not result:
            return result, None, None
        model = set(lit for lit in self.solver.get_model() if lit > 0)
        sel = _selection(self.p, self.y, model)
        edges = set()
        for (p, q), lit in self.b.items():
            if lit in model and p[1] < len(sel[p[0]].segments) and q[1] < len(sel[q[0]].segments):
                edges.add((p, q))
        return True, sel, edges

    @property
    def size(self) -> tuple[int, int]:
        return self.cnf.pool.top, len(self.cnf.clauses)

    def delete(self) -> None:
        self.solver.delete()


# ---------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------
# Seconds, at most, for the first search of the setting asked for alone, and for each cheaper
# stage after it. Absolute, not shares of the limit: a longer limit runs the same steps first
# and only then goes on, so more time never gives a worse plan. The cheaper setting of the same
# objective (k-1 switches) is itself solved as a whole, staged in turn, for at least STAGE_S and
# up to STAGE_SHARE of the time left: what a (k-1)-switch run reaches, the k run starts from.
QUICK_S = 2.0
STAGE_S = 2.0
STAGE_SHARE = 0.7
MAX_CLAUSES = 4_000_000  # a bound whose encoding needs more is abandoned (memory: ~1 GB)


@dataclass
class _Seed:
    selection: list[Config]
    value: int
    edges: frozenset | None
    origin: str


def solve(
    problem: Problem,
    *,
    time_limit_s: float | None = 60.0,
    solver_name: str = DEFAULT_SAT_SOLVER,
    staged: bool = True,
) -> SolveResult:
    """Search the optimum of ``problem`` and prove it (or report the gap at the time limit).

    Anytime: a latency search first takes the start plans of 0..k-1 switches (heuristics
    only, each seeded with the one below); the setting asked for is searched alone
    (``QUICK_S``); unless that proves
    it, cheaper settings follow, each starting from the best plan so far that fits it: for
    latency the throughput plan at k (``STAGE_S``), and the same objective at k-1 switches,
    solved as a whole in the same way (at least ``STAGE_S``, up to ``STAGE_SHARE`` of the time
    left). The last search starts from the best of all: allowing more switches or more time
    starts it from a plan no worse than the cheaper settings reach.
    """
    t0 = time.monotonic()
    return _solve_staged(problem, time_limit_s, solver_name, staged, [], t0, ladder=staged)


def _solve_staged(
    problem: Problem,
    time_limit_s: float | None,
    solver_name: str,
    staged: bool,
    given: list[_Seed],
    t0: float,
    ladder: bool = False,
) -> SolveResult:
    begin = time.monotonic()
    deadline = begin + time_limit_s if time_limit_s else None
    seeds: list[_Seed] = list(given)
    stages: list[tuple[str, int, bool]] = []
    quick: SolveResult | None = None
    todo = _stages(problem) if staged else []
    if ladder and problem.objective == Objective.LATENCY and problem.max_switches > 0:
        # the start plans of fewer switches first (0, 1, ... k-1: each a heuristic seeded with
        # the one below), so that even a short limit, whose first search at k ends in its
        # heuristic, returns a plan no worse than the start a run at k-1 takes. Latency only:
        # a throughput search's best start comes after its contention bound (_pool_search),
        # which a ladder cannot afford, and its own heuristic does as well at a short limit
        for k in range(problem.max_switches):
            sub = _variant(problem, problem.objective, k)
            r = _search(sub, deadline, solver_name, _reseed(sub, seeds), t0, start_only=True)
            assert r.selection is not None and r.value is not None  # _search raises otherwise
            seeds.append(_Seed(r.selection, r.value, _edges(r), f"start k={k}"))
            stages.append((f"start k={k}", r.value, r.optimal))
    if todo:
        # most instances are proven within a fraction of a second: try the setting asked for
        # alone first, and stage only when that short search leaves a gap (an optimum at k is
        # never worse than one at fewer switches, so a proven plan is already monotone)
        quick_deadline = _within(time.monotonic() + QUICK_S, deadline)
        quick = _search(problem, quick_deadline, solver_name, _reseed(problem, seeds), t0)
        if quick.optimal:
            quick.stages = stages
            return quick
        assert quick.selection is not None and quick.value is not None
        seeds.append(_Seed(quick.selection, quick.value, _edges(quick), "short search"))
        stages.append(("short search", quick.value, False))
        if _past(deadline):  # the short search took the whole limit: the stages have none left
            quick.stages = stages
            return quick
    for objective, k in todo:
        sub = _variant(problem, objective, k)
        origin = f"{objective.value} k={k}"
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if objective == problem.objective:  # k-1 switches: a whole staged solve of its own
            budget = STAGE_S if left is None else min(left, max(STAGE_S, STAGE_SHARE * left))
            r = _solve_staged(sub, budget or 1e-9, solver_name, True, _reseed(sub, seeds), t0)
            stages += [(f"{origin}: {name}", v, o) for name, v, o in r.stages]
        else:
            sub_deadline = _within(time.monotonic() + STAGE_S, deadline)
            r = _search(sub, sub_deadline, solver_name, _reseed(sub, seeds), t0)
        assert r.selection is not None and r.value is not None  # _search raises otherwise
        seeds.append(_Seed(r.selection, r.value, _edges(r), origin))
        stages.append((origin, r.value, r.optimal))
    result = _search(problem, deadline, solver_name, _reseed(problem, seeds), t0, quick)
    result.stages = stages
    return result


def _within(when: float, deadline: float | None) -> float:
    return when if deadline is None else min(when, deadline)


def _stages(problem: Problem) -> list[tuple[Objective, int]]:
    """The cheaper settings searched before ``problem`` itself: for latency the throughput
    plan at the same k; then the same objective at k-1 switches (whose own solve stages
    k-2, and so on)."""
    k = problem.max_switches
    out = [(Objective.THROUGHPUT, k)] if problem.objective == Objective.LATENCY else []
    return out + ([(problem.objective, k - 1)] if k > 0 else [])


def _variant(problem: Problem, objective: Objective, k: int) -> Problem:
    from hxsched.scheduler.planning.problem import build_problem

    return build_problem(
        problem.instances,
        problem.accelerators,
        objective=objective,
        max_switches=k,
        resolution_ms=problem.resolution_ms,
        contention=problem.contention,
        levels=problem.levels,
        max_loadables=problem.max_loadables,
    )


def _edges(r: SolveResult) -> frozenset | None:
    if r.objective == Objective.LATENCY and r.evaluation is not None:
        return r.evaluation.edges
    return None


def _reseed(problem: Problem, seeds: list[_Seed]) -> list[_Seed]:
    """The earlier stages' plans, re-evaluated under this problem's objective."""
    out = []
    for seed in seeds:
        if any(c.switches > problem.max_switches for c in seed.selection):
            continue  # a plan of a setting with more switches is no plan here
        edges = seed.edges if problem.objective == Objective.LATENCY else None
        if problem.objective == Objective.LATENCY and seed.edges is None:
            edges = None  # a throughput plan: the list scheduler orders it
        ev = evaluate(problem, seed.selection, edges)
        out.append(_Seed(seed.selection, ev.period, ev.edges, seed.origin))
    return out


def _pools(problem: Problem, rel, lp: int, deadline: float | None) -> list[list[Config]]:
    pools = [list(cols) for cols in rel.columns]
    if problem.contention is not None and problem.objective == Objective.THROUGHPUT:
        return pools  # the contention LP's columns serve (see _pool_search)
    for i, chain in enumerate(problem.chains):
        extra = []
        _, c = chain.price({a: 1.0 for a in problem.accelerators}, {})  # the shortest chain
        if c is not None:
            extra.append(c)
        try:  # near-LP-optimal configurations give the heuristic good material
            near = rel.enumerate(
                problem,
                i,
                0.05 * rel.value + rel.mu[i],
                2 * lp + 1,
                limit=HEURISTIC_POOL,
                deadline=deadline,
            )
        except (_TooMany, _OutOfTime):
            near = []
        extra += sorted(near, key=lambda cf: rel.reduced_cost(i, cf, problem))[
            : HEURISTIC_POOL // 10
        ]
        for c in extra:
            if all(c.segments != o.segments for o in pools[i]):
                pools[i].append(c)
    return pools


@dataclass
class _State:
    """The search's incumbent and bounds."""

    lb: int
    best_sel: list[Config] | None = None
    best_value: int | None = None
    best_edges: frozenset | None = None
    last_unsat: int | None = None
    last_proof: str = ""
    variables: int = 0
    clauses: int = 0

    def offer(self, sel: list[Config], value: int, edges) -> None:
        if self.best_value is None or value < self.best_value:
            self.best_sel, self.best_value, self.best_edges = sel, value, edges


def _search(
    problem: Problem,
    deadline: float | None,
    solver_name: str,
    seeds: list[_Seed],
    t0: float,
    floor: SolveResult | None = None,
    start_only: bool = False,
) -> SolveResult:
    """One search of ``problem``; ``floor``: an earlier search of the same problem, whose
    proven lower bound this one starts from; ``start_only``: stop after the primal heuristics
    (the start plan a search of ``problem`` takes), before any bound is decided."""
    rel = plain = relax(problem, deadline=deadline)
    modal = modal_relax(problem, rel, deadline)
    if modal is not None and modal.value > rel.value:
        rel = modal  # the bound and the candidates' filter; the heuristic keeps the plain LP's
    lp = lower_bound_ticks(problem, rel)
    if lp < 0:
        raise HxschedError(_infeasible_message(problem))
    calls: list[SatCall] = []
    st = _State(lb=lp)
    if floor is not None and floor.lower_bound > st.lb:
        st.lb = floor.lower_bound
        st.last_unsat, st.last_proof = floor.unsat_below
    for seed in seeds:
        st.offer(seed.selection, seed.value, seed.edges)
    start_sel = st.best_sel
    # the heuristic's material: the plain LP's columns and the configurations near its optimum
    # (its fractional choice picks the start), and the contention-aware LP's (latency)
    pools = _pools(problem, plain, lower_bound_ticks(problem, plain), deadline)
    for i, cols in enumerate(_pools(problem, rel, lp, deadline) if rel is not plain else []):
        pools[i] += [c for c in cols if all(c.segments != o.segments for o in pools[i])]
    # coordinate descent from the LP's choice and from the best earlier plan (a plan of fewer
    # switches is often a local optimum that the LP's choice is not stuck in)
    for begin in (None, start_sel) if start_sel is not None else (None,):
        heur = _heuristic(problem, pools, plain.fractional, begin, deadline)
        if heur is not None:
            st.offer(heur[0], heur[1].period, heur[1].edges)
    log.info(
        f"LP bound {lp} ticks ({rel.value:.2f}, {rel.rounds} rounds"
        f"{'' if rel.converged else ', not converged'}), start {st.best_value} ticks; "
        f"{sum(len(c) for c in rel.columns)} LP columns"
    )
    largest: list[int] = [0] * len(problem.instances)
    pool = floor.contention_lp if floor is not None else None
    pool = pool or _contention_pool(problem, rel)
    if problem.objective == Objective.LATENCY and st.best_value is not None:
        extra = [seed.selection for seed in seeds]
        # a start plan for a setting above takes as much time as a short search would give it
        horizon = _within(time.monotonic() + QUICK_S, deadline) if start_only else deadline
        _latency_pool_search(problem, pools, extra, st, solver_name, _pool_deadline(horizon))
    if start_only:
        return _finish(problem, rel, lp, st, calls, largest, solver_name, deadline, t0)
    if pool is not None:
        _contention_lower_bound(problem, st, pool, calls, deadline)
        if st.best_value is not None and st.lb < st.best_value and not pool.searched:
            _pool_search(problem, pools, pool, st, solver_name, deadline)
    step, found_sat = 1, False
    if floor is not None:
        # resume the gallop where the short search's last decision ran out of time, rather
        # than re-climbing from its bound in steps of 1, 2, 4 ...
        stopped = [c.bound for c in floor.calls if c.result == "timeout" and c.bound >= st.lb]
        if stopped:
            step = stopped[-1] - st.lb + 1
    cap = _cap(problem)
    # the start plan is often optimal, and proving a plan optimal needs "none below it" in
    # any case: ask that first, once, where the gap is small (a large one admits so many
    # configurations at the top that galloping up from below is cheaper); with a contention
    # pool the contention LP asked it already
    ask_top = (
        st.best_value is not None
        and pool is None
        and st.best_value - st.lb <= _top_first_gap(problem) * st.best_value
    )
    while True:
        upper = st.best_value
        if upper is not None and st.lb >= upper:
            break
        top = ask_top and upper is not None
        if top and upper is not None:
            probe, ask_top = upper - 1, False
        elif upper is None:
            probe = st.lb + step - 1
            if probe > cap:
                raise HxschedError(_infeasible_message(problem))
        elif not found_sat:
            # gallop up from the LP bound: the optimum is usually close, and small bounds
            # leave few configurations to consider
            probe = min(st.lb + step - 1, st.lb + (upper - 1 - st.lb) // 2)
        else:
            probe = st.lb + (upper - 1 - st.lb) // 2
        step *= 2
        start = time.monotonic()
        try:
            view = _candidates(problem, rel, probe, deadline, pool)
        except _Timeout as exc:
            calls.append(SatCall(bound=probe, result=str(exc) or "timeout"))
            log.info(f"  T = {probe} ticks: {calls[-1].result}; stopping with the best plan so far")
            break
        sizes = [len(c) for c in view.configs]
        largest = [max(x, y) for x, y in zip(largest, sizes, strict=True)]
        abandoned = ""
        try:
            result, sel, edges, how = _decide_bound(problem, view, probe, solver_name, deadline, st)
        except EncodingAbandoned as exc:
            result, sel, edges, how = None, None, None, ""
            abandoned = str(exc)
        label = {True: "sat", False: "unsat", None: abandoned or "timeout"}[result]
        calls.append(
            SatCall(
                bound=probe,
                configurations=tuple(sizes),
                result=label,
                seconds=round(time.monotonic() - start, 4),
            )
        )
        log.info(
            f"  T = {probe} ticks: {label} ({calls[-1].seconds:.3f} s, "
            f"{sum(sizes)} configurations{', ' + how if how and result is False else ''})"
        )
        if result is None and top and abandoned and not _past(deadline):
            continue  # the top bound's encoding was too large: gallop up from below instead
        if result is None:
            break
        if result:
            assert sel is not None  # a satisfiable decision comes with its selection
            ev = evaluate(problem, sel, edges)
            if ev.period > probe:  # pragma: no cover - would be a bug in the encoding
                raise InternalError(f"plan at bound {probe} evaluates to {ev.period}")
            st.offer(sel, ev.period, ev.edges)
            found_sat = True
        else:
            st.lb, st.last_unsat, st.last_proof = probe + 1, probe, how
    result = _finish(problem, rel, lp, st, calls, largest, solver_name, deadline, t0)
    result.contention_lp = pool
    return result


TOP_FIRST_GAP = 0.1  # ask "none below the start plan" first only within this relative gap
# latency decisions near the optimum are the hardest (every order of every pair is open): ask
# the top first only when it is very close, else gallop up and raise the proven bound as it goes
TOP_FIRST_GAP_LATENCY = 0.02


def _top_first_gap(problem: Problem) -> float:
    return TOP_FIRST_GAP_LATENCY if problem.objective == Objective.LATENCY else TOP_FIRST_GAP


# With few candidates, one formula over every contention level (exact on its own) costs less
# than one per open level vector once several are open (2x Pix2Pix near its optimum: 12)
ONE_FORMULA_MAX_CONFIGS = 300


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _decide_bound(problem, view, probe, solver_name, deadline, st: _State):
    """(result, selection, edges, how): is there a plan of value <= probe among ``view``?
    ``how`` says what decided an UNSAT (or why there is no answer)."""
    if any(len(c) == 0 for c in view.configs):
        if problem.contention is not None and problem.objective == Objective.THROUGHPUT:
            return False, None, None, "contention LP: no configuration fits its reduced costs"
        return False, None, None, "no configuration fits (LP reduced costs and loads)"
    if problem.objective == Objective.THROUGHPUT:
        small = sum(len(c) for c in view.configs) <= ONE_FORMULA_MAX_CONFIGS
        if view.level_cuts and not (small and len(view.level_cuts) > 1):
            return _decide_by_vectors(view, probe, solver_name, deadline, st)
        enc = ThroughputEncoding(view, solver_name, deadline)
        try:
            enc.add_coarse_load_cuts(probe)
            result, sel = enc.decide(probe, deadline)
        finally:
            enc.solver.delete()
        nv, nc = enc.size
        st.variables, st.clauses = max(st.variables, nv), max(st.clauses, nc)
        return result, sel, None, f"SAT solver UNSAT ({nv} variables, {nc} clauses)"
    result, sel, edges, size, how = _latency_decide(problem, view, probe, solver_name, deadline)
    st.variables, st.clauses = max(st.variables, size[0]), max(st.clauses, size[1])
    return result, sel, edges, how


def _decide_by_vectors(
    view: Problem, probe: int, solver_name, deadline, st: _State, coarse: bool = True
):  # coarse=False: no implied cuts (coarse loads, reduced costs), for small heuristic views
    """Throughput with contention, decided one open level vector at a time: a plan of value
    <= probe exists iff for some vector the contention LP leaves open at probe, a selection
    has every accelerator's work at those levels within probe and its co-runner traffic
    within the vector's caps (then its true levels are no higher, so it fits; conversely a
    plan's own vector is open and admits it). Each vector's formula has fixed durations and
    that vector's reduced-cost cut, far smaller than one formula over every level."""
    from dataclasses import replace

    cuts = sorted(view.level_cuts, key=lambda c: -c.budget)  # the loosest (likeliest) first
    sizes = []
    for cut in cuts:
        keep, fixed, rcs = [], [], []
        for i, cfgs in enumerate(view.configs):
            idx = [
                k
                for k, c in enumerate(cfgs)
                if cut.reduced_costs[i][k] <= cut.budget + RC_SLACK * max(1.0, probe)
                and all(c.load(a, cut.levels[a]) <= probe for a in view.accelerators)
            ]
            idx = _undominated_at(view, cfgs, idx, cut.levels, bool(cut.caps))
            keep.append(idx)
            fixed.append([_at_levels(cfgs[k], cut.levels) for k in idx])
            rcs.append([cut.reduced_costs[i][k] for k in idx])
        if any(not idx for idx in keep):
            continue  # no selection at all under this vector
        sub = replace(  # (light: a heuristic's small formulas go faster without the cut)
            view,
            configs=fixed,
            contention=None,
            reduced_costs=rcs if coarse else None,
            rc_budget=cut.budget if coarse else None,
            level_cuts=[],
        )
        enc = ThroughputEncoding(sub, solver_name, deadline, caps=cut.caps)
        try:
            if coarse:
                enc.add_coarse_load_cuts(probe)
            result, sel = enc.decide(probe, deadline)
        finally:
            enc.solver.delete()
        sizes.append(enc.size)
        st.variables = max(st.variables, enc.size[0])
        st.clauses = max(st.clauses, enc.size[1])
        if result is None:
            return None, None, None, ""
        if result:
            assert sel is not None
            where = {id(c): (i, k) for i, cs in enumerate(fixed) for k, c in enumerate(cs)}
            orig = [view.configs[i][keep[i][k]] for i, k in (where[id(c)] for c in sel)]
            return True, orig, None, ""
    nv = max((v for v, _ in sizes), default=0)
    nc = max((c for _, c in sizes), default=0)
    how = (
        f"SAT solver UNSAT in each of the {len(cuts)} level vectors the contention LP leaves "
        f"open ({len(cuts) - len(sizes)} admit no selection; {len(sizes)} formulas, up to "
        f"{nv} variables, {nc} clauses)"
    )
    return False, None, None, how


RC_SLACK = 1e-7  # reduced-cost filters: float slack per tick of the bound


def _undominated_at(
    view: Problem, cfgs: list[Config], idx: list[int], levels: dict[str, int], traffic: bool
) -> list[int]:
    """``idx`` without the configurations another one dominates once the levels are fixed:
    no more work on any accelerator at these levels, no more bytes on any (when traffic is
    capped), no more loadables; reduced costs only grow with these, so a dominator passes
    every filter the dominated one passes."""
    import numpy as np

    from hxsched.scheduler.planning.problem import undominated

    if len(idx) < 2:
        return idx
    rows = []
    for k in idx:
        c = cfgs[k]
        row: list[float] = [c.load(a, levels[a]) for a in view.accelerators]
        if traffic:
            row += [c.bytes_on(a) for a in view.accelerators]
        row += [c.loadables(core) for core in view.dla_cores]
        rows.append(row)
    return sorted(idx[j] for j in undominated(np.array(rows, dtype=float)))


def _at_levels(cfg: Config, levels: dict[str, int]) -> Config:
    """``cfg`` with every segment's duration fixed at its accelerator's level (as level 0)."""
    from dataclasses import replace

    return Config(tuple(replace(s, ticks=(s.ticks[levels[s.accelerator]],)) for s in cfg.segments))


def _finish(problem, rel, lp, st: _State, calls, largest, solver_name, deadline, t0):
    if st.best_sel is None or st.best_value is None:
        raise HxschedError(_infeasible_message(problem))
    best_value = st.best_value
    optimal = st.lb >= best_value
    proof: Proof = ""
    detail = ""
    if optimal and st.last_unsat == best_value - 1:
        proof = _label(st.last_proof)
        detail = f"no plan of {best_value - 1} ticks: {st.last_proof}"
    elif optimal:
        proof = "lp-bound"
        detail = f"equals the LP bound {lp} ticks ({rel.value:.2f}, {rel.rounds} rounds" + (
            ", converged)" if rel.converged else ", Lagrangian bound: stopped before convergence)"
        )
    if optimal and proof == "lp-bound" and st.last_unsat != best_value - 1 and best_value > 1:
        proof, detail = _confirm(problem, rel, best_value, solver_name, deadline, calls, detail)
    evaluation = evaluate(
        problem, st.best_sel, st.best_edges if problem.objective == Objective.LATENCY else None
    )
    return SolveResult(
        objective=problem.objective,
        selection=st.best_sel,
        evaluation=evaluation,
        value=best_value,
        lower_bound=min(st.lb, best_value),
        lp_bound=lp,
        optimal=optimal,
        proof=proof,
        solve_time_s=time.monotonic() - t0,
        calls=calls,
        variables=st.variables,
        clauses=st.clauses,
        configs=largest,
        proof_detail=detail,
        lp_converged=rel.converged,
        lp_rounds=rel.rounds,
        peak_rss_mib=peak_rss_mib(),
        unsat_below=(st.last_unsat, st.last_proof),
    )


def _label(how: str) -> Proof:
    if how.startswith("contention LP"):
        return "contention-lp"
    if how.startswith("no configuration"):
        return "lp-bound"  # the LP's reduced costs leave nothing: the LP proves it
    return "unsat"


def _confirm(problem, rel, best_value, solver_name, deadline, calls, detail):
    """The LP bound proves it; still ask the SAT solver for UNSAT one tick below (a second,
    independent certificate) while time allows."""
    start = time.monotonic()
    result: bool | None = None
    how = ""
    try:
        view = _candidates(problem, rel, best_value - 1, deadline)
        if any(len(c) == 0 for c in view.configs):
            result, how = False, "no configuration fits"
        elif problem.objective == Objective.THROUGHPUT:
            enc = ThroughputEncoding(view, solver_name, deadline)
            try:
                result = enc.decide(best_value - 1, deadline)[0]
            finally:
                enc.solver.delete()
            how = f"SAT solver UNSAT ({enc.size[0]} variables, {enc.size[1]} clauses)"
        else:
            lenc = LatencyEncoding(view, best_value - 1, solver_name, deadline)
            try:
                result = lenc.decide(deadline)[0]
            finally:
                lenc.delete()
            how = f"SAT solver UNSAT ({lenc.size[0]} variables, {lenc.size[1]} clauses)"
    except (_Timeout, EncodingAbandoned):
        result = None
    calls.append(
        SatCall(
            bound=best_value - 1,
            result={True: "sat", False: "unsat", None: "timeout"}[result],
            seconds=round(time.monotonic() - start, 4),
        )
    )
    if result:  # pragma: no cover - would contradict the LP bound
        raise InternalError("SAT below the LP bound")
    if result is False and how.startswith("SAT"):
        return "unsat", f"UNSAT at {best_value - 1} ticks: {how}; also {detail}"
    return "lp-bound", detail


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (getrusage ru_maxrss, KiB on Linux)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


class _Timeout(Exception):
    pass


# Latency decisions on long horizons first try coarse ticks (COARSE_TARGET ticks for the whole
# bound): durations rounded down give a relaxation (UNSAT there proves UNSAT here), durations
# rounded up a restriction (a plan there is a plan here, checked by the simulator). Only when
# both are inconclusive does the fine encoding run.
COARSE_MIN_TICKS = 300
COARSE_TARGET = 100


def _scaled(view: Problem, factor: int, up: bool) -> Problem:
    from dataclasses import replace

    def sc(t: int) -> int:
        return -(-t // factor) if up else t // factor

    configs = [
        [
            Config(
                tuple(
                    replace(
                        seg, ticks=tuple(sc(t) for t in seg.ticks), transition=sc(seg.transition)
                    )
                    for seg in cfg.segments
                )
            )
            for cfg in cfgs
        ]
        for cfgs in view.configs
    ]
    return replace(view, configs=configs)


def _latency_decide(
    problem: Problem, view: Problem, probe: int, solver_name: str, deadline: float | None
):
    """(result, selection, order edges, (variables, clauses), how) for "makespan <= probe";
    ``how`` names the encoding that decided an UNSAT."""
    size = (0, 0)
    if probe > COARSE_MIN_TICKS:
        factor = max(2, probe // COARSE_TARGET)
        coarse = probe // factor
        low = LatencyEncoding(_scaled(view, factor, up=False), coarse, solver_name, deadline)
        size = low.size
        try:
            result = low.decide(deadline)[0]
        finally:
            low.delete()
        how = f"coarse pass UNSAT (ticks x{factor}, {size[0]} variables, {size[1]} clauses)"
        if result is False or result is None:
            return result, None, None, size, how
        high_view = _scaled(view, factor, up=True)
        high = LatencyEncoding(high_view, coarse, solver_name, deadline)
        try:
            result, sel, edges = high.decide(deadline)
        finally:
            high.delete()
        if result is None:
            return None, None, None, size, "timeout"
        if result:
            where = {
                id(c): (i, k)
                for i, cfgs in enumerate(high_view.configs)
                for k, c in enumerate(cfgs)
            }
            orig = [view.configs[i][k] for i, k in (where[id(c)] for c in sel)]
            if evaluate(problem, orig, edges).period <= probe:
                return True, orig, edges, size, ""
    fine = LatencyEncoding(view, probe, solver_name, deadline)
    try:
        result, sel, edges = fine.decide(deadline)
    finally:
        fine.delete()
    size = max(size, fine.size)
    how = f"SAT solver UNSAT ({fine.size[0]} variables, {fine.size[1]} clauses)"
    return result, sel, edges, size, how


def _cap(problem: Problem) -> int:
    """No plan is slower than every instance alone on its slowest single accelerator, one
    after the other, at the highest contention level: past that, UNSAT means infeasible."""
    total = 0
    for chain in problem.chains:
        worst = 0
        for acc in chain.accels:
            if chain.can_run(acc, 0, chain.n - 1):
                worst = max(
                    worst, chain.segment(acc, 0, chain.n - 1, None).busy_at(problem.n_levels - 1)
                )
        total += worst or 10**6
    return total + 1


def _contention_pool(problem: Problem, rel) -> ContentionLp | None:
    """The contention-aware relaxation (throughput with contention), else None."""
    if problem.contention is None or problem.objective != Objective.THROUGHPUT:
        return None
    return ContentionLp(problem, rel.columns)


def _contention_lower_bound(
    problem: Problem,
    st: _State,
    pool: ContentionLp,
    calls: list[SatCall],
    deadline: float | None,
) -> None:
    """Raise ``st.lb`` to the least period the contention-aware relaxation does not refute:
    first "none below the start plan", then bisection (a period it does not refute, no
    larger one is refuted either: caps only loosen and loads only shrink as it grows)."""
    upper = st.best_value
    if upper is None or st.lb >= upper:
        return
    lo, hi = st.lb, upper  # lo: least not yet refuted; hi: not refuted (a plan exists)
    probe = upper - 1
    while lo < hi:
        if _past(deadline):
            return
        start = time.monotonic()
        out = pool.relax(probe, decide_only=True, deadline=deadline)
        if not out.complete and not out.open:
            return  # out of time: no claim
        label = "unsat" if out.refuted else "open"
        calls.append(SatCall(bound=probe, result=label, seconds=round(time.monotonic() - start, 4)))
        how = f"contention LP: all {out.vectors} level vectors above {probe}"
        log.info(
            f"  T = {probe} ticks: {how if out.refuted else 'not refuted by the contention LP'}"
        )
        if out.refuted:
            lo = probe + 1
            st.lb, st.last_unsat, st.last_proof = lo, probe, how
        else:
            hi = probe
        probe = lo + (hi - lo) // 2


def _pool_search(
    problem: Problem,
    pools: list[list[Config]],
    pool: ContentionLp,
    st: _State,
    solver_name: str,
    deadline: float | None,
) -> None:
    """Primal heuristic (price and branch): the best plan among the configurations the
    relaxations generated, by bisection with the per-vector SAT decision restricted to them.
    Its UNSAT answers prove nothing (the restriction), its plans are plans."""
    from dataclasses import replace

    from hxsched.scheduler.planning.problem import pareto

    if st.best_value is None:
        return
    cfgs = [
        pareto(problem, list({c.segments: c for c in pool.pool[i] + pools[i]}.values()))
        for i in range(len(problem.instances))
    ]
    scratch = _State(lb=st.lb)
    lo, hi = st.lb, st.best_value - 1
    step, found = 1, False
    while lo <= hi and not _past(deadline):
        # gallop up from the lower bound (the optimum is usually close above it), then bisect
        mid = (lo + hi) // 2 if found else min(hi, lo + step - 1)
        step *= 2
        opened = pool.cached_open(mid)  # the duals the lower bound left: no LP solved here
        if not opened:
            lo = mid + 1
            continue
        cuts = [_level_cut(problem, lb, cfgs, mid) for lb in opened]
        view = replace(
            problem,
            configs=cfgs,
            reduced_costs=[[0.0] * len(c) for c in cfgs],
            rc_budget=None,
            level_cuts=cuts,
        )
        try:
            result, sel, _, _ = _decide_by_vectors(
                view, mid, solver_name, deadline, scratch, coarse=False
            )
        except EncodingAbandoned:
            return
        if result is None:
            return
        if result:
            assert sel is not None
            ev = evaluate(problem, sel)
            st.offer(sel, ev.period, None)
            hi, found = min(hi, ev.period - 1), True
        else:
            lo = mid + 1
    pool.searched = lo > hi  # finished: a later search of the problem need not repeat it
    log.info(f"  restricted to the relaxations' columns: best plan {st.best_value} ticks")


LATENCY_POOL_SHARE = 0.25  # of the time left, at most, for the latency primal heuristic


def _pool_deadline(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return time.monotonic() + LATENCY_POOL_SHARE * max(0.0, deadline - time.monotonic())


def _latency_pool_search(
    problem: Problem,
    pools: list[list[Config]],
    plans: list[list[Config]],
    st: _State,
    solver_name: str,
    deadline: float | None,
) -> None:
    """Primal heuristic for latency: the best plan among the relaxation's columns, the
    configurations near them and those of the earlier stages' plans, by bisection with the
    latency decision restricted to them (a few configurations each: cheap formulas). Its
    UNSAT answers prove nothing (the restriction), its plans are plans."""
    from dataclasses import replace

    from hxsched.scheduler.planning.problem import pareto

    if st.best_value is None or st.best_value <= st.lb:
        return
    cfgs = []
    for i in range(len(problem.instances)):
        mine = {c.segments: c for c in pools[i]}
        for plan in plans:
            if plan[i].switches <= problem.max_switches:
                mine.setdefault(plan[i].segments, plan[i])
        cfgs.append(pareto(problem, list(mine.values())))
    lo, hi = st.lb, st.best_value - 1
    while lo <= hi and not _past(deadline):
        mid = (lo + hi + 1) // 2
        view = replace(
            problem,
            configs=[[c for c in cs if c.chain_ticks <= mid] for cs in cfgs],
            reduced_costs=None,
            rc_budget=None,
        )
        if any(not cs for cs in view.configs):
            lo = mid + 1
            continue
        try:
            result, sel, edges, _, _ = _latency_decide(problem, view, mid, solver_name, deadline)
        except EncodingAbandoned:
            break
        if result is None:
            break
        if result:
            assert sel is not None
            ev = evaluate(problem, sel, edges)
            st.offer(sel, ev.period, ev.edges)
            hi = min(hi, ev.period - 1)
        else:
            lo = mid + 1
    log.info(f"  restricted to the relaxation's columns: best plan {st.best_value} ticks")


def _contention_candidates(
    problem: Problem, pool: ContentionLp, bound: int, deadline: float | None
) -> tuple[list[list[Config]], list[LevelBound]] | None:
    """Per instance, every configuration a plan of value <= bound can use by the
    contention-aware relaxation: for some level vector the relaxation leaves open at bound,
    its loads at those levels fit and its reduced cost fits the vector's budget (a plan's
    reduced costs sum to at most bound - the vector's bound). None when it refutes the bound
    (no plan); raises ``_Timeout`` past the deadline."""
    out = pool.relax(bound, deadline=deadline)
    if not out.complete:
        raise _Timeout("timeout in the contention LP")
    if out.refuted:
        return None
    found: list[dict[tuple, Config]] = [{} for _ in problem.instances]
    for lb in out.open:
        done: dict[int, list[Config]] = {}
        for i, chain in enumerate(problem.chains):
            if id(chain) not in done:
                budget = bound - lb.value + lb.mins[i]
                try:
                    done[id(chain)] = chain.enumerate(
                        lb.w, lb.u, budget, bound, deadline=deadline, levels=lb.levels, v=lb.v
                    )
                except _TooMany:
                    raise _Timeout("too many configurations") from None
                except _OutOfTime:
                    raise _Timeout("timeout while listing configurations") from None
            for cfg in done[id(chain)]:
                found[i].setdefault(cfg.segments, cfg)
    return [list(d.values()) for d in found], out.open


def _candidates(
    problem: Problem,
    rel,
    bound: int,
    deadline: float | None,
    pool: ContentionLp | None = None,
) -> Problem:
    """The problem restricted to configurations that can appear in a plan of value <= bound:
    LP + reduced cost <= bound, every load <= bound (and the chain, for latency), and, with
    a contention ``pool``, admitted by the contention-aware relaxation; then the dominated
    ones are dropped."""
    from dataclasses import replace

    from hxsched.scheduler.planning.problem import pareto

    admitted = None
    opened: list[LevelBound] = []
    if pool is not None:
        got = _contention_candidates(problem, pool, bound, deadline)
        if got is None:
            return replace(problem, configs=[[] for _ in problem.instances], reduced_costs=None)
        admitted, opened = got
    configs: list[list[Config]] = []
    costs: list[list[float]] = []
    done: dict[tuple[int, float, object], int] = {}
    for i in range(len(problem.chains)):
        if deadline is not None and time.monotonic() > deadline:
            raise _Timeout
        budget = bound - rel.value + rel.mu[i]
        twin = done.setdefault((twins(problem)[i], budget, rel.share_key(i)), i)
        if twin != i:  # an interchangeable instance with the same budget: the same list
            configs.append(configs[twin])
            costs.append(costs[twin])
            continue
        try:
            if admitted is not None:
                found = [
                    c
                    for c in admitted[i]
                    if rel.reduced_cost(i, c, problem)
                    <= budget - rel.mu[i] + 1e-7 * max(1.0, bound)
                ]
            else:
                found = rel.enumerate(problem, i, budget, bound, deadline=deadline)
        except _TooMany:  # the bound admits too many segmentations to list: stop the search here
            raise _Timeout("too many configurations") from None
        except _OutOfTime:
            raise _Timeout("timeout while listing configurations") from None
        if problem.objective == Objective.LATENCY:
            found = [c for c in found if c.chain_ticks <= bound]
        kept = pareto(problem, found)
        configs.append(kept)
        costs.append([max(0.0, rel.reduced_cost(i, c, problem)) for c in kept])
    cuts = [_level_cut(problem, lb, configs, bound) for lb in opened]
    return replace(
        problem,
        configs=configs,
        reduced_costs=costs,
        rc_budget=bound - rel.value,
        level_cuts=cuts,
    )


def _level_cut(problem: Problem, lb: LevelBound, configs: list[list[Config]], bound: int):
    """The open vector ``lb``'s reduced costs of the candidates, its budget and its caps."""
    from hxsched.scheduler.planning.problem import LevelCut

    def rc(i: int, c: Config) -> float:
        cost = sum(w * c.load(a, lb.levels[a]) for a, w in lb.w.items())
        cost += sum(x * config_other_kib(c, a) for a, x in lb.v.items())
        cost += sum(x * c.loadables(core) for core, x in lb.u.items())
        return max(0.0, cost - lb.mins[i])

    caps: dict[str, int] = {
        a: problem.traffic_threshold_kib(lb.levels[a] + 1, bound)
        for a in problem.accelerators
        if lb.levels[a] < problem.n_levels - 1
    }
    rcs = [[rc(i, c) for c in cfgs] for i, cfgs in enumerate(configs)]
    return LevelCut(dict(lb.levels), rcs, bound - lb.value, caps, bound)


def _infeasible_message(problem: Problem) -> str:
    pins = [f"{i.name}={i.pin}" for i in problem.instances if i.pin]
    return (
        "no plan satisfies the constraints: at most "
        f"{problem.max_loadables} DLA loadables per core"
        + (f" with the pins {', '.join(pins)}" if pins else "")
        + "; relax --max-loadables or the pins"
    )


__all__: Sequence[str] = ["SolveResult", "solve"]
