"""``hxsched demo``: the main job end to end on the embedded default (no GPU needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hxsched.cli._common import add_json, add_quiet, emit, progress, table
from hxsched.errors import HxschedError

HELP = (
    "the CT->MRI + stroke job end to end: zoo models, DLA check and exact rewrite, a proven-"
    "optimal plan for the device, then the service on phantom CT slices (ONNX Runtime CPU)"
)

# The CT->MRI + stroke workload: a Pix2Pix generator beside a YOLOv8 detector.
DEMO_MODELS = ("pix2pix_unet256", "yolov8n")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help=HELP,
        description=HELP + ". Writes the models, the DLA-friendly Pix2Pix and a JSON summary to "
        "--out. Runs on any machine (ONNX Runtime CPU for verification).",
    )
    p.add_argument("--out", default="hxsched-demo", help="output folder (default: hxsched-demo)")
    p.add_argument("--target", choices=("orin", "xavier"), default="orin", help="DLA generation")
    p.add_argument("--seed", type=int, default=0, help="zoo weight seed (default: 0)")
    p.add_argument("--device", default="orin-agx", help="device to plan for (default orin-agx)")
    p.add_argument(
        "--slices",
        type=int,
        default=6,
        help="phantom CT slices to stream through the service (default 6; 0: skip)",
    )
    p.add_argument(
        "--backend",
        choices=("ort", "sim"),
        default="ort",
        help="backend that runs the plan here (default ort)",
    )
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from hxsched.cli.zoo import write_zoo_model
    from hxsched.runtime.reference import compare_graphs
    from hxsched.scheduler.dla.check import check_graph
    from hxsched.scheduler.dla.rewrite import rewrite_for_dla
    from hxsched.scheduler.graph.onnx_io import load_model, save_model

    say = progress(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    summary: dict = {"target": args.target, "out": str(out), "models": []}
    for name in DEMO_MODELS:
        path = out / f"{name}.onnx"
        write_zoo_model(name, str(path), seed=args.seed)
        graph = load_model(path)
        report = check_graph(graph, target=args.target, model_name=str(path))
        entry = {"model": str(path), "check": report.to_dict()}
        rows.append(
            [
                path.name,
                str(report.nodes),
                str(len(report.incompatible)),
                str(len(report.placement.dla_loadables)),
                "-",
            ]
        )
        if any(n.op_type == "ConvTranspose" for n in graph.nodes):
            rewritten = graph.copy()
            result = rewrite_for_dla(rewritten)
            say(f"verifying the rewrite of {name} with ONNX Runtime (CPU, FP32)")
            verify = compare_graphs(graph, rewritten, samples=1, seed=args.seed)
            dla_path = out / f"{name}_dla.onnx"
            if verify.passed:
                save_model(rewritten, dla_path)
            after = check_graph(rewritten, target=args.target, model_name=str(dla_path))
            entry["rewrite"] = {
                "output": str(dla_path) if verify.passed else None,
                "rewritten": len(result.rewrites),
                "refused": [r.to_dict() for r in result.refusals],
                "check_after": after.to_dict(),
                "verify": verify.to_dict(),
            }
            rows.append(
                [
                    dla_path.name,
                    str(after.nodes),
                    str(len(after.incompatible)),
                    str(len(after.placement.dla_loadables)),
                    f"{verify.worst:.1e}",
                ]
            )
        summary["models"].append(entry)
    plan_rows, service = _plan_and_serve(args, out, summary, say)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def human() -> str:
        return (
            table(rows, ["model", "nodes", "DLA-incompatible", "DLA loadables", "max |diff|"])
            + f"\n\nDLA rules: {args.target}, TensorRT default version; max |diff| is the "
            "rewrite's ONNX Runtime CPU FP32 check, measured here.\n"
            + plan_rows
            + service
            + f"\nwrote {out}/ (models, plan, outputs, summary.json). Synthetic weights: "
            "not for diagnostic use."
        )

    emit(args, summary, human)
    return 0


def _plan_and_serve(args: argparse.Namespace, out: Path, summary: dict, say) -> tuple[str, str]:
    """Plan the rewritten Pix2Pix + YOLOv8n for the device, then serve phantom slices."""
    from hxsched.runtime.service.pipeline import pipeline_from_dict
    from hxsched.runtime.service.service import Service, ServiceOptions
    from hxsched.scheduler.graph.onnx_io import load_model
    from hxsched.scheduler.graph.structure import structural_hash
    from hxsched.scheduler.planning.chart import panel_from_timeline, write_chart
    from hxsched.scheduler.planning.plan import save_plan
    from hxsched.scheduler.planning.planner import ModelInput, make_plan
    from hxsched.scheduler.profile.store import find_profile

    files = {"pix2pix": out / "pix2pix_unet256_dla.onnx", "yolov8n": out / "yolov8n.onnx"}
    if not files["pix2pix"].exists():
        return "", ""
    inputs = []
    for name, path in files.items():
        graph = load_model(path)
        prof = find_profile(args.device, structural_hash(graph))
        how = "shipped"
        if prof is None:
            from hxsched.scheduler.cost.estimate import estimate_profile

            prof, how = estimate_profile(graph, args.device, model_name=name), "estimated"
        inputs.append(ModelInput(name, prof, how, graph, str(path.resolve()), 1))
    from hxsched.cli.plan import log_to

    say(f"planning pix2pix + yolov8n for {args.device}")
    with log_to(say):
        result = make_plan(inputs, args.device, time_limit_s=30.0)
    plan = result.plan
    plan_path = save_plan(plan, out / "plan.yaml")
    period = plan.predicted.period_ms
    names = [i.name for i in plan.instances]
    write_chart(
        [
            panel_from_timeline(
                f"hxsched plan: one period, {period} ms",
                plan.accelerators,
                plan.timeline,
                names,
                period,
                period,
            )
        ],
        out / "plan.svg",
    )
    s = result.summary(str(plan_path), str(out / "plan.svg"))
    summary["plan"] = result.to_json(str(plan_path), str(out / "plan.svg"))
    plan_text = (
        f"\n\nplan for {args.device} ({'proven optimal' if s.optimal else 'best found'}, "
        f"{s.solve_time_s:.2f} s): {s.fps} fps predicted "
        f"({s.predicted_source}; profiles: "
        + ", ".join(f"{m.name} {m.how}" for m in inputs)
        + f"), period {s.ratio_to_best_baseline}x the best baseline's\n  "
        + "\n  ".join(s.descriptions)
    )
    if args.slices <= 0:
        return plan_text, ""
    pipe = pipeline_from_dict(
        {
            "schema": "hxsched.pipeline/1",
            "name": "ct2mri_stroke_demo",
            "device": args.device,
            "backend": args.backend,
            "plan": str(plan_path.resolve()),
            "queue": 8,
            "models": [
                {
                    "name": "pix2pix",
                    "role": "synth",
                    "path": str(files["pix2pix"].resolve()),
                    "window": "brain",
                    "series_description": "hxsched synthetic MRI (Pix2Pix, demo weights) - NOT FOR DIAGNOSTIC USE",
                },
                # seeded random weights: boxes show the data path, not findings; keep a few
                {
                    "name": "yolov8n",
                    "role": "detect",
                    "path": str(files["yolov8n"].resolve()),
                    "window": "stroke",
                    "max_det": 3,
                },
            ],
            "sources": [{"kind": "phantom", "count": args.slices}],
        },
        "<demo pipeline>",
    )
    import shutil

    shutil.rmtree(out / "service", ignore_errors=True)  # the demo's own folder: a fresh run
    svc = Service(
        pipe, ServiceOptions(output=out / "service", http_port=None, stop_after=args.slices), say
    )
    say(f"serving {args.slices} phantom CT slices on {args.backend}")
    try:
        svc.start()
        svc.wait(600)
    finally:
        status = svc.status() if svc.journal else {}
        svc.stop()
    counts = svc.counts()
    stats: dict = svc.executor.summary().to_dict() if svc.executor else {}
    summary["service"] = {
        "counts": counts,
        "output": str(out / "service"),
        "error": svc.error,
        "fps": stats.get("steady_fps"),
        "latency_ms": stats.get("latency_ms"),
        "source": stats.get("source"),
        "status": status,
    }
    if svc.error:
        raise HxschedError(f"the demo service failed: {svc.error}")
    text = (
        f"\n\nservice: {counts.get('done', 0)} phantom slices -> synthetic MRI (DICOM) + "
        f"detections (JSON) + previews (PNG) in {out / 'service'}; "
        f"{counts.get('quarantined', 0)} quarantined (seeded random zoo weights: the images and "
        f"boxes show the data path, not findings)\n  {stats.get('steady_fps', 0):.2f} fps, "
        f"p50 latency {stats.get('latency_ms', {}).get('p50', 0):.0f} ms: {stats.get('source')}"
    )
    return plan_text, text
