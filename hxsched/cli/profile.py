"""``hxsched profile``: group times per accelerator, measured, estimated or imported."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hxsched.cli._common import add_json, add_quiet, add_shape, emit, load_graph, table
from hxsched.errors import HxschedError
from hxsched.scheduler.types import AcceleratorKind

HELP = "profile a model's layer groups on a device (estimate, ort, trt, trtexec) or list profiles"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help=HELP,
        description=HELP + ". Backends: 'estimate' (roofline cost model for a Jetson, calibrated "
        "against published figures: see --calibration), 'ort' (ONNX Runtime's profiler on this "
        "CPU: device 'cpu'), 'trt' (TensorRT engines timed with CUDA events, on a Jetson), "
        "'trtexec' (import trtexec --exportProfile JSON). Writes hxsched.profile/1 YAML.",
    )
    p.add_argument("model", nargs="?", help="ONNX model to profile")
    p.add_argument("--backend", choices=("estimate", "ort", "trt", "trtexec"), default="estimate")
    p.add_argument(
        "--device",
        default=None,
        help="orin-agx (default), orin-nx, orin-nano, xavier-agx; ort profiles are "
        "always device cpu; with --list: only this device",
    )
    p.add_argument("--precision", choices=("fp16", "int8"), default="fp16")
    p.add_argument(
        "--trt",
        choices=("8.5", "8.6", "10", "11"),
        default=None,
        help="TensorRT version whose DLA rules decide which groups may run on DLA",
    )
    p.add_argument("--max-groups", type=int, default=40, help="upper bound on groups (default 40)")
    p.add_argument("--name", help="model name recorded in the profile (default: file stem)")
    p.add_argument("-o", "--output", help="profile YAML to write (default: <stem>.<device>.yaml)")
    p.add_argument("--runs", type=int, default=10, help="ort/trt: measured runs (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="ort/trt: warm-up runs (default 3)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ort: intra-op threads (default: the fastest of 1, half and all cores, timed)",
    )
    p.add_argument("--gpu-profile", help="trtexec: --exportProfile JSON of a GPU-only engine")
    p.add_argument("--dla-profile", help="trtexec: --exportProfile JSON of a DLA engine")
    p.add_argument("--list", action="store_true", help="list shipped and found profiles")
    p.add_argument(
        "--calibration",
        action="store_true",
        help="print the cost model against the published figures it is calibrated on",
    )
    add_shape(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    if args.calibration:
        return _calibration(args)
    if not args.model:
        raise HxschedError("name an ONNX model to profile (or --list, --calibration)")
    args.device = args.device or "orin-agx"
    graph = load_graph(args.model, args.shape)
    name = args.name or Path(args.model).stem
    extra: dict = {}
    if args.backend == "estimate":
        from hxsched.scheduler.cost.estimate import estimate_profile

        profile = estimate_profile(
            graph,
            args.device,
            precision=args.precision,
            max_groups=args.max_groups,
            model_name=name,
            trt=args.trt,
        )
    elif args.backend == "ort":
        from hxsched.runtime.ort_profile import measure_ort_profile
        from hxsched.scheduler.cost.groups import make_groups
        from hxsched.scheduler.dla.check import check_graph

        verdicts = check_graph(graph, target="orin", trt=args.trt)
        groups = make_groups(
            graph, {v.node: v.dla for v in verdicts.verdicts}, max_groups=args.max_groups
        )
        m = measure_ort_profile(
            graph,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            model_name=name,
            groups=groups,
        )
        profile = m.profile
        extra = {
            "groups_sum_ms": round(m.groups_sum_ms, 4),
            "whole_model_ms": round(m.whole_ms, 4),
            "groups_over_whole": round(m.ratio, 4),
            "unattributed_ms": round(m.unattributed_ms, 4),
            "threads": m.threads,
            "threads_timed_ms": {str(t): round(ms, 4) for t, ms in m.threads_ms.items()},
            "warning": m.warning,
        }
    elif args.backend == "trtexec":
        from hxsched.scheduler.profile.from_trtexec import import_trtexec
        from hxsched.scheduler.profile.trtexec import load_export_profile

        if not args.gpu_profile:
            raise HxschedError(
                "--backend trtexec needs --gpu-profile (and optionally --dla-profile)"
            )
        profile = import_trtexec(
            graph,
            args.device,
            load_export_profile(args.gpu_profile),
            load_export_profile(args.dla_profile) if args.dla_profile else None,
            precision=args.precision,
            max_groups=args.max_groups,
            model_name=name,
            trt=args.trt,
        )
    else:
        from hxsched.runtime.backends.trt.profile import measure_trt_profile

        profile = measure_trt_profile(
            graph,
            args.device,
            precision=args.precision,
            max_groups=args.max_groups,
            model_name=name,
            runs=args.runs,
            warmup=args.warmup,
        )
    from hxsched.scheduler.profile.schema import save_profile

    out = Path(args.output or f"{name}.{profile.device}.yaml")
    save_profile(profile, out)
    data = {"output": str(out), **extra, "profile": profile.to_dict()}

    def human() -> str:
        accels = profile.accelerators
        rows = [
            [
                g.label,
                "DLA ok" if g.dla and AcceleratorKind.DLA in g.time_ms else "-",
                str(g.nodes or ""),
                *(f"{g.time_ms[a]:.4f}" if a in g.time_ms else "-" for a in accels),
                f"{g.first} .. {g.last}" if g.first else "",
            ]
            for g in profile.groups
        ]
        text = table(rows, ["group", "dla", "nodes", *[f"{a} ms" for a in accels], "nodes range"])
        src = profile.provenance[profile.default_source]
        totals = ", ".join(
            f"{a} {profile.group_total_ms(a):.3f} ms"
            for a in accels
            if profile.group_total_ms(a) is not None
        )
        lines = [
            text,
            "",
            f"wrote {out}: {len(profile.groups)} groups on {profile.device} "
            f"({profile.precision}); group sums: {totals}; numbers {src.describe()}",
        ]
        if extra:
            lines.append(
                f"whole model (no profiler): {extra['whole_model_ms']:.3f} ms; groups sum to "
                f"{extra['groups_sum_ms']:.3f} ms = {extra['groups_over_whole']:.1%} of it "
                f"(measured here, {extra['threads']} intra-op thread(s))"
            )
        return "\n".join(lines)

    emit(args, data, human)
    return 0


def _list(args: argparse.Namespace) -> int:
    from hxsched.scheduler.profile.store import list_profiles

    items = list_profiles(args.device)
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    for it in items:
        p = it.profile
        if p is None:
            rows.append([str(it.path), "?", "?", "?", "-", f"invalid: {it.error}"])
            data.append({"path": str(it.path), "error": it.error})
            continue
        kinds = ", ".join(f"{k} {n}" for k, n in p.kinds_of_numbers().items())
        src = p.provenance[p.default_source]
        rows.append(
            [
                str(it.path),
                p.device,
                p.model.name,
                str(len(p.groups)),
                p.precision,
                f"{kinds} ({src.tool})",
            ]
        )
        data.append(
            {
                "path": str(it.path),
                "device": p.device,
                "model": p.model.name,
                "structural_hash": p.model.structural_hash,
                "groups": len(p.groups),
                "precision": p.precision,
                "shipped": it.shipped,
                "numbers": p.kinds_of_numbers(),
                "sources": {k: v.to_dict() for k, v in p.provenance.items()},
            }
        )
    emit(
        args,
        data,
        lambda: table(
            rows, ["file", "device", "model", "groups", "precision", "numbers (how obtained)"]
        ),
    )
    return 0


def _calibration(args: argparse.Namespace) -> int:
    from hxsched.scheduler.cost.estimate import calibration_table
    from hxsched.scheduler.graph.onnx_io import graph_from_proto
    from hxsched.scheduler.zoo import build_zoo_model

    cache: dict = {}

    def load(name: str):
        if name not in cache:
            cache[name] = graph_from_proto(build_zoo_model(name, calibrate_weights=False))
        return cache[name]

    rows = calibration_table(load)
    emit(
        args,
        rows,
        lambda: table(
            [
                [
                    r["kind"],
                    r["device"],
                    r["model"],
                    r["what"],
                    str(r["published"]),
                    str(r["estimated"]),
                    "" if r["ratio"] is None else f"{r['ratio']:.2f}",
                    r["source"],
                ]
                for r in rows
            ],
            ["kind", "device", "model", "quantity", "published", "estimated", "ratio", "source"],
        ),
    )
    return 0
