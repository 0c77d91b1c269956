"""``hxsched run``: run a plan on a backend, pipelined, and compare with its prediction."""

from __future__ import annotations

import argparse
import logging
import sys

from hxsched.cli._common import add_json, add_quiet, add_shape, emit, parse_shapes, table
from hxsched.errors import HxschedError

log = logging.getLogger(__name__)

HELP = "run a plan (or a pipeline's plan) pipelined on ort, sim or trt and report fps/latency"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help=HELP,
        description=HELP + ". One stream per accelerator (a worker thread on ort/sim, a CUDA "
        "stream on trt); segments wait for their inputs by event; --inflight frames in flight. "
        "Reports fps, latency p50/p99, per-accelerator busy fraction, fallback/drift events, "
        "and the achieved rate against the plan's prediction.",
    )
    p.add_argument("plan", help="plan.yaml (from hxsched plan) or a pipeline YAML")
    p.add_argument(
        "--backend",
        choices=("ort", "sim", "trt"),
        default=None,
        help="ort: ONNX Runtime CPU (default); sim: the plan's times; trt: TensorRT",
    )
    p.add_argument("--frames", type=int, default=100, help="frames to run (default 100)")
    p.add_argument(
        "--inflight",
        type=int,
        help="frames in flight (default: what the plan's schedule keeps, plus one); fewer runs "
        "as asked, with a note of what it costs",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="also run each whole model on ONNX Runtime; max |diff| per output",
    )
    p.add_argument("--threads", type=int, help="ort: threads per accelerator worker")
    p.add_argument("--real-time", action="store_true", help="sim: real sleeps, not a virtual clock")
    p.add_argument("--time-scale", type=float, default=1.0, help="sim: stretch all times")
    p.add_argument("--jitter", type=float, default=0.0, help="sim: log-normal sigma per run")
    p.add_argument(
        "--slow",
        action="append",
        default=[],
        metavar="SEG=FACTOR[@FRAME]",
        help="sim: slow a segment from a frame on, e.g. p2p#0/s1=1.6@100 (a fallback)",
    )
    p.add_argument("--precision", choices=("fp16", "int8"), default="fp16", help="trt precision")
    p.add_argument(
        "--allow-gpu-fallback",
        action="store_true",
        help="trt: let TensorRT move DLA-incompatible layers to the GPU (reported)",
    )
    p.add_argument("--calibration-cache", help="trt: INT8 calibration cache")
    p.add_argument("--engine-cache", help="trt: engine cache folder (default ~/.cache/hxsched)")
    p.add_argument(
        "--drift-threshold",
        type=float,
        default=1.3,
        help="segment time / expected that counts as drift (default 1.3)",
    )
    p.add_argument(
        "--drift-sustain",
        type=int,
        default=20,
        help="consecutive frames over the threshold before an event (default 20)",
    )
    p.add_argument(
        "--replan",
        action="store_true",
        help="on drift, re-plan with the measured times and write PLAN-replanned.yaml",
    )
    p.add_argument(
        "--nsys",
        action="store_true",
        help="print the nsys profile command line for this run and exit",
    )
    add_shape(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def load_run_target(path: str, backend: str | None):
    """A plan file, or a pipeline file whose plan it names; (plan, backend)."""
    from hxsched.files import read_yaml
    from hxsched.scheduler.planning.plan import load_plan

    head = read_yaml(path)
    if isinstance(head, dict) and str(head.get("schema", "")).startswith("hxsched.pipeline"):
        from hxsched.runtime.service.pipeline import pipeline_from_dict, plan_for_pipeline

        pipe = pipeline_from_dict(head, path)
        return plan_for_pipeline(pipe), backend or pipe.backend
    return load_plan(path), backend or "ort"


def run(args: argparse.Namespace) -> int:
    from hxsched.runtime.backends.sim import parse_slowdown
    from hxsched.runtime.nvtx import nsys_command
    from hxsched.runtime.session import run_plan

    if args.nsys:
        print(
            nsys_command(
                ["run", *sys.argv[2:]]
                if sys.argv[1:2] == ["run"]
                else ["run", args.plan, "--backend", args.backend or "trt"]
            )
        )
        return 0
    plan, backend = load_run_target(args.plan, args.backend)
    slow = [parse_slowdown(s) for s in args.slow]
    if slow and backend != "sim":
        raise HxschedError("--slow applies to --backend sim only")
    events = []

    def on_event(e) -> None:
        events.append(e)
        where = e.node or e.segment
        log.warning("FALLBACK/DRIFT %s: %s", where, e.reason)

    stats, report = run_plan(
        plan,
        backend,
        frames=args.frames,
        inflight=args.inflight,
        verify=3 if args.verify else 0,
        backend_opts={
            "threads": args.threads,
            "real_time": args.real_time,
            "time_scale": args.time_scale,
            "jitter": args.jitter,
            "slowdowns": slow,
            "precision": args.precision,
            "allow_gpu_fallback": args.allow_gpu_fallback,
            "calibration_cache": args.calibration_cache,
            "engine_cache": args.engine_cache,
        },
        drift_threshold=args.drift_threshold,
        drift_sustain=args.drift_sustain,
        on_event=on_event,
        shapes=parse_shapes(args.shape),
    )
    d = stats.to_dict()
    data = {
        "plan": args.plan,
        "backend": backend,
        "source": stats.source,
        "frames": stats.frames,
        "fps": d["steady_fps"],
        "fps_overall": d["fps"],
        "latency_ms": {"p50": d["latency_ms"]["p50"], "p99": d["latency_ms"]["p99"]},
        "busy": d["busy"],
        "inflight": stats.inflight,
        "fallback_events": d["fallback_events"] + report.get("build_fallbacks", []),
        "segments": d["segments"],
        **report,
    }
    if args.replan:
        if not stats.fallback_events:
            data["replan"] = {"done": False, "why": "no drift"}
        elif backend == "ort" and plan.device != "cpu":
            data["replan"] = {
                "done": False,
                "why": f"ort times are this CPU's, not {plan.device}'s",
            }
        else:
            data["replan"] = _replan(plan, stats, parse_shapes(args.shape))

    def human() -> str:
        c = data["comparison"]
        lines = [
            f"{stats.frames} frames on {backend}: {data['fps']:.2f} fps (steady state), latency "
            f"p50 {data['latency_ms']['p50']:.3f} ms, p99 {data['latency_ms']['p99']:.3f} ms, "
            f"{stats.inflight} in flight",
            f"  numbers: {stats.source}",
        ]
        if "achieved_over_plan" in c:
            lines.append(
                f"  plan ({plan.device}) predicted {c['plan_fps']} fps: achieved "
                f"{c['achieved_over_plan']:.3f} of it"
                + (
                    f"; latency {c['plan_latency_ms']} ms: p50 is "
                    f"{c['latency_p50_over_plan']:.3f} of it"
                    if "latency_p50_over_plan" in c
                    else ""
                )
            )
        else:
            lines.append(f"  plan predicted {c['plan_fps']} fps on {plan.device} (not this device)")
        if "measured_segments_fps" in c:
            lines.append(
                f"  this run's own segment times allow {c['measured_segments_fps']:.2f} "
                f"fps: achieved {c['achieved_over_measured_segments']:.3f} of it"
            )
        rows = [
            [name, s["accelerator"], str(s["runs"]), f"{s['median_ms']}", f"{s['expected_ms']}"]
            for name, s in d["segments"].items()
        ]
        lines += ["", table(rows, ["segment", "accelerator", "runs", "median ms", "planned ms"])]
        lines.append("busy: " + ", ".join(f"{a} {v:.0%}" for a, v in d["busy"].items()))
        ev = data["fallback_events"]
        lines.append(f"fallback/drift events: {len(ev)}")
        for e in ev[:10]:
            lines.append(f"  {e['segment']} {e.get('node') or ''} ({e['source']}): {e['reason']}")
        if "verify" in data:
            for inst, outs in data["verify"]["max_abs_diff"].items():
                for name, diff in outs.items():
                    lines.append(f"verify {inst} {name}: max |diff| {diff:.2e} vs ONNX Runtime")
        if "replan" in data:
            r = data["replan"]
            lines.append(
                "replan: "
                + (
                    f"{r['plan']} ({r['period_ms_before']} -> {r['period_ms_after']} ms period)"
                    if r["done"]
                    else r["why"]
                )
            )
        for n in data.get("notes", []):
            lines.append(f"note: {n}")
        return "\n".join(lines)

    emit(args, data, human)
    return 0


def _replan(plan, stats, shapes) -> dict:
    """Re-plan with the measured times; a refusal goes into the report, which is kept."""
    from hxsched.runtime.session import replan, write_plan_beside

    try:
        new, info = replan(plan, stats, shapes=shapes)
    except HxschedError as exc:
        return {"done": False, "why": str(exc)}
    out = write_plan_beside(new, plan.path, "-replanned")
    return {
        "done": True,
        "plan": str(out),
        **info,
        "period_ms_before": plan.predicted.period_ms,
        "period_ms_after": new.predicted.period_ms,
    }
