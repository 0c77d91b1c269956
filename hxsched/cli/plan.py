"""``hxsched plan``: partition points and accelerators for several models, proven optimal."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hxsched.cli._common import (
    add_json,
    add_quiet,
    add_shape,
    emit,
    load_graph,
    parse_shapes,
    progress,
    table,
)
from hxsched.errors import HxschedError
from hxsched.scheduler.types import Accelerator, Objective

if TYPE_CHECKING:
    from hxsched.scheduler.planning.planner import PlanResult, PlanSummary

log = logging.getLogger(__name__)

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
    p.add_argument("--objective", choices=[o.value for o in Objective], default="throughput")
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


def load_inputs(args: argparse.Namespace) -> list:
    from hxsched.scheduler.cost.estimate import estimate_profile
    from hxsched.scheduler.graph.summary import summarize
    from hxsched.scheduler.planning.planner import ModelInput
    from hxsched.scheduler.profile.bind import bind_profile
    from hxsched.scheduler.profile.schema import load_profile
    from hxsched.scheduler.profile.store import closest_refused, find_profile, shipped_dir

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
        # with a profile to use, only the hash and node order are needed: cached by file identity
        summary, graph = summarize(path, parse_shapes(args.shape))
        name = Path(path).stem
        if name in names_seen:
            names_seen[name] += 1
            name = f"{name}_{names_seen[name]}"
        else:
            names_seen[name] = 0
        if given:
            prof, how = given[k], "given"
            prof = bind_profile(summary, prof, prof.path or str(args.profile[k]))
        else:
            found = find_profile(args.device, summary.structural_hash)
            if found is not None:
                prof = found
                shipped = shipped_dir().resolve() in Path(prof.path or "").resolve().parents
                how = "shipped" if shipped else "found"
                prof = bind_profile(summary, found, prof.path or "")
            else:
                if args.device == "cpu":
                    raise HxschedError(
                        f"no profile for {path} on device cpu: measure one with "
                        "hxsched profile --backend ort"
                    )
                log.info(
                    f"no profile of {path} for {args.device}: estimating one with the cost model"
                )
                near = closest_refused(args.device, len(summary.node_names), len(summary.folded))
                if near:
                    log.info(near)
                if graph is None:
                    graph = load_graph(path, args.shape)
                prof = estimate_profile(graph, args.device, model_name=name)
                how = "estimated on the fly"
        shapes = parse_shapes(args.shape) or None
        inputs.append(ModelInput(name, prof, how, graph, str(path), args.instances, shapes))
    return inputs


def _accelerators(args: argparse.Namespace) -> tuple[Accelerator, ...] | None:
    if not args.accelerators:
        return None
    from hxsched.scheduler.planning.planner import device_accelerators

    allowed = device_accelerators(args.device)
    names = [a.strip() for a in args.accelerators.split(",") if a.strip()]
    chosen = tuple(a for a in allowed if a.value in names)
    if len(chosen) != len(set(names)) or not chosen:
        raise HxschedError(
            f"--accelerators {args.accelerators}: {args.device} has {', '.join(allowed)}"
        )
    return tuple(Accelerator(a) for a in dict.fromkeys(names))


@contextlib.contextmanager
def log_to(say: Callable[[str], None]) -> Iterator[None]:
    """Forward hxsched's INFO log lines to ``say`` (stderr, silenced by -q) while planning,
    unless the CLI has configured logging itself."""

    class _Say(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            say(record.getMessage())

    root = logging.getLogger("hxsched")
    if root.handlers:
        yield
        return
    handler, level = _Say(logging.INFO), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _pins(items: list[str]) -> dict[str, str]:
    pins = {}
    for item in items:
        name, sep, acc = item.partition("=")
        if not sep or not name or not acc:
            raise HxschedError(f"--pin {item!r}: expected INSTANCE=ACCELERATOR, e.g. yolov8n#0=gpu")
        pins[name] = acc
    return pins


def _chart(result: PlanResult, path: str) -> str:
    from hxsched.scheduler.planning.chart import panel_from_timeline, write_chart

    plan, base = result.plan, result.best_baseline
    names = [i.name for i in plan.instances]
    base_ms = base.evaluation.period * plan.resolution_ms
    period = plan.predicted.period_ms
    span = max(period, base_ms)
    cyclic = plan.objective == Objective.THROUGHPUT
    what = "one period" if cyclic else "one frame"
    panels = [
        panel_from_timeline(
            f"hxsched plan ({plan.objective}): {what}, {period:.3f} ms",
            plan.accelerators,
            plan.timeline,
            names,
            span,
            period if cyclic else None,
        ),
        panel_from_timeline(
            f"baseline {base.name}: {base_ms:.3f} ms",
            plan.accelerators,
            result.baseline_timeline(base),
            names,
            span,
            base_ms if cyclic else None,
        ),
    ]
    return str(write_chart(panels, path))


def run(args: argparse.Namespace) -> int:
    from hxsched.scheduler.planning.plan import save_plan
    from hxsched.scheduler.planning.planner import make_plan

    with log_to(progress(args)):
        inputs = load_inputs(args)
        result = make_plan(
            inputs,
            args.device,
            objective=args.objective,
            max_switches=args.max_switches,
            resolution_ms=args.resolution,
            contention=not args.no_contention,
            time_limit_s=args.time_limit or None,
            max_loadables=args.max_loadables,
            pins=_pins(args.pin),
            sat_solver=args.sat_solver,
            accelerators=_accelerators(args),
        )
    out = save_plan(result.plan, Path(args.output or "plan.yaml"))
    chart = _chart(result, args.chart) if args.chart else None
    summary = result.summary(str(out), chart)
    emit(args, result.to_json(str(out), chart), lambda: human(summary, result.plan.resolution_ms))
    return 0


def _proof(s: PlanSummary, resolution_ms: float) -> str:
    if s.proof == "unsat":
        return f"proven optimal (UNSAT at {s.period_ms - resolution_ms:.3f} ms)"
    if s.proof == "lp-bound":
        return "proven optimal (equals the LP bound)"
    if s.proof == "contention-lp":
        return f"proven optimal (contention-aware LP exceeds {s.period_ms - resolution_ms:.3f} ms)"
    return f"not proven optimal: gap {s.gap:.1%} at the time limit"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def human(s: PlanSummary, resolution_ms: float) -> str:
    """The table of a PlanSummary: the plan beside its baselines, then the proof."""

    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    rows = [["hxsched", f"{s.period_ms:.3f}", fmt(s.fps, ".1f"), fmt(s.latency_ms, ".3f"), "1.00"]]
    for name, b in s.baselines.items():
        rows.append(
            [
                name,
                f"{b.period_ms:.3f}",
                fmt(b.fps, ".1f"),
                fmt(b.latency_ms, ".3f"),
                f"{b.period_ms / s.period_ms:.2f}",
            ]
        )
    value = "period" if s.objective == Objective.THROUGHPUT else "makespan"
    lines = [
        *s.descriptions,
        "",
        table(rows, ["plan", f"{value} ms", "FPS", "latency ms", "x hxsched"]),
        "",
        f"{_proof(s, resolution_ms)}; solved in {s.solve_time_s:.2f} s; proven lower bound "
        f"{s.lower_bound_ms:.3f} ms (LP without contention {s.lp_bound_ms:.3f} ms, {value} / it "
        f"= {_ratio(s.ratio_to_lp_bound)}); {value} / best baseline ({s.best_baseline}) = "
        f"{_ratio(s.ratio_to_best_baseline)}",
        f"numbers: {s.predicted_source}; profiles: "
        + ", ".join(f"{i.name} {i.profile}" for i in s.instances),
        f"wrote {s.output}" + (f" and {s.chart}" if s.chart else ""),
    ]
    lines += [f"warning: {w}" for w in s.warnings]
    return "\n".join(lines)
