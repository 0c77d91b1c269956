"""``hxsched plan``: partition points and accelerators for several models, proven optimal."""

from __future__ import annotations

import argparse
from pathlib import Path

from hxsched.cli._common import add_json, add_quiet, add_shape, emit, load_graph, progress, table
from hxsched.errors import HxschedError

HELP = "plan where to cut each model and which accelerator runs each segment (SAT, proven optimal)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help=HELP,
        description=HELP + ". Each model instance becomes a chain of layer groups; the solver "
        "picks at most --max-switches accelerator switches per instance, DLA segments only "
        "where every group can run on the DLA, at most --max-loadables DLA loadables per core, "
        "and minimises the steady-state period (throughput) or one frame's makespan (latency), "
        "with shared-DRAM contention in the model. Profiles: the shipped or found profile "
        "matching each model's architecture for --device, else an on-the-fly estimate (said so), "
        "or --profile. Reports the LP lower bound and the baselines evaluated the same way.",
    )
    p.add_argument("models", nargs="*", help="ONNX models (or none, with --profile files)")
    p.add_argument("--instances", type=int, default=1, help="instances of each model (default 1)")
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="FILE",
        help="profile for the i-th model (repeatable); alone: plan these profiles",
    )
    p.add_argument("--device", default="orin-agx", help="target device (default orin-agx)")
    p.add_argument(
        "--accelerators", help="use only these, e.g. gpu,dla0 (default: all of the device's)"
    )
    p.add_argument("--objective", choices=("throughput", "latency"), default="throughput")
    p.add_argument(
        "--max-switches", type=int, default=1, help="accelerator switches per instance (0-3)"
    )
    p.add_argument("--resolution", type=float, default=0.01, help="time tick in ms (default 0.01)")
    p.add_argument(
        "--no-contention", action="store_true", help="plan without the DRAM contention model"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=60.0,
        help="seconds; the best plan found so far is returned with its proven gap",
    )
    p.add_argument(
        "--max-loadables", type=int, default=16, help="DLA loadables per core (default 16)"
    )
    p.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="INSTANCE=ACCEL",
        help="run a whole instance on one accelerator, e.g. yolov8n#0=gpu",
    )
    p.add_argument("--sat-solver", default="glucose4", help="pysat solver name (default glucose4)")
    p.add_argument("-o", "--output", help="plan YAML to write (default: plan.yaml)")
    p.add_argument("--chart", help="Gantt chart of the plan and the best baseline (.svg or .png)")
    add_shape(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def load_inputs(args: argparse.Namespace, say) -> list:
    from hxsched.scheduler.cost.estimate import estimate_profile
    from hxsched.scheduler.graph.structure import structural_hash
    from hxsched.scheduler.planning.planner import ModelInput, check_profile_matches
    from hxsched.scheduler.profile.schema import load_profile
    from hxsched.scheduler.profile.store import find_profile, shipped_dir

    if args.instances < 1:
        raise HxschedError("--instances must be at least 1")
    given = [load_profile(f) for f in args.profile]
    if not args.models:
        if not given:
            raise HxschedError("name the models to plan (ONNX files), or --profile files")
        return [ModelInput(p.model.name, p, "given", None, p.path, args.instances) for p in given]
    if given and len(given) != len(args.models):
        raise HxschedError(
            f"{len(args.models)} model(s) but {len(given)} --profile file(s): give "
            "one profile per model, in the same order, or none"
        )
    inputs = []
    names_seen: dict[str, int] = {}
    for k, path in enumerate(args.models):
        graph = load_graph(path, args.shape)
        name = Path(path).stem
        if name in names_seen:
            names_seen[name] += 1
            name = f"{name}_{names_seen[name]}"
        else:
            names_seen[name] = 0
        if given:
            prof, how = given[k], "given"
            check_profile_matches(graph, prof, prof.path or str(args.profile[k]))
        else:
            prof = find_profile(args.device, structural_hash(graph))
            if prof is not None:
                shipped = shipped_dir().resolve() in Path(prof.path or "").resolve().parents
                how = "shipped" if shipped else "found"
                check_profile_matches(graph, prof, prof.path or "")
            else:
                if args.device == "cpu":
                    raise HxschedError(
                        f"no profile for {path} on device cpu: measure one with "
                        "hxsched profile --backend ort"
                    )
                say(f"no profile of {path} for {args.device}: estimating one with the cost model")
                prof = estimate_profile(graph, args.device, model_name=name)
                how = "estimated on the fly"
        inputs.append(ModelInput(name, prof, how, graph, str(path), args.instances))
    return inputs


def _accelerators(args: argparse.Namespace) -> tuple[str, ...] | None:
    if not args.accelerators:
        return None
    from hxsched.scheduler.planning.planner import device_accelerators

    allowed = device_accelerators(args.device)
    chosen = tuple(a.strip() for a in args.accelerators.split(",") if a.strip())
    bad = [a for a in chosen if a not in allowed]
    if bad or not chosen:
        raise HxschedError(
            f"--accelerators {args.accelerators}: {args.device} has {', '.join(allowed)}"
        )
    return chosen


def run(args: argparse.Namespace) -> int:
    from hxsched.scheduler.planning.chart import panel_from_timeline, write_chart
    from hxsched.scheduler.planning.plan import save_plan
    from hxsched.scheduler.planning.planner import make_plan, timeline_records

    say = progress(args)
    pins = {}
    for item in args.pin:
        name, sep, acc = item.partition("=")
        if not sep or not name or not acc:
            raise HxschedError(f"--pin {item!r}: expected INSTANCE=ACCELERATOR, e.g. yolov8n#0=gpu")
        pins[name] = acc
    inputs = load_inputs(args, say)
    plan, extra = make_plan(
        inputs,
        args.device,
        objective=args.objective,
        max_switches=args.max_switches,
        resolution_ms=args.resolution,
        contention=not args.no_contention,
        time_limit_s=args.time_limit or None,
        max_loadables=args.max_loadables,
        pins=pins,
        sat_solver=args.sat_solver,
        progress=say,
        accelerators=_accelerators(args),
    )
    out = Path(args.output or "plan.yaml")
    save_plan(plan, out)
    chart = None
    if args.chart:
        names = [i.name for i in plan.instances]
        base = extra["best_baseline"]
        res = plan.resolution_ms
        span = max(plan.predicted["period_ms"], base.evaluation.period * res)
        what = "one period" if plan.objective == "throughput" else "one frame"
        cyclic = plan.objective == "throughput"
        panels = [
            panel_from_timeline(
                f"hxsched plan ({plan.objective}): {what}, {plan.predicted['period_ms']:.3f} ms",
                plan.accelerators,
                plan.timeline,
                names,
                span,
                plan.predicted["period_ms"] if cyclic else None,
            ),
            panel_from_timeline(
                f"baseline {base.name}: {base.evaluation.period * res:.3f} ms",
                plan.accelerators,
                timeline_records(names, base.evaluation, res),
                names,
                span,
                base.evaluation.period * res if cyclic else None,
            ),
        ]
        chart = str(write_chart(panels, args.chart))
    s = plan.solver
    data = {
        "output": str(out),
        "chart": chart,
        "objective": plan.objective,
        "device": plan.device,
        "period_ms": plan.predicted["period_ms"],
        "fps": plan.predicted["fps"],
        "latency_ms": plan.predicted["latency_ms"],
        "optimal": s["optimal"],
        "proof": s["proof"],
        "gap": s["gap"],
        "solve_time_s": s["solve_time_s"],
        "lower_bound_ms": s["lower_bound_ms"],
        "lp_bound_ms": s["lp_bound_ms"],
        "ratio_to_lp_bound": s["ratio_to_lp_bound"],
        "ratio_to_best_baseline": s["ratio_to_best_baseline"],
        "problem_size": {
            "configurations": s["configurations"],
            "variables": s["variables"],
            "clauses": s["clauses"],
            "sat_calls": len(s["sat_calls"]),
        },
        "baselines": {
            k: {"period_ms": v["period_ms"], "fps": v["fps"], "latency_ms": v["latency_ms"]}
            for k, v in plan.baselines.items()
        },
        "instances": [
            {
                "name": i.name,
                "model": i.model,
                "profile": i.profile.get("how"),
                "segments": [
                    {
                        "first_node": seg.first_node,
                        "last_node": seg.last_node,
                        "groups": [seg.first_group, seg.last_group],
                        "accelerator": seg.accelerator,
                        "ms": round(seg.busy_ms, 5),
                    }
                    for seg in i.segments
                ],
            }
            for i in plan.instances
        ],
        "predicted_source": plan.predicted["source"],
        "warnings": plan.warnings,
    }

    def human() -> str:
        lines = [i.describe() for i in plan.instances]
        rows = [
            [
                "hxsched",
                f"{plan.predicted['period_ms']:.3f}",
                f"{plan.predicted['fps']:.1f}",
                f"{plan.predicted['latency_ms']:.3f}",
                "1.00",
            ]
        ]
        for name, b in plan.baselines.items():
            ratio = (
                b["period_ms"] / plan.predicted["period_ms"] if plan.predicted["period_ms"] else 0
            )
            rows.append(
                [
                    name,
                    f"{b['period_ms']:.3f}",
                    f"{b['fps']:.1f}",
                    f"{b['latency_ms']:.3f}",
                    f"{ratio:.2f}",
                ]
            )
        value = "period" if plan.objective == "throughput" else "makespan"
        proof = {
            "unsat": f"proven optimal (UNSAT at {plan.predicted['period_ms'] - plan.resolution_ms:.3f} ms)",
            "lp-bound": "proven optimal (equals the LP bound)",
        }.get(s["proof"], f"not proven optimal: gap {s['gap']:.1%} at the time limit")
        lines += [
            "",
            table(rows, ["plan", f"{value} ms", "FPS", "latency ms", "x hxsched"]),
            "",
            f"{proof}; solved in {s['solve_time_s']:.2f} s; {value} / LP bound "
            f"{s['lp_bound_ms']:.3f} ms = {s['ratio_to_lp_bound']:.3f}; / best baseline "
            f"({s['best_baseline']}) = {s['ratio_to_best_baseline']:.3f}",
            f"numbers: {plan.predicted['source']}; profiles: "
            + ", ".join(f"{i.name} {i.profile.get('how')}" for i in plan.instances),
            f"wrote {out}" + (f" and {chart}" if chart else ""),
        ]
        lines += [f"warning: {w}" for w in plan.warnings]
        return "\n".join(lines)

    emit(args, data, human)
    return 0
