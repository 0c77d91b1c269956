"""Plans (``schema: hxsched.plan/1``): what runs where, what it should achieve, how we know.
Typed records read and written by ``hxsched.codec``; a broken file is one line naming file and key."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from hxsched.codec import decode, encode, meta
from hxsched.errors import SchemaError
from hxsched.files import atomic_write, read_yaml
from hxsched.scheduler.types import Accelerator, Objective, ProvenanceKind

SCHEMA = "hxsched.plan/1"

Edge = tuple[tuple[int, int], tuple[int, int]]  # (instance, segment) before (instance, segment)


def _freeze(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, kw_only=True)
class PlanSegment:
    """One segment of an instance: groups ``first..last`` on one accelerator (its stream)."""

    groups: tuple[int, int]
    first_node: str | None = field(default=None, metadata=meta(omit_none=False))
    last_node: str | None = field(default=None, metadata=meta(omit_none=False))
    accelerator: Accelerator
    stream: Accelerator | None = None  # one stream per accelerator: always the accelerator
    ms: float = field(default=0.0, metadata=meta(ge=0))  # compute alone, from the profile
    busy_ms: float = field(default=0.0, metadata=meta(ge=0))  # in the plan: ticks, hand-over
    transition_ms: float = field(default=0.0, metadata=meta(ge=0))

    def __post_init__(self) -> None:
        _freeze(self, "accelerator", Accelerator(self.accelerator))
        _freeze(self, "groups", tuple(self.groups))
        if self.stream is None:
            _freeze(self, "stream", self.accelerator)
        elif self.stream != self.accelerator:
            raise SchemaError(
                f"expected {self.accelerator} (the segment's accelerator)", key="stream"
            )
        if not 0 <= self.groups[0] <= self.groups[1]:
            raise SchemaError(
                f"expected [first, last] with 0 <= first <= last, got {list(self.groups)}",
                key="groups",
            )

    @property
    def first_group(self) -> int:
        return self.groups[0]

    @property
    def last_group(self) -> int:
        return self.groups[1]


@dataclass(frozen=True, kw_only=True)
class SourceRef:
    """Where a profile's numbers come from (a profile's ``sources`` entry)."""

    kind: ProvenanceKind
    tool: str
    versions: dict[str, str | int | float] = field(default_factory=dict)
    date: str = ""
    notes: str = ""


@dataclass(frozen=True, kw_only=True)
class ProfileRef:
    """The profile an instance was planned with: its file, how it was obtained, its sources."""

    path: str | None = None
    how: str = ""  # shipped, found, given, estimated on the fly, re-planned ...
    device: str | None = None
    default_source: str | None = None
    sources: dict[str, SourceRef] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PlanInstance:
    name: str
    model: str
    model_path: str | None = None
    structural_hash: str | None = None
    # the --shape overrides the model was planned with; build and run load it with them
    shapes: dict[str, tuple[int, ...]] | None = None
    profile: ProfileRef = field(default_factory=ProfileRef)
    segments: tuple[PlanSegment, ...]

    def __post_init__(self) -> None:
        _freeze(self, "segments", tuple(self.segments))
        if not self.segments:
            raise SchemaError("expected at least one segment", key="segments")
        nxt = 0
        for j, seg in enumerate(self.segments):
            if seg.first_group != nxt:
                raise SchemaError(
                    f"expected [first, last] continuing at group {nxt}, got {list(seg.groups)}",
                    key=f"segments[{j}].groups",
                )
            nxt = seg.last_group + 1

    def describe(self) -> str:
        """``pix2pix#0: dla0 groups 0-13 (/a .. /b) -> gpu 14-21 (/c .. /d)``"""
        parts = []
        for s in self.segments:
            nodes = f" ({s.first_node} .. {s.last_node})" if s.first_node else ""
            parts.append(f"{s.accelerator} groups {s.first_group}-{s.last_group}{nodes}")
        return f"{self.name}: " + " -> ".join(parts)


@dataclass(frozen=True, kw_only=True)
class ContentionSettings:
    """The shared-DRAM contention model a plan was made with, and its number of levels."""

    peak_gbs: float = field(metadata=meta(gt=0))
    knee: float = field(metadata=meta(gt=0, lt=1))
    max_slowdown: float = field(metadata=meta(ge=1))
    levels: int = field(metadata=meta(ge=1))


@dataclass(frozen=True, kw_only=True)
class Predicted:
    """What the plan should achieve, and where those numbers come from (``source``)."""

    period_ms: float = field(metadata=meta(gt=0))  # steady-state period, or one frame's makespan
    fps: float | None = field(default=None, metadata=meta(gt=0, omit_none=False))
    latency_ms: float | None = field(default=None, metadata=meta(ge=0, omit_none=False))
    busy_ms: dict[Accelerator, float] = field(default_factory=dict)
    idle_ms: dict[Accelerator, float] = field(default_factory=dict)
    contention_levels: dict[Accelerator, int] | None = field(
        default=None, metadata=meta(omit_none=False)
    )
    source: str = ""


@dataclass(frozen=True, kw_only=True)
class SatCall:
    """One decision the solver asked: is there a plan of value <= ``bound`` ticks?"""

    bound: int
    configurations: tuple[int, ...] | None = None
    result: str  # sat, unsat, timeout, or why the call did not run
    seconds: float = field(default=0.0, metadata=meta(ge=0))


@dataclass(frozen=True, kw_only=True)
class SolverReport:
    """How the plan was found and how far from optimal it can be."""

    optimal: bool
    proof: Literal["unsat", "lp-bound", "contention-lp", ""] = ""
    proof_detail: str = ""  # what proved it: the UNSAT call and its encoding's size, the LP
    gap: float = field(default=0.0, metadata=meta(ge=0))
    solve_time_s: float = field(default=0.0, metadata=meta(ge=0))
    lower_bound_ms: float = 0.0
    lp_bound_ms: float = 0.0
    ratio_to_lp_bound: float | None = field(default=None, metadata=meta(omit_none=False))
    ratio_to_best_baseline: float | None = field(default=None, metadata=meta(omit_none=False))
    best_baseline: str | None = field(default=None, metadata=meta(omit_none=False))
    sat_solver: str = ""
    sat_calls: tuple[SatCall, ...] = ()
    variables: int = field(default=0, metadata=meta(ge=0))
    clauses: int = field(default=0, metadata=meta(ge=0))
    configurations: tuple[int, ...] = ()
    lp_converged: bool = True  # column generation ended with no negative reduced cost left
    peak_rss_mib: float = field(default=0.0, metadata=meta(ge=0))  # ru_maxrss after the solve


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """A baseline's figures, evaluated by the same simulator on the same profiles."""

    period_ms: float = field(metadata=meta(gt=0))
    fps: float | None = field(default=None, metadata=meta(gt=0, omit_none=False))
    latency_ms: float | None = field(default=None, metadata=meta(ge=0, omit_none=False))
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class TimelineEntry:
    """One segment's slot in the predicted period (throughput) or frame (latency)."""

    instance: str
    segment: int = field(metadata=meta(ge=0))
    accelerator: Accelerator
    start_ms: float = field(metadata=meta(ge=0))
    end_ms: float = field(metadata=meta(ge=0))
    transition_ms: float = field(default=0.0, metadata=meta(ge=0))

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise SchemaError(
                f"expected >= start_ms {self.start_ms}, got {self.end_ms}", key="end_ms"
            )


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A whole plan; ``path`` (the file it was read from or written to) is not part of it."""

    schema: Literal["hxsched.plan/1"] = "hxsched.plan/1"
    objective: Objective
    device: str
    accelerators: tuple[Accelerator, ...]
    resolution_ms: float = field(default=0.01, metadata=meta(gt=0))
    max_switches: int = field(default=1, metadata=meta(ge=0))
    contention: ContentionSettings | None = field(default=None, metadata=meta(omit_none=False))
    predicted: Predicted
    solver: SolverReport | None = None
    baselines: dict[str, Baseline] = field(default_factory=dict)
    instances: tuple[PlanInstance, ...]
    timeline: tuple[TimelineEntry, ...] = ()
    edges: tuple[Edge, ...] = ()
    warnings: tuple[str, ...] = ()
    path: str | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        _freeze(self, "objective", Objective(self.objective))
        _freeze(self, "accelerators", tuple(Accelerator(a) for a in self.accelerators))
        for name in ("instances", "timeline", "edges", "warnings"):
            _freeze(self, name, tuple(getattr(self, name)))
        for k, inst in enumerate(self.instances):
            for j, seg in enumerate(inst.segments):
                if seg.accelerator not in self.accelerators:
                    raise SchemaError(
                        f"expected one of the plan's accelerators "
                        f"({', '.join(self.accelerators)}), got {seg.accelerator}",
                        key=f"instances[{k}].segments[{j}].accelerator",
                    )

    def with_path(self, path: str | os.PathLike[str] | None) -> Plan:
        """The same plan, known to live at ``path``."""
        out = dataclasses.replace(self)
        _freeze(out, "path", os.fspath(path) if path is not None else None)
        return out

    def to_dict(self) -> dict:
        """The plan as the YAML mapping ``save_plan`` writes."""
        return encode(self)


def plan_from_dict(data: object, path: str | os.PathLike[str] | None = "<plan>") -> Plan:
    """A parsed plan file as a Plan, or a SchemaError naming the file and the key."""
    if not isinstance(data, dict):
        raise SchemaError("not a plan (expected a YAML mapping)", path=path)
    if "schema" not in data:
        raise SchemaError(f"missing (required: {SCHEMA})", key="schema", path=path)
    return decode(Plan, data, path=path).with_path(path)


def save_plan(plan: Plan, path: str | os.PathLike[str]) -> Path:
    """Write the plan (atomically) with a comment saying where its numbers come from."""
    source = plan.predicted.source or "simulated"
    header = (
        f"# hxsched plan ({plan.objective}) for {plan.device}: predicted numbers are {source}.\n"
    )
    text = header + yaml.safe_dump(
        plan.to_dict(), sort_keys=False, width=100, default_flow_style=None
    )
    return atomic_write(path, text.encode("utf-8"))


def load_plan(path: str | os.PathLike[str]) -> Plan:
    return plan_from_dict(read_yaml(path, "plan"), os.fspath(path))
