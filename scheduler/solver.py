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

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pysat.solvers import Solver

from hxsched.errors import HxschedError
from hxsched.scheduler.bounds import lower_bound_ticks
from hxsched.scheduler.encodings import Cnf, OrderInt
from hxsched.scheduler.problem import Config, Problem
from hxsched.scheduler.simulate import Evaluation, evaluate, list_schedule, throughput_period

DEFAULT_SAT_SOLVER = "glucose4"  # interruptible, so --time-limit is honoured inside a call
INTERRUPTIBLE = {"glucose3", "glucose4", "minisat22", "maplechrono", "maplecm", "mergesat3"}


@dataclass
class SolveResult:
    objective: str
    selection: list[Config] | None
    evaluation: Evaluation | None
    value: int | None  # ticks (period or makespan) of the plan
    lower_bound: int  # proven lower bound, ticks
    lp_bound: int
    optimal: bool
    proof: str  # "unsat" (UNSAT one tick below), "lp-bound", or "" when not proven
    solve_time_s: float
    calls: list[dict] = field(default_factory=list)
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
    return y


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
                    )  # fmt: skip
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


def _heuristic_throughput(problem: Problem) -> list[Config]:
    """Coordinate descent from the GPU-only plan: re-pick each instance's configuration."""
    sel = []
    for cfgs in problem.configs:
        gpu = [c for c in cfgs if c.pattern == ("gpu",)]
        sel.append(gpu[0] if gpu else min(cfgs, key=lambda c: c.chain_ticks))

    def score(s: list[Config]) -> tuple[int, int]:
        for core in problem.dla_cores:
            if sum(c.loadables(core) for c in s) > problem.max_loadables:
                return (10**12, 0)
        return throughput_period(problem, s), sum(c.chain_ticks for c in s)

    best = score(sel)
    improved = True
    while improved:
        improved = False
        for i, cfgs in enumerate(problem.configs):
            for cfg in cfgs:
                trial = sel[:i] + [cfg] + sel[i + 1 :]
                sc = score(trial)
                if sc < best:
                    best, sel, improved = sc, trial, True
    return sel


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
            for c, cfg in enumerate(cfgs):
                yc = self.y[i][c]
                for s, seg in enumerate(cfg.segments):
                    S, E = self.S[(i, s)], self.E[(i, s)]
                    acc_of.setdefault((i, s, seg.accelerator), []).append(yc)
                    tr = problem.level_of(seg.bw) if problem.contention is not None else 0
                    for level in range(1, tr + 1):
                        traffic.setdefault((i, s, level), []).append(yc)
                    previous = -1
                    for level in range(problem.n_levels):
                        d = seg.busy_at(level)
                        if d == previous:
                            continue
                        previous = d
                        cond = [-yc] if level == 0 else [-yc, -self.lv[(i, s)].ge(level)]
                        for u in range(0, T + 1):
                            if u + d > T:
                                cnf.add([*cond, -S.ge(u)] if u > 0 else cond)
                                break
                            if d > 0:
                                cnf.add(
                                    [*cond, -S.ge(u), E.ge(u + d)] if u > 0 else [*cond, E.ge(d)]
                                )
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


def _heuristic_latency(problem: Problem) -> Evaluation:
    sel = [min(cfgs, key=lambda c: c.chain_ticks) for cfgs in problem.configs]

    def ok(s):
        return all(
            sum(c.loadables(core) for c in s) <= problem.max_loadables for core in problem.dla_cores
        )

    if not ok(sel):
        sel = [
            next((c for c in cfgs if c.pattern == ("gpu",)), cfgs[0]) for cfgs in problem.configs
        ]
    best = list_schedule(problem, sel)
    improved = True
    while improved:
        improved = False
        for i, cfgs in enumerate(problem.configs):
            for cfg in cfgs:
                trial = sel[:i] + [cfg] + sel[i + 1 :]
                if not ok(trial):
                    continue
                ev = list_schedule(problem, trial)
                if ev.period < best.period:
                    best, sel, improved = ev, trial, True
    best.selection = sel  # type: ignore[attr-defined]
    return best


# ---------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------
def solve(
    problem: Problem,
    *,
    time_limit_s: float | None = 60.0,
    solver_name: str = DEFAULT_SAT_SOLVER,
    progress: Callable[[str], None] | None = None,
) -> SolveResult:
    """Search the optimum of ``problem`` and prove it (or report the gap at the time limit)."""
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    deadline = t0 + time_limit_s if time_limit_s else None
    lp = lower_bound_ticks(problem)
    sizes = [len(c) for c in problem.configs]
    if lp < 0:
        raise HxschedError(_infeasible_message(problem))
    calls: list[dict] = []
    if problem.objective == "throughput":
        sel = _heuristic_throughput(problem)
        if any(
            sum(c.loadables(core) for c in sel) > problem.max_loadables
            for core in problem.dla_cores
        ):
            sel = None
        best_value = throughput_period(problem, sel) if sel else None
        enc = ThroughputEncoding(problem, solver_name)
        best_sel = sel
    else:
        heur = _heuristic_latency(problem)
        best_sel = heur.selection  # type: ignore[attr-defined]
        best_value = heur.period
        best_edges = heur.edges
        enc = None
    lb, proof = lp, ""
    if best_value is not None and best_value == lb:
        proof = "lp-bound"
    upper = best_value if best_value is not None else None
    say(f"{sum(sizes)} configurations for {len(sizes)} instances; LP bound {lp} ticks, "
        f"heuristic {best_value} ticks")  # fmt: skip
    variables = clauses = 0
    # No plan can be slower than every instance run alone, one after the other, on its
    # slowest configuration: beyond that, an UNSAT answer means no plan exists at all.
    cap = sum(max(c.chain_ticks for c in cfgs) for cfgs in problem.configs) * max(
        1, problem.n_levels
    )
    while True:
        if upper is None and lb > cap:
            raise HxschedError(_infeasible_message(problem))
        if upper is not None and lb >= upper:
            break
        hi = upper - 1 if upper is not None else None
        if hi is None:
            probe = lb * 2
        else:
            probe = lb + (hi - lb) // 2
        start = time.monotonic()
        if problem.objective == "throughput":
            result, sel = enc.decide(probe, deadline)
            edges = None
        else:
            lenc = LatencyEncoding(problem, probe, solver_name)
            variables, clauses = lenc.size
            result, sel, edges = lenc.decide(deadline)
            lenc.delete()
        calls.append({"bound": probe, "result": {True: "sat", False: "unsat", None: "timeout"}[result],
                      "seconds": round(time.monotonic() - start, 4)})  # fmt: skip
        say(f"  T = {probe} ticks: {calls[-1]['result']} ({calls[-1]['seconds']:.3f} s)")
        if result is None:
            break
        if result:
            ev = evaluate(problem, sel, edges)
            if ev.period > probe:  # pragma: no cover - would be a bug in the encoding
                raise HxschedError(f"internal: plan at bound {probe} evaluates to {ev.period}")
            best_sel, best_value, upper = sel, ev.period, ev.period
            if problem.objective == "latency":
                best_edges = edges
        else:
            lb = probe + 1
            if upper is not None and lb >= upper:
                proof = "unsat"
    if best_sel is None:
        raise HxschedError(_infeasible_message(problem))
    optimal = upper is not None and lb >= upper
    if optimal and not proof:
        proof = "unsat" if lb > lp else "lp-bound"
    # When the LP bound already proves optimality, still ask for the UNSAT one tick below.
    if optimal and proof == "lp-bound" and best_value > 1:
        start = time.monotonic()
        if problem.objective == "throughput":
            result, _ = enc.decide(best_value - 1, deadline)
        else:
            lenc = LatencyEncoding(problem, best_value - 1, solver_name)
            result = lenc.decide(deadline)[0]
            lenc.delete()
        calls.append({"bound": best_value - 1, "result": {True: "sat", False: "unsat", None: "timeout"}[result],
                      "seconds": round(time.monotonic() - start, 4)})  # fmt: skip
        if result is False:
            proof = "unsat"
        elif result:  # pragma: no cover - would contradict the LP bound
            raise HxschedError("internal: SAT below the LP bound")
    if enc is not None:
        variables, clauses = enc.size
        enc.solver.delete()
    evaluation = evaluate(problem, best_sel, best_edges if problem.objective == "latency" else None)
    return SolveResult(
        objective=problem.objective,
        selection=best_sel,
        evaluation=evaluation,
        value=best_value,
        lower_bound=min(lb, best_value),
        lp_bound=lp,
        optimal=optimal,
        proof=proof if optimal else "",
        solve_time_s=time.monotonic() - t0,
        calls=calls,
        variables=variables,
        clauses=clauses,
        configs=sizes,
    )


def _infeasible_message(problem: Problem) -> str:
    pins = [f"{i.name}={i.pin}" for i in problem.instances if i.pin]
    return (
        "no plan satisfies the constraints: at most "
        f"{problem.max_loadables} DLA loadables per core"
        + (f" with the pins {', '.join(pins)}" if pins else "")
        + "; relax --max-loadables or the pins"
    )


__all__: Sequence[str] = ["SolveResult", "solve"]
