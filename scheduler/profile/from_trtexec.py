"""Profiles imported from trtexec runs: GPU times per layer, DLA subgraph times apportioned."""

from __future__ import annotations

import datetime
from dataclasses import replace

from hxsched import __version__
from hxsched.errors import HxschedError
from hxsched.scheduler.cost.costs import node_cost
from hxsched.scheduler.cost.devices import device as get_device
from hxsched.scheduler.cost.estimate import COST_MODEL_VERSION, estimate_groups, estimate_profile
from hxsched.scheduler.cost.groups import make_groups
from hxsched.scheduler.dla.check import check_graph
from hxsched.scheduler.graph.graph import Graph
from hxsched.scheduler.profile.schema import GroupProfile, Profile, Provenance
from hxsched.scheduler.profile.trtexec import ExportedProfile, attribute
from hxsched.scheduler.types import AcceleratorKind, ProvenanceKind

GPU, DLA = AcceleratorKind.GPU, AcceleratorKind.DLA


def import_trtexec(
    graph: Graph,
    device_name: str,
    gpu: ExportedProfile,
    dla: ExportedProfile | None = None,
    *,
    precision: str = "fp16",
    max_groups: int = 40,
    model_name: str | None = None,
    trt: str | None = None,
) -> Profile:
    """A profile whose GPU times come from a GPU-only engine's per-layer profile and whose DLA
    times come from a DLA engine's subgraph totals, split over the subgraph's groups in
    proportion to the cost model's DLA estimates. Numbers neither file covers stay estimated
    and say so."""
    dev = get_device(device_name)
    base = estimate_profile(
        graph,
        device_name,
        precision=precision,
        max_groups=max_groups,
        model_name=model_name,
        trt=trt,
    )
    if dev.dla_target:
        verdicts = check_graph(graph, target=dev.dla_target, trt=trt, precision=precision)
        dla_ok = {v.node: v.dla for v in verdicts.verdicts}
    else:
        dla_ok = {n.name: False for n in graph.nodes}
    costs = {n.name: node_cost(graph, n) for n in graph.nodes}
    groups = make_groups(graph, dla_ok, max_groups=max_groups, costs=costs)
    owner = {name: g.id for g in groups for name in g.nodes}
    est = estimate_groups(graph, groups, dev, precision, costs)

    gpu_att = attribute(gpu, graph)
    if not gpu_att.node_ms:
        raise HxschedError(
            "no layer in this profile matches a node of the model (is it the same model?)",
            path=gpu.path,
        )
    gpu_ms = [0.0] * len(groups)
    gpu_seen = [False] * len(groups)
    for name, ms in gpu_att.node_ms.items():
        gpu_ms[owner[name]] += ms
        gpu_seen[owner[name]] = True
    dla_ms: dict[int, float] = {}
    if dla is not None:
        dla_att = attribute(dla, graph)
        if not dla_att.dla_blocks:
            raise HxschedError("this profile has no DLA subgraph ({...} layer)", path=dla.path)
        for members, total in dla_att.dla_blocks:
            ids = sorted({owner[m] for m in members})
            weights = [est[i].time_ms.get(DLA, est[i].time_ms[GPU]) for i in ids]
            norm = sum(weights) or 1.0
            for i, wgt in zip(ids, weights, strict=True):
                dla_ms[i] = dla_ms.get(i, 0.0) + total * wgt / norm
    today = datetime.date.today().isoformat()
    provenance = {
        "trtexec-gpu": Provenance(
            ProvenanceKind.IMPORTED,
            f"trtexec --exportProfile ({gpu.path})",
            {"iterations": str(gpu.iterations)},
            today,
            "GPU engine: per-layer times summed per group",
        ),
        "cost-model": Provenance(
            ProvenanceKind.ESTIMATED, COST_MODEL_VERSION, {"hxsched": __version__}, today
        ),
    }
    if dla is not None:
        provenance["trtexec-dla"] = Provenance(
            ProvenanceKind.IMPORTED,
            f"trtexec --exportProfile ({dla.path})",
            {"iterations": str(dla.iterations)},
            today,
            "DLA subgraph totals split over their groups by the cost model's DLA estimates",
        )
    out_groups = []
    for g, bg in zip(groups, base.groups, strict=True):
        times = dict(bg.time_ms)
        sources = {}
        if gpu_seen[g.id]:
            times[GPU] = gpu_ms[g.id]
            sources["time_ms.gpu"] = "trtexec-gpu"
        else:
            sources["time_ms.gpu"] = "cost-model"
        if DLA in times:
            if g.id in dla_ms:
                times[DLA] = dla_ms[g.id]
                sources["time_ms.dla"] = "trtexec-dla"
            else:
                sources["time_ms.dla"] = "cost-model"
        memory = {k: (g.bytes / (v / 1e3) if v > 0 else 0.0) for k, v in times.items()}
        out_groups.append(
            GroupProfile(
                **{**bg.__dict__, "time_ms": times, "memory_bw": memory, "sources": sources}
            )
        )
    return replace(
        base,
        provenance=provenance,
        default_source="cost-model",
        groups=tuple(out_groups),
        notes=f"imported from trtexec; {gpu_att.unattributed_ms:.3f} ms of GPU rows matched no node",
    )
