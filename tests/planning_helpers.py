"""Random small planning problems and exhaustive reference answers, for cross-checking."""

from __future__ import annotations

import itertools

from hxsched.scheduler.planning.problem import Config, Problem, config_from_spans
from hxsched.scheduler.planning.simulate import evaluate_throughput, schedule_with_edges
from hxsched.scheduler.profile.synthetic import benchmark_profile, random_profile  # noqa: F401


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
                    out.append(
                        config_from_spans(
                            problem,
                            index,
                            [(a, b, acc) for (a, b), acc in zip(spans, pattern, strict=True)],
                        )
                    )
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
