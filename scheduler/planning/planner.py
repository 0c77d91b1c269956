"""From models and profiles to a solved, evaluated plan with its baselines and bound."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hxsched.errors import HxschedError
from hxsched.scheduler.cost.contention import ContentionModel
from hxsched.scheduler.cost.devices import DEVICES
from hxsched.scheduler.graph.graph import Graph
from hxsched.scheduler.graph.structure import structural_hash
from hxsched.scheduler.planning.baselines import all_baselines
from hxsched.scheduler.planning.plan import Plan, PlanInstance, PlanSegment
from hxsched.scheduler.planning.problem import Config, Instance, build_problem
from hxsched.scheduler.planning.simulate import Evaluation
from hxsched.scheduler.planning.solver import DEFAULT_SAT_SOLVER, solve
from hxsched.scheduler.profile.schema import Profile


@dataclass
class ModelInput:
    """One model to plan: its profile, and where the profile came from."""

    name: str
    profile: Profile
    how: str  # "shipped", "found", "given", "estimated on the fly"
    graph: Graph | None = None
    path: str | None = None
    count: int = 1


def device_accelerators(device: str) -> tuple[str, ...]:
    if device == "cpu":
        return ("cpu",)
    if device not in DEVICES:
        from hxsched.scheduler.cost.devices import device as get_device

        get_device(device)  # raises the usual message
    return DEVICES[device].accelerators


def check_profile_matches(graph: Graph, profile: Profile, where: str) -> None:
    """A given profile must describe this model: same architecture, existing group nodes."""
    if profile.model.structural_hash and profile.model.structural_hash != structural_hash(graph):
        raise HxschedError(
            f"profile {where} was made for another architecture ({profile.model.name}, "
            f"{profile.model.structural_hash[:19]}...) than model {graph.path}",
            path=where,
        )
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    expected = 0
    for g in profile.groups:
        if g.first is None or g.last is None:
            continue
        if g.first not in order or g.last not in order:
            raise HxschedError(
                f"group {g.label} ({g.first} .. {g.last}) names nodes the model does not have: "
                "the profile's groups do not match the model",
                path=where,
            )
        if order[g.first] != expected or order[g.last] < order[g.first]:
            raise HxschedError(
                f"group {g.label} starts at node {order[g.first]}, expected {expected}: the "
                "profile's groups do not match the model's node order",
                path=where,
            )
        expected = order[g.last] + 1
    if expected and expected != len(graph.nodes):
        raise HxschedError(
            f"the profile's groups cover {expected} of the model's {len(graph.nodes)} nodes",
            path=where,
        )


def _plan_segments(
    cfg: Config,
    profile: Profile,
    resolution: float,
    levels: dict | None,
    ev: Evaluation,
    index: int,
) -> tuple[PlanSegment, ...]:
    out = []
    by_slot = {(a.instance, a.segment): a for a in ev.timeline if a.frame == 0}
    for s, seg in enumerate(cfg.segments):
        act = by_slot.get((index, s))
        busy = (act.end - act.start) if act is not None else seg.busy
        out.append(
            PlanSegment(
                seg.first,
                seg.last,
                profile.groups[seg.first].first,
                profile.groups[seg.last].last,
                seg.accelerator,
                seg.ms,
                busy * resolution,
                seg.transition * resolution,
            )
        )
    return tuple(out)


def _numbers(ev: Evaluation, res: float) -> dict:
    period_ms = ev.period * res
    return {
        "period_ms": round(period_ms, 5),
        "fps": round(1000.0 / period_ms, 2) if period_ms > 0 else None,
        "latency_ms": round(ev.latency * res, 5),
    }


def timeline_records(names: Sequence[str], ev: Evaluation, res: float) -> list[dict]:
    """The evaluation's timeline in ms, instances by name."""
    return [
        {
            "instance": names[a.instance],
            "segment": a.segment,
            "accelerator": a.accelerator,
            "start_ms": round(a.start * res, 5),
            "end_ms": round(a.end * res, 5),
            "transition_ms": round(a.transition * res, 5),
        }
        for a in ev.timeline
    ]


def make_plan(
    models: Sequence[ModelInput],
    device: str,
    *,
    objective: str = "throughput",
    max_switches: int = 1,
    resolution_ms: float = 0.01,
    contention: bool = True,
    time_limit_s: float | None = 60.0,
    max_loadables: int = 16,
    pins: dict[str, str] | None = None,
    sat_solver: str = DEFAULT_SAT_SOLVER,
    progress: Callable[[str], None] | None = None,
    accelerators: Sequence[str] | None = None,
) -> tuple[Plan, dict]:
    """Solve and evaluate; returns the plan and the extra data charts need."""
    accelerators = tuple(accelerators) if accelerators else device_accelerators(device)
    pins = dict(pins or {})
    instances: list[Instance] = []
    inputs: list[ModelInput] = []
    for m in models:
        if m.profile.device != device:
            raise HxschedError(
                f"profile for {m.name} is for device {m.profile.device}, not {device}",
                path=m.profile.path,
            )
        for k in range(m.count):
            name = f"{m.name}#{k}"
            instances.append(Instance(name, m.name, m.profile, pins.pop(name, None)))
            inputs.append(m)
    if pins:
        raise HxschedError(
            f"--pin names {', '.join(pins)}, which is not an instance (instances: "
            f"{', '.join(i.name for i in instances)})"
        )
    cmodel = None
    warnings: list[str] = []
    if contention and len(accelerators) > 1:
        found = [m.profile.contention for m in models if m.profile.contention]
        if found:
            cmodel = ContentionModel.from_dict(found[0])
        else:
            warnings.append("no profile has a contention model: planned without contention")
    for inst in instances:
        if not inst.profile.transitions and len(inst.profile.groups) > 1 and len(accelerators) > 1:
            warnings.append(f"{inst.name}: its profile has no hand-over costs; counted as 0")
    problem = build_problem(
        instances,
        accelerators,
        objective=objective,
        max_switches=max_switches,
        resolution_ms=resolution_ms,
        contention=cmodel,
        max_loadables=max_loadables,
    )
    import scipy.optimize  # noqa: F401 - module start-up is not solving time

    result = solve(problem, time_limit_s=time_limit_s, solver_name=sat_solver, progress=progress)
    ev = result.evaluation
    assert ev is not None and result.selection is not None
    res = resolution_ms
    baselines = all_baselines(problem)
    numbers = _numbers(ev, res)
    numbers.update(
        busy_ms={a: round(t * res, 5) for a, t in ev.busy.items()},
        idle_ms={a: round(t * res, 5) for a, t in ev.idle().items()},
        contention_levels=ev.levels or None,
        source=f"hxsched simulator on the profiles below, in ticks of {res} ms"
        + (", with contention" if cmodel else ", without contention"),
    )
    best_base = min(baselines, key=lambda b: b.evaluation.period)
    lower_ms = result.lower_bound * res
    solver_info = {
        "optimal": result.optimal,
        "proof": result.proof,
        "gap": round(result.gap, 5),
        "solve_time_s": round(result.solve_time_s, 4),
        "lower_bound_ms": round(lower_ms, 5),
        "lp_bound_ms": round(result.lp_bound * res, 5),
        "ratio_to_lp_bound": round(ev.period / result.lp_bound, 4) if result.lp_bound else None,
        "ratio_to_best_baseline": round(ev.period / best_base.evaluation.period, 4),
        "best_baseline": best_base.name,
        "sat_solver": sat_solver,
        "sat_calls": result.calls,
        "variables": result.variables,
        "clauses": result.clauses,
        "configurations": result.configs,
    }
    plan_instances = []
    for idx, (inst, cfg, m) in enumerate(zip(instances, result.selection, inputs, strict=True)):
        prov = {k: v.to_dict() for k, v in m.profile.provenance.items()}
        plan_instances.append(
            PlanInstance(
                inst.name,
                inst.model,
                _plan_segments(cfg, inst.profile, res, ev.levels, ev, idx),
                m.path,
                m.profile.model.structural_hash,
                {
                    "path": m.profile.path,
                    "how": m.how,
                    "device": m.profile.device,
                    "default_source": m.profile.default_source,
                    "sources": prov,
                },
            )
        )
    timeline = timeline_records([i.name for i in instances], ev, res)
    plan = Plan(
        objective=objective,
        device=device,
        accelerators=accelerators,
        resolution_ms=res,
        max_switches=max_switches,
        instances=plan_instances,
        predicted=numbers,
        solver=solver_info,
        baselines={b.name: {**_numbers(b.evaluation, res), "note": b.note} for b in baselines},
        timeline=timeline,
        edges=[[list(p), list(q)] for p, q in sorted(ev.edges)],
        contention={**cmodel.to_dict(), "levels": problem.levels} if cmodel else None,
        warnings=warnings + problem.warnings,
    )
    extra = {
        "problem": problem,
        "result": result,
        "baselines": baselines,
        "best_baseline": best_base,
    }
    return plan, extra
