"""The planning problem: model instances as chains of groups, their possible segmentations.

Every time is quantised once, per segment, to integer ticks (``resolution_ms``, rounded up), so
the solver and the simulator compute with exactly the same numbers. A **configuration** of an
instance splits its chain into at most k+1 segments on alternating accelerators (DLA segments
only over DLA-capable groups); configurations that another one dominates (no worse on every
figure the objective and the constraints see) are pruned while they are enumerated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from hxsched.errors import HxschedError
from hxsched.scheduler.contention import ContentionModel
from hxsched.scheduler.profile import Profile

DEFAULT_RESOLUTION_MS = 0.01
DEFAULT_LEVELS = 4  # contention levels: other traffic in (0, 1/4], (1/4, 2/4], ... of peak
MAX_LOADABLES = 16


def kind_of(accelerator: str) -> str:
    """Profile time key of an accelerator: dla0/dla1 -> dla."""
    return "dla" if accelerator.startswith("dla") else accelerator


def to_ticks(ms: float, resolution_ms: float) -> int:
    return max(0, math.ceil(ms / resolution_ms - 1e-9))


@dataclass(frozen=True)
class Instance:
    """One model instance: its name (``pix2pix#0``), model name and profile."""

    name: str
    model: str
    profile: Profile
    pin: str | None = None  # all groups on this accelerator, if set

    @property
    def n_groups(self) -> int:
        return len(self.profile.groups)


@dataclass(frozen=True)
class Segment:
    first: int  # group ids, inclusive
    last: int
    accelerator: str
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


@dataclass
class Problem:
    instances: list[Instance]
    accelerators: tuple[str, ...]
    objective: str = "throughput"  # or "latency"
    max_switches: int = 1
    resolution_ms: float = DEFAULT_RESOLUTION_MS
    contention: ContentionModel | None = None
    levels: int = DEFAULT_LEVELS
    max_loadables: int = MAX_LOADABLES
    configs: list[list[Config]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_levels(self) -> int:
        """Number of contention levels including 'alone' (1 when contention is off)."""
        return self.levels + 1 if self.contention is not None else 1

    @property
    def dla_cores(self) -> tuple[str, ...]:
        return tuple(a for a in self.accelerators if a.startswith("dla"))

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
    if a == "gpu" and b == "dla":
        return t.gpu_to_dla_ms
    if a == "dla" and b == "gpu":
        return t.dla_to_gpu_ms
    if a == "dla" and b == "dla":
        return t.dla_to_gpu_ms + t.gpu_to_dla_ms
    return 0.0


def _dominates(a: tuple, b: tuple) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True))


def _insert(front: list, key: tuple, item) -> None:
    """Keep ``front`` (list of (key, item)) free of dominated entries."""
    for k, _ in front:
        if _dominates(k, key):
            return
    front[:] = [(k, it) for k, it in front if not _dominates(key, k)]
    front.append((key, item))


class _Builder:
    def __init__(self, problem: Problem, inst: Instance) -> None:
        self.p = problem
        self.inst = inst
        self.arrays = _group_arrays(inst, problem.accelerators, problem)
        self.accels = [inst.pin] if inst.pin else list(problem.accelerators)
        if inst.pin and inst.pin not in problem.accelerators:
            raise HxschedError(
                f"--pin {inst.name}={inst.pin}: the device has no {inst.pin} "
                f"(it has {', '.join(problem.accelerators)})"
            )

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
        return Segment(a, b, acc, ticks, trans, by[b + 1] - by[a], ms[b + 1] - ms[a])

    def key(self, segs: Sequence[Segment]) -> tuple:
        """What the objective and constraints see of a (partial) configuration."""
        if self.p.objective == "throughput":
            key: list[float] = []
            for acc in self.p.accelerators:
                on = [s for s in segs if s.accelerator == acc]
                key += [sum(s.busy_at(lv) for s in on) for lv in range(self.p.n_levels)]
                if self.p.contention is not None:
                    key.append(sum(s.bytes for s in on))
                if acc.startswith("dla"):
                    key.append(len(on))
            return tuple(key)
        key = []
        for s in segs:
            key += [s.busy_at(lv) for lv in range(self.p.n_levels)]
            if self.p.contention is not None:
                key.append(s.bytes)
        key += [sum(1 for s in segs if s.accelerator == c) for c in self.p.dla_cores]
        return tuple(key)

    def build(self) -> list[Config]:
        n = self.inst.n_groups
        k = self.p.max_switches
        # fronts[(end, acc, switches, pattern-or-None)] -> [(key, segments)]
        fronts: dict[tuple, list] = {}
        latency = self.p.objective == "latency"
        for acc in self.accels:
            for b in range(n):
                if not self.can_run(acc, 0, b):
                    break
                seg = self.segment(acc, 0, b, None)
                state = (b, acc, 0, (acc,) if latency else None)
                _insert(fronts.setdefault(state, []), self.key([seg]), (seg,))
        for end in range(n - 1):
            for state in [s for s in list(fronts) if s[0] == end]:
                _, acc, sw, pattern = state
                if sw >= k:
                    continue
                for nxt in self.accels:
                    if nxt == acc:
                        continue
                    for b in range(end + 1, n):
                        if not self.can_run(nxt, end + 1, b):
                            break
                        new_pattern = (*pattern, nxt) if latency else None
                        nstate = (b, nxt, sw + 1, new_pattern)
                        seg = self.segment(nxt, end + 1, b, acc)
                        for _key, segs in fronts[state]:
                            full = (*segs, seg)
                            _insert(fronts.setdefault(nstate, []), self.key(full), full)
        final: dict = {}
        for state, items in fronts.items():
            if state[0] != n - 1:
                continue
            group_key = state[3] if latency else None
            for key, segs in items:
                _insert(final.setdefault(group_key, []), key, segs)
        configs = [Config(segs) for items in final.values() for _, segs in items]
        configs.sort(key=lambda c: (c.switches, c.pattern, [s.first for s in c.segments]))
        if not configs:
            raise HxschedError(
                f"{self.inst.name}: no way to place it"
                + (
                    f" with --pin {self.inst.pin} (some groups cannot run there)"
                    if self.inst.pin
                    else ""
                )
            )
        return configs


def build_problem(
    instances: Sequence[Instance],
    accelerators: Sequence[str],
    *,
    objective: str = "throughput",
    max_switches: int = 1,
    resolution_ms: float = DEFAULT_RESOLUTION_MS,
    contention: ContentionModel | None = None,
    levels: int = DEFAULT_LEVELS,
    max_loadables: int = MAX_LOADABLES,
) -> Problem:
    """Validate the options and enumerate every instance's non-dominated configurations."""
    if objective not in ("throughput", "latency"):
        raise HxschedError(f"--objective {objective!r}: expected throughput or latency")
    if not 0 <= max_switches <= 3:
        raise HxschedError(f"--max-switches {max_switches}: expected 0..3")
    if resolution_ms <= 0:
        raise HxschedError(f"--resolution {resolution_ms}: expected a positive number of ms")
    if not instances:
        raise HxschedError("nothing to plan: give at least one model or profile")
    if levels < 1:
        raise HxschedError("contention levels must be >= 1")
    problem = Problem(
        list(instances), tuple(accelerators), objective, max_switches, resolution_ms,
        contention, levels, max_loadables,
    )  # fmt: skip
    cache: dict[tuple, list[Config]] = {}
    for inst in instances:
        key = (id(inst.profile), inst.pin)
        if key not in cache:
            cache[key] = _Builder(problem, inst).build()
        problem.configs.append(cache[key])
    return problem


def config_from_spans(
    problem: Problem, index: int, spans: Sequence[tuple[int, int, str]]
) -> Config:
    """A configuration of instance ``index`` from (first group, last group, accelerator) spans,
    outside the switch limit (for baselines); raises if a span cannot run where asked."""
    inst = problem.instances[index]
    builder = _Builder(problem, Instance(inst.name, inst.model, inst.profile))
    segs: list[Segment] = []
    prev = None
    for a, b, acc in spans:
        if not builder.can_run(acc, a, b):
            raise HxschedError(f"{inst.name}: groups {a}..{b} cannot run on {acc}")
        segs.append(builder.segment(acc, a, b, prev))
        prev = acc
    return Config(tuple(segs))


def merge_spans(assign: Sequence[str]) -> list[tuple[int, int, str]]:
    """Group-by-group accelerators -> maximal spans."""
    spans: list[tuple[int, int, str]] = []
    for g, acc in enumerate(assign):
        if spans and spans[-1][2] == acc:
            spans[-1] = (spans[-1][0], g, acc)
        else:
            spans.append((g, g, acc))
    return spans
