"""Solver scaling: hxsched's SAT scheduler beside Z3's Optimize (the HaX-CoNN/trtutils
approach) on the same seeded random chains, measured side by side in one run.

    python benchmarks/bench_solver.py                 # the standard grid (tens of minutes)
    python benchmarks/bench_solver.py --quick         # a few minutes
    python benchmarks/bench_solver.py --out results.json --plot scaling.svg
    python benchmarks/bench_solver.py --skip-grid --anytime real   # gap over time, contention on

Needs z3-solver (pip install 'hxsched[bench]'). Every row: instances x groups x k x objective,
hxsched's solve time, whether it proved optimality, its gap at the time limit, Z3's time and
status, and whether both found the same value (throughput models are identical; Z3's latency
model is HaX-CoNN's per-group formulation, which may interleave groups of different instances,
so its optimum can be lower than ours: we report both values).

The anytime part (contention on, as ``hxsched plan`` runs): the real-model mixes for orin-agx
and synthetic 2/4/8 x 40 chains, each at k = 1, 2 and time limits 1, 5, 30 s, one forked process
per solve (its own peak memory); prints value, proven gap, wall time and peak RSS, and lists every
case where the wall time exceeds 1.1 x limit + 1 s or a plan gets worse with more time or more
switches ("NOT MET").
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from hxsched.scheduler.planning.problem import Instance, build_problem, kind_of, to_ticks
from hxsched.scheduler.planning.solver import solve
from hxsched.scheduler.profile.synthetic import benchmark_profile

ACCELERATORS = ("gpu", "dla0", "dla1")
RES = 0.01


def make_instances(n_inst: int, n_groups: int, seed: int) -> list[Instance]:
    rng = np.random.default_rng(seed)
    return [
        Instance(f"m{i}#0", f"m{i}", benchmark_profile(rng, n_groups, f"m{i}"))
        for i in range(n_inst)
    ]


def hand_over_ms(t, src: int, dst: int) -> float:
    """A transition's cost from ACCELERATORS[src] to ACCELERATORS[dst] (0 on the same kind)."""
    s, d = kind_of(ACCELERATORS[src]), kind_of(ACCELERATORS[dst])
    return {
        ("gpu", "dla"): t.gpu_to_dla_ms,
        ("dla", "gpu"): t.dla_to_gpu_ms,
        ("dla", "dla"): t.gpu_to_dla_ms + t.dla_to_gpu_ms,
    }.get((s, d), 0.0)


def z3_solve(instances: list[Instance], objective: str, k: int, time_limit_s: float) -> dict:
    """The same model in Z3: an accelerator per group, at most k switches per instance."""
    import z3

    opt = z3.Optimize()
    opt.set("timeout", int(time_limit_s * 1000))
    A = len(ACCELERATORS)
    acc_vars, loads = [], {a: [] for a in range(A)}
    makespan = z3.Int("makespan")
    group_info = []
    for i, inst in enumerate(instances):
        prof = inst.profile
        n = len(prof.groups)
        acc = [z3.Int(f"a_{i}_{g}") for g in range(n)]
        acc_vars.append(acc)
        for g, grp in enumerate(prof.groups):
            opt.add(acc[g] >= 0, acc[g] < A)
            if "dla" not in grp.time_ms:
                opt.add(acc[g] == 0)
        switches = [z3.If(acc[g] != acc[g - 1], 1, 0) for g in range(1, n)]
        if switches:
            opt.add(z3.Sum(switches) <= k)
        tick = {
            (g, a): to_ticks(grp.time_ms.get(kind_of(ACCELERATORS[a]), 0.0), RES)
            for g, grp in enumerate(prof.groups)
            for a in range(A)
        }
        trans = {}
        for t in prof.transitions:
            for src in range(A):
                for dst in range(A):
                    ms = hand_over_ms(t, src, dst)
                    trans[(t.after, src, dst)] = to_ticks(ms, RES) if src != dst else 0
        group_info.append((acc, tick, trans, n))
        for a in range(A):
            loads[a].append(z3.Sum([z3.If(acc[g] == a, tick[(g, a)], 0) for g in range(n)]))
            hand = [
                z3.If(z3.And(acc[g] == a, acc[g - 1] == src), trans.get((g - 1, src, a), 0), 0)
                for g in range(1, n)
                for src in range(A)
                if src != a
            ]
            if hand:
                loads[a].append(z3.Sum(hand))
        for a in (1, 2):  # at most 16 DLA loadables per core
            starts = [z3.If(acc[0] == a, 1, 0)] + [
                z3.If(z3.And(acc[g] == a, acc[g - 1] != a), 1, 0) for g in range(1, n)
            ]
            loads.setdefault(f"seg{a}", []).append(z3.Sum(starts))
    for a in (1, 2):
        opt.add(z3.Sum(loads.pop(f"seg{a}")) <= 16)
    if objective == "throughput":
        for a in range(A):
            opt.add(z3.Sum(loads[a]) <= makespan)
    else:
        starts = []
        for i, (acc, tick, trans, n) in enumerate(group_info):
            st = [z3.Int(f"s_{i}_{g}") for g in range(n)]
            dur = [
                z3.Sum([z3.If(acc[g] == a, tick[(g, a)], 0) for a in range(A)]) for g in range(n)
            ]
            opt.add(st[0] >= 0)
            for g in range(1, n):
                hand = z3.Sum(
                    [
                        z3.If(z3.And(acc[g - 1] == s, acc[g] == d), trans.get((g - 1, s, d), 0), 0)
                        for s in range(A)
                        for d in range(A)
                        if s != d
                    ]
                )
                opt.add(st[g] >= st[g - 1] + dur[g - 1] + hand)
            opt.add(st[-1] + dur[-1] <= makespan)
            starts.append((st, dur, acc))
        for i in range(len(starts)):
            for j in range(i + 1, len(starts)):
                si, di, ai = starts[i]
                sj, dj, aj = starts[j]
                for g in range(len(si)):
                    for h in range(len(sj)):
                        opt.add(
                            z3.Or(ai[g] != aj[h], si[g] + di[g] <= sj[h], sj[h] + dj[h] <= si[g])
                        )
    opt.minimize(makespan)
    t0 = time.monotonic()
    status = opt.check()
    elapsed = time.monotonic() - t0
    out = {"seconds": round(elapsed, 3), "status": str(status)}
    if status == z3.sat:
        out["value"] = opt.model()[makespan].as_long()
        out["optimal"] = elapsed < time_limit_s * 0.98
    else:
        out["value"] = None
        out["optimal"] = False
    return out


def z3_contention_plan(instances, contention, k: int, limit: float):
    """Throughput with contention in Z3 (per group, as HaX-CoNN formulates it): an accelerator
    per group, at most k switches, every accelerator's work at each contention level within
    the period whenever the other accelerators' traffic per period reaches that level. Z3's
    own arithmetic rounds per group (ours per segment), so its plan is scored by hxsched's
    simulator, the one judge of both. Returns (per instance [(first, last, accelerator)], the
    seconds Z3 ran, whether it finished within the limit)."""
    import z3

    from hxsched.scheduler.planning.problem import DEFAULT_LEVELS

    levels, A = DEFAULT_LEVELS, len(ACCELERATORS)
    peak = contention.peak_gbs * 1e9

    def slow(bw: float, level: int) -> float:
        return contention.slowdown(bw, peak * level / levels) if level else 1.0

    opt = z3.Optimize()
    opt.set("timeout", max(1, int(limit * 1000)))
    period = z3.Int("T")
    load = {(a, lv): [] for a in range(A) for lv in range(levels + 1)}
    other = {a: [] for a in range(A)}
    assign = []
    for i, inst in enumerate(instances):
        prof = inst.profile
        acc = [z3.Int(f"a_{i}_{g}") for g in range(len(prof.groups))]
        assign.append(acc)
        for g, grp in enumerate(prof.groups):
            opt.add(acc[g] >= 0, acc[g] < A)
            if "dla" not in grp.time_ms:
                opt.add(acc[g] == 0)
            for a in range(A):
                kind = kind_of(ACCELERATORS[a])
                t = grp.time_ms.get(kind)
                if t is None:
                    continue
                bw = grp.memory_bw.get(kind, 0.0)
                for lv in range(levels + 1):
                    load[(a, lv)].append(z3.If(acc[g] == a, to_ticks(t * slow(bw, lv), RES), 0))
                kib = math.ceil(bw * t / 1e3 / 1024)
                for b in range(A):
                    if b != a:
                        other[b].append(z3.If(acc[g] == a, kib, 0))
        switches = [z3.If(acc[g] != acc[g - 1], 1, 0) for g in range(1, len(acc))]
        if switches:
            opt.add(z3.Sum(switches) <= k)
        for t in prof.transitions:
            g = t.after + 1
            for src in range(A):
                for dst in range(A):
                    ms = hand_over_ms(t, src, dst)
                    if src != dst and ms:
                        hand = z3.If(z3.And(acc[g - 1] == src, acc[g] == dst), to_ticks(ms, RES), 0)
                        for lv in range(levels + 1):
                            load[(dst, lv)].append(hand)
    for a in range(A):
        opt.add(z3.Sum(load[(a, 0)]) <= period)
        traffic = z3.Sum(other[a]) if other[a] else z3.IntVal(0)
        for lv in range(1, levels + 1):
            # other KiB per period > (lv-1)/L of peak: scaled to integers (RES = 1/100 ms)
            over = traffic * (levels * 1000 * 1024 * 100) > (lv - 1) * int(peak) * period
            opt.add(z3.Implies(over, z3.Sum(load[(a, lv)]) <= period))
    opt.minimize(period)
    t0 = time.monotonic()
    status = opt.check()
    seconds = time.monotonic() - t0
    try:
        model = opt.model()
    except z3.Z3Exception:
        return None, seconds, False
    if model is None or model.eval(assign[0][0], model_completion=False) is None:
        return None, seconds, False
    spans = []
    for acc in assign:
        seq = [ACCELERATORS[model.eval(x, model_completion=True).as_long()] for x in acc]
        spans.append(seq)
    return spans, seconds, status == z3.sat


def z3_anytime(instances, contention, k: int, limit: float) -> dict:
    """Z3's plan at ``limit``, scored by hxsched's simulator (None: no plan by then)."""
    from hxsched.scheduler.planning.problem import config_from_spans, merge_spans
    from hxsched.scheduler.planning.simulate import evaluate

    problem = build_problem(
        instances, ACCELERATORS, objective="throughput", max_switches=k, contention=contention
    )
    seqs, seconds, finished = z3_contention_plan(instances, contention, k, limit)
    if seqs is None:
        return {"value": None, "seconds": round(seconds, 3), "finished": finished}
    sel = [config_from_spans(problem, i, merge_spans(seq)) for i, seq in enumerate(seqs)]
    value = evaluate(problem, sel).period
    return {"value": value, "seconds": round(seconds, 3), "finished": finished}


def run_case(n_inst, n_groups, k, objective, seed, time_limit, use_z3):
    instances = make_instances(n_inst, n_groups, seed)
    t0 = time.monotonic()
    problem = build_problem(instances, ACCELERATORS, objective=objective, max_switches=k)
    result = solve(problem, time_limit_s=time_limit)
    ours = {
        "seconds": round(time.monotonic() - t0, 3),
        "value": result.value,
        "optimal": result.optimal,
        "gap": round(result.gap, 5),
        "lower_bound": result.lower_bound,
        "lp_bound": result.lp_bound,
        "proof": result.proof,
        "variables": result.variables,
        "clauses": result.clauses,
        "configurations": result.configs,
        "sat_calls": len(result.calls),
    }
    row = {
        "instances": n_inst,
        "groups": n_groups,
        "k": k,
        "objective": objective,
        "seed": seed,
        "hxsched": ours,
    }
    if use_z3:
        row["z3"] = z3_solve(instances, objective, k, time_limit)
        zv = row["z3"]["value"]
        row["same_value"] = (
            zv == result.value
            if zv is not None and result.optimal and row["z3"]["optimal"]
            else None
        )
    return row


# Real-model mixes on orin-agx (the shipped profiles, contention model on as `hxsched plan`).
REAL_MIXES = {
    2: (("pix2pix_unet256_dla", 1), ("yolov8n", 1)),
    4: (("pix2pix_unet256_dla", 2), ("yolov8n", 1), ("yolov8s", 1)),
    8: (("pix2pix_unet256_dla", 4), ("yolov8n", 4)),
}
LIMITS = (1.0, 5.0, 30.0)  # gap over time: the plan at each of these limits


def real_instances(n: int):
    from hxsched.scheduler.profile.schema import load_profile
    from hxsched.scheduler.profile.store import shipped_dir

    out, contention = [], None
    for name, count in REAL_MIXES[n]:
        prof = load_profile(shipped_dir() / "orin-agx" / f"{name}.yaml")
        contention = contention or prof.contention
        out += [Instance(f"{name}#{i}", name, prof) for i in range(count)]
    return out, contention


def _timed_solve(queue, instances, contention, objective, k, limit):
    from hxsched.scheduler.planning.solver import peak_rss_mib

    t0 = time.monotonic()
    problem = build_problem(
        instances, ACCELERATORS, objective=objective, max_switches=k, contention=contention
    )
    r = solve(problem, time_limit_s=limit)
    queue.put(
        {
            "wall_s": round(time.monotonic() - t0, 3),
            "value": r.value,
            "lower_bound": r.lower_bound,
            "gap": round(r.gap, 5),
            "optimal": r.optimal,
            "proof": r.proof,
            "proof_detail": r.proof_detail,
            "peak_rss_mib": peak_rss_mib(),
        }
    )


def solve_in_child(instances, contention, objective, k, limit) -> dict:
    """One solve in a forked process, so its peak memory (ru_maxrss) is its own."""
    return in_child(_timed_solve, instances, contention, objective, k, limit, queued=True)


def _put(queue, fn, args) -> None:
    queue.put(fn(*args))


def in_child(fn, *args, queued: bool = False) -> dict:
    """``fn(*args)`` in a forked process (``queued``: fn takes the queue first and puts its
    answer itself), so that neither side's memory shows in the other's peak."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    if queued:
        proc = ctx.Process(target=fn, args=(queue, *args))
    else:
        proc = ctx.Process(target=_put, args=(queue, fn, args))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def anytime_rows(cases, limits=LIMITS, use_z3=False) -> tuple[list[dict], list[str]]:
    """Per (name, instances, contention, objective): plans for k and limits; checks wall time
    <= 1.1 x limit + 1 s, monotone in the limit, and monotone in k at each limit. With
    ``use_z3``, Z3's plan at the same limit beside each throughput row (scored by our
    simulator; its gap is against hxsched's proven lower bound)."""
    rows, problems = [], []
    for name, instances, contention, objective, ks in cases:
        by_k: dict[int, dict[float, dict]] = {}
        for k in ks:
            by_k[k] = {}
            for limit in limits:
                out = solve_in_child(instances, contention, objective, k, limit)
                by_k[k][limit] = out
                peer = ""
                if use_z3 and objective == "throughput":
                    out["z3"] = in_child(z3_anytime, instances, contention, k, limit)
                    zv = out["z3"]["value"]
                    out["z3"]["gap"] = (
                        round(max(0.0, (zv - out["lower_bound"]) / zv), 5) if zv else None
                    )
                    peer = f" | z3 {zv} (gap {out['z3']['gap']:.2%})" if zv else " | z3 no plan"
                rows.append({"case": name, "objective": objective, "k": k, "limit_s": limit, **out})
                print(
                    f"{name:28s} {objective:10s} k={k} limit {limit:4.0f}s: wall {out['wall_s']:6.2f}s "
                    f"value {out['value']} lb {out['lower_bound']} "
                    f"{'optimal (' + out['proof'] + ')' if out['optimal'] else 'gap ' + format(out['gap'], '.2%')} "
                    f"peak {out['peak_rss_mib']:.0f} MiB{peer}",
                    flush=True,
                )
                if out["wall_s"] > 1.1 * limit + 1.0:
                    problems.append(
                        f"{name} {objective} k={k}: wall {out['wall_s']} s at limit {limit}"
                    )
            values = [by_k[k][x]["value"] for x in limits]
            if any(b > a for a, b in zip(values, values[1:], strict=False)):
                problems.append(f"{name} {objective} k={k}: worse with more time {values}")
        for k0, k1 in zip(ks, ks[1:], strict=False):
            for limit in limits:
                a, b = by_k[k0][limit]["value"], by_k[k1][limit]["value"]
                if b > a:
                    problems.append(f"{name} {objective} limit {limit}: k={k1} {b} > k={k0} {a}")
    return rows, problems


def svg_plot(rows: list[dict], path: Path) -> None:
    """Solve time per case, hxsched vs Z3, log scale (timeouts drawn at the limit)."""
    W, H, L, B = 900, 420, 60, 60
    cases = [f"{r['instances']}x{r['groups']} k{r['k']} {r['objective'][0]}" for r in rows]
    times = [(r["hxsched"]["seconds"], r.get("z3", {}).get("seconds")) for r in rows]
    vals = [t for pair in times for t in pair if t]
    lo, hi = math.log10(max(min(vals), 1e-3)), math.log10(max(vals) * 1.5)

    def y(t):
        return H - B - (math.log10(max(t, 1e-3)) - lo) / (hi - lo) * (H - B - 20)

    step = (W - L - 20) / max(len(rows), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="10">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{L}" y="14" font-size="12">solve time (s, log) per case: hxsched (blue) vs Z3 Optimize (orange); hollow = not proven optimal</text>',
    ]
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        yy = y(10**e)
        parts.append(
            f'<line x1="{L}" x2="{W - 20}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
            f'<text x="5" y="{yy + 3:.1f}">1e{e}</text>'
        )
    for n, (r, (ours, z3t), label) in enumerate(zip(rows, times, cases, strict=True)):
        x = L + step * (n + 0.5)
        fill = "#4e79a7" if r["hxsched"]["optimal"] else "none"
        parts.append(
            f'<circle cx="{x - 4:.1f}" cy="{y(ours):.1f}" r="4" fill="{fill}" stroke="#4e79a7"/>'
        )
        if z3t is not None:
            fill = "#f28e2b" if r["z3"]["optimal"] else "none"
            parts.append(
                f'<circle cx="{x + 4:.1f}" cy="{y(z3t):.1f}" r="4" fill="{fill}" stroke="#f28e2b"/>'
            )
        parts.append(
            f'<text transform="translate({x + 3:.1f},{H - B + 8}) rotate(60)">{label}</text>'
        )
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def run_anytime(which: str, objectives, seed: int, use_z3=False) -> tuple[list[dict], list[str]]:
    from hxsched.scheduler.cost.contention import DEFAULT_CONTENTION

    cases = []
    for objective in objectives:
        if which in ("real", "both"):
            for n in REAL_MIXES:
                instances, contention = real_instances(n)
                cases.append((f"orin-agx real mix x{n}", instances, contention, objective, (1, 2)))
        if which in ("synthetic", "both"):
            for n in (2, 4, 8):
                instances = make_instances(n, 40, seed)
                cm = DEFAULT_CONTENTION["orin-agx"]
                cases.append((f"synthetic {n}x40", instances, cm, objective, (1, 2)))
    return anytime_rows(cases, use_z3=use_z3) if cases else ([], [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a small grid (minutes)")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per solver per case")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-z3", action="store_true", help="skip the Z3 peer")
    ap.add_argument("--objective", choices=("both", "throughput", "latency"), default="both")
    ap.add_argument(
        "--anytime",
        choices=("none", "real", "synthetic", "both"),
        default="both",
        help="gap over time (limits 1, 5, 30 s) with contention on: the real-model mixes "
        "and/or synthetic 2/4/8 x 40 chains",
    )
    ap.add_argument("--skip-grid", action="store_true", help="only the anytime part")
    ap.add_argument("--out", default="bench_solver.json")
    ap.add_argument("--plot", default="bench_solver.svg")
    args = ap.parse_args(argv)
    use_z3 = not args.no_z3
    if use_z3:
        try:
            import z3  # noqa: F401
        except ImportError:
            print(
                "z3-solver is not installed (pip install 'hxsched[bench]'); use --no-z3",
                file=sys.stderr,
            )
            return 2
    # Libraries are imported before any timing, for both sides (z3 above; HiGHS (the LP) and the
    # SAT solvers here), so no case pays a one-time import.
    import highspy._core  # noqa: F401
    from pysat.solvers import Solver

    Solver(name="glucose4").delete()
    if args.quick:
        grid = [(n, g, k) for n in (2, 4, 8) for g in (10, 40) for k in (1, 2)]
    else:
        grid = [(n, g, k) for n in (2, 4, 8) for g in (10, 40, 100) for k in (1, 2, 3)]
    rows = []
    objectives = ("throughput", "latency") if args.objective == "both" else (args.objective,)
    anytime, problems = run_anytime(args.anytime, objectives, args.seed, use_z3)
    for objective in objectives if not args.skip_grid else ():
        for n, g, k in grid:
            row = run_case(n, g, k, objective, args.seed, args.time_limit, use_z3)
            rows.append(row)
            ours, peer = row["hxsched"], row.get("z3", {})
            print(
                f"{n}x{g} k={k} {objective:10s} hxsched {ours['seconds']:8.2f}s "
                f"{'optimal' if ours['optimal'] else 'gap ' + format(ours['gap'], '.2%'):>12s}"
                + (
                    f" | z3 {peer['seconds']:8.2f}s {peer['status']:7s} "
                    f"{'optimal' if peer['optimal'] else 'no proof'} value {peer['value']} vs {ours['value']}"
                    if peer
                    else ""
                ),
                flush=True,
            )
    summary = {}
    for objective in objectives:
        sub = [r for r in rows if r["objective"] == objective]
        both = [r for r in sub if "z3" in r and r["z3"]["optimal"] and r["hxsched"]["optimal"]]
        summary[objective] = {
            "cases": len(sub),
            "hxsched_optimal": sum(r["hxsched"]["optimal"] for r in sub),
            "z3_optimal": sum(r.get("z3", {}).get("optimal", False) for r in sub),
            "hxsched_faster": sum(
                r["hxsched"]["seconds"] < r["z3"]["seconds"] for r in sub if "z3" in r
            ),
            "median_speedup_vs_z3_where_both_optimal": round(
                statistics.median(
                    [r["z3"]["seconds"] / max(r["hxsched"]["seconds"], 1e-3) for r in both]
                ),
                2,
            )
            if both
            else None,
        }
    import os

    report = {
        "machine": f"{platform.machine()} {platform.processor()} ({platform.python_version()})",
        "load_average": os.getloadavg(),
        "anytime": anytime,
        "anytime_problems": problems,
        "time_limit_s": args.time_limit,
        "resolution_ms": RES,
        "summary": summary,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    if rows:
        svg_plot(rows, Path(args.plot))
    for line in problems:
        print("NOT MET:", line)
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
