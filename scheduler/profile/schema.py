"""Profiles (``schema: hxsched.profile/1``): group times per accelerator kind, with provenance.

Typed records decoded with ``hxsched.codec``; cross-field checks raise SchemaError with the key.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hxsched.codec import decode, meta
from hxsched.errors import HxschedError, SchemaError
from hxsched.scheduler.cost.contention import ContentionModel
from hxsched.scheduler.types import AcceleratorKind, Precision, ProvenanceKind

if TYPE_CHECKING:
    from hxsched.scheduler.graph.graph import Graph

SCHEMA = "hxsched.profile/1"
PerKind = dict[AcceleratorKind, float]


def _nonempty(value: str) -> str | None:
    return None if value else "expected a non-empty string"


def _sha256(value: str) -> str | None:
    return None if value.startswith("sha256:") else "expected 'sha256:<hex>'"


def _known_devices() -> list[str]:
    from hxsched.scheduler.cost.devices import DEVICES

    return [*DEVICES, "cpu"]


def _device(value: str) -> str | None:
    known = _known_devices()
    return None if value in known else f"expected one of {', '.join(known)}"


def _per_kind(name: str, values: Mapping[Any, Any]) -> PerKind:
    """``values`` with AcceleratorKind keys and finite non-negative floats (key path on error)."""
    out: PerKind = {}
    for k, v in values.items():
        try:
            kind = AcceleratorKind(k)
        except ValueError:
            raise SchemaError(
                f"expected one of {', '.join(a.value for a in AcceleratorKind)}, got {k!r}",
                key=name,
            ) from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SchemaError(f"expected a number, got {v!r}", key=f"{name}.{kind}")
        if v < 0:
            raise SchemaError(f"expected a number ≥ 0, got {v!r}", key=f"{name}.{kind}")
        out[kind] = float(v)
    return out


def _round(x: float) -> float:
    return float(f"{x:.6g}")


@dataclass(frozen=True)
class Provenance:
    """Where numbers came from: a tool, its versions and the date."""

    kind: ProvenanceKind
    tool: str = field(metadata=meta(check=_nonempty))
    versions: dict[str, str] = field(default_factory=dict)
    date: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ProvenanceKind(self.kind))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "tool": self.tool}
        if self.versions:
            out["versions"] = dict(self.versions)
        if self.date:
            out["date"] = self.date
        if self.notes:
            out["notes"] = self.notes
        return out

    def describe(self) -> str:
        text = f"{self.kind} ({self.tool}"
        if self.date:
            text += f", {self.date}"
        return text + ")"


@dataclass(frozen=True)
class GroupProfile:
    """One layer group: its time on each accelerator kind it can run on (ms)."""

    id: int = field(metadata=meta(ge=0))
    time_ms: PerKind
    dla: bool = True
    name: str = ""
    first: str | None = None
    last: str | None = None
    nodes: int | None = field(default=None, metadata=meta(ge=1))
    flops: float | None = field(default=None, metadata=meta(ge=0))
    bytes: int | None = field(default=None, metadata=meta(ge=0))
    weight_bytes: int | None = field(default=None, metadata=meta(ge=0))
    out_bytes: int | None = field(default=None, metadata=meta(ge=0))
    memory_bw: PerKind = field(default_factory=dict)  # bytes/s pulled from DRAM
    spread_ms: PerKind = field(default_factory=dict)  # measured spread (IQR)
    sources: dict[str, str] = field(default_factory=dict)  # number -> provenance id

    def __post_init__(self) -> None:
        if not self.time_ms:
            raise SchemaError(
                "expected a mapping accelerator -> number, e.g. {gpu: 0.12, dla: 0.3}, got {}",
                key="time_ms",
            )
        for name in ("time_ms", "memory_bw", "spread_ms"):
            object.__setattr__(self, name, _per_kind(name, getattr(self, name)))

    @property
    def label(self) -> str:
        return self.name or f"g{self.id:02d}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.label}
        for key in ("first", "last", "nodes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["dla"] = self.dla
        for key in ("flops", "bytes", "weight_bytes", "out_bytes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["time_ms"] = {str(k): _round(v) for k, v in self.time_ms.items()}
        if self.spread_ms:
            out["spread_ms"] = {str(k): _round(v) for k, v in self.spread_ms.items()}
        if self.memory_bw:
            out["memory_bw"] = {str(k): float(f"{v:.4g}") for k, v in self.memory_bw.items()}
        if self.sources:
            out["sources"] = dict(self.sources)
        return out


@dataclass(frozen=True)
class Transition:
    """Handing the activations after group ``after`` between the GPU and a DLA core (ms)."""

    after: int = field(metadata=meta(ge=0))
    gpu_to_dla_ms: float = field(metadata=meta(ge=0))
    dla_to_gpu_ms: float = field(metadata=meta(ge=0))
    bytes: int | None = field(default=None, metadata=meta(ge=0))
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "after": self.after,
            "gpu_to_dla_ms": _round(self.gpu_to_dla_ms),
            "dla_to_gpu_ms": _round(self.dla_to_gpu_ms),
        }
        if self.bytes is not None:
            out["bytes"] = self.bytes
        if self.source:
            out["source"] = self.source
        return out


@dataclass(frozen=True)
class ModelInfo:
    """The model a profile is for; ``structural_hash`` finds it for other exports."""

    name: str = field(metadata=meta(check=_nonempty))
    structural_hash: str | None = field(default=None, metadata=meta(check=_sha256))
    source: str | None = None
    nodes: int | None = field(default=None, metadata=meta(ge=1))
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # node indices the structural hash's canonical form folds away (BatchNorms): with ``nodes``
    # they place the groups in the canonical order, so another export of the same architecture
    # (folded or not, other node names) can take them (``hxsched.scheduler.profile.bind``)
    folded: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", {k: tuple(v) for k, v in self.inputs.items()})
        object.__setattr__(self, "folded", tuple(sorted(self.folded)))
        # a folded node follows the Conv it folds into: never node 0, never two in a row
        bad = [i for i in self.folded if i < 1 or (self.nodes is not None and i >= self.nodes)]
        bad += [j for i, j in zip(self.folded, self.folded[1:], strict=False) if j <= i + 1]
        if bad:
            within = f" below {self.nodes}" if self.nodes is not None else ""
            raise SchemaError(
                f"expected node indices from 1{within}, none right after another, got {bad[0]}",
                key="folded",
            )

    @classmethod
    def of(cls, graph: Graph, name: str | None = None) -> ModelInfo:
        """What a profile records of the model it was made from."""
        from hxsched.scheduler.graph.structure import canonical, structural_hash

        return cls(
            name=name or graph.name,
            structural_hash=structural_hash(graph),
            source=graph.path,
            nodes=len(graph.nodes),
            inputs={n: tuple(graph.tensors[n].shape or ()) for n in graph.inputs},
            folded=tuple(canonical(graph).folded),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key in ("structural_hash", "source", "nodes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.inputs:
            out["inputs"] = {k: list(v) for k, v in self.inputs.items()}
        if self.folded:
            out["folded"] = list(self.folded)
        return out


@dataclass(frozen=True)
class ProvenanceTable:
    """The file's ``provenance`` block: the sources by id and the default one."""

    default: str
    sources: dict[str, Provenance]


@dataclass(frozen=True)
class ProfileHeader:
    """What finding a profile needs: read without the groups (``read_header``)."""

    schema: Literal["hxsched.profile/1"]
    device: str
    precision: Precision
    model: ModelInfo


@dataclass(frozen=True)
class ProfileFile:
    """A profile file as written: decoded by the codec, then checked as a Profile."""

    schema: Literal["hxsched.profile/1"]
    device: str = field(metadata=meta(check=_device))
    precision: Precision
    model: ModelInfo
    provenance: ProvenanceTable
    groups: tuple[GroupProfile, ...]
    transitions: tuple[Transition, ...] = ()
    whole_model_ms: PerKind = field(default_factory=dict)
    contention: ContentionModel | None = None
    notes: str = ""


@dataclass(frozen=True)
class Profile:
    """Group times of one model on one device, every number with its provenance."""

    device: str
    precision: Precision
    model: ModelInfo
    provenance: dict[str, Provenance]
    default_source: str
    groups: tuple[GroupProfile, ...]
    transitions: tuple[Transition, ...] = ()
    whole_model_ms: PerKind = field(default_factory=dict)
    contention: ContentionModel | None = None  # fitted slowdown model
    notes: str = ""
    path: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision(self.precision))
        object.__setattr__(self, "whole_model_ms", _per_kind("whole_model_ms", self.whole_model_ms))
        if isinstance(self.contention, Mapping):  # an older caller's plain mapping
            model = ContentionModel.from_dict(self.contention) if self.contention else None
            object.__setattr__(self, "contention", model)
        _check_provenance(self)
        _check_groups(self)
        _check_transitions(self)
        ordered = tuple(sorted(self.transitions, key=lambda t: t.after))
        object.__setattr__(self, "transitions", ordered)

    @property
    def accelerators(self) -> list[AcceleratorKind]:
        kinds: list[AcceleratorKind] = []
        for g in self.groups:
            for k in g.time_ms:
                if k not in kinds:
                    kinds.append(k)
        return kinds

    def group_total_ms(self, kind: str) -> float | None:
        """Sum of group times on ``kind`` (None if some group cannot run there)."""
        if any(kind not in g.time_ms for g in self.groups):
            return None
        return sum(g.time_ms[AcceleratorKind(kind)] for g in self.groups)

    def source_of(self, group: GroupProfile, number: str) -> Provenance:
        return self.provenance[group.sources.get(number, self.default_source)]

    def kinds_of_numbers(self) -> dict[str, int]:
        """How many group times come from each provenance kind."""
        counts: dict[str, int] = {}
        for g in self.groups:
            for kind in g.time_ms:
                k = self.source_of(g, f"time_ms.{kind}").kind.value
                counts[k] = counts.get(k, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "device": self.device,
            "precision": self.precision.value,
            "model": self.model.to_dict(),
            "provenance": {
                "default": self.default_source,
                "sources": {k: v.to_dict() for k, v in self.provenance.items()},
            },
        }
        if self.whole_model_ms:
            out["whole_model_ms"] = {str(k): _round(v) for k, v in self.whole_model_ms.items()}
        if self.contention is not None:
            out["contention"] = self.contention.to_dict()
        if self.notes:
            out["notes"] = self.notes
        out["groups"] = [g.to_dict() for g in self.groups]
        out["transitions"] = [t.to_dict() for t in self.transitions]
        return out


# ---------------------------------------------------------------------------------------------
# Cross-field checks (the codec checks each field alone)
# ---------------------------------------------------------------------------------------------
def _check_provenance(p: Profile) -> None:
    if not p.provenance:
        raise SchemaError(
            "expected a non-empty mapping id -> source, got {}", key="provenance.sources"
        )
    if p.default_source not in p.provenance:
        raise SchemaError(
            f"expected one of the source ids ({', '.join(p.provenance)}), got {p.default_source!r}",
            key="provenance.default",
        )


def _check_groups(p: Profile) -> None:
    if not p.groups:
        raise SchemaError("expected a non-empty list of groups, got []", key="groups")
    for i, g in enumerate(p.groups):
        _check_group(p, i, g)


def _device_has_dla(device: str) -> bool:
    from hxsched.scheduler.cost.devices import DEVICES

    return device in DEVICES and DEVICES[device].dla is not None


def _check_group(p: Profile, i: int, g: GroupProfile) -> None:
    key = f"groups[{i}]"
    if g.id != i:
        raise SchemaError(
            f"expected {i} (groups are numbered 0.. in model order), got {g.id}", key=f"{key}.id"
        )
    kinds = set(g.time_ms)
    where = f"{key}.time_ms"
    if AcceleratorKind.DLA in kinds and not g.dla:
        raise SchemaError(
            f"group {g.label} cannot run on the DLA (dla: false) but has a DLA time",
            key=f"{where}.dla",
        )
    if AcceleratorKind.DLA in kinds and not _device_has_dla(p.device):
        raise SchemaError(
            f"device {p.device} has no DLA, so no group can have a DLA time", key=f"{where}.dla"
        )
    times = {str(k): v for k, v in g.time_ms.items()}
    if p.device == "cpu" and kinds - {AcceleratorKind.CPU}:
        raise SchemaError(f"expected only 'cpu' times on device cpu, got {times}", key=where)
    if p.device != "cpu" and AcceleratorKind.CPU in kinds:
        raise SchemaError(
            f"expected gpu/dla times on device {p.device}, got {times}", key=f"{where}.cpu"
        )
    if p.device != "cpu" and AcceleratorKind.GPU not in kinds:
        raise SchemaError(
            "expected a GPU time (every group can run on the GPU)", key=f"{where}.gpu"
        )
    for number, sid in g.sources.items():
        _check_source_id(p, sid, f"{key}.sources.{number}")


def _check_source_id(p: Profile, sid: str, key: str) -> None:
    if sid not in p.provenance:
        raise SchemaError(f"expected a source id ({', '.join(p.provenance)}), got {sid!r}", key=key)


def _check_transitions(p: Profile) -> None:
    seen: set[int] = set()
    for i, t in enumerate(p.transitions):
        key = f"transitions[{i}]"
        if t.after >= len(p.groups) - 1:
            raise SchemaError(
                f"expected a group id below {len(p.groups) - 1} (a cut between groups), "
                f"got {t.after}",
                key=f"{key}.after",
            )
        if t.after in seen:
            raise SchemaError(f"expected each cut once, got {t.after} again", key=f"{key}.after")
        seen.add(t.after)
        if t.source is not None:
            _check_source_id(p, t.source, f"{key}.source")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def profile_from_dict(data: Any, path: str = "<profile>") -> Profile:
    """Validate a parsed profile document and build the Profile."""
    doc = decode(ProfileFile, data, path=path)
    try:
        return Profile(
            device=doc.device,
            precision=doc.precision,
            model=doc.model,
            provenance=dict(doc.provenance.sources),
            default_source=doc.provenance.default,
            groups=doc.groups,
            transitions=doc.transitions,
            whole_model_ms=doc.whole_model_ms,
            contention=doc.contention,
            notes=doc.notes,
            path=path,
        )
    except SchemaError as exc:
        raise SchemaError(exc.reason, key=exc.key, path=path) from None


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile YAML file."""
    from hxsched.files import read_yaml

    return profile_from_dict(read_yaml(path, "profile"), os.fspath(path))


_HEADER_KEYS = ("schema", "device", "precision", "model")


def header_text(text: str) -> str | None:
    """The top-level ``schema``/``device``/``precision``/``model`` blocks of a block-style YAML
    document, without the (long) groups and transitions; None if the layout is not that."""
    keep: list[str] = []
    taking = False
    for line in text.splitlines(keepends=True):
        if line[:1] not in (" ", "\t", "#", "-", "\n", "\r", ""):
            key = line.split(":", 1)[0]
            taking = key in _HEADER_KEYS and ":" in line
        if taking:
            keep.append(line)
    return "".join(keep) if keep else None


def read_header(path: str | os.PathLike[str]) -> ProfileHeader | None:
    """Device, precision and model of a profile file, parsing only those blocks (cheap); None
    where the file is not a readable block-style profile (``load_profile`` then says why)."""
    import yaml

    from hxsched.files import yaml_loader

    try:
        text = Path(path).read_text(encoding="utf-8")
        head = header_text(text)
        if head is None:
            return None
        return decode(ProfileHeader, yaml.load(head, Loader=yaml_loader()), path=path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, HxschedError):
        return None


def save_profile(profile: Profile, path: str | os.PathLike[str]) -> Path:
    """Write ``profile`` as YAML with a comment header (atomically)."""
    import yaml

    from hxsched.files import atomic_write

    text = yaml.safe_dump(
        profile.to_dict(), sort_keys=False, width=100, allow_unicode=True, default_flow_style=None
    )
    header = (
        f"# hxsched profile: {profile.model.name} on {profile.device} ({profile.precision}).\n"
        f"# Numbers: {profile.provenance[profile.default_source].describe()} unless a group's\n"
        "# 'sources' says otherwise. Times in ms, bytes in bytes, memory_bw in bytes/s.\n"
    )
    return atomic_write(path, (header + text).encode("utf-8"))
