"""``hxsched rewrite``: make a model DLA-friendly with exact, function-preserving rewrites."""

from __future__ import annotations

import argparse
import logging
import os

from hxsched.cli._common import (
    add_json,
    add_quiet,
    add_shape,
    add_target,
    emit,
    load_graph,
    table,
)
from hxsched.errors import HxschedError

log = logging.getLogger(__name__)

HELP = "rewrite padded ConvTranspose nodes into pad-free ConvTranspose + exact crop for the DLA"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rewrite",
        help=HELP,
        description=HELP + " (the rewrite of Abdul Majeed et al., 'Edge GPU Aware Multiple AI "
        "Model Pipeline for Accelerated MRI Reconstruction and Analysis', done automatically). "
        "The result computes the same function: --verify runs both models on seeded inputs "
        "with ONNX Runtime and refuses to write the output if they differ by more than "
        "--tolerance. Rewrites that would change the function are refused and listed with the "
        "reason. Constants and shape "
        "arithmetic are folded and --shape fixes are baked in, as for every command.",
    )
    p.add_argument("model", help="ONNX model to rewrite")
    p.add_argument("-o", "--output", required=True, help="where to write the rewritten model")
    add_shape(p)
    add_target(p)
    p.add_argument(
        "--verify", action="store_true", help="prove equality on seeded inputs with ONNX Runtime"
    )
    p.add_argument("--samples", type=int, default=2, help="inputs --verify tries (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="first input seed for --verify (default: 0)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest max-abs difference --verify accepts (default: 1e-4, FP32)",
    )
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hxsched.scheduler.dla.check import check_graph
    from hxsched.scheduler.dla.rewrite import rewrite_for_dla
    from hxsched.scheduler.graph.onnx_io import save_model

    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise HxschedError(
            "refusing to overwrite the input model; choose another -o path", path=args.model
        )
    if args.samples < 1:
        raise HxschedError("--samples must be at least 1")
    original = load_graph(args.model, args.shape)
    graph = original.copy()
    opts = {"target": args.target, "trt": args.trt, "precision": args.precision}
    before = check_graph(original, model_name=args.model, **opts)
    result = rewrite_for_dla(graph)
    after = check_graph(graph, model_name=args.output, **opts)
    verify = None
    if args.verify:
        from hxsched.runtime.reference import compare_graphs

        log.info("verifying on %d seeded input(s) with ONNX Runtime (CPU, FP32)", args.samples)
        verify = compare_graphs(
            original, graph, samples=args.samples, seed=args.seed, tolerance=args.tolerance
        )
        if not verify.passed:
            raise HxschedError(
                f"--verify failed: max abs difference {verify.worst:.3g} exceeds "
                f"{args.tolerance:g}; nothing was written",
                path=args.model,
            )
    log.info("writing %s", args.output)
    try:
        save_model(graph, args.output)
    except OSError as exc:
        raise HxschedError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    data = {
        "model": args.model,
        "output": args.output,
        "rewritten": [r.to_dict() for r in result.rewrites],
        "refused": [r.to_dict() for r in result.refusals],
        "dla_incompatible_before": len(before.incompatible),
        "dla_incompatible_after": len(after.incompatible),
        "check_after": after.to_dict(),
        "verify": verify.to_dict() if verify else None,
    }

    def human() -> str:
        parts = []
        if result.rewrites:
            rows = [
                [r.node, str(list(r.pads)), r.slice_node, f"{list(r.starts)}..{list(r.ends)}"]
                for r in result.rewrites
            ]
            parts.append(table(rows, ["ConvTranspose", "pads", "crop node", "crop H,W"]))
        for r in result.refusals:
            parts.append(f"refused {r.node}: {r.reason}")
        line = (
            f"{args.output}: rewrote {len(result.rewrites)} ConvTranspose node(s); "
            f"DLA-incompatible nodes {len(before.incompatible)} -> {len(after.incompatible)} "
            f"[{after.target}, TensorRT {after.trt}, {after.precision}]"
        )
        if verify:
            line += (
                f"; verify: max abs diff {verify.worst:.2e} <= {verify.tolerance:g} over "
                f"{verify.samples} seeded input(s) (ONNX Runtime CPU, FP32, measured here)"
            )
        parts.append(line)
        return "\n\n".join(parts)

    emit(args, data, human)
    return 0
