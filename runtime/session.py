"""A run of a plan, as ``hxsched run`` and the service start it: load the plan, cut the
segments, pick the backend, feed frames, compare with the prediction, verify, re-plan."""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hxsched.errors import HxschedError
from hxsched.runtime.backends.trt.fallback import FallbackEvent
from hxsched.runtime.build import InstanceSpec, plan_instance_specs
from hxsched.runtime.executor import Executor, FrameResult, RunStats
from hxsched.scheduler.planning.plan import Plan

log = logging.getLogger(__name__)

BACKENDS = ("ort", "sim", "trt")


def make_backend(name: str, **opts: Any):
    """A backend by name; options a backend does not take are ignored (``plan``: the plan it
    will run; ort takes the thread count its measured profiles were timed with)."""
    if name == "sim":
        from hxsched.runtime.backends.sim import SimBackend

        return SimBackend(
            real_time=opts.get("real_time", False),
            time_scale=opts.get("time_scale", 1.0),
            jitter=opts.get("jitter", 0.0),
            seed=opts.get("seed", 0),
            slowdowns=opts.get("slowdowns", ()),
        )
    if name == "ort":
        from hxsched.runtime.backends.ort import OrtBackend, measured_threads

        return OrtBackend(threads=opts.get("threads") or measured_threads(opts.get("plan")))
    if name == "trt":
        from hxsched.runtime.backends.trt.backend import TrtBackend

        return TrtBackend(
            precision=opts.get("precision", "fp16"),
            allow_gpu_fallback=opts.get("allow_gpu_fallback", False),
            calibration_cache=opts.get("calibration_cache"),
            cache_dir=opts.get("engine_cache"),
        )
    raise HxschedError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")


def specs_for(
    plan: Plan, backend: str, shapes: dict[str, tuple[int, ...]] | None = None
) -> list[InstanceSpec]:
    """The plan's segments for ``backend`` (models loaded with ``shapes`` fixed, except on sim)."""
    if not shapes:
        return plan_instance_specs(plan, with_models=backend != "sim")
    from hxsched.scheduler.graph.onnx_io import load_model

    fixed = dict(shapes)
    return plan_instance_specs(
        plan, with_models=backend != "sim", load=lambda path: load_model(path, fixed)
    )


def instance_profile(plan: Plan, inst, shapes: dict[str, tuple[int, ...]] | None = None):
    """The profile ``inst`` was planned with: its file, or (a profile estimated on the fly)
    the same estimate again from its model, for the plan's device."""
    from hxsched.scheduler.profile.schema import load_profile

    shapes = shapes or inst.shapes  # as planned, unless told others
    if inst.profile.path and Path(inst.profile.path).exists():
        prof = load_profile(inst.profile.path)
        if not inst.model_path:
            return prof
        from hxsched.runtime.build import resolve_model_path
        from hxsched.scheduler.graph.summary import summarize
        from hxsched.scheduler.profile.bind import bind_profile

        # its groups as the planned model names them (another export may name them otherwise)
        try:
            summary, _ = summarize(resolve_model_path(inst, plan.path), dict(shapes or {}))
            return bind_profile(summary, prof, inst.profile.path)
        except HxschedError:  # model gone or changed: the profile as planned (sim still runs)
            return prof
    if inst.model_path:
        from hxsched.runtime.build import resolve_model_path
        from hxsched.scheduler.cost.estimate import estimate_profile
        from hxsched.scheduler.graph.onnx_io import load_model

        if plan.device != "cpu":
            graph = load_model(resolve_model_path(inst, plan.path), dict(shapes or {}))
            return estimate_profile(graph, plan.device, model_name=inst.model)
    raise HxschedError(
        f"instance {inst.name} names no profile file (or it is gone) and no model to estimate "
        "one from",
        path=plan.path,
    )


def input_pool(specs: Sequence[InstanceSpec], size: int = 3, seed: int = 0) -> list[dict]:
    """A few seeded input sets (one per frame, cycled): random normal floats per model input."""
    from hxsched.runtime.reference import random_inputs

    if not specs or specs[0].graph is None:
        return [{} for _ in range(size)]
    return [
        {i.name: random_inputs(i.graph, seed + k) for i in specs if i.graph is not None}
        for k in range(size)
    ]


def measures_plan_device(plan: Plan, backend: str) -> bool:
    """Whether ``backend`` measures the device the plan's figures are for: sim (the plan's own
    times), trt on a Jetson plan, ort on a plan for ``--device cpu``."""
    if backend == "sim":
        return True
    return (backend == "ort") == (plan.device == "cpu")


def predicted_from_measured(stats: RunStats) -> float | None:
    """The period the plan's assignment gives with this run's measured segment times: the
    busiest accelerator's sum of median segment times (ms)."""
    per: dict[str, float] = {}
    for seg in stats.segments.values():
        if seg.samples:
            per[seg.accelerator] = per.get(seg.accelerator, 0.0) + statistics.median(seg.samples)
    return max(per.values()) if per else None


def comparison(
    plan: Plan, stats: RunStats, backend: str, time_scale: float = 1.0
) -> dict[str, Any]:
    """Achieved vs predicted; the plan's prediction only applies on its own device (sim or trt
    there); elsewhere the prediction from this run's own segment times is the yardstick."""
    out: dict[str, Any] = {
        "plan_device": plan.device,
        "plan_fps": plan.predicted.fps,
        "plan_period_ms": plan.predicted.period_ms,
        "plan_source": plan.predicted.source,
    }
    if measures_plan_device(plan, backend) and plan.predicted.fps:
        # sim runs the plan's times stretched by its time scale; trt is compared as is (on the
        # plan's own device the ratio means what it says, elsewhere it is only indicative)
        out["achieved_over_plan"] = round(stats.steady_fps * time_scale / plan.predicted.fps, 4)
        if plan.predicted.latency_ms:
            out["plan_latency_ms"] = plan.predicted.latency_ms
            out["latency_p50_over_plan"] = round(
                stats.latency_ms["p50"] / time_scale / plan.predicted.latency_ms, 4
            )
        if time_scale != 1.0:
            out["time_scale"] = time_scale
    period = predicted_from_measured(stats)
    if period:
        out["measured_segments_period_ms"] = round(period, 4)
        out["measured_segments_fps"] = round(1000.0 / period, 3)
        out["achieved_over_measured_segments"] = round(stats.steady_fps * period / 1000.0, 4)
    return out


def verify_outputs(specs: Sequence[InstanceSpec], results: Sequence[FrameResult]) -> dict:
    """Each whole model on ONNX Runtime for the same inputs: max |difference| per output."""
    from hxsched.runtime.reference import OrtModel

    report: dict[str, dict[str, float]] = {}
    for inst in specs:
        if inst.graph is None:
            raise HxschedError("--verify needs the models (not available on sim)")
        model = OrtModel(inst.graph)
        try:
            for r in results:
                ref = model.run(r.inputs[inst.name])
                got = r.outputs.get(inst.name, {})
                for name, value in ref.items():
                    if name not in got:
                        raise HxschedError(f"{inst.name}: the pipeline lost output {name!r}")
                    diff = float(np.max(np.abs(value.astype(np.float64) - got[name])))
                    key = report.setdefault(inst.name, {})
                    key[name] = max(key.get(name, 0.0), diff)
        finally:
            model.close()
    return report


def replan(
    plan: Plan,
    stats: RunStats,
    *,
    time_limit_s: float = 30.0,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[Plan, dict]:
    """Re-plan with the measured times: each drifted segment's groups scaled on its
    accelerator kind by measured/expected (from the run), everything else as planned."""
    from hxsched.scheduler.planning.planner import ModelInput, make_plan
    from hxsched.scheduler.planning.problem import kind_of

    drifted = {e.segment for e in stats.fallback_events if e.source == "runtime-drift"}
    if not drifted:
        raise HxschedError("nothing to re-plan: no segment drifted")
    models: dict[str, dict] = {}
    scale: dict[str, dict[tuple[int, str], float]] = {}
    for inst in plan.instances:
        if inst.model not in models:
            try:
                prof = instance_profile(plan, inst, shapes)
            except HxschedError as exc:
                raise HxschedError(f"cannot re-plan: {exc}") from None
            models[inst.model] = {
                "profile": prof,
                "count": 0,
                "model_path": inst.model_path,
                "shapes": dict(shapes or inst.shapes or {}) or None,
            }
        entry = models[inst.model]
        entry["count"] += 1
        for k, seg in enumerate(inst.segments):
            name = f"{inst.name}/s{k}"
            st = stats.segments.get(name)
            if name in drifted and st and st.samples and st.expected_ms > 0:
                recent = list(st.samples)
                tail = recent[-max(10, len(recent) // 4) :]
                ratio = statistics.median(tail) / st.expected_ms
                for g in range(seg.first_group, seg.last_group + 1):
                    key = (g, kind_of(seg.accelerator))
                    per = scale.setdefault(inst.model, {})
                    per[key] = max(per.get(key, 1.0), ratio)
    inputs = []
    for model, entry in models.items():
        prof = entry["profile"]
        factors = scale.get(model, {})
        groups = tuple(
            dataclasses.replace(
                g, time_ms={k: v * factors.get((g.id, k), 1.0) for k, v in g.time_ms.items()}
            )
            if any(gid == g.id for gid, _ in factors)
            else g
            for g in prof.groups
        )
        prof = dataclasses.replace(prof, groups=groups)
        inputs.append(
            ModelInput(
                model,
                prof,
                "re-planned from measured drift",
                None,
                entry["model_path"],
                entry["count"],
                entry["shapes"],
            )
        )
    new = make_plan(
        inputs,
        plan.device,
        objective=plan.objective,
        max_switches=plan.max_switches,
        resolution_ms=plan.resolution_ms,
        contention=plan.contention is not None,
        time_limit_s=time_limit_s,
        accelerators=plan.accelerators,
    ).plan
    how = "re-planned: drifted groups scaled by measured/expected"
    new = dataclasses.replace(
        new,
        instances=tuple(
            dataclasses.replace(
                n, profile=dataclasses.replace(n.profile, path=o.profile.path, how=how)
            )
            for o, n in zip(plan.instances, new.instances, strict=True)
        ),
    )
    changed = [
        o.describe() != n.describe() for o, n in zip(plan.instances, new.instances, strict=True)
    ]
    return new, {
        "drifted": sorted(drifted),
        "scaled_groups": {m: len(v) for m, v in scale.items()},
        "assignment_changed": any(changed),
        "achieved_period_ms_before": round(1000.0 / stats.steady_fps, 4)
        if stats.steady_fps
        else None,
    }


def run_plan(
    plan: Plan,
    backend_name: str,
    *,
    frames: int,
    inflight: int | None = None,
    verify: int = 0,
    backend_opts: dict[str, Any] | None = None,
    drift_threshold: float = 1.3,
    drift_sustain: int = 20,
    on_event: Callable[[FallbackEvent], None] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[RunStats, dict[str, Any]]:
    """Run ``frames`` frames of seeded inputs through ``plan``; the stats and a report."""
    if frames < 1:
        raise HxschedError("--frames must be at least 1")
    backend = make_backend(backend_name, **{"plan": plan, **(backend_opts or {})})
    specs = specs_for(plan, backend_name, shapes)
    own_device = measures_plan_device(plan, backend_name)
    ex = Executor(
        plan,
        specs,
        backend,
        inflight=inflight,
        drift_threshold=drift_threshold,
        drift_sustain=drift_sustain,
        expected_from_plan=own_device,
        on_event=on_event,
    )
    kept: list[FrameResult] = []

    def keep(r: FrameResult) -> None:
        if len(kept) < verify:
            kept.append(r)

    try:
        ex.prepare()
        pool = input_pool(specs)
        log.info("running %d frames on %s (%d in flight)", frames, backend_name, ex.inflight)
        stats = ex.run((pool[k % len(pool)] for k in range(frames)), on_output=keep)
    finally:
        ex.close()
    scale = float((backend_opts or {}).get("time_scale", 1.0)) if backend_name == "sim" else 1.0
    report: dict[str, Any] = {"comparison": comparison(plan, stats, backend_name, scale)}
    if ex.inflight_note:
        report["notes"] = [ex.inflight_note]
    if getattr(backend, "fallbacks", None):
        report["build_fallbacks"] = [dataclasses.asdict(e) for e in backend.fallbacks]
    if verify:
        report["verify"] = {
            "frames": len(kept),
            "max_abs_diff": verify_outputs(specs, kept),
            "reference": "each whole model on ONNX Runtime CPU, FP32, same inputs",
        }
    return stats, report


def write_plan_beside(plan: Plan, original: str | None, suffix: str) -> Path:
    from hxsched.scheduler.planning.plan import save_plan

    base = Path(original or "plan.yaml")
    return save_plan(plan, base.with_name(base.stem + suffix + base.suffix))
