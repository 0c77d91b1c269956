"""Plans (``schema: hxsched.plan/1``): what runs where, what it should achieve, how we know.

A plan names, per instance, its segments (groups, first/last node, accelerator, stream, times),
the predicted timeline of one period (throughput) or one frame (latency), the predicted
period/FPS/latency from the simulator, the solver's proof status, the baselines evaluated the
same way, and the profiles it used with their provenance. Plans are validated on load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hxsched.errors import HxschedError

SCHEMA = "hxsched.plan/1"


@dataclass(frozen=True)
class PlanSegment:
    first_group: int
    last_group: int
    first_node: str | None
    last_node: str | None
    accelerator: str
    ms: float  # compute alone, from the profile (unrounded)
    busy_ms: float  # in the plan: rounded to ticks, with hand-over and contention
    transition_ms: float = 0.0

    @property
    def stream(self) -> str:
        return self.accelerator

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [self.first_group, self.last_group],
            "first_node": self.first_node,
            "last_node": self.last_node,
            "accelerator": self.accelerator,
            "stream": self.stream,
            "ms": round(self.ms, 5),
            "busy_ms": round(self.busy_ms, 5),
            "transition_ms": round(self.transition_ms, 5),
        }


@dataclass(frozen=True)
class PlanInstance:
    name: str
    model: str
    segments: tuple[PlanSegment, ...]
    model_path: str | None = None
    structural_hash: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)  # path, how obtained, provenance

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "model": self.model}
        if self.model_path:
            out["model_path"] = self.model_path
        if self.structural_hash:
            out["structural_hash"] = self.structural_hash
        out["profile"] = self.profile
        out["segments"] = [s.to_dict() for s in self.segments]
        return out

    def describe(self) -> str:
        """``pix2pix#0: dla0 groups 0-13 (/a .. /b) -> gpu 14-21 (/c .. /d)``"""
        parts = []
        for s in self.segments:
            nodes = f" ({s.first_node} .. {s.last_node})" if s.first_node else ""
            parts.append(f"{s.accelerator} groups {s.first_group}-{s.last_group}{nodes}")
        return f"{self.name}: " + " -> ".join(parts)


@dataclass
class Plan:
    objective: str
    device: str
    accelerators: tuple[str, ...]
    resolution_ms: float
    max_switches: int
    instances: list[PlanInstance]
    predicted: dict[str, Any]
    solver: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    timeline: list[dict[str, Any]]
    edges: list[list[list[int]]] = field(default_factory=list)
    contention: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "objective": self.objective,
            "device": self.device,
            "accelerators": list(self.accelerators),
            "resolution_ms": self.resolution_ms,
            "max_switches": self.max_switches,
            "contention": self.contention,
            "predicted": self.predicted,
            "solver": self.solver,
            "baselines": self.baselines,
            "instances": [i.to_dict() for i in self.instances],
            "timeline": self.timeline,
            "edges": self.edges,
            "warnings": self.warnings,
        }


def save_plan(plan: Plan, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# hxsched plan ({plan.objective}) for {plan.device}: predicted numbers are "
        f"{plan.predicted.get('source', 'simulated')}.\n"
    )
    out.write_text(
        header + yaml.safe_dump(plan.to_dict(), sort_keys=False, width=100, default_flow_style=None)
    )
    return out


def _need(d: dict, key: str, kind: type | tuple, where: str, path: str) -> Any:
    if key not in d:
        raise HxschedError(f"{where}.{key}: missing (required)", path=path)
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise HxschedError(
            f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}", path=path
        )
    return value


def plan_from_dict(data: Any, path: str = "<plan>") -> Plan:
    if not isinstance(data, dict):
        raise HxschedError("not a plan (expected a YAML mapping)", path=path)
    if data.get("schema") != SCHEMA:
        raise HxschedError(f"schema: expected {SCHEMA}, got {data.get('schema')!r}", path=path)
    objective = _need(data, "objective", str, "plan", path)
    if objective not in ("throughput", "latency"):
        raise HxschedError(
            f"objective: expected throughput or latency, got {objective!r}", path=path
        )
    accelerators = tuple(_need(data, "accelerators", list, "plan", path))
    instances = []
    for k, inst in enumerate(_need(data, "instances", list, "plan", path)):
        where = f"instances[{k}]"
        if not isinstance(inst, dict):
            raise HxschedError(f"{where}: expected a mapping", path=path)
        segs = []
        last = -1
        for j, seg in enumerate(_need(inst, "segments", list, where, path)):
            w = f"{where}.segments[{j}]"
            groups = _need(seg, "groups", list, w, path)
            if len(groups) != 2 or groups[0] != last + 1 or groups[1] < groups[0]:
                raise HxschedError(
                    f"{w}.groups: expected [first, last] continuing at group {last + 1}", path=path
                )
            last = groups[1]
            acc = _need(seg, "accelerator", str, w, path)
            if acc not in accelerators:
                raise HxschedError(
                    f"{w}.accelerator: {acc!r} is not one of {list(accelerators)}", path=path
                )
            segs.append(
                PlanSegment(
                    groups[0],
                    groups[1],
                    seg.get("first_node"),
                    seg.get("last_node"),
                    acc,
                    float(seg.get("ms", 0.0)),
                    float(seg.get("busy_ms", 0.0)),
                    float(seg.get("transition_ms", 0.0)),
                )
            )
        if not segs:
            raise HxschedError(f"{where}.segments: expected at least one segment", path=path)
        instances.append(
            PlanInstance(
                _need(inst, "name", str, where, path),
                _need(inst, "model", str, where, path),
                tuple(segs),
                inst.get("model_path"),
                inst.get("structural_hash"),
                inst.get("profile") or {},
            )
        )
    return Plan(
        objective=objective,
        device=_need(data, "device", str, "plan", path),
        accelerators=accelerators,
        resolution_ms=float(data.get("resolution_ms", 0.01)),
        max_switches=int(data.get("max_switches", 1)),
        instances=instances,
        predicted=data.get("predicted") or {},
        solver=data.get("solver") or {},
        baselines=data.get("baselines") or {},
        timeline=data.get("timeline") or [],
        edges=data.get("edges") or [],
        contention=data.get("contention"),
        warnings=list(data.get("warnings") or []),
        path=path,
    )


def load_plan(path: str | os.PathLike[str]) -> Plan:
    p = Path(path)
    if not p.exists():
        raise HxschedError("no such file", path=p)
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HxschedError(f"not valid YAML: {exc}", path=p) from None
    return plan_from_dict(data, str(p))
