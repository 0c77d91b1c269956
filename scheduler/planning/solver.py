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

Both searches start from the LP lower bound and a heuristic plan, bisect between them, and stop
at a proof (the plan's value equals a proven lower bound: UNSAT one tick below, or the LP
bound) or at the time limit, reporting the proven gap.
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
from hxsched.scheduler.planning.bounds import lower_bound_ticks, relax
from hxsched.scheduler.planning.encodings import Cnf, OrderInt
from hxsched.scheduler.planning.plan import SatCall
from hxsched.scheduler.planning.problem import Config, Problem, _TooMany
from hxsched.scheduler.planning.simulate import Evaluation, evaluate
from hxsched.scheduler.types import Objective

Proof = Literal["unsat", "lp-bound", ""]  # as SolverReport.proof in plan.py

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

    @property
    def gap(self) -> float:
        if not self.value:
            return float("inf")
        return max(0.0, (self.value - self.lower_bound) / self.value)


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------
def _symmetry_breaking(cnf: Cnf, problem: Problem, y: list[list[int]]) -> None:
    """dla0 and dla1 are interchangeable: the first instance that uses a DLA uses dla0."""
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


class _Timer:
    """Interrupts a solver when the deadline passes (for solvers that support it)."""

    def __init__(self, solver: Solver, name: str, deadline: float | None) -> None:
        self.timer = None
        if deadline is not None and name in INTERRUPTIBLE:
            delay = max(0.0, deadline - time.monotonic())
            self.timer = threading.Timer(delay, solver.interrupt)
            self.timer.start()

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
    return result


# ---------------------------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------------------------
class ThroughputEncoding:
    def __init__(self, problem: Problem, solver_name: str) -> None:
        self.p = problem
        cnf = self.cnf = Cnf()
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
        if problem.contention is not None:
            for acc in problem.accelerators:
                numbers = [
                    cnf.one_hot_number(
                        self.y[i],
                        [
                            sum(
                                problem.kib(c.bytes_on(b)) for b in problem.accelerators if b != acc
                            )
                            for c in cfgs
                        ],
                    )
                    for i, cfgs in enumerate(problem.configs)
                ]
                self.other_bits[acc] = cnf.sum_numbers(numbers)
        self.name = solver_name
        self.solver = Solver(name=solver_name, bootstrap_with=cnf.clauses)
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
    problem: Problem, pools: list[list[Config]], weights: list[dict[int, float]]
) -> tuple[list[Config], Evaluation] | None:
    """Coordinate descent over each instance's candidate configurations (the LP's columns),
    starting from the column the LP weighs most; evaluated by the simulator."""
    sel = [
        pool[max(w, key=lambda g: w[g]) if w else 0] for pool, w in zip(pools, weights, strict=True)
    ]
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
    def __init__(self, problem: Problem, horizon: int, solver_name: str) -> None:
        self.p = problem
        cnf = self.cnf = Cnf()
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
        self.solver = Solver(name=solver_name, bootstrap_with=cnf.clauses)

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
def solve(
    problem: Problem,
    *,
    time_limit_s: float | None = 60.0,
    solver_name: str = DEFAULT_SAT_SOLVER,
) -> SolveResult:
    """Search the optimum of ``problem`` and prove it (or report the gap at the time limit)."""
    t0 = time.monotonic()
    deadline = t0 + time_limit_s if time_limit_s else None
    rel = relax(problem)
    lp = lower_bound_ticks(problem, rel)
    if lp < 0:
        raise HxschedError(_infeasible_message(problem))
    calls: list[SatCall] = []
    pools = [list(cols) for cols in rel.columns]
    for i, chain in enumerate(problem.chains):
        extra = []
        _, c = chain.price({a: 1.0 for a in problem.accelerators}, {})  # the shortest chain
        if c is not None:
            extra.append(c)
        try:  # near-LP-optimal configurations give the heuristic good material
            near = chain.enumerate(
                rel.w, rel.u, 0.05 * rel.value + rel.mu[i], 2 * lp + 1, limit=HEURISTIC_POOL
            )
        except _TooMany:
            near = []
        extra += sorted(near, key=lambda cf: rel.reduced_cost(i, cf, problem))[
            : HEURISTIC_POOL // 10
        ]
        for c in extra:
            if all(c.segments != o.segments for o in pools[i]):
                pools[i].append(c)
    heur = _heuristic(problem, pools, rel.fractional)
    best_sel, best_value, best_edges = None, None, None
    if heur is not None:
        best_sel, ev = heur
        best_value, best_edges = ev.period, ev.edges
    log.info(
        f"LP bound {lp} ticks ({rel.value:.2f}), heuristic {best_value} ticks; "
        f"{sum(len(c) for c in rel.columns)} LP columns"
    )
    lb = lp
    upper = best_value
    largest: list[int] = [0] * len(problem.instances)
    variables = clauses = 0
    step = 1
    last_unsat: int | None = None
    found_sat = False
    cap = _cap(problem)
    result: bool | None = None  # the last decision: sat, unsat or timeout
    while True:
        if upper is not None and lb >= upper:
            break
        if upper is None:
            probe = lb + step - 1
            if probe > cap:
                raise HxschedError(_infeasible_message(problem))
        elif not found_sat:
            # gallop up from the LP bound: the optimum is usually close, and small bounds
            # leave few configurations to consider
            probe = min(lb + step - 1, upper - 1)
        else:
            probe = lb + (upper - 1 - lb) // 2
        step *= 2
        start = time.monotonic()
        try:
            view = _candidates(problem, rel, probe, deadline)
        except _Timeout as exc:
            calls.append(SatCall(bound=probe, result=str(exc) or "timeout"))
            log.info(f"  T = {probe} ticks: {calls[-1].result}; stopping with the best plan so far")
            break
        sizes = [len(c) for c in view.configs]
        largest = [max(x, y) for x, y in zip(largest, sizes, strict=True)]
        if any(n == 0 for n in sizes):
            result, sel, edges = False, None, None
        elif problem.objective == Objective.THROUGHPUT:
            enc = ThroughputEncoding(view, solver_name)
            enc.add_coarse_load_cuts(probe)
            result, sel = enc.decide(probe, deadline)
            variables, clauses = max(variables, enc.size[0]), max(clauses, enc.size[1])
            enc.solver.delete()
            edges = None
        else:
            result, sel, edges, size = _latency_decide(problem, view, probe, solver_name, deadline)
            variables, clauses = max(variables, size[0]), max(clauses, size[1])
        calls.append(
            SatCall(
                bound=probe,
                configurations=tuple(sizes),
                result={True: "sat", False: "unsat", None: "timeout"}[result],
                seconds=round(time.monotonic() - start, 4),
            )
        )
        log.info(
            f"  T = {probe} ticks: {calls[-1].result} ({calls[-1].seconds:.3f} s, "
            f"{sum(sizes)} configurations)"
        )
        if result is None:
            break
        if result:
            assert sel is not None  # a satisfiable decision comes with its selection
            ev = evaluate(problem, sel, edges)
            if ev.period > probe:  # pragma: no cover - would be a bug in the encoding
                raise InternalError(f"plan at bound {probe} evaluates to {ev.period}")
            best_sel, best_value, upper, best_edges = sel, ev.period, ev.period, ev.edges
            found_sat = True
        else:
            lb = probe + 1
            last_unsat = probe
    if best_sel is None or best_value is None:
        raise HxschedError(_infeasible_message(problem))
    optimal = upper is not None and lb >= upper
    proof: Proof = ""
    if optimal:
        proof = "unsat" if last_unsat == best_value - 1 else "lp-bound"
    if optimal and proof == "lp-bound" and best_value > 1:
        # The LP bound already proves it; still ask the SAT solver for UNSAT one tick below.
        start = time.monotonic()
        try:
            view = _candidates(problem, rel, best_value - 1, deadline)
            if any(len(c) == 0 for c in view.configs):
                result = False
            elif problem.objective == Objective.THROUGHPUT:
                enc = ThroughputEncoding(view, solver_name)
                result = enc.decide(best_value - 1, deadline)[0]
                enc.solver.delete()
            else:
                lenc = LatencyEncoding(view, best_value - 1, solver_name)
                result = lenc.decide(deadline)[0]
                lenc.delete()
        except _Timeout:
            result = None
        calls.append(
            SatCall(
                bound=best_value - 1,
                result={True: "sat", False: "unsat", None: "timeout"}[result],
                seconds=round(time.monotonic() - start, 4),
            )
        )
        if result is False:
            proof = "unsat"
        elif result:  # pragma: no cover - would contradict the LP bound
            raise InternalError("SAT below the LP bound")
    evaluation = evaluate(
        problem, best_sel, best_edges if problem.objective == Objective.LATENCY else None
    )
    return SolveResult(
        objective=problem.objective,
        selection=best_sel,
        evaluation=evaluation,
        value=best_value,
        lower_bound=min(lb, best_value),
        lp_bound=lp,
        optimal=optimal,
        proof=proof,
        solve_time_s=time.monotonic() - t0,
        calls=calls,
        variables=variables,
        clauses=clauses,
        configs=largest,
    )


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
    """(result, selection, order edges, (variables, clauses)) for "makespan <= probe"."""
    size = (0, 0)
    if probe > COARSE_MIN_TICKS:
        factor = max(2, probe // COARSE_TARGET)
        coarse = probe // factor
        low = LatencyEncoding(_scaled(view, factor, up=False), coarse, solver_name)
        size = low.size
        result = low.decide(deadline)[0]
        low.delete()
        if result is False or result is None:
            return result, None, None, size
        high_view = _scaled(view, factor, up=True)
        high = LatencyEncoding(high_view, coarse, solver_name)
        result, sel, edges = high.decide(deadline)
        high.delete()
        if result is None:
            return None, None, None, size
        if result:
            where = {
                id(c): (i, k)
                for i, cfgs in enumerate(high_view.configs)
                for k, c in enumerate(cfgs)
            }
            orig = [view.configs[i][k] for i, k in (where[id(c)] for c in sel)]
            if evaluate(problem, orig, edges).period <= probe:
                return True, orig, edges, size
    fine = LatencyEncoding(view, probe, solver_name)
    result, sel, edges = fine.decide(deadline)
    size = max(size, fine.size)
    fine.delete()
    return result, sel, edges, size


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


def _candidates(problem: Problem, rel, bound: int, deadline: float | None) -> Problem:
    """The problem restricted to configurations that can appear in a plan of value <= bound:
    LP + reduced cost <= bound, every load <= bound (and the chain, for latency); then
    the dominated ones are dropped."""
    from dataclasses import replace

    from hxsched.scheduler.planning.problem import pareto

    configs, costs = [], []
    for i, chain in enumerate(problem.chains):
        if deadline is not None and time.monotonic() > deadline:
            raise _Timeout
        budget = bound - rel.value + rel.mu[i]
        try:
            found = chain.enumerate(rel.w, rel.u, budget, bound)
        except _TooMany:  # the bound admits too many segmentations to list: stop the search here
            raise _Timeout("too many configurations") from None
        if problem.objective == Objective.LATENCY:
            found = [c for c in found if c.chain_ticks <= bound]
        kept = pareto(problem, found)
        configs.append(kept)
        costs.append([max(0.0, rel.reduced_cost(i, c, problem)) for c in kept])
    return replace(problem, configs=configs, reduced_costs=costs, rc_budget=bound - rel.value)


def _infeasible_message(problem: Problem) -> str:
    pins = [f"{i.name}={i.pin}" for i in problem.instances if i.pin]
    return (
        "no plan satisfies the constraints: at most "
        f"{problem.max_loadables} DLA loadables per core"
        + (f" with the pins {', '.join(pins)}" if pins else "")
        + "; relax --max-loadables or the pins"
    )


__all__: Sequence[str] = ["SolveResult", "solve"]
