"""From a plan to runnable segments: each instance cut at its planned points into standalone
graphs, with what crosses each boundary and which accelerator sits on the other side."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hxsched.errors import HxschedError, ModelError
from hxsched.scheduler.graph.graph import Graph
from hxsched.scheduler.graph.segments import extract_segment, segment_io
from hxsched.scheduler.planning.plan import Plan, PlanInstance

log = logging.getLogger(__name__)


@dataclass
class SegmentSpec:
    """One planned segment of one instance, ready for a backend."""

    instance: str
    index: int
    accelerator: str
    first_group: int
    last_group: int
    expected_ms: float  # the plan's busy time for this segment (profile, device of the plan)
    first_node: int | None = None  # indices in the model's topological order (None: no model)
    last_node: int | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    inputs_from: dict[str, str | None] = field(default_factory=dict)  # None: the host
    outputs_to: dict[str, str | None] = field(default_factory=dict)
    graph: Graph | None = None
    digest: str = ""  # content hash of the standalone segment (structure and weights)

    @property
    def name(self) -> str:
        return f"{self.instance}/s{self.index}"


@dataclass
class InstanceSpec:
    name: str
    model: str
    segments: list[SegmentSpec]
    graph: Graph | None = None
    model_path: str | None = None

    @property
    def inputs(self) -> list[str]:
        return list(self.graph.inputs) if self.graph is not None else []

    @property
    def outputs(self) -> list[str]:
        return list(self.graph.outputs) if self.graph is not None else []


def resolve_model_path(inst: PlanInstance, plan_path: str | None) -> Path:
    """The plan's model path, as written or relative to the plan file; a clear error if gone."""
    if not inst.model_path:
        raise HxschedError(
            f"instance {inst.name} has no model file (planned from a profile alone): only "
            "--backend sim can run it",
            path=plan_path,
        )
    p = Path(inst.model_path)
    tries = [p]
    if not p.is_absolute() and plan_path:
        tries.append(Path(plan_path).parent / p)
    for t in tries:
        if t.exists():
            return t
    raise ModelError(
        f"model {inst.model_path} of instance {inst.name} not found (looked in "
        + ", ".join(str(t) for t in tries)
        + ")",
        path=plan_path,
    )


def _node_index(graph: Graph, name: str | None, inst: PlanInstance, plan_path: str | None) -> int:
    for k, node in enumerate(graph.nodes):
        if node.name == name:
            return k
    raise ModelError(
        f"plan/model mismatch: instance {inst.name} cuts at node {name!r}, which model "
        f"{graph.path} does not have (was the plan made for another model?)",
        path=plan_path,
    )


def segment_digest(graph: Graph) -> str:
    """sha256 over the segment's structure and weights (what an engine is built from)."""
    h = hashlib.sha256()
    for n in graph.nodes:
        h.update(f"{n.op_type}|{n.inputs}|{n.outputs}|{sorted(n.attrs.items())!r}\n".encode())
    for name in sorted(graph.tensors):
        t = graph.tensors[name]
        h.update(f"{name}|{t.elem_type}|{t.shape}|{t.const}\n".encode())
        if t.const and t.value is not None:
            h.update(t.value.tobytes())
    return h.hexdigest()


def plan_instance_specs(
    plan: Plan,
    *,
    load: Callable[[Path], Graph] | None = None,
    with_models: bool = True,
) -> list[InstanceSpec]:
    """Cut every instance of ``plan`` into its segments.

    With ``with_models`` the models are loaded (``load``, default: the ONNX front end), the
    plan's node names located, and every segment extracted as a standalone graph; without,
    segments carry only their accelerators and planned times (enough for ``sim``).
    """
    from hxsched.scheduler.graph.onnx_io import load_model
    from hxsched.scheduler.graph.structure import structural_hash

    graphs: dict[tuple[str, str], Graph] = {}
    specs: list[InstanceSpec] = []
    for inst in plan.instances:
        if not inst.segments:
            raise HxschedError(f"instance {inst.name} has no segments", path=plan.path)
        segs = [
            SegmentSpec(inst.name, k, s.accelerator, s.first_group, s.last_group, s.busy_ms)
            for k, s in enumerate(inst.segments)
        ]
        graph = None
        path = None
        if with_models:
            path = resolve_model_path(inst, plan.path)
            key = (str(path.resolve()), repr(sorted((inst.shapes or {}).items())))
            if key not in graphs:  # with the shapes it was planned with, unless told others
                graphs[key] = load(path) if load else load_model(path, dict(inst.shapes or {}))
            graph = graphs[key]
            if inst.structural_hash and structural_hash(graph) != inst.structural_hash:
                raise HxschedError(
                    f"plan/model mismatch: {path} is not the architecture instance {inst.name} "
                    "was planned for (structural hash differs); re-plan for this model",
                    path=plan.path,
                )
            bounds = []
            for s in inst.segments:
                a = _node_index(graph, s.first_node, inst, plan.path)
                b = _node_index(graph, s.last_node, inst, plan.path)
                bounds.append((a, b))
            if (
                bounds[0][0] != 0
                or bounds[-1][1] != len(graph.nodes) - 1
                or any(bounds[k][1] + 1 != bounds[k + 1][0] for k in range(len(bounds) - 1))
            ):
                raise HxschedError(
                    f"plan/model mismatch: the segments of {inst.name} do not cover model "
                    f"{path}'s {len(graph.nodes)} nodes contiguously ({bounds})",
                    path=plan.path,
                )
            producer: dict[str, int] = {}
            ios = [segment_io(graph, a, b) for a, b in bounds]
            for k, io in enumerate(ios):
                for t in io.outputs:
                    producer[t] = k
            for k, (seg, (a, b), io) in enumerate(zip(segs, bounds, ios, strict=True)):
                seg.first_node, seg.last_node = a, b
                seg.inputs, seg.outputs = io.inputs, io.outputs
                seg.inputs_from = {
                    t: (segs[producer[t]].accelerator if t in producer else None) for t in io.inputs
                }
                readers: dict[str, str | None] = {}
                for t in io.outputs:
                    later = [j for j in range(k + 1, len(ios)) if t in ios[j].inputs]
                    # a model output goes to the host; else the first later reader's side
                    readers[t] = (
                        None if t in graph.outputs or not later else segs[later[0]].accelerator
                    )
                seg.outputs_to = readers
                seg.graph = extract_segment(graph, a, b, name=f"{inst.name}_s{k}")
                seg.digest = segment_digest(seg.graph)
        specs.append(InstanceSpec(inst.name, inst.model, segs, graph, str(path) if path else None))
    return specs


def write_segments(
    specs: Sequence[InstanceSpec],
    out_dir: str | os.PathLike[str],
) -> list[dict]:
    """Each segment as ``<instance>_s<k>.onnx`` (weights inline or beside it); a manifest row
    per segment."""
    from hxsched.scheduler.graph.onnx_io import save_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for inst in specs:
        for seg in inst.segments:
            if seg.graph is None:
                raise HxschedError(f"segment {seg.name} has no model to write")
            fname = f"{inst.name.replace('#', '_')}_s{seg.index}.onnx"
            log.info(
                "writing %s (%s, nodes %d-%d)",
                fname,
                seg.accelerator,
                seg.first_node,
                seg.last_node,
            )
            save_model(seg.graph, out / fname)
            rows.append(
                {
                    "instance": inst.name,
                    "segment": seg.index,
                    "accelerator": seg.accelerator,
                    "nodes": [seg.first_node, seg.last_node],
                    "groups": [seg.first_group, seg.last_group],
                    "inputs": {t: seg.inputs_from[t] or "host" for t in seg.inputs},
                    "outputs": {t: seg.outputs_to[t] or "host" for t in seg.outputs},
                    "file": fname,
                    "sha256": seg.digest,
                    "expected_ms": round(seg.expected_ms, 5),
                }
            )
    return rows
