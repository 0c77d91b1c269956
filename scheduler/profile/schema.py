"""Profiles (``schema: hxsched.profile/1``): group times per accelerator, with provenance.

One file per (device, model). Every number says where it came from: the profile names its
sources (``measured`` with tool, versions and date; ``estimated`` with the cost model's version;
``imported`` from trtexec; ``published`` from a paper or artifact), one of them the default, and
any group may point a number at another source. Files are validated on load; every error names
the file, the key and what was expected.

The group-level form needs no ONNX: ``model.structural_hash``, ``first``/``last`` and the work
figures are optional, so published instances can be written by hand and planned.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hxsched.errors import HxschedError

SCHEMA = "hxsched.profile/1"
PROVENANCE_KINDS = ("measured", "estimated", "imported", "published")
ACCELERATOR_KINDS = ("gpu", "dla", "cpu")
PRECISIONS = ("fp16", "int8", "fp32")


@dataclass(frozen=True)
class Provenance:
    kind: str
    tool: str
    versions: dict[str, str] = field(default_factory=dict)
    date: str = ""
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "tool": self.tool}
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

    id: int
    time_ms: dict[str, float]
    dla: bool = True
    name: str = ""
    first: str | None = None
    last: str | None = None
    nodes: int | None = None
    flops: float | None = None
    bytes: int | None = None
    weight_bytes: int | None = None
    out_bytes: int | None = None
    memory_bw: dict[str, float] = field(default_factory=dict)  # bytes/s pulled from DRAM
    spread_ms: dict[str, float] = field(default_factory=dict)  # measured spread (IQR)
    sources: dict[str, str] = field(default_factory=dict)  # number -> provenance id

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
        out["time_ms"] = {k: _round(v) for k, v in self.time_ms.items()}
        if self.spread_ms:
            out["spread_ms"] = {k: _round(v) for k, v in self.spread_ms.items()}
        if self.memory_bw:
            out["memory_bw"] = {k: float(f"{v:.4g}") for k, v in self.memory_bw.items()}
        if self.sources:
            out["sources"] = dict(self.sources)
        return out


@dataclass(frozen=True)
class Transition:
    """Handing the activations after group ``after`` between the GPU and a DLA core (ms)."""

    after: int
    gpu_to_dla_ms: float
    dla_to_gpu_ms: float
    bytes: int | None = None
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
    name: str
    structural_hash: str | None = None
    source: str | None = None
    nodes: int | None = None
    inputs: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key in ("structural_hash", "source", "nodes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.inputs:
            out["inputs"] = {k: list(v) for k, v in self.inputs.items()}
        return out


@dataclass(frozen=True)
class Profile:
    device: str
    precision: str
    model: ModelInfo
    provenance: dict[str, Provenance]
    default_source: str
    groups: tuple[GroupProfile, ...]
    transitions: tuple[Transition, ...] = ()
    whole_model_ms: dict[str, float] = field(default_factory=dict)
    contention: dict[str, float] = field(default_factory=dict)  # fitted slowdown model
    notes: str = ""
    path: str | None = None

    @property
    def accelerators(self) -> list[str]:
        kinds: list[str] = []
        for g in self.groups:
            for k in g.time_ms:
                if k not in kinds:
                    kinds.append(k)
        return kinds

    def group_total_ms(self, kind: str) -> float | None:
        """Sum of group times on ``kind`` (None if some group cannot run there)."""
        if any(kind not in g.time_ms for g in self.groups):
            return None
        return sum(g.time_ms[kind] for g in self.groups)

    def source_of(self, group: GroupProfile, number: str) -> Provenance:
        return self.provenance[group.sources.get(number, self.default_source)]

    def kinds_of_numbers(self) -> dict[str, int]:
        """How many group times come from each provenance kind."""
        counts: dict[str, int] = {}
        for g in self.groups:
            for kind in g.time_ms:
                k = self.source_of(g, f"time_ms.{kind}").kind
                counts[k] = counts.get(k, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "device": self.device,
            "precision": self.precision,
            "model": self.model.to_dict(),
            "provenance": {
                "default": self.default_source,
                "sources": {k: v.to_dict() for k, v in self.provenance.items()},
            },
        }
        if self.whole_model_ms:
            out["whole_model_ms"] = {k: _round(v) for k, v in self.whole_model_ms.items()}
        if self.contention:
            out["contention"] = dict(self.contention)
        if self.notes:
            out["notes"] = self.notes
        out["groups"] = [g.to_dict() for g in self.groups]
        out["transitions"] = [t.to_dict() for t in self.transitions]
        return out


def _round(x: float) -> float:
    return float(f"{x:.6g}")


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
class _Reader:
    """Walks a parsed YAML document, raising errors that name the file and the key path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, expected: str, got: Any = ...) -> HxschedError:
        detail = "" if got is ... else f", got {got!r}"
        return HxschedError(f"{key}: expected {expected}{detail}", path=self.path)

    def mapping(self, value: Any, key: str, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, "a mapping", value)
        for k in value:
            if k not in allowed:
                raise HxschedError(
                    f"{key}.{k}: unknown key (expected one of: {', '.join(sorted(allowed))})",
                    path=self.path,
                )
        for k in sorted(required):
            if k not in value:
                raise HxschedError(f"{key}.{k}: missing (required)", path=self.path)
        return value

    def number(self, value: Any, key: str, *, minimum: float = 0.0) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(key, "a number", value)
        if value < minimum:
            raise self.fail(key, f"a number >= {minimum:g}", value)
        return float(value)

    def integer(self, value: Any, key: str, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}", value)
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "a non-empty string", value)
        return value

    def choice(self, value: Any, key: str, options: tuple[str, ...] | list[str]) -> str:
        if value not in options:
            raise self.fail(key, f"one of {', '.join(options)}", value)
        return value

    def per_accelerator(self, value: Any, key: str) -> dict[str, float]:
        if not isinstance(value, dict) or not value:
            raise self.fail(
                key, "a mapping accelerator -> number, e.g. {gpu: 0.12, dla: 0.3}", value
            )
        out = {}
        for k, v in value.items():
            self.choice(k, f"{key}.{k}", ACCELERATOR_KINDS)
            out[k] = self.number(v, f"{key}.{k}")
        return out


def _known_devices() -> list[str]:
    from hxsched.scheduler.cost.devices import DEVICES

    return [*DEVICES, "cpu"]


def profile_from_dict(data: Any, path: str = "<profile>") -> Profile:
    """Validate a parsed profile document and build the Profile."""
    r = _Reader(path)
    top = r.mapping(
        data,
        "profile",
        {
            "schema",
            "device",
            "precision",
            "model",
            "provenance",
            "groups",
            "transitions",
            "whole_model_ms",
            "contention",
            "notes",
        },
        {"schema", "device", "precision", "model", "provenance", "groups"},
    )
    if top["schema"] != SCHEMA:
        raise r.fail("schema", SCHEMA, top["schema"])
    device = r.choice(top["device"], "device", _known_devices())
    precision = r.choice(top["precision"], "precision", PRECISIONS)
    m = r.mapping(
        top["model"], "model", {"name", "structural_hash", "source", "nodes", "inputs"}, {"name"}
    )
    model = ModelInfo(
        name=r.string(m["name"], "model.name"),
        structural_hash=r.string(m["structural_hash"], "model.structural_hash")
        if "structural_hash" in m
        else None,
        source=str(m["source"]) if m.get("source") is not None else None,
        nodes=r.integer(m["nodes"], "model.nodes", minimum=1) if "nodes" in m else None,
        inputs={str(k): list(v) for k, v in (m.get("inputs") or {}).items()},
    )
    if model.structural_hash is not None and not model.structural_hash.startswith("sha256:"):
        raise r.fail("model.structural_hash", "'sha256:<hex>'", model.structural_hash)
    prov_doc = r.mapping(
        top["provenance"], "provenance", {"default", "sources"}, {"default", "sources"}
    )
    sources_doc = prov_doc["sources"]
    if not isinstance(sources_doc, dict) or not sources_doc:
        raise r.fail("provenance.sources", "a non-empty mapping id -> source", sources_doc)
    provenance: dict[str, Provenance] = {}
    for sid, sdoc in sources_doc.items():
        key = f"provenance.sources.{sid}"
        s = r.mapping(sdoc, key, {"kind", "tool", "versions", "date", "notes"}, {"kind", "tool"})
        provenance[str(sid)] = Provenance(
            kind=r.choice(s["kind"], f"{key}.kind", PROVENANCE_KINDS),
            tool=r.string(s["tool"], f"{key}.tool"),
            versions={str(a): str(b) for a, b in (s.get("versions") or {}).items()},
            date=str(s.get("date") or ""),
            notes=str(s.get("notes") or ""),
        )
    default = str(prov_doc["default"])
    if default not in provenance:
        raise r.fail(
            "provenance.default", f"one of the source ids ({', '.join(provenance)})", default
        )
    from hxsched.scheduler.cost.devices import DEVICES

    has_dla = device in DEVICES and DEVICES[device].dla is not None
    groups_doc = top["groups"]
    if not isinstance(groups_doc, list) or not groups_doc:
        raise r.fail("groups", "a non-empty list of groups", groups_doc)
    groups = []
    for i, gdoc in enumerate(groups_doc):
        key = f"groups[{i}]"
        g = r.mapping(
            gdoc,
            key,
            {
                "id",
                "name",
                "first",
                "last",
                "nodes",
                "dla",
                "flops",
                "bytes",
                "weight_bytes",
                "out_bytes",
                "time_ms",
                "spread_ms",
                "memory_bw",
                "sources",
            },
            {"id", "time_ms"},
        )
        gid = r.integer(g["id"], f"{key}.id")
        if gid != i:
            raise r.fail(f"{key}.id", f"{i} (groups are numbered 0.. in model order)", gid)
        dla = g.get("dla", True)
        if not isinstance(dla, bool):
            raise r.fail(f"{key}.dla", "true or false", dla)
        times = r.per_accelerator(g["time_ms"], f"{key}.time_ms")
        if "dla" in times and not dla:
            raise HxschedError(
                f"{key}.time_ms.dla: group {g.get('name', gid)} cannot run on the DLA "
                "(dla: false) but has a DLA time",
                path=path,
            )
        if "dla" in times and not has_dla:
            raise HxschedError(
                f"{key}.time_ms.dla: device {device} has no DLA, so no group can have a DLA time",
                path=path,
            )
        if device == "cpu" and set(times) - {"cpu"}:
            raise r.fail(f"{key}.time_ms", "only 'cpu' times on device cpu", times)
        if device != "cpu" and "cpu" in times:
            raise r.fail(f"{key}.time_ms.cpu", f"gpu/dla times on device {device}", times)
        if device != "cpu" and "gpu" not in times:
            raise r.fail(f"{key}.time_ms.gpu", "a GPU time (every group can run on the GPU)")
        srcs = g.get("sources") or {}
        if not isinstance(srcs, dict):
            raise r.fail(f"{key}.sources", "a mapping number -> source id", srcs)
        for num, sid in srcs.items():
            if sid not in provenance:
                raise r.fail(f"{key}.sources.{num}", f"a source id ({', '.join(provenance)})", sid)
        groups.append(
            GroupProfile(
                id=gid,
                time_ms=times,
                dla=dla,
                name=str(g.get("name") or ""),
                first=str(g["first"]) if g.get("first") is not None else None,
                last=str(g["last"]) if g.get("last") is not None else None,
                nodes=r.integer(g["nodes"], f"{key}.nodes", minimum=1) if "nodes" in g else None,
                flops=r.number(g["flops"], f"{key}.flops") if "flops" in g else None,
                bytes=int(r.number(g["bytes"], f"{key}.bytes")) if "bytes" in g else None,
                weight_bytes=int(r.number(g["weight_bytes"], f"{key}.weight_bytes"))
                if "weight_bytes" in g
                else None,
                out_bytes=int(r.number(g["out_bytes"], f"{key}.out_bytes"))
                if "out_bytes" in g
                else None,
                memory_bw=r.per_accelerator(g["memory_bw"], f"{key}.memory_bw")
                if "memory_bw" in g
                else {},
                spread_ms=r.per_accelerator(g["spread_ms"], f"{key}.spread_ms")
                if "spread_ms" in g
                else {},
                sources={str(k): str(v) for k, v in srcs.items()},
            )
        )
    transitions = []
    tdoc = top.get("transitions") or []
    if not isinstance(tdoc, list):
        raise r.fail("transitions", "a list", tdoc)
    seen = set()
    for i, t in enumerate(tdoc):
        key = f"transitions[{i}]"
        td = r.mapping(
            t,
            key,
            {"after", "gpu_to_dla_ms", "dla_to_gpu_ms", "bytes", "source"},
            {"after", "gpu_to_dla_ms", "dla_to_gpu_ms"},
        )
        after = r.integer(td["after"], f"{key}.after")
        if after >= len(groups) - 1:
            raise r.fail(
                f"{key}.after", f"a group id below {len(groups) - 1} (a cut between groups)", after
            )
        if after in seen:
            raise r.fail(f"{key}.after", "each cut once", after)
        seen.add(after)
        src = td.get("source")
        if src is not None and src not in provenance:
            raise r.fail(f"{key}.source", f"a source id ({', '.join(provenance)})", src)
        transitions.append(
            Transition(
                after=after,
                gpu_to_dla_ms=r.number(td["gpu_to_dla_ms"], f"{key}.gpu_to_dla_ms"),
                dla_to_gpu_ms=r.number(td["dla_to_gpu_ms"], f"{key}.dla_to_gpu_ms"),
                bytes=int(r.number(td["bytes"], f"{key}.bytes")) if "bytes" in td else None,
                source=src,
            )
        )
    whole = {}
    if "whole_model_ms" in top:
        whole = r.per_accelerator(top["whole_model_ms"], "whole_model_ms")
    contention = {}
    if "contention" in top:
        from hxsched.scheduler.cost.contention import ContentionModel

        cdoc = r.mapping(
            top["contention"], "contention", set(ContentionModel.KEYS), set(ContentionModel.KEYS)
        )
        contention = {k: r.number(cdoc[k], f"contention.{k}") for k in ContentionModel.KEYS}
        ContentionModel.from_dict(contention, path)
    return Profile(
        device=device,
        precision=precision,
        model=model,
        provenance=provenance,
        default_source=default,
        groups=tuple(groups),
        transitions=tuple(sorted(transitions, key=lambda t: t.after)),
        whole_model_ms=whole,
        contention=contention,
        notes=str(top.get("notes") or ""),
        path=path,
    )


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile YAML file."""
    p = Path(path)
    if not p.exists():
        raise HxschedError("no such file", path=p)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise HxschedError(
            f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", path=p
        ) from None
    except UnicodeDecodeError:
        raise HxschedError("not a text (YAML) file", path=p) from None
    return profile_from_dict(data, str(p))


def save_profile(profile: Profile, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(
        profile.to_dict(), sort_keys=False, width=100, allow_unicode=True, default_flow_style=None
    )
    header = (
        f"# hxsched profile: {profile.model.name} on {profile.device} ({profile.precision}).\n"
        f"# Numbers: {profile.provenance[profile.default_source].describe()} unless a group's\n"
        "# 'sources' says otherwise. Times in ms, bytes in bytes, memory_bw in bytes/s.\n"
    )
    out.write_text(header + text)
    return out
