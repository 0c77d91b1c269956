"""From models and profiles to a solved, evaluated plan with its baselines and bound."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from hxsched.codec import encode, meta
from hxsched.errors import HxschedError
from hxsched.scheduler.cost.contention import ContentionModel
from hxsched.scheduler.cost.devices import DEVICES
from hxsched.scheduler.graph.graph import Graph
from hxsched.scheduler.graph.summary import ModelSummary
from hxsched.scheduler.planning.baselines import BaselineRun, all_baselines
from hxsched.scheduler.planning.plan import (
    Baseline,
    ContentionSettings,
    Plan,
    PlanInstance,
    PlanSegment,
    Predicted,
    ProfileRef,
    SolverReport,
    SourceRef,
    TimelineEntry,
)
from hxsched.scheduler.planning.problem import Config, Instance, Problem, build_problem
from hxsched.scheduler.planning.simulate import Evaluation
from hxsched.scheduler.planning.solver import DEFAULT_SAT_SOLVER, SolveResult, solve
from hxsched.scheduler.profile.schema import Profile
from hxsched.scheduler.types import Accelerator, Objective, ProvenanceKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInput:
    """One model to plan: its profile, and where the profile came from."""

    name: str
    profile: Profile
    how: str  # "shipped", "found", "given", "estimated on the fly"
    graph: Graph | None = None
    path: str | None = None
    count: int = 1
    shapes: dict[str, tuple[int, ...]] | None = None  # --shape overrides it was loaded with


def device_accelerators(device: str) -> tuple[Accelerator, ...]:
    if device == "cpu":
        return (Accelerator.CPU,)
    if device not in DEVICES:
        from hxsched.scheduler.cost.devices import device as get_device

        get_device(device)  # raises the usual message
    return tuple(Accelerator(a) for a in DEVICES[device].accelerators)


def check_profile_matches(model: Graph | ModelSummary, profile: Profile, where: str) -> None:
    """A given profile must describe this model: same architecture, existing group nodes."""
    summary = model if isinstance(model, ModelSummary) else ModelSummary.of(model)
    if profile.model.structural_hash and profile.model.structural_hash != summary.structural_hash:
        raise HxschedError(
            f"profile {where} was made for another architecture ({profile.model.name}, "
            f"{profile.model.structural_hash[:19]}...) than model {summary.path}",
            path=where,
        )
    order = {name: i for i, name in enumerate(summary.node_names)}
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
    if expected and expected != len(summary.node_names):
        raise HxschedError(
            f"the profile's groups cover {expected} of the model's {len(summary.node_names)} nodes",
            path=where,
        )


def _r(x: float) -> float:
    return round(x, 5)


def _plan_segments(
    cfg: Config, profile: Profile, resolution: float, ev: Evaluation, index: int
) -> tuple[PlanSegment, ...]:
    out = []
    by_slot = {(a.instance, a.segment): a for a in ev.timeline if a.frame == 0}
    for s, seg in enumerate(cfg.segments):
        act = by_slot.get((index, s))
        busy = (act.end - act.start) if act is not None else seg.busy
        out.append(
            PlanSegment(
                groups=(seg.first, seg.last),
                first_node=profile.groups[seg.first].first,
                last_node=profile.groups[seg.last].last,
                accelerator=seg.accelerator,
                ms=_r(seg.ms),
                busy_ms=_r(busy * resolution),
                transition_ms=_r(seg.transition * resolution),
            )
        )
    return tuple(out)


def _fps(period_ms: float) -> float | None:
    return round(1000.0 / period_ms, 2) if period_ms > 0 else None


def baseline_figures(run: BaselineRun, res: float) -> Baseline:
    period_ms = _r(run.evaluation.period * res)
    return Baseline(
        period_ms=period_ms,
        fps=_fps(period_ms),
        latency_ms=_r(run.evaluation.latency * res),
        note=run.note,
    )


def timeline_records(names: Sequence[str], ev: Evaluation, res: float) -> tuple[TimelineEntry, ...]:
    """The evaluation's timeline in ms, instances by name."""
    return tuple(
        TimelineEntry(
            instance=names[a.instance],
            segment=a.segment,
            accelerator=a.accelerator,
            start_ms=_r(a.start * res),
            end_ms=_r(a.end * res),
            transition_ms=_r(a.transition * res),
        )
        for a in ev.timeline
    )


def _predicted(ev: Evaluation, res: float, with_contention: bool) -> Predicted:
    period_ms = _r(ev.period * res)
    if period_ms <= 0:
        raise HxschedError("every group of every model takes 0 ms: nothing to plan")
    return Predicted(
        period_ms=period_ms,
        fps=_fps(period_ms),
        latency_ms=_r(ev.latency * res),
        busy_ms={a: _r(t * res) for a, t in ev.busy.items()},
        idle_ms={a: _r(t * res) for a, t in ev.idle().items()},
        contention_levels=dict(ev.levels) or None,
        source=f"hxsched simulator on the profiles below, in ticks of {res} ms"
        + (", with contention" if with_contention else ", without contention"),
    )


def _solver_report(
    result: SolveResult, best: BaselineRun, res: float, sat_solver: str
) -> SolverReport:
    ev = result.evaluation
    assert ev is not None  # solve() raises when it finds no plan
    return SolverReport(
        optimal=result.optimal,
        proof=result.proof,
        gap=round(result.gap, 5),
        solve_time_s=round(result.solve_time_s, 4),
        lower_bound_ms=_r(result.lower_bound * res),
        lp_bound_ms=_r(result.lp_bound * res),
        ratio_to_lp_bound=round(ev.period / result.lp_bound, 4) if result.lp_bound else None,
        ratio_to_best_baseline=round(ev.period / best.evaluation.period, 4),
        best_baseline=best.name,
        sat_solver=sat_solver,
        sat_calls=tuple(result.calls),
        variables=result.variables,
        clauses=result.clauses,
        configurations=tuple(result.configs),
        proof_detail=result.proof_detail,
        lp_converged=result.lp_converged,
        peak_rss_mib=result.peak_rss_mib,
    )


def profile_ref(m: ModelInput) -> ProfileRef:
    """Where an instance's profile came from, as the plan records it."""
    p = m.profile
    sources = {
        k: SourceRef(
            kind=ProvenanceKind(v.kind),
            tool=v.tool,
            versions=dict(v.versions),
            date=str(v.date or ""),
            notes=v.notes or "",
        )
        for k, v in p.provenance.items()
    }
    return ProfileRef(
        path=p.path, how=m.how, device=p.device, default_source=p.default_source, sources=sources
    )


# ---------------------------------------------------------------------------------------------
# The result of make_plan, and the summary `hxsched plan` and `hxsched demo` print
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SegmentSummary:
    first_node: str | None = field(metadata=meta(omit_none=False))
    last_node: str | None = field(metadata=meta(omit_none=False))
    groups: tuple[int, int]
    accelerator: Accelerator
    ms: float  # busy in the plan


@dataclass(frozen=True, kw_only=True)
class InstanceSummary:
    name: str
    model: str
    profile: str  # how the profile was obtained
    segments: tuple[SegmentSummary, ...]


@dataclass(frozen=True, kw_only=True)
class ProblemSize:
    configurations: tuple[int, ...]
    variables: int
    clauses: int
    sat_calls: int


@dataclass(frozen=True, kw_only=True)
class PlanSummary:
    """What ``hxsched plan`` reports (``--json`` prints it as is; the table reads it)."""

    output: str | None = field(default=None, metadata=meta(omit_none=False))
    chart: str | None = field(default=None, metadata=meta(omit_none=False))
    objective: Objective
    device: str
    period_ms: float
    fps: float | None
    latency_ms: float | None
    optimal: bool
    proof: str
    gap: float
    solve_time_s: float
    lower_bound_ms: float
    lp_bound_ms: float
    ratio_to_lp_bound: float | None
    ratio_to_best_baseline: float | None
    best_baseline: str | None
    problem_size: ProblemSize
    baselines: dict[str, Baseline]
    instances: tuple[InstanceSummary, ...]
    descriptions: tuple[str, ...]
    predicted_source: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class PlanResult:
    """What ``make_plan`` returns: the plan and what was computed on the way to it."""

    plan: Plan
    problem: Problem
    solve: SolveResult
    baselines: tuple[BaselineRun, ...]
    best_baseline: BaselineRun

    @property
    def report(self) -> SolverReport:
        assert self.plan.solver is not None  # make_plan always fills it
        return self.plan.solver

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.plan.warnings

    def baseline_timeline(self, run: BaselineRun) -> tuple[TimelineEntry, ...]:
        names = [i.name for i in self.plan.instances]
        return timeline_records(names, run.evaluation, self.plan.resolution_ms)

    def summary(self, output: str | None = None, chart: str | None = None) -> PlanSummary:
        plan, s, p = self.plan, self.report, self.plan.predicted
        instances = tuple(
            InstanceSummary(
                name=i.name,
                model=i.model,
                profile=i.profile.how,
                segments=tuple(
                    SegmentSummary(
                        first_node=g.first_node,
                        last_node=g.last_node,
                        groups=g.groups,
                        accelerator=g.accelerator,
                        ms=g.busy_ms,
                    )
                    for g in i.segments
                ),
            )
            for i in plan.instances
        )
        size = ProblemSize(
            configurations=s.configurations,
            variables=s.variables,
            clauses=s.clauses,
            sat_calls=len(s.sat_calls),
        )
        return PlanSummary(
            output=output,
            chart=chart,
            objective=plan.objective,
            device=plan.device,
            period_ms=p.period_ms,
            fps=p.fps,
            latency_ms=p.latency_ms,
            optimal=s.optimal,
            proof=s.proof,
            gap=s.gap,
            solve_time_s=s.solve_time_s,
            lower_bound_ms=s.lower_bound_ms,
            lp_bound_ms=s.lp_bound_ms,
            ratio_to_lp_bound=s.ratio_to_lp_bound,
            ratio_to_best_baseline=s.ratio_to_best_baseline,
            best_baseline=s.best_baseline,
            problem_size=size,
            baselines=dict(plan.baselines),
            instances=instances,
            descriptions=tuple(i.describe() for i in plan.instances),
            predicted_source=p.source,
            warnings=plan.warnings,
        )

    def to_json(self, output: str | None = None, chart: str | None = None) -> dict:
        """The summary as plain JSON data (via the codec)."""
        return encode(self.summary(output, chart))


def _instances(
    models: Sequence[ModelInput], device: str, pins: dict[str, str]
) -> tuple[list[Instance], list[ModelInput]]:
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
    return instances, inputs


def _contention(
    models: Sequence[ModelInput], instances: Sequence[Instance], n_acc: int, wanted: bool
) -> tuple[ContentionModel | None, list[str]]:
    cmodel, warnings = None, []
    if wanted and n_acc > 1:
        found = [m.profile.contention for m in models if m.profile.contention is not None]
        if found:
            cmodel = found[0]
        else:
            warnings.append("no profile has a contention model: planned without contention")
    for inst in instances:
        if not inst.profile.transitions and len(inst.profile.groups) > 1 and n_acc > 1:
            warnings.append(f"{inst.name}: its profile has no hand-over costs; counted as 0")
    return cmodel, warnings


def make_plan(
    models: Sequence[ModelInput],
    device: str,
    *,
    objective: Objective | str = Objective.THROUGHPUT,
    max_switches: int = 1,
    resolution_ms: float = 0.01,
    contention: bool = True,
    time_limit_s: float | None = 60.0,
    max_loadables: int = 16,
    pins: dict[str, str] | None = None,
    sat_solver: str = DEFAULT_SAT_SOLVER,
    accelerators: Sequence[str] | None = None,
) -> PlanResult:
    """Solve and evaluate: the plan, its solver report, its baselines and its bound."""
    accs = tuple(accelerators) if accelerators else device_accelerators(device)
    instances, inputs = _instances(models, device, dict(pins or {}))
    cmodel, warnings = _contention(models, instances, len(accs), contention)
    problem = build_problem(
        instances,
        accs,
        objective=objective,
        max_switches=max_switches,
        resolution_ms=resolution_ms,
        contention=cmodel,
        max_loadables=max_loadables,
    )
    import highspy._core  # noqa: F401 - module start-up is not solving time

    result = solve(problem, time_limit_s=time_limit_s, solver_name=sat_solver)
    ev, sel = result.evaluation, result.selection
    assert ev is not None and sel is not None  # solve() raises when it finds no plan
    res = resolution_ms
    runs = tuple(all_baselines(problem))
    best = min(runs, key=lambda b: b.evaluation.period)
    plan_instances = tuple(
        PlanInstance(
            name=inst.name,
            model=inst.model,
            model_path=m.path,
            structural_hash=m.profile.model.structural_hash,
            shapes=dict(m.shapes) if m.shapes else None,
            profile=profile_ref(m),
            segments=_plan_segments(cfg, inst.profile, res, ev, idx),
        )
        for idx, (inst, cfg, m) in enumerate(zip(instances, sel, inputs, strict=True))
    )
    plan = Plan(
        objective=problem.objective,
        device=device,
        accelerators=problem.accelerators,
        resolution_ms=res,
        max_switches=max_switches,
        contention=ContentionSettings(**cmodel.to_dict(), levels=problem.levels)
        if cmodel
        else None,
        predicted=_predicted(ev, res, cmodel is not None),
        solver=_solver_report(result, best, res, sat_solver),
        baselines={b.name: baseline_figures(b, res) for b in runs},
        instances=plan_instances,
        timeline=timeline_records([i.name for i in instances], ev, res),
        edges=tuple(sorted(ev.edges)),
        warnings=tuple(warnings + problem.warnings),
    )
    return PlanResult(plan, problem, result, runs, best)
