"""Random small planning problems and exhaustive reference answers, for cross-checking."""

from __future__ import annotations

import itertools

from hxsched.scheduler.problem import Config, Problem, config_from_spans
from hxsched.scheduler.profile import GroupProfile, ModelInfo, Profile, Provenance, Transition
from hxsched.scheduler.simulate import evaluate_throughput, schedule_with_edges


def random_profile(rng, n_groups: int, name: str, device: str = "orin-agx") -> Profile:
    groups = []
    for g in range(n_groups):
        dla = bool(rng.random() < 0.75)
        gpu = int(rng.integers(2, 30)) * 0.01
        times = {"gpu": gpu}
        if dla:
            times["dla"] = int(rng.integers(2, 60)) * 0.01
        bw = {k: float(rng.integers(1, 150)) * 1e9 for k in times}
        groups.append(GroupProfile(id=g, time_ms=times, dla=dla, memory_bw=bw))
    trans = tuple(
        Transition(g, int(rng.integers(0, 5)) * 0.01, int(rng.integers(0, 5)) * 0.01)
        for g in range(n_groups - 1)
    )
    prov = {"t": Provenance("published", "test generator")}
    return Profile(device, "fp16", ModelInfo(name), prov, "t", tuple(groups), trans)


def all_configs(problem: Problem, index: int) -> list[Config]:
    """Every segmentation with at most k switches, no pruning."""
    inst = problem.instances[index]
    n = inst.n_groups
    accs = [inst.pin] if inst.pin else list(problem.accelerators)
    out = []
    for m in range(1, problem.max_switches + 2):
        for cuts in itertools.combinations(range(n - 1), m - 1):
            bounds = [-1, *cuts, n - 1]
            spans = [(bounds[j] + 1, bounds[j + 1]) for j in range(m)]
            for pattern in itertools.product(accs, repeat=m):
                if any(pattern[j] == pattern[j + 1] for j in range(m - 1)):
                    continue
                try:
                    out.append(config_from_spans(problem, index, [(a, b, acc) for (a, b), acc
                                                                  in zip(spans, pattern, strict=True)]))  # fmt: skip
                except Exception:
                    continue
    return out


def _loadables_ok(problem: Problem, sel) -> bool:
    return all(
        sum(c.loadables(core) for c in sel) <= problem.max_loadables for core in problem.dla_cores
    )


def brute_force(problem: Problem) -> int | None:
    """The optimum by exhaustive search (None if no selection is allowed)."""
    options = [all_configs(problem, i) for i in range(len(problem.instances))]
    best = None
    for sel in itertools.product(*options):
        if not _loadables_ok(problem, sel):
            continue
        if problem.objective == "throughput":
            value = evaluate_throughput(problem, sel).period
        else:
            value = best_schedule(problem, list(sel))
        if best is None or value < best:
            best = value
    return best


def best_schedule(problem: Problem, sel) -> int:
    """Minimum one-frame makespan over every ordering of every pair of segments."""
    slots = [(i, s) for i, c in enumerate(sel) for s in range(len(c.segments))]
    pairs = [(p, q) for a, p in enumerate(slots) for q in slots[a + 1 :] if p[0] != q[0]]
    best = None
    for choice in itertools.product(range(3), repeat=len(pairs)):
        edges = set()
        ok = True
        for (p, q), ch in zip(pairs, choice, strict=True):
            same = sel[p[0]].segments[p[1]].accelerator == sel[q[0]].segments[q[1]].accelerator
            if ch == 0:
                edges.add((p, q))
            elif ch == 1:
                edges.add((q, p))
            elif same:
                ok = False
                break
        if not ok:
            continue
        try:
            value = schedule_with_edges(problem, sel, edges).period
        except ValueError:  # cyclic ordering
            continue
        if best is None or value < best:
            best = value
    return best


def benchmark_profile(rng, n_groups: int, name: str, device: str = "orin-agx") -> Profile:
    """A model-like chain: every group DLA-capable except a short GPU-only tail (a detection
    head), DLA 1.5-3x slower than the GPU, hand-overs 0.02-0.08 ms."""
    groups = []
    tail = max(1, n_groups // 10)
    for g in range(n_groups):
        gpu = float(rng.uniform(0.02, 0.3))
        dla = g < n_groups - tail
        times = {"gpu": round(gpu, 4)}
        if dla:
            times["dla"] = round(gpu * float(rng.uniform(1.5, 3.0)), 4)
        bw = {k: float(rng.uniform(5, 120)) * 1e9 for k in times}
        groups.append(GroupProfile(id=g, time_ms=times, dla=dla, memory_bw=bw))
    trans = tuple(
        Transition(
            g, round(float(rng.uniform(0.02, 0.08)), 4), round(float(rng.uniform(0.01, 0.05)), 4)
        )
        for g in range(n_groups - 1)
    )
    prov = {"b": Provenance("published", "benchmark generator (random, seeded)")}
    return Profile(device, "fp16", ModelInfo(name), prov, "b", tuple(groups), trans)
