"""Executor efficiency, measured side by side in one run.

    python benchmarks/bench_executor.py            # sim (real sleeps) + ort
    python benchmarks/bench_executor.py --quick    # fewer frames

1. sim with real sleeps: for the shipped orin-agx plans (Pix2Pix rewritten + YOLOv8n,
   2x Pix2Pix rewritten) and for plans of seeded synthetic chains (timed segments), the
   achieved steady-state fps over the simulator's predicted fps (goal >= 0.97), and beside it
   the pipelined fps over one frame at a time (drained after every frame; goal >= 1.25).
2. sim's real clock: how late a wait for a segment's end wakes (median and p99, ms).
3. ort (this CPU): the pipelined plan (a worker per planned accelerator) against running the
   whole models one after another with all cores, same inputs, as a throughput ratio.
Prints medians over --repeats runs and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hxsched.runtime.build import plan_instance_specs
from hxsched.runtime.executor import Executor
from hxsched.runtime.session import make_backend
from hxsched.scheduler.planning.planner import ModelInput, make_plan
from hxsched.scheduler.profile.schema import load_profile
from hxsched.scheduler.profile.store import shipped_dir
from hxsched.scheduler.profile.synthetic import benchmark_profile


def shipped_plan(names, counts):
    inputs = [
        ModelInput(
            n, load_profile(shipped_dir() / "orin-agx" / f"{n}.yaml"), "shipped", None, None, c
        )
        for n, c in zip(names, counts, strict=True)
    ]
    return make_plan(inputs, "orin-agx", time_limit_s=30).plan


def synthetic_plan(seed, n_inst, groups):
    rng = np.random.default_rng(seed)
    inputs = [
        ModelInput(f"m{i}", benchmark_profile(rng, groups, f"m{i}"), "synthetic")
        for i in range(n_inst)
    ]
    return make_plan(inputs, "orin-agx", max_switches=2, contention=False, time_limit_s=30).plan


def sim_ratio(plan, frames):
    specs = plan_instance_specs(plan, with_models=False)
    ex = Executor(plan, specs, make_backend("sim", real_time=True))
    stats = ex.run({} for _ in range(frames))
    return stats.steady_fps / plan.predicted.fps


def sim_serial_ratio(plan, frames):
    """Pipelined over one frame at a time, both with real sleeps, side by side."""
    specs = plan_instance_specs(plan, with_models=False)
    piped = Executor(plan, specs, make_backend("sim", real_time=True)).run(
        {} for _ in range(frames)
    )
    serial = Executor(plan, specs, make_backend("sim", real_time=True)).run(
        x for _ in range(frames) for x in ({}, None)
    )
    return piped.steady_fps / serial.steady_fps


def wake_lateness_ms(waits=200, segment_ms=2.0):
    """How long after a segment's end ``wait`` returns on sim's real clock (median, p99)."""
    from hxsched.runtime.backends.base import FrameState
    from hxsched.runtime.build import SegmentSpec

    b = make_backend("sim", real_time=True)
    b.prepare([], inflight=1)
    late = []
    for k in range(waits):
        ev = b.stream("gpu").enqueue(
            SegmentSpec("w#0", 0, "gpu", 0, 0, segment_ms), FrameState(k, {}), []
        )
        ev.wait()
        late.append(b.now_ms() - ev.end_ms)
    q = np.percentile(late, [50, 99])
    return float(q[0]), float(q[1])


def ort_case(frames):
    from hxsched.runtime.reference import OrtModel, random_inputs
    from hxsched.scheduler.dla.rewrite import rewrite_for_dla
    from hxsched.scheduler.graph.onnx_io import graph_from_proto, load_model, save_model
    from hxsched.scheduler.graph.structure import structural_hash
    from hxsched.scheduler.profile.store import find_profile
    from hxsched.scheduler.zoo import build_zoo_model

    tmp = Path(tempfile.mkdtemp(prefix="hxsched-bench-"))
    g = graph_from_proto(build_zoo_model("pix2pix_unet256"))
    rewrite_for_dla(g)
    save_model(g, tmp / "pix2pix_dla.onnx")
    save_model(graph_from_proto(build_zoo_model("yolov8n")), tmp / "yolov8n.onnx")
    inputs = []
    for name in ("pix2pix_dla", "yolov8n"):
        graph = load_model(tmp / f"{name}.onnx")
        inputs.append(
            ModelInput(
                name,
                find_profile("orin-agx", structural_hash(graph)),
                "shipped",
                graph,
                str(tmp / f"{name}.onnx"),
                1,
            )
        )
    plan = make_plan(inputs, "orin-agx", time_limit_s=30).plan
    specs = plan_instance_specs(plan)
    pool = [{i.name: random_inputs(i.graph, k) for i in specs} for k in range(3)]
    ex = Executor(plan, specs, make_backend("ort"), drift=False)
    ex.prepare()
    piped = ex.run(pool[k % 3] for k in range(frames))
    ex.close()
    wholes = {i.name: OrtModel(i.graph) for i in specs}  # all cores, one model at a time
    for m, i in zip(wholes.values(), specs, strict=True):
        m.run(pool[0][i.name])  # warm-up
    t0 = time.perf_counter()
    for k in range(frames):
        for name, m in wholes.items():
            m.run(pool[k % 3][name])
    seq_fps = frames / (time.perf_counter() - t0)
    return {
        "pipelined_fps": piped.steady_fps,
        "sequential_fps": seq_fps,
        "ratio": piped.steady_fps / seq_fps,
        "source": piped.source,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime comparison")
    ap.add_argument("--out", default="bench_executor.json")
    args = ap.parse_args(argv)
    frames = 300 if args.quick else 1500
    plans = {
        "pix2pix_dla+yolov8n": shipped_plan(["pix2pix_unet256_dla", "yolov8n"], [1, 1]),
        "2x pix2pix_dla": shipped_plan(["pix2pix_unet256_dla"], [2]),
        "synthetic 4x20 k2": synthetic_plan(1, 4, 20),
        "synthetic 8x10 k2": synthetic_plan(2, 8, 10),
    }
    rows = {}
    for name, plan in plans.items():
        ratios = [sim_ratio(plan, frames) for _ in range(args.repeats)]
        serial = [sim_serial_ratio(plan, frames // 5) for _ in range(args.repeats)]
        rows[name] = {
            "predicted_fps": plan.predicted.fps,
            "achieved_over_predicted_median": round(statistics.median(ratios), 4),
            "runs": [round(r, 4) for r in ratios],
            "pipelined_over_one_at_a_time_median": round(statistics.median(serial), 3),
        }
        print(
            f"sim real-time {name:22s} predicted {plan.predicted.fps:8.2f} fps, achieved/"
            f"predicted median {statistics.median(ratios):.4f} {[round(r, 4) for r in ratios]}, "
            f"pipelined/one-at-a-time {statistics.median(serial):.2f}",
            flush=True,
        )
    p50, p99 = wake_lateness_ms()
    print(f"sim real clock: a wait wakes {p50:.3f} ms (p50) / {p99:.3f} ms (p99) after the end")
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "frames": frames,
        "sim": rows,
        "sim_wake_lateness_ms": {"p50": round(p50, 4), "p99": round(p99, 4)},
    }
    if not args.no_ort:
        runs = [ort_case(8 if args.quick else 20) for _ in range(max(1, args.repeats // 2))]
        ratio = statistics.median(r["ratio"] for r in runs)
        report["ort"] = {"runs": runs, "pipelined_over_sequential_median": round(ratio, 3)}
        print(
            f"ort pix2pix_dla+yolov8n: pipelined/sequential throughput median {ratio:.3f} "
            f"({runs[0]['source']})"
        )
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
