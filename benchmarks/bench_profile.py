"""Measured CPU profiles: do the group times sum to the whole model on this machine?

    python benchmarks/bench_profile.py             # zoo YOLOv8n and Pix2Pix, 3 repeats
    python benchmarks/bench_profile.py --quick     # fewer runs

For each model, ``measure_ort_profile`` (ONNX Runtime's per-node profiler, the whole model timed
in the same run without it, interleaved) gives the sum of the group medians over the whole-model
median (goal: 0.9 to 1.1). Prints every repeat's ratio and the median side by side, writes JSON.
The attribution itself (groups sum exactly the node times given) is a unit test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

from hxsched.runtime.ort_profile import measure_ort_profile
from hxsched.scheduler.cost.groups import make_groups
from hxsched.scheduler.dla.check import check_graph
from hxsched.scheduler.graph.onnx_io import graph_from_proto
from hxsched.scheduler.zoo import build_zoo_model

MODELS = ("yolov8n", "pix2pix_unet256")
GOAL = (0.9, 1.1)


def model_ratios(name: str, repeats: int, runs: int, warmup: int) -> dict:
    graph = graph_from_proto(build_zoo_model(name, seed=0))
    groups = make_groups(graph, {v.node: v.dla for v in check_graph(graph).verdicts})
    ratios, whole = [], []
    for _ in range(repeats):
        m = measure_ort_profile(graph, runs=runs, warmup=warmup, groups=groups)
        ratios.append(round(m.ratio, 4))
        whole.append(round(m.whole_ms, 3))
    med = statistics.median(ratios)
    return {
        "groups": len(groups),
        "ratios": ratios,
        "whole_model_ms": whole,
        "ratio_median": round(med, 4),
        "within_goal": GOAL[0] <= med <= GOAL[1],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench_profile.json")
    args = ap.parse_args(argv)
    runs, warmup = (5, 2) if args.quick else (10, 3)
    rows = {}
    for name in MODELS:
        r = model_ratios(name, args.repeats, runs, warmup)
        rows[name] = r
        print(
            f"ort profile {name:16s} groups/whole median {r['ratio_median']:.3f} "
            f"{r['ratios']} (whole model {statistics.median(r['whole_model_ms']):.1f} ms, "
            f"goal {GOAL[0]}-{GOAL[1]}: {'met' if r['within_goal'] else 'MISSED'})",
            flush=True,
        )
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "runs": f"{warmup} warm-up + {runs} measured",
        "models": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["within_goal"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
