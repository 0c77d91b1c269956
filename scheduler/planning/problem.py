"""The planning problem: model instances as chains of groups, their possible segmentations.

Every time is quantised once, per segment, to integer ticks (``resolution_ms``, rounded up), so
the solver and the simulator compute with exactly the same numbers. A **configuration** of an
instance splits its chain into at most k+1 segments on alternating accelerators (DLA segments
only over DLA-capable groups); configurations that another one dominates (no worse on every
figure the objective and the constraints see) are pruned while they are enumerated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hxsched.errors import HxschedError, InternalError
from hxsched.scheduler.cost.contention import ContentionModel
from hxsched.scheduler.profile.schema import Profile
from hxsched.scheduler.types import Accelerator, AcceleratorKind, Objective

DEFAULT_RESOLUTION_MS = 0.01
DEFAULT_LEVELS = 4  # contention levels: other traffic in (0, 1/4], (1/4, 2/4], ... of peak
MAX_LOADABLES = 16


def kind_of(accelerator: str) -> AcceleratorKind:
    """Profile time key of an accelerator: dla0/dla1 -> dla."""
    return Accelerator(accelerator).kind


def to_ticks(ms: float, resolution_ms: float) -> int:
    return max(0, math.ceil(ms / resolution_ms - 1e-9))


@dataclass(frozen=True)
class Instance:
    """One model instance: its name (``pix2pix#0``), model name and profile."""

    name: str
    model: str
    profile: Profile
    pin: str | None = None  # all groups on this accelerator, if set (checked by build_problem)

    @property
    def n_groups(self) -> int:
        return len(self.profile.groups)


@dataclass(frozen=True)
class Segment:
    first: int  # group ids, inclusive
    last: int
    accelerator: Accelerator
    ticks: tuple[int, ...]  # compute ticks at contention level 0..L (level 0: alone)
    transition: int  # hand-over ticks into this segment, charged to its accelerator
    bytes: float  # DRAM bytes this segment moves (contention input)
    ms: float  # compute time alone, unrounded (for reports)

    @property
    def busy(self) -> int:
        return self.ticks[0] + self.transition

    def busy_at(self, level: int) -> int:
        return self.ticks[level] + self.transition

    @property
    def bw(self) -> float:
        """Average DRAM traffic while it runs alone, bytes/s."""
        return self.bytes / (self.ms / 1e3) if self.ms > 0 else 0.0


@dataclass(frozen=True)
class Config:
    segments: tuple[Segment, ...]

    @property
    def switches(self) -> int:
        return len(self.segments) - 1

    def load(self, accelerator: str, level: int = 0) -> int:
        return sum(s.busy_at(level) for s in self.segments if s.accelerator == accelerator)

    def bytes_on(self, accelerator: str) -> float:
        return sum(s.bytes for s in self.segments if s.accelerator == accelerator)

    def loadables(self, core: str) -> int:
        return sum(1 for s in self.segments if s.accelerator == core)

    @property
    def chain_ticks(self) -> int:
        return sum(s.busy for s in self.segments)

    def uses(self, accelerator: str) -> bool:
        return any(s.accelerator == accelerator for s in self.segments)

    @property
    def pattern(self) -> tuple[str, ...]:
        return tuple(s.accelerator for s in self.segments)


@dataclass(frozen=True)
class LevelCut:
    """LP duality under contention at one period, for one vector of contention levels the
    contention-aware relaxation leaves open: a plan whose levels are these uses
    configurations whose reduced costs sum to at most ``budget``, and its co-runners' traffic
    stays within ``caps``. A plan's own vector is always among the open ones."""

    levels: dict[str, int]
    reduced_costs: list[list[float]]  # per instance and candidate configuration
    budget: float
    caps: dict[str, int]  # per accelerator below the top level: co-runner KiB at most this
    period: int  # the bound these hold at


@dataclass
class Problem:
    instances: list[Instance]
    accelerators: tuple[Accelerator, ...]
    objective: Objective = Objective.THROUGHPUT
    max_switches: int = 1
    resolution_ms: float = DEFAULT_RESOLUTION_MS
    contention: ContentionModel | None = None
    levels: int = DEFAULT_LEVELS
    max_loadables: int = MAX_LOADABLES
    configs: list[list[Config]] = field(default_factory=list)  # per query (see solver)
    chains: list[Chain] = field(default_factory=list)
    # per query: each configuration's reduced cost and the budget a plan of value <= the
    # bound leaves for them (sum of reduced costs <= bound - LP optimum)
    reduced_costs: list[list[float]] | None = None
    rc_budget: float | None = None
    level_cuts: list[LevelCut] = field(default_factory=list)  # per query (throughput)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_levels(self) -> int:
        """Number of contention levels including 'alone' (1 when contention is off)."""
        return self.levels + 1 if self.contention is not None else 1

    @property
    def dla_cores(self) -> tuple[str, ...]:
        return tuple(a for a in self.accelerators if Accelerator(a).is_dla)

    def level_traffic(self, level: int) -> float:
        """Other accelerators' traffic (bytes/s) assumed at contention level ``level``."""
        if self.contention is None or level == 0:
            return 0.0
        return self.contention.peak_gbs * 1e9 * level / self.levels

    def kib(self, nbytes: float) -> int:
        """Bytes in the integer unit (KiB, rounded up) the contention rule compares."""
        return math.ceil(nbytes / 1024 - 1e-9) if nbytes > 0 else 0

    def traffic_level(self, other_kib: int, ticks: int) -> int:
        """Contention level of an accelerator whose co-runners move ``other_kib`` KiB per
        ``ticks``: level >= l iff their average traffic exceeds (l-1)/L of peak bandwidth.
        The solver encodes exactly this rule, so its predictions equal the simulator's."""
        if self.contention is None or other_kib <= 0:
            return 0
        level = 0
        for lv in range(1, self.levels + 1):
            if other_kib > self.traffic_threshold_kib(lv, ticks):
                level = lv
        return level

    def traffic_threshold_kib(self, level: int, ticks: int) -> int:
        """Largest other-traffic (KiB per ``ticks``) that stays below contention ``level``."""
        assert self.contention is not None
        seconds = ticks * self.resolution_ms / 1e3
        limit = (level - 1) / self.levels * self.contention.peak_gbs * 1e9 * seconds / 1024
        return math.floor(limit + 1e-9)

    def level_of(self, traffic: float) -> int:
        """The level (0..L) of other-accelerator traffic ``traffic`` (bytes/s), rounded up."""
        if self.contention is None or traffic <= 0:
            return 0
        peak = self.contention.peak_gbs * 1e9
        return min(self.levels, max(1, math.ceil(traffic / peak * self.levels - 1e-12)))


def _group_arrays(inst: Instance, accelerators: Sequence[str], problem: Problem):
    """Per accelerator kind: prefix sums of ms, of ms at each level, and of bytes."""
    prof = inst.profile
    kinds = sorted({kind_of(a) for a in accelerators})
    out = {}
    for kind in kinds:
        ms = [0.0]
        by = [0.0]
        lv = [[0.0] for _ in range(problem.n_levels)]
        ok = []
        for g in prof.groups:
            t = g.time_ms.get(kind)
            ok.append(t is not None)
            t = t or 0.0
            bw = g.memory_bw.get(kind, 0.0)
            ms.append(ms[-1] + t)
            by.append(by[-1] + bw * t / 1e3)
            for level in range(problem.n_levels):
                factor = (
                    problem.contention.slowdown(bw, problem.level_traffic(level))
                    if problem.contention is not None and level > 0
                    else 1.0
                )
                lv[level].append(lv[level][-1] + t * factor)
        out[kind] = (ms, lv, by, ok)
    return out


def _transition_ms(inst: Instance, after: int, src: str, dst: str) -> float:
    t = next((x for x in inst.profile.transitions if x.after == after), None)
    if t is None:
        return 0.0
    a, b = kind_of(src), kind_of(dst)
    gpu, dla = AcceleratorKind.GPU, AcceleratorKind.DLA
    if a == gpu and b == dla:
        return t.gpu_to_dla_ms
    if a == dla and b == gpu:
        return t.dla_to_gpu_ms
    if a == dla and b == dla:
        return t.dla_to_gpu_ms + t.gpu_to_dla_ms
    return 0.0


def _dominates(a: tuple, b: tuple) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True))


def pareto(problem: Problem, configs: Sequence[Config]) -> list[Config]:
    """Drop configurations another one dominates on every figure the objective sees:
    throughput: per accelerator, the load at every contention level, the bytes moved (when
    contention is modelled) and the DLA loadables; latency: the same per segment slot, among
    configurations with the same accelerator sequence."""
    groups: dict[object, list[Config]] = {}
    for cfg in configs:
        groups.setdefault(
            cfg.pattern if problem.objective == Objective.LATENCY else None, []
        ).append(cfg)
    out: list[Config] = []
    for members in groups.values():
        keys = np.array([config_key(problem, c) for c in members], dtype=float)
        out.extend(members[i] for i in undominated(keys))
    out.sort(key=lambda c: (c.switches, c.pattern, [s.first for s in c.segments]))
    return out


def undominated(keys: np.ndarray) -> list[int]:
    """Indices of the rows of ``keys`` no other row is <= in every column (of equal rows,
    the first in lexicographic order)."""
    order = np.lexsort(keys.T[::-1])  # lexicographic: a dominator sorts before what it dominates
    kept: list[int] = []
    for idx in order:
        if kept and np.any(np.all(keys[kept] <= keys[idx], axis=1)):
            continue
        kept.append(int(idx))
    return kept


def config_key(problem: Problem, cfg: Config) -> tuple:
    key: list[float] = []
    if problem.objective == Objective.THROUGHPUT:
        for acc in problem.accelerators:
            key += [cfg.load(acc, lv) for lv in range(problem.n_levels)]
            if problem.contention is not None:
                # unrounded: no worse here is no worse rounded (what the SAT side compares)
                # and in the contention LP's reduced costs (which see the unrounded bytes)
                key.append(cfg.bytes_on(acc))
            if acc.is_dla:
                key.append(cfg.loadables(acc))
        return tuple(key)
    for seg in cfg.segments:
        key += [seg.busy_at(lv) for lv in range(problem.n_levels)]
        if problem.contention is not None:
            key.append(problem.level_of(seg.bw))
    key += [cfg.loadables(c) for c in problem.dla_cores]
    return tuple(key)


INF = float("inf")
_least = np.minimum.reduce  # np.min without its wrapper's overhead (the pricing's inner loop)
Prices = Mapping[str, float]  # per accelerator (prices, or contention levels as numbers)


class Chain:
    """One instance's chain of groups: segment costs, pricing and enumeration of its
    configurations (at most k+1 segments on alternating accelerators)."""

    def __init__(self, problem: Problem, inst: Instance) -> None:
        self.p = problem
        self.inst = inst
        self.n = inst.n_groups
        self.arrays = _group_arrays(inst, problem.accelerators, problem)
        if inst.pin and inst.pin not in problem.accelerators:
            raise HxschedError(
                f"--pin {inst.name}={inst.pin}: the device has no {inst.pin} "
                f"(it has {', '.join(problem.accelerators)})"
            )
        self.accels = [Accelerator(inst.pin)] if inst.pin else list(problem.accelerators)
        n, res = self.n, problem.resolution_ms
        # busy ticks of segment [a, b] on acc (level 0, no hand-over); inf where it cannot run
        self.ticks: dict[str, np.ndarray] = {}
        self._level_ticks: dict[tuple[str, int], np.ndarray] = {}
        self._finite: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        # KiB segment [a, b] on acc moves (unrounded: sums of these never exceed the rounded
        # per-accelerator totals the contention rule compares, so bounds built on them hold)
        self.kib: dict[str, np.ndarray] = {}
        for acc in self.accels:
            _ms, _lv, by, _ok = self.arrays[kind_of(acc)]
            self.ticks[acc] = self.level_ticks(acc, 0)
            prefix = np.asarray(by) / 1024
            self.kib[acc] = np.maximum(prefix[None, 1:] - prefix[:-1, None], 0.0)
        # hand-over ticks into a segment starting at group a (a >= 1) from src to dst
        self.trans: dict[tuple[str, str], np.ndarray] = {}
        for src in self.accels:
            for dst in self.accels:
                if src == dst:
                    continue
                t = np.zeros(n)
                for a in range(1, n):
                    t[a] = to_ticks(_transition_ms(inst, a - 1, src, dst), res)
                self.trans[(src, dst)] = t

    def level_ticks(self, acc: str, level: int) -> np.ndarray:
        """Busy ticks of every segment [a, b] on ``acc`` at contention ``level`` (inf where it
        cannot run), rounded per segment exactly as ``segment`` rounds them."""
        key = (acc, level)
        if key not in self._level_ticks:
            _ms, lv, _by, ok = self.arrays[kind_of(acc)]
            n, res = self.n, self.p.resolution_ms
            prefix = np.asarray(lv[level])
            bad = np.concatenate([[0], np.cumsum([0 if o else 1 for o in ok])])
            mat = np.full((n, n), INF)
            for a in range(n):
                vals = np.ceil((prefix[a + 1 :] - prefix[a]) / res - 1e-9)
                vals[bad[a + 1 :] - bad[a] > 0] = INF
                mat[a, a:] = np.maximum(vals, 0)
            self._level_ticks[key] = mat
        return self._level_ticks[key]

    # -- single segments --------------------------------------------------------------------
    def can_run(self, acc: str, a: int, b: int) -> bool:
        ok = self.arrays[kind_of(acc)][3]
        return all(ok[a : b + 1])

    def segment(self, acc: str, a: int, b: int, prev: str | None) -> Segment:
        ms, lv, by, _ = self.arrays[kind_of(acc)]
        res = self.p.resolution_ms
        ticks = tuple(
            to_ticks(lv[level][b + 1] - lv[level][a], res) for level in range(self.p.n_levels)
        )
        trans = 0 if prev is None else to_ticks(_transition_ms(self.inst, a - 1, prev, acc), res)
        acc = Accelerator(acc)
        return Segment(a, b, acc, ticks, trans, by[b + 1] - by[a], ms[b + 1] - ms[a])

    def config(self, spans: Sequence[tuple[int, int, str]]) -> Config:
        segs, prev = [], None
        for a, b, acc in spans:
            segs.append(self.segment(acc, a, b, prev))
            prev = acc
        return Config(tuple(segs))

    # -- costs under dual prices ----------------------------------------------------------
    def _ticks_at(self, acc: str, levels: Prices | None) -> np.ndarray:
        return self.level_ticks(acc, int(levels.get(acc, 0))) if levels else self.ticks[acc]

    def _costs(
        self,
        w: Prices,
        u: Prices,
        levels: Prices | None = None,
        v: Prices | None = None,
    ):
        """cost[acc][a, b] of a first segment and hand-over vectors, under prices w (per tick
        of load, at ``levels``), u (per DLA loadable) and v (per KiB of traffic the segment adds
        to the *other* accelerators' contention)."""
        seg = {}
        for acc in self.accels:
            finite, cannot = self._finite_ticks(acc, int(levels.get(acc, 0)) if levels else 0)
            cost = w.get(acc, 0.0) * finite + u.get(acc, 0.0)
            if v:
                traffic = sum(x for b, x in v.items() if b != acc)
                if traffic:
                    cost += traffic * self.kib[acc]
            cost[cannot] = INF
            seg[acc] = cost
        hand = {key: w.get(key[1], 0.0) * t for key, t in self.trans.items()}
        return seg, hand

    def _finite_ticks(self, acc: str, level: int) -> tuple[np.ndarray, np.ndarray]:
        """``level_ticks`` with 0 where a segment cannot run, and the mask of those."""
        key = (acc, level)
        if key not in self._finite:
            ticks = self.level_ticks(acc, level)
            self._finite[key] = (np.nan_to_num(ticks, posinf=0.0), np.isinf(ticks))
        return self._finite[key]

    def completion(
        self,
        w: Prices,
        u: Prices,
        levels: Prices | None = None,
        v: Prices | None = None,
        costs=None,
    ) -> np.ndarray:
        """R[a, j, used]: least cost to cover groups a..n-1 after a segment on accels[j]
        (j = len(accels): nothing before) having used ``used`` segments (``costs``: the
        ``_costs`` of these prices, when the caller has them)."""
        n, A, K = self.n, len(self.accels), self.p.max_switches + 1
        seg, hand = costs or self._costs(w, u, levels, v)
        # H[j, jj, a]: hand-over cost into a segment on accels[jj] starting at group a after
        # one on accels[j] (inf: the same accelerator; row A: nothing before, no hand-over)
        H = np.full((A + 1, A, n), INF)
        for j, prev in enumerate(self.accels):
            for jj, acc in enumerate(self.accels):
                if prev != acc:
                    H[j, jj] = hand[(prev, acc)]
        H[A] = 0.0
        segs = np.stack([seg[acc] for acc in self.accels])  # [A, a, b]
        R = np.full((n + 1, A + 1, K + 1), INF)
        R[n, :, :] = 0.0
        Rt = np.full((A, n + 1, K), INF)  # R[b, jj, 1:] by accelerator first, for the minimum
        Rt[:, n, :] = 0.0
        for a in range(n - 1, -1, -1):
            # least cost of a segment a..b on each accelerator plus the rest after it, for
            # every number of segments used so far; then the best next accelerator per row
            tail = _least(segs[:, a, a:, None] + Rt[:, a + 1 :, :], axis=1)  # [A, K]
            R[a, :, :K] = _least(H[:, :, a, None] + tail[None, :, :], axis=1)
            Rt[:, a, :] = R[a, :A, 1:]
        return R

    def price(
        self, w: Prices, u: Prices, levels: Prices | None = None, v: Prices | None = None
    ) -> tuple[float, Config | None]:
        """The configuration of least cost sum(w * load) + sum(u * loadables) (+ v * the
        KiB it moves on the other accelerators; loads at ``levels``)."""
        costs = self._costs(w, u, levels, v)
        R = self.completion(w, u, levels, v, costs)
        A = len(self.accels)
        best = R[0, A, 0]
        if best == INF:
            return INF, None
        spans = self._trace(R, costs)
        return float(best), self.config(spans)

    def _trace(self, R, costs) -> list[tuple[int, int, Accelerator]]:
        seg, hand = costs
        A, n = len(self.accels), self.n
        a, j, used, spans = 0, A, 0, []
        while a < n:
            prev = self.accels[j] if j < A else None
            target = R[a, j, used]
            found = False
            for jj, acc in enumerate(self.accels):
                if acc == prev:
                    continue
                for b in range(a, n):
                    c = seg[acc][a, b] + (hand[(prev, acc)][a] if prev is not None else 0.0)
                    if c + R[b + 1, jj, used + 1] <= target + 1e-9 * max(1.0, abs(target)):
                        spans.append((a, b, acc))
                        a, j, used, found = b + 1, jj, used + 1, True
                        break
                if found:
                    break
            if not found:  # pragma: no cover - R was computed from the same costs
                raise InternalError(f"{self.inst.name}: tracing a configuration failed")
        return spans

    def enumerate(
        self,
        w: Prices,
        u: Prices,
        budget: float,
        load_cap: int,
        limit: int = 200_000,
        deadline: float | None = None,
        levels: Prices | None = None,
        v: Prices | None = None,
        costs=None,
    ) -> list[Config]:
        """Every configuration with cost <= budget whose load on each accelerator (at
        ``levels``) stays within ``load_cap`` ticks (``_TooMany`` past ``limit`` of them,
        ``_OutOfTime`` past ``deadline``); ``costs``: segment and hand-over costs in the form
        ``_costs`` returns, instead of those of the prices."""
        costs = costs or self._costs(w, u, levels, v)
        R = self.completion(w, u, levels, v, costs)
        steps = [0]
        seg, hand = costs
        ticks = {acc: self._ticks_at(acc, levels) for acc in self.accels}
        A, n = len(self.accels), self.n
        eps = 1e-7 * max(1.0, abs(budget))
        out: list[Config] = []

        def walk(a: int, j: int, used: int, cost: float, loads: dict, spans: list) -> None:
            steps[0] += 1
            if deadline is not None and steps[0] % 512 == 0 and time.monotonic() > deadline:
                raise _OutOfTime
            prev = self.accels[j] if j < A else None
            for jj, acc in enumerate(self.accels):
                if acc == prev:
                    continue
                h = hand[(prev, acc)][a] if prev is not None else 0.0
                ht = self.trans[(prev, acc)][a] if prev is not None else 0.0
                for b in range(a, n):
                    t = ticks[acc][a, b]
                    if t == INF:
                        break
                    c = cost + seg[acc][a, b] + h
                    if c + R[b + 1, jj, used + 1] > budget + eps:
                        continue
                    load = loads.get(acc, 0) + t + ht
                    if load > load_cap:
                        break  # longer segments only add load
                    new_loads = {**loads, acc: load}
                    if b == n - 1:
                        out.append(self.config([*spans, (a, b, acc)]))
                        if len(out) > limit:
                            raise _TooMany
                    elif used + 1 <= self.p.max_switches:
                        walk(b + 1, jj, used + 1, c, new_loads, [*spans, (a, b, acc)])

        walk(0, A, 0, 0.0, {}, [])
        return out


class _TooMany(Exception):
    pass


class _OutOfTime(Exception):
    pass


def build_problem(
    instances: Sequence[Instance],
    accelerators: Sequence[str],
    *,
    objective: Objective | str = Objective.THROUGHPUT,
    max_switches: int = 1,
    resolution_ms: float = DEFAULT_RESOLUTION_MS,
    contention: ContentionModel | None = None,
    levels: int = DEFAULT_LEVELS,
    max_loadables: int = MAX_LOADABLES,
) -> Problem:
    """Validate the options and enumerate every instance's non-dominated configurations."""
    try:
        objective = Objective(objective)
    except ValueError:
        raise HxschedError(f"--objective {objective!r}: expected throughput or latency") from None
    accs = _accelerators(accelerators)
    if not 0 <= max_switches <= 3:
        raise HxschedError(f"--max-switches {max_switches}: expected 0..3")
    if resolution_ms <= 0:
        raise HxschedError(f"--resolution {resolution_ms}: expected a positive number of ms")
    if not instances:
        raise HxschedError("nothing to plan: give at least one model or profile")
    if levels < 1:
        raise HxschedError("contention levels must be >= 1")
    problem = Problem(
        list(instances),
        accs,
        objective,
        max_switches,
        resolution_ms,
        contention,
        levels,
        max_loadables,
    )
    cache: dict[tuple, Chain] = {}
    for inst in instances:
        key = (id(inst.profile), inst.pin)
        if key not in cache:
            chain = Chain(problem, inst)
            cost, _ = chain.price({a: 1.0 for a in accs}, {})
            if cost == INF:
                raise HxschedError(
                    f"{inst.name}: no way to place it"
                    + (f" with --pin {inst.pin} (some groups cannot run there)" if inst.pin else "")
                )
            cache[key] = chain
        problem.chains.append(cache[key])
    return problem


def _accelerators(names: Sequence[str]) -> tuple[Accelerator, ...]:
    out = []
    for name in names:
        try:
            out.append(Accelerator(name))
        except ValueError:
            known = ", ".join(a.value for a in Accelerator)
            raise HxschedError(f"accelerator {name!r}: expected one of {known}") from None
    if not out:
        raise HxschedError("no accelerators to plan for")
    return tuple(out)


def config_from_spans(
    problem: Problem, index: int, spans: Sequence[tuple[int, int, str]]
) -> Config:
    """A configuration of instance ``index`` from (first group, last group, accelerator) spans,
    outside the switch limit (for baselines); raises if a span cannot run where asked."""
    inst = problem.instances[index]
    chain = problem.chains[index]
    for a, b, acc in spans:
        if acc not in problem.accelerators or not chain.can_run(acc, a, b):
            raise HxschedError(f"{inst.name}: groups {a}..{b} cannot run on {acc}")
    return chain.config(spans)


def merge_spans(assign: Sequence[str]) -> list[tuple[int, int, str]]:
    """Group-by-group accelerators -> maximal spans."""
    spans: list[tuple[int, int, str]] = []
    for g, acc in enumerate(assign):
        if spans and spans[-1][2] == acc:
            spans[-1] = (spans[-1][0], g, acc)
        else:
            spans.append((g, g, acc))
    return spans
