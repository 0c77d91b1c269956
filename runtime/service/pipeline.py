"""Pipelines (``schema: hxsched.pipeline/1``): which models, how slices are prepared and read
back, where they come from and go to, and the plan that runs them. Validated on load."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hxsched.errors import HxschedError
from hxsched.scheduler.planning.plan import Plan

SCHEMA = "hxsched.pipeline/1"
ROLES = ("synth", "detect")
WINDOWS = ("brain", "stroke", "bone", "soft")
SOURCE_KINDS = ("folder", "scp", "phantom")


@dataclass(frozen=True)
class PipelineModel:
    name: str
    role: str  # "synth" (Pix2Pix: CT -> synthetic MRI) or "detect" (YOLOv8: stroke screening)
    zoo: str | None = None
    path: str | None = None
    seed: int = 0
    rewrite: bool = False  # the exact DLA rewrite (ConvTranspose p=1 -> p=0 + crop)
    instances: int = 1
    window: str = "brain"
    size: int = 256
    channels: int = 3
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 100
    classes: tuple[str, ...] = ()
    series_description: str = ""


@dataclass(frozen=True)
class Source:
    kind: str
    path: str | None = None
    port: int = 11112
    ae_title: str = "HXSCHED"
    count: int = 100
    interval_ms: float = 0.0


@dataclass
class Pipeline:
    name: str
    device: str
    backend: str
    objective: str
    max_switches: int
    models: list[PipelineModel]
    sources: list[Source]
    sinks: dict[str, bool]
    plan: str | None = None  # a plan file; None: plan on start
    queue: int = 64  # slices waiting in the journal before sources are held back
    max_bytes: int = 64 << 20
    path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        keep = {k: v for k, v in self.raw.items() if k not in ("sources", "sinks", "queue")}
        keep["model_keys"] = [_model_key(m) for m in self.models]
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _need(d: dict, key: str, kind: type | tuple, where: str, path: str, default: Any = ...) -> Any:
    if key not in d:
        if default is ...:
            raise HxschedError(f"{where}: missing key {key!r}", path=path)
        return default
    value = d[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise HxschedError(f"{where}.{key}: expected {want}, got {value!r}", path=path)
    return value


def _choice(value: Any, choices: tuple, where: str, path: str) -> Any:
    if value not in choices:
        raise HxschedError(
            f"{where}: {value!r} is not one of {', '.join(map(str, choices))}", path=path
        )
    return value


def _check_model_numbers(m: dict, where: str, path: str) -> None:
    checks = {
        "size": (lambda v: isinstance(v, int) and 32 <= v <= 4096, "an integer 32..4096"),
        "channels": (lambda v: v in (1, 3), "1 or 3"),
        "conf": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a number 0..1"),
        "iou": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a number 0..1"),
        "max_det": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    }
    for key, (ok, want) in checks.items():
        if key in m and (isinstance(m[key], bool) or not ok(m[key])):
            raise HxschedError(f"{where}.{key}: expected {want}, got {m[key]!r}", path=path)


def pipeline_from_dict(data: Any, path: str = "<pipeline>") -> Pipeline:
    if not isinstance(data, dict):
        raise HxschedError("a pipeline is a YAML mapping", path=path)
    if data.get("schema") != SCHEMA:
        raise HxschedError(f"schema: expected {SCHEMA!r}, got {data.get('schema')!r}", path=path)
    models = []
    raw_models = _need(data, "models", list, "pipeline", path)
    if not raw_models:
        raise HxschedError("models: name at least one model", path=path)
    for k, m in enumerate(raw_models):
        where = f"models[{k}]"
        if not isinstance(m, dict):
            raise HxschedError(f"{where}: expected a mapping", path=path)
        zoo, mpath = m.get("zoo"), m.get("path")
        if (zoo is None) == (mpath is None):
            raise HxschedError(f"{where}: give exactly one of 'zoo' or 'path'", path=path)
        if not isinstance(zoo if zoo is not None else mpath, str):
            key = "zoo" if zoo is not None else "path"
            raise HxschedError(f"{where}.{key}: expected str, got {(zoo or mpath)!r}", path=path)
        role = _choice(_need(m, "role", str, where, path), ROLES, f"{where}.role", path)
        window = _choice(
            m.get("window", "brain" if role == "synth" else "stroke"),
            WINDOWS,
            f"{where}.window",
            path,
        )
        instances = _need(m, "instances", int, where, path, 1)
        if instances < 1:
            raise HxschedError(f"{where}.instances: at least 1", path=path)
        _check_model_numbers(m, where, path)
        models.append(
            PipelineModel(
                name=_need(m, "name", str, where, path),
                role=role,
                zoo=zoo,
                path=str(Path(path).parent / mpath)
                if mpath and not os.path.isabs(mpath)
                else mpath,
                seed=_need(m, "seed", int, where, path, 0),
                rewrite=_need(m, "rewrite", bool, where, path, False),
                instances=instances,
                window=window,
                size=_need(m, "size", int, where, path, 256 if role == "synth" else 640),
                channels=_need(m, "channels", int, where, path, 3),
                conf=_need(m, "conf", float, where, path, 0.25),
                iou=_need(m, "iou", float, where, path, 0.45),
                max_det=_need(m, "max_det", int, where, path, 100),
                classes=tuple(_need(m, "classes", list, where, path, [])),
                series_description=_need(m, "series_description", str, where, path, ""),
            )
        )
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise HxschedError(f"models: names must be unique ({names})", path=path)
    sources = []
    for k, s in enumerate(_need(data, "sources", list, "pipeline", path, [])):
        where = f"sources[{k}]"
        if not isinstance(s, dict):
            raise HxschedError(f"{where}: expected a mapping", path=path)
        kind = _choice(s.get("kind"), SOURCE_KINDS, f"{where}.kind", path)
        port = s.get("port", 11112)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise HxschedError(f"{where}.port: expected a port 0..65535, got {port!r}", path=path)
        sources.append(
            Source(
                kind=kind,
                path=_need(s, "path", str, where, path, None) if kind == "folder" else None,
                port=_need(s, "port", int, where, path, 11112),
                ae_title=_need(s, "ae_title", str, where, path, "HXSCHED"),
                count=_need(s, "count", int, where, path, 100),
                interval_ms=_need(s, "interval_ms", float, where, path, 0.0),
            )
        )
    sinks = _need(data, "sinks", dict, "pipeline", path, {})
    for key, value in sinks.items():
        _choice(key, ("dicom", "detections", "previews"), f"sinks.{key}", path)
        if not isinstance(value, bool):
            raise HxschedError(f"sinks.{key}: expected true or false, got {value!r}", path=path)
    plan = data.get("plan")
    if plan is not None and not isinstance(plan, str):
        raise HxschedError(f"plan: expected a file name or null, got {plan!r}", path=path)
    if plan and not os.path.isabs(plan):
        plan = str(Path(path).parent / plan)
    backend = _choice(data.get("backend", "ort"), ("ort", "sim", "trt"), "backend", path)
    return Pipeline(
        name=_need(data, "name", str, "pipeline", path),
        device=_need(data, "device", str, "pipeline", path, "orin-agx"),
        backend=backend,
        objective=_choice(
            data.get("objective", "throughput"), ("throughput", "latency"), "objective", path
        ),
        max_switches=_need(data, "max_switches", int, "pipeline", path, 1),
        models=models,
        sources=sources,
        sinks={"dicom": True, "detections": True, "previews": True, **sinks},
        plan=plan,
        queue=_positive(data, "queue", 64, path),
        max_bytes=_positive(data, "max_bytes", 64 << 20, path),
        path=path,
        raw=data,
    )


def _positive(data: dict, key: str, default: int, path: str) -> int:
    value = _need(data, key, int, "pipeline", path, default)
    if value < 1:
        raise HxschedError(f"pipeline.{key}: expected at least 1, got {value}", path=path)
    return value


def load_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    from hxsched.files import read_yaml

    path = str(path)
    return pipeline_from_dict(read_yaml(path, "pipeline file"), path)


def shipped_pipelines() -> Path:
    """The pipelines/ folder of this checkout or installation."""
    here = Path(__file__).resolve()
    for base in (here.parents[2] / "pipelines", here.parents[1] / "pipelines_data"):
        if base.is_dir():
            return base
    return here.parents[2] / "pipelines"


def _model_key(m: PipelineModel) -> str:
    """What the generated/rewritten model depends on (a changed file gives a new key)."""
    parts: list[Any] = [m.zoo, m.seed, m.rewrite, m.path]
    if m.path:
        try:
            st = os.stat(m.path)
            parts += [st.st_size, st.st_mtime_ns]
        except OSError:
            parts.append("missing")
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def model_files(
    pipe: Pipeline, work: Path, say: Callable[[str], None] | None = None
) -> dict[str, Path]:
    """Each model as an ONNX file: the zoo's generated (cached in ``work``) or the user's;
    rewritten for the DLA where asked (and verified exact on ONNX Runtime)."""
    from hxsched.scheduler.graph.onnx_io import graph_from_proto, load_model, save_model
    from hxsched.scheduler.zoo import build_zoo_model

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for m in pipe.models:
        target = work / f"{m.name}{'_dla' if m.rewrite else ''}-{_model_key(m)}.onnx"
        if target.exists():
            out[m.name] = target
            continue
        if m.zoo:
            if say:
                say(f"generating zoo model {m.zoo} (seed {m.seed}) for {m.name}")
            graph = graph_from_proto(build_zoo_model(m.zoo, seed=m.seed))
        else:
            graph = load_model(m.path)
        if m.rewrite:
            from hxsched.runtime.reference import compare_graphs
            from hxsched.scheduler.dla.rewrite import rewrite_for_dla

            original = graph.copy()
            rewrite_for_dla(graph)
            check = compare_graphs(original, graph, samples=1)
            if not check.passed:
                raise HxschedError(
                    f"the DLA rewrite of {m.name} is not exact (max |diff| {check.worst:.2e})",
                    path=pipe.path,
                )
        save_model(graph, target)
        out[m.name] = target
    return out


def plan_for_pipeline(
    pipe: Pipeline, work: Path | None = None, say: Callable[[str], None] | None = None
) -> Plan:
    """The pipeline's plan: the named file, or one made on start for its device (cached by
    the pipeline's content, so a restart reuses it)."""
    from hxsched.scheduler.planning.plan import load_plan, save_plan

    if pipe.plan:
        return load_plan(pipe.plan)
    work = work or Path(os.environ.get("HXSCHED_WORK", ".hxsched-work")) / pipe.name
    cached = work / f"plan-{pipe.digest()}.yaml"
    if cached.exists():
        return load_plan(cached)
    files = model_files(pipe, work / "models", say)
    from hxsched.scheduler.cost.estimate import estimate_profile
    from hxsched.scheduler.graph.onnx_io import load_model
    from hxsched.scheduler.graph.structure import structural_hash
    from hxsched.scheduler.planning.planner import ModelInput, make_plan
    from hxsched.scheduler.profile.store import find_profile

    inputs = []
    for m in pipe.models:
        graph = load_model(files[m.name])
        prof = find_profile(pipe.device, structural_hash(graph))
        how = "shipped"
        if prof is None:
            if say:
                say(f"no profile of {m.name} for {pipe.device}: estimating one")
            prof, how = (
                estimate_profile(graph, pipe.device, model_name=m.name),
                "estimated on the fly",
            )
        inputs.append(
            ModelInput(m.name, prof, how, graph, str(files[m.name].resolve()), m.instances)
        )
    if say:
        say(f"planning {sum(m.instances for m in pipe.models)} instance(s) for {pipe.device}")
    plan, _ = make_plan(
        inputs,
        pipe.device,
        objective=pipe.objective,
        max_switches=pipe.max_switches,
        time_limit_s=30.0,
    )
    tmp = cached.with_suffix(".yaml.tmp")
    save_plan(plan, tmp)
    os.replace(tmp, cached)  # a crash mid-write never leaves a broken cached plan
    plan.path = str(cached)
    return plan
