"""``hxsched check``: which nodes of a model can run on the DLA, and why not."""

from __future__ import annotations

import argparse

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

HELP = "check every node of an ONNX model against the DLA rules of a Jetson and TensorRT version"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help=HELP,
        description=HELP + ". Also shows how TensorRT's default placement (every DLA-capable "
        "layer on DLA, GPU fallback for the rest) would split the model into DLA loadables "
        "(at most 16 per core) and GPU islands. Shape arithmetic is folded first, as TensorRT "
        "does. Exit status 0 whatever the verdicts; 1 for unreadable input.",
    )
    p.add_argument(
        "model", nargs="?", help="ONNX model file (opset 11-19; external data is read too)"
    )
    p.add_argument(
        "--rules", action="store_true", help="list the DLA rules with their sources and exit"
    )
    add_shape(p)
    add_target(p)
    p.add_argument("--all", action="store_true", help="list every node, not only the flagged ones")
    p.add_argument(
        "--cuts", action="store_true", help="also list candidate cut points with crossing bytes"
    )
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hxsched.scheduler.dla.check import check_graph

    if args.rules:
        return list_rules(args)
    if not args.model:
        raise HxschedError("name an ONNX model to check (or --rules to list the rules)")
    graph = load_graph(args.model, args.shape)
    report = check_graph(
        graph, target=args.target, trt=args.trt, precision=args.precision, model_name=args.model
    )
    data = report.to_dict(all_nodes=args.all)
    cuts = graph.cut_points() if args.cuts else []
    if args.cuts:
        data["cut_points"] = [c.to_dict() for c in cuts]

    def human() -> str:
        shown = report.verdicts if args.all else report.incompatible
        parts = []
        if shown:
            rows = [
                [
                    str(v.index),
                    v.node,
                    v.op_type,
                    "DLA" if v.dla else "GPU",
                    v.reasons[0] if v.reasons else "",
                ]
                for v in shown
            ]
            parts.append(table(rows, ["#", "node", "op", "runs on", "why not DLA"], max_width=70))
        loadables = report.placement.dla_loadables
        if loadables:
            rows = [
                [str(i), isl.first, isl.last, str(len(isl.nodes))]
                for i, isl in enumerate(loadables)
            ]
            parts.append(
                "TensorRT default placement, DLA loadables:\n"
                + table(rows, ["#", "first node", "last node", "nodes"])
            )
        if cuts:
            rows = [[str(c.index), c.after, c.before, f"{c.bytes:,}"] for c in cuts]
            parts.append("cut points:\n" + table(rows, ["#", "after", "before", "bytes"]))
        parts += [f"warning: {w}" for w in report.warnings]
        parts.append(report.summary())
        return "\n\n".join(parts)

    emit(args, data, human)
    return 0


def list_rules(args: argparse.Namespace) -> int:
    from hxsched.scheduler.dla.ops import OPS
    from hxsched.scheduler.dla.rules import RULES

    rules = [
        {"id": r.id, "ops": sorted(r.ops), "summary": r.summary, "source": r.source} for r in RULES
    ]
    ops = [
        {
            "op": op,
            "layer": s.layer,
            "since_trt": s.since_trt or None,
            "targets": list(s.targets),
            "source": s.source,
        }
        for op, s in OPS.items()
    ]
    emit(
        args,
        {"rules": rules, "ops": ops},
        lambda: (
            table(
                [[r.id, ",".join(sorted(r.ops)), r.summary] for r in RULES],
                ["rule", "ops", "limit"],
            )
            + "\n\nEach rule cites its source: hxsched check --rules --json"
        ),
    )
    return 0
