"""``hxsched demo``: the main job end to end on the embedded default (no GPU needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hxsched.cli._common import add_json, add_quiet, emit, progress, table

HELP = "build the zoo's Pix2Pix and YOLOv8n, check them for the DLA, rewrite and verify Pix2Pix"

# The CT->MRI + stroke workload of seed 004: a Pix2Pix generator beside a YOLOv8 detector.
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
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from hxsched.cli.zoo import write_zoo_model
    from hxsched.runtime.reference import compare_graphs
    from hxsched.scheduler.check import check_graph
    from hxsched.scheduler.onnx_io import load_model, save_model
    from hxsched.scheduler.rewrite import rewrite_for_dla

    say = progress(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    summary: dict = {"target": args.target, "out": str(out), "models": []}
    for name in DEMO_MODELS:
        path = out / f"{name}.onnx"
        write_zoo_model(name, str(path), seed=args.seed, say=say)
        graph = load_model(path)
        report = check_graph(graph, target=args.target, model_name=str(path))
        entry = {"model": str(path), "check": report.to_dict()}
        rows.append([path.name, str(report.nodes), str(len(report.incompatible)),
                     str(len(report.placement.dla_loadables)), "-"])  # fmt: skip
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
            rows.append([dla_path.name, str(after.nodes), str(len(after.incompatible)),
                         str(len(after.placement.dla_loadables)),
                         f"{verify.worst:.1e}"])  # fmt: skip
        summary["models"].append(entry)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def human() -> str:
        return (
            table(rows, ["model", "nodes", "DLA-incompatible", "DLA loadables", "max |diff|"])
            + f"\n\nDLA rules: {args.target}, TensorRT default version; max |diff| is the "
            "rewrite's ONNX Runtime CPU FP32 check, measured here.\n"
            f"wrote {out}/ (models, summary.json). Synthetic weights: not for diagnostic use."
        )

    emit(args, summary, human)
    return 0
