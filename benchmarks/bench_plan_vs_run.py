"""Every number a plan prints is what the runtime delivers: predicted vs achieved on ``sim``.

    python benchmarks/bench_plan_vs_run.py                # virtual clock, 400 frames
    python benchmarks/bench_plan_vs_run.py --real-time    # sim with real sleeps (host jitter)

For the shipped orin-agx profiles of the zoo's Pix2Pix (rewritten) + YOLOv8n and 2x Pix2Pix
(original and rewritten), throughput and latency objectives: the plan's predicted fps and
latency beside what the executor achieves on ``sim`` (steady-state fps, latency p50), their
ratios (goal: within 3 %), then every in-flight depth from 1 to the default: run as asked, with
the cost the executor predicts for a depth below what the schedule keeps in flight.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hxsched.runtime.build import plan_instance_specs
from hxsched.runtime.executor import Executor
from hxsched.runtime.session import make_backend
from hxsched.scheduler.planning.plan import Plan
from hxsched.scheduler.planning.planner import ModelInput, make_plan
from hxsched.scheduler.profile.schema import load_profile
from hxsched.scheduler.profile.store import shipped_dir
from hxsched.scheduler.types import Objective

CASES = {
    "pix2pix(rewritten)+yolov8n": (("pix2pix_unet256_dla", 1), ("yolov8n", 1)),
    "2x pix2pix": (("pix2pix_unet256", 2),),
    "2x pix2pix(rewritten)": (("pix2pix_unet256_dla", 2),),
}


def case_plan(models: tuple[tuple[str, int], ...], objective: Objective) -> Plan:
    inputs = [
        ModelInput(n, load_profile(shipped_dir() / "orin-agx" / f"{n}.yaml"), "shipped", count=c)
        for n, c in models
    ]
    return make_plan(inputs, "orin-agx", objective=objective, time_limit_s=30).plan


def achieved(plan: Plan, frames: int, real_time: bool, inflight: int | None = None) -> dict:
    specs = plan_instance_specs(plan, with_models=False)
    ex = Executor(plan, specs, make_backend("sim", real_time=real_time), inflight=inflight)
    st = ex.run({} for _ in range(frames))
    return {
        "inflight": ex.inflight,
        "need": ex.need,
        "fps": st.steady_fps,
        "p50_ms": st.latency_ms["p50"],
        "note": ex.inflight_note,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--real-time", action="store_true", help="sim with real sleeps")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    rows, depth_rows, worst = [], [], 0.0
    for name, models in CASES.items():
        for objective in (Objective.THROUGHPUT, Objective.LATENCY):
            plan = case_plan(models, objective)
            got = achieved(plan, args.frames, args.real_time)
            fps_r = got["fps"] / (plan.predicted.fps or 1.0)
            lat_r = got["p50_ms"] / (plan.predicted.latency_ms or 1.0)
            worst = max(worst, abs(fps_r - 1.0), abs(lat_r - 1.0))
            rows.append(
                {
                    "case": name,
                    "objective": str(objective),
                    "predicted_fps": plan.predicted.fps,
                    "achieved_fps": round(got["fps"], 3),
                    "fps_ratio": round(fps_r, 4),
                    "predicted_latency_ms": plan.predicted.latency_ms,
                    "achieved_p50_ms": round(got["p50_ms"], 4),
                    "latency_ratio": round(lat_r, 4),
                    "inflight": got["inflight"],
                }
            )
            for depth in range(1, got["inflight"] + 1):
                d = achieved(plan, args.frames // 2, args.real_time, depth)
                depth_rows.append(
                    {
                        "case": name,
                        "objective": str(objective),
                        "asked": depth,
                        "ran": d["inflight"],
                        "need": d["need"],
                        "fps": round(d["fps"], 2),
                        "p50_ms": round(d["p50_ms"], 3),
                        "note": d["note"],
                    }
                )
    clock = "real sleeps" if args.real_time else "virtual clock"
    print(f"sim ({clock}), {args.frames} frames, load average {os.getloadavg()[0]:.2f}")
    head = f"{'case':28} {'objective':10} {'fps plan':>9} {'fps run':>9} {'ratio':>7}"
    print(head + f" {'p50 plan':>9} {'p50 run':>9} {'ratio':>7} {'inflight':>8}")
    for r in rows:
        print(
            f"{r['case']:28} {r['objective']:10} {r['predicted_fps']:9.2f} "
            f"{r['achieved_fps']:9.2f} {r['fps_ratio']:7.4f} {r['predicted_latency_ms']:9.3f} "
            f"{r['achieved_p50_ms']:9.3f} {r['latency_ratio']:7.4f} {r['inflight']:8d}"
        )
    print(f"\nworst deviation from the plan: {worst:.2%} (goal <= 3%)\n")
    print("in-flight depths (every depth runs as asked):")
    for d in depth_rows:
        note = f"  [{d['note']}]" if d["note"] else ""
        print(
            f"  {d['case']:28} {d['objective']:10} asked {d['asked']} ran {d['ran']} "
            f"(schedule keeps {d['need']}): {d['fps']:.2f} fps, p50 {d['p50_ms']:.3f} ms{note}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"clock": clock, "cases": rows, "depths": depth_rows}, indent=1)
        )
    return 0 if worst <= 0.03 else 1


if __name__ == "__main__":
    sys.exit(main())
