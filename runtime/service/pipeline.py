"""Pipelines (``schema: hxsched.pipeline/1``): which models, how slices are prepared and read
back, where they come from and go to, and the plan that runs them; typed records checked on load."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hxsched.codec import decode, encode, meta
from hxsched.errors import HxschedError, SchemaError
from hxsched.runtime.service.imaging import Window
from hxsched.runtime.service.roles import Role, role_handler, roles_with
from hxsched.runtime.validate.limits import ValidateLimits
from hxsched.scheduler.planning.plan import Plan
from hxsched.scheduler.types import Objective

SCHEMA = "hxsched.pipeline/1"
log = logging.getLogger("hxsched.service")

__all__ = [
    "SCHEMA",
    "Backend",
    "Pipeline",
    "PipelineModel",
    "Accept",
    "Limits",
    "PacsSink",
    "Role",
    "Sinks",
    "Source",
    "SourceKind",
    "Window",
    "load_pipeline",
    "model_files",
    "pipeline_from_dict",
    "plan_for_pipeline",
    "shipped_pipelines",
]


class Backend(str, enum.Enum):
    """What runs the plan: ONNX Runtime (any machine), TensorRT (Jetson), the simulator."""

    ORT = "ort"
    SIM = "sim"
    TRT = "trt"

    def __str__(self) -> str:
        return self.value


class SourceKind(str, enum.Enum):
    FOLDER = "folder"  # DICOM/PNG/TIFF files dropped into a folder
    SCP = "scp"  # DICOM C-STORE
    PHANTOM = "phantom"  # synthetic head phantom slices

    def __str__(self) -> str:
        return self.value


# Model settings that belong to a role; each role names those it reads and their defaults.
ROLE_SETTINGS: tuple[str, ...] = ("window", "size", "channels", "conf", "iou", "max_det")
ROLE_SETTINGS += ("classes", "series_description")
# Source settings by kind, with their defaults.
SOURCE_SETTINGS: dict[SourceKind, dict[str, Any]] = {
    SourceKind.FOLDER: {"path": None, "stable_s": 1.0},
    SourceKind.SCP: {
        "port": 11112,
        "ae_title": "HXSCHED",
        "calling_ae_titles": None,  # None: any calling AE title (a warning at start)
        "max_associations": 8,
        "idle_timeout_s": 30.0,
        "max_pdu": 131072,  # see ScpSettings.max_pdu
    },
    SourceKind.PHANTOM: {"count": 100, "interval_ms": 0.0},
}


def _known_device(name: str) -> str | None:
    from hxsched.scheduler.cost.devices import DEVICES

    if name in DEVICES or name == "cpu":
        return None
    return f"expected a known device ({', '.join(DEVICES)}, cpu)"


def _settle(record: Any, keys: tuple[str, ...], defaults: dict[str, Any], owner: str, who) -> None:
    """Refuse a setting ``record``'s kind does not read; fill the defaults of those it does."""
    for key in keys:
        value = getattr(record, key)
        if key not in defaults:
            if value is not None:
                raise SchemaError(f"not a setting of a {owner} (only of {who(key)})", key=key)
        elif value is None and defaults[key] is not None:
            object.__setattr__(record, key, defaults[key])  # frozen: set once, while built


@dataclass(frozen=True)
class PipelineModel:
    name: str
    role: Role
    zoo: str | None = None
    path: str | None = None
    seed: int = 0
    rewrite: bool = False  # the exact DLA rewrite (ConvTranspose p=1 -> p=0 + crop)
    instances: int = field(default=1, metadata=meta(ge=1))
    # role settings: None means the role's default (roles/synth.py, roles/detect.py)
    window: Window | None = None  # CT window before the model's normalisation
    size: int | None = field(default=None, metadata=meta(ge=32, le=4096))
    channels: Literal[1, 3] | None = None
    conf: float | None = field(default=None, metadata=meta(gt=0.0, le=1.0))
    iou: float | None = field(default=None, metadata=meta(ge=0.0, le=1.0))
    max_det: int | None = field(default=None, metadata=meta(ge=1))
    classes: tuple[str, ...] | None = None
    series_description: str | None = None

    def __post_init__(self) -> None:
        if (self.zoo is None) == (self.path is None):
            raise SchemaError("give exactly one of 'zoo' or 'path'")
        defaults = dict(role_handler(self.role).settings)
        _settle(self, ROLE_SETTINGS, defaults, f"{self.role} model", _roles_reading)


def _roles_reading(key: str) -> str:
    return " and ".join(f"{r} models" for r in roles_with(key))


def _ae_title(value: str) -> str | None:
    """An AE title: 1-16 characters of the default character repertoire, no backslash (PS3.5)."""
    text = value.strip()
    if not 0 < len(text) <= 16 or "\\" in text or not all(32 <= ord(c) < 127 for c in text):
        return "expected an AE title (1-16 printable ASCII characters, no backslash)"
    return None


def _ae_titles(values: tuple[str, ...]) -> str | None:
    if not values:
        return "expected at least one AE title (leave the setting out to accept any sender)"
    return next(filter(None, map(_ae_title, values)), None)


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    path: str | None = None  # folder (default: inbox, or --input), relative to the pipeline file
    # a file is taken once unchanged (size and mtime) for this long and not open for writing;
    # writers that cannot promise that write "name.part" (or ".name") and rename it when done
    stable_s: float | None = field(default=None, metadata=meta(ge=0.0, le=3600.0))
    port: int | None = field(default=None, metadata=meta(ge=0, le=65535))
    ae_title: str | None = field(default=None, metadata=meta(check=_ae_title))  # the called AE
    calling_ae_titles: tuple[str, ...] | None = field(  # the senders allowed (None: any)
        default=None, metadata=meta(check=_ae_titles)
    )
    max_associations: int | None = field(default=None, metadata=meta(ge=1, le=1024))
    idle_timeout_s: float | None = field(default=None, metadata=meta(gt=0.0, le=3600.0))
    max_pdu: int | None = field(default=None, metadata=meta(ge=4096, le=1 << 24))
    count: int | None = field(default=None, metadata=meta(ge=0))
    interval_ms: float | None = field(default=None, metadata=meta(ge=0.0))

    def __post_init__(self) -> None:
        defaults = SOURCE_SETTINGS[self.kind]
        keys = tuple(k for settings in SOURCE_SETTINGS.values() for k in settings)
        _settle(self, keys, defaults, f"{self.kind} source", _kinds_reading)


def _kinds_reading(key: str) -> str:
    return " and ".join(f"{k} sources" for k, s in SOURCE_SETTINGS.items() if key in s)


@dataclass(frozen=True)
class PacsSink:
    """Results sent back by C-STORE (Secondary Capture; findings as a Basic Text SR) from a
    durable outbound queue: retried with back-off while the destination is down."""

    host: str
    port: int = field(metadata=meta(ge=1, le=65535))
    ae_title: str = field(metadata=meta(check=_ae_title))  # the destination's (called) AE
    calling_ae_title: str = field(default="HXSCHED", metadata=meta(check=_ae_title))
    findings: bool = True  # the detections as a Basic Text SR, besides the images
    timeout_s: float = field(default=10.0, metadata=meta(gt=0.0, le=600.0))
    retry_initial_s: float = field(default=1.0, metadata=meta(gt=0.0, le=3600.0))
    retry_max_s: float = field(default=60.0, metadata=meta(gt=0.0, le=86400.0))


@dataclass(frozen=True)
class Sinks:
    dicom: bool = True  # synthetic images as DICOM Secondary Capture
    detections: bool = True  # JSON per slice and detector
    previews: bool = True  # CT | synthetic image PNG with boxes
    # previews are for people: at most one per this many seconds (0: every slice); the status
    # page always shows the latest one made
    preview_every_s: float = field(default=1.0, metadata=meta(ge=0.0, le=3600.0))
    pacs: PacsSink | None = None  # C-STORE the results to a PACS (None: files only)


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class Accept:
    """What the pipeline's models take; any other slice is refused with what it was."""

    modalities: tuple[str, ...] = ("CT",)
    sop_classes: tuple[str, ...] = (CT_IMAGE_STORAGE,)
    photometric: tuple[str, ...] = ("MONOCHROME1", "MONOCHROME2")
    images: bool = True  # PNG and TIFF files (no DICOM header: no modality to check)


@dataclass(frozen=True)
class Limits:
    """Bounds on what an input may make the service allocate, checked before the allocation
    (from the header's rows, columns, frames and bits; a deflated dataset's inflated length)."""

    max_side: int = field(default=4096, metadata=meta(ge=32, le=65535))
    max_pixels: int = field(default=4096 * 4096, metadata=meta(ge=1024))  # x frames x samples
    max_frames: int = field(default=1, metadata=meta(ge=1, le=4096))
    max_inflated_bytes: int = field(default=256 << 20, metadata=meta(ge=1 << 20))
    # each host worker process's data segment (RLIMIT_DATA: heap and private mappings), MiB;
    # 0: unlimited. Measured: ~300 MiB after 512x512 slices, a peak of ~700 MiB at 4096x4096
    worker_memory_mib: int = field(default=3072, metadata=meta(ge=0))
    # a slice whose host work takes longer than this kills its worker: quarantined decode-limit
    decode_timeout_s: float = field(default=20.0, metadata=meta(gt=0.0, le=3600.0))


@dataclass(frozen=True)
class Pipeline:
    schema: Literal["hxsched.pipeline/1"]
    name: str
    models: tuple[PipelineModel, ...]
    device: str = field(default="orin-agx", metadata=meta(check=_known_device))
    backend: Backend = Backend.ORT
    objective: Objective = Objective.THROUGHPUT
    max_switches: int = field(default=1, metadata=meta(ge=0))
    sources: tuple[Source, ...] = ()
    sinks: Sinks = Sinks()
    plan: str | None = None  # a plan file; None: plan on start
    queue: int = field(default=64, metadata=meta(ge=1))  # slices waiting before back-pressure
    max_bytes: int = field(default=64 << 20, metadata=meta(ge=1))  # a file or C-STORE dataset
    accept: Accept = Accept()
    limits: Limits = Limits()
    # host worker processes (read, window, letterbox, decode, encode, write); None: one per
    # core; 0: all in the service's own process
    workers: int | None = field(default=None, metadata=meta(ge=0, le=256))
    validate: ValidateLimits = ValidateLimits()  # tolerances of `hxsched validate`
    path: str | None = field(default=None, init=False, compare=False)  # the file it came from

    def __post_init__(self) -> None:
        if not self.models:
            raise SchemaError("name at least one model", key="models")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise SchemaError(f"names must be unique ({', '.join(names)})", key="models")

    def model(self, name: str) -> PipelineModel:
        return next(m for m in self.models if m.name == name)

    def digest(self) -> str:
        """What the plan depends on (not sources, sinks or the queue): the plan cache's key."""
        keep = {
            k: v
            for k, v in encode(self).items()
            if k not in ("sources", "sinks", "queue", "workers", "accept", "limits", "max_bytes")
        }
        keep["model_keys"] = [_model_key(m) for m in self.models]
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _beside(path: str, name: str | None) -> str | None:
    """A relative file name in a pipeline, relative to the pipeline file."""
    if not name or os.path.isabs(name):
        return name
    return str(Path(path).parent / name)


def pipeline_from_dict(data: Any, path: str = "<pipeline>") -> Pipeline:
    """A pipeline from parsed YAML; a SchemaError naming ``path`` and the key otherwise."""
    pipe = decode(Pipeline, data, path=path)
    models = tuple(dataclasses.replace(m, path=_beside(path, m.path)) for m in pipe.models)
    sources = tuple(dataclasses.replace(s, path=_beside(path, s.path)) for s in pipe.sources)
    pipe = dataclasses.replace(pipe, models=models, sources=sources, plan=_beside(path, pipe.plan))
    object.__setattr__(pipe, "path", path)
    return pipe


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
    from hxsched.scheduler.zoo import REVISION

    parts: list[Any] = [m.zoo, m.seed, m.rewrite, m.path]
    if m.zoo:
        parts.append(REVISION)  # a changed zoo builder gives a new file (and a new recording)
    if m.path:
        try:
            st = os.stat(m.path)
            parts += [st.st_size, st.st_mtime_ns]
        except OSError:
            parts.append("missing")
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def _progress(msg: str, **fields: Any) -> None:
    log.info(msg, extra={"fields": fields})


def model_files(pipe: Pipeline, work: Path) -> dict[str, Path]:
    """Each model as an ONNX file: the zoo's generated (cached in ``work``) or the user's;
    rewritten for the DLA where asked (and verified exact on ONNX Runtime)."""
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for m in pipe.models:
        target = work / f"{m.name}{'_dla' if m.rewrite else ''}-{_model_key(m)}.onnx"
        if not target.exists():
            _make_model_file(pipe, m, target)
        out[m.name] = target
    return out


def _make_model_file(pipe: Pipeline, m: PipelineModel, target: Path) -> None:
    from hxsched.scheduler.graph.onnx_io import graph_from_proto, load_model, save_model
    from hxsched.scheduler.zoo import build_zoo_model

    if m.zoo:
        _progress("generating a zoo model", zoo=m.zoo, seed=m.seed, model=m.name)
        graph = graph_from_proto(build_zoo_model(m.zoo, seed=m.seed))
    else:
        assert m.path is not None  # PipelineModel: exactly one of zoo and path
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


def plan_for_pipeline(pipe: Pipeline, work: Path | None = None) -> Plan:
    """The pipeline's plan: the named file, or one made on start for its device (cached by
    the pipeline's content, so a restart reuses it)."""
    from hxsched.scheduler.planning.plan import load_plan, save_plan

    if pipe.plan:
        return load_plan(pipe.plan)
    work = work or Path(os.environ.get("HXSCHED_WORK", ".hxsched-work")) / pipe.name
    cached = work / f"plan-{pipe.digest()}.yaml"
    if cached.exists():
        return load_plan(cached)
    from hxsched.scheduler.planning.planner import make_plan

    inputs = _plan_inputs(pipe, model_files(pipe, work / "models"))
    n = sum(m.instances for m in pipe.models)
    _progress("planning", instances=n, device=pipe.device)
    plan = make_plan(
        inputs,
        pipe.device,
        objective=pipe.objective,
        max_switches=pipe.max_switches,
        time_limit_s=30.0,
    ).plan
    tmp = cached.with_suffix(".yaml.tmp")
    save_plan(plan, tmp)
    os.replace(tmp, cached)  # a crash mid-write never leaves a broken cached plan
    return plan.with_path(cached)


def _plan_inputs(pipe: Pipeline, files: dict[str, Path]) -> list[Any]:
    from hxsched.scheduler.cost.estimate import estimate_profile
    from hxsched.scheduler.graph.onnx_io import load_model
    from hxsched.scheduler.graph.summary import ModelSummary
    from hxsched.scheduler.planning.planner import ModelInput
    from hxsched.scheduler.profile.bind import bind_profile
    from hxsched.scheduler.profile.store import find_profile

    inputs = []
    for m in pipe.models:
        graph = load_model(files[m.name])
        summary = ModelSummary.of(graph)
        prof = find_profile(pipe.device, summary.structural_hash)
        how = "shipped"
        if prof is not None:  # a user's export may name its nodes otherwise, or fold its BNs
            prof = bind_profile(summary, prof, prof.path or "")
        else:
            _progress("no shipped profile: estimating one", model=m.name, device=pipe.device)
            prof = estimate_profile(graph, pipe.device, model_name=m.name)
            how = "estimated on the fly"
        inputs.append(
            ModelInput(m.name, prof, how, graph, str(files[m.name].resolve()), m.instances)
        )
    return inputs
