"""Measured profiles on this CPU: ONNX Runtime's per-node profiler, aggregated to layer groups.

The model runs with ONNX Runtime's graph optimisations off (hxsched has folded the constants
already): a fusion across a group boundary, e.g. a BatchNorm folded into the ConvTranspose of the
group before it, would move one group's time into another, and segments never fuse across
boundaries when they run on their own. After warm-up runs,
each profiled run's node times are summed per group; a group's time is the median over runs and
its spread the inter-quartile range. The whole model is timed separately, without the profiler,
so the two can be compared (group times should sum to within 10 % of it; a warning says when
not). Unless told, the intra-op thread count is picked by timing the whole model with each
candidate (1, half and all cores), interleaved: on a loaded machine more threads can be slower.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hxsched._compat import require
from hxsched.errors import HxschedError
from hxsched.scheduler.cost.costs import node_cost
from hxsched.scheduler.cost.groups import LayerGroup, make_groups
from hxsched.scheduler.graph.graph import Graph
from hxsched.scheduler.graph.onnx_io import to_model_proto
from hxsched.scheduler.profile.schema import GroupProfile, ModelInfo, Profile, Provenance
from hxsched.scheduler.types import AcceleratorKind, Precision, ProvenanceKind

log = logging.getLogger(__name__)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def node_name_from_event(event_name: str) -> str:
    """``/model.0/conv/Conv_kernel_time`` -> ``/model.0/conv/Conv``; fused nodes keep the name
    of their last node before the ``/...Fusion/`` suffix ONNX Runtime appends."""
    name = event_name[: -len("_kernel_time")] if event_name.endswith("_kernel_time") else event_name
    if "Fusion/" in name:
        name = name[: name.rfind("/", 0, name.find("Fusion/"))]
    return name


@dataclass(frozen=True)
class RunTimes:
    """Per-run node durations (ms) from one ONNX Runtime profile file."""

    runs: list[dict[str, float]]  # one dict node -> ms per model_run
    run_ms: list[float]  # model_run durations (ms)


def parse_ort_profile(events: Sequence[dict]) -> RunTimes:
    """Split ONNX Runtime profiler events into runs and sum node kernel times per run."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    per_run: list[dict[str, float]] = [dict() for _ in runs]
    starts = [r["ts"] for r in runs]
    ends = [r["ts"] + r["dur"] for r in runs]
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        ts = e["ts"]
        for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
            if a <= ts <= b:
                name = node_name_from_event(e["name"])
                per_run[i][name] = per_run[i].get(name, 0.0) + e["dur"] / 1e3
                break
    return RunTimes(per_run, [r["dur"] / 1e3 for r in runs])


def _iqr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = np.percentile(values, [25, 75])
    return float(q[1] - q[0])


SUM_GOAL = (0.9, 1.1)  # group sums over the whole model's time that count as consistent


@dataclass(frozen=True)
class OrtMeasurement:
    profile: Profile
    groups_sum_ms: float
    whole_ms: float
    unattributed_ms: float
    threads: int = 1
    threads_ms: dict[int, float] = field(default_factory=dict)  # trial medians when picked

    @property
    def ratio(self) -> float:
        return self.groups_sum_ms / self.whole_ms if self.whole_ms else float("nan")

    @property
    def warning(self) -> str | None:
        """One line when the group times do not add up to the whole model's."""
        lo, hi = SUM_GOAL
        if self.whole_ms and lo <= self.ratio <= hi:
            return None
        return (
            f"the group times sum to {self.ratio:.0%} of the whole model's measured time "
            f"(outside {lo:.0%}-{hi:.0%}): the figures may be unreliable (a loaded machine? "
            "measure again with more --runs, or fewer --threads)"
        )


def _session(model_bytes: bytes, threads: int, profile_dir: str | None):
    require("onnxruntime", extra="ort")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if profile_dir is not None:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort")
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def candidate_threads(cores: int | None = None) -> tuple[int, ...]:
    """Intra-op thread counts worth timing: 1, half and all of this machine's cores."""
    n = cores or os.cpu_count() or 1
    return tuple(sorted({1, max(1, n // 2), n}))


def pick_threads(
    model_bytes: bytes, feeds: dict, candidates: Sequence[int], trials: int
) -> tuple[int, dict[int, float]]:
    """The candidate whose session runs the whole model fastest (median of ``trials`` runs,
    candidates interleaved so that all see the same load), and every candidate's median."""
    if len(candidates) == 1:
        return candidates[0], {}
    sessions = {t: _session(model_bytes, t, None) for t in candidates}
    times: dict[int, list[float]] = {t: [] for t in candidates}
    for s in sessions.values():
        s.run(None, feeds)  # first run: allocations
    for _ in range(trials):
        for t, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[t].append((time.perf_counter() - t0) * 1e3)
    medians = {t: statistics.median(v) for t, v in times.items()}
    best = min(candidates, key=lambda t: (medians[t], t))
    log.info(
        "intra-op threads by measuring the whole model: %s -> %d",
        ", ".join(f"{t}: {ms:.3g} ms" for t, ms in medians.items()),
        best,
    )
    return best, medians


def measure_ort_profile(
    graph: Graph,
    *,
    runs: int = 10,
    warmup: int = 3,
    threads: int = 0,
    max_groups: int = 40,
    model_name: str | None = None,
    groups: Sequence[LayerGroup] | None = None,
) -> OrtMeasurement:
    """Profile ``graph`` on this CPU with ONNX Runtime (device ``cpu``, FP32)."""
    require("onnxruntime", extra="ort")
    import onnxruntime as ort

    from hxsched.runtime.reference import random_inputs

    if runs < 1 or warmup < 0:
        raise HxschedError("--runs must be >= 1 and --warmup >= 0")
    model_bytes = to_model_proto(graph).SerializeToString()
    if len(model_bytes) > 2_000_000_000:
        raise HxschedError("models over 2 GB cannot be profiled in memory yet", path=graph.path)
    feeds = random_inputs(graph, seed=0)
    trial: dict[int, float] = {}
    if not threads:
        threads, trial = pick_threads(model_bytes, feeds, candidate_threads(), max(2, warmup))
    groups = (
        list(groups)
        if groups is not None
        else make_groups(graph, {n.name: False for n in graph.nodes}, max_groups=max_groups)
    )
    log.info(
        "timing the whole model and profiling its nodes, interleaved: %d warm-up + "
        "%d runs each (%d threads)",
        warmup,
        runs,
        threads,
    )
    whole = []
    with tempfile.TemporaryDirectory(prefix="hxsched-ortprof-") as tmp:
        plain = _session(model_bytes, threads, None)
        profiled = _session(model_bytes, threads, tmp)
        for i in range(warmup + runs):
            # alternate the two so that both see the same machine load
            t0 = time.perf_counter()
            plain.run(None, feeds)
            if i >= warmup:
                whole.append((time.perf_counter() - t0) * 1e3)
            profiled.run(None, feeds)
        path = profiled.end_profiling()
        with open(path) as f:
            events = json.load(f)
        del plain, profiled
    times = parse_ort_profile(events)
    measured = times.runs[warmup:]
    if len(measured) != runs:
        raise HxschedError(
            f"ONNX Runtime's profile holds {len(times.runs)} runs, expected {warmup + runs}"
        )
    owner = {name: g.id for g in groups for name in g.nodes}
    per_group: list[list[float]] = [[] for _ in groups]
    unattributed = []
    for run in measured:
        sums = [0.0] * len(groups)
        lost = 0.0
        for name, ms in run.items():
            gid = owner.get(name)
            if gid is None:
                lost += ms
            else:
                sums[gid] += ms
        for gid, v in enumerate(sums):
            per_group[gid].append(v)
        unattributed.append(lost)
    costs = {n.name: node_cost(graph, n) for n in graph.nodes}
    profiles = []
    for g, samples in zip(groups, per_group, strict=True):
        med = statistics.median(samples)
        moved = sum(costs[n].bytes for n in g.nodes)
        profiles.append(
            GroupProfile(
                id=g.id,
                name=g.name,
                first=g.first,
                last=g.last,
                nodes=len(g.nodes),
                dla=False,
                flops=g.flops,
                bytes=g.bytes,
                weight_bytes=g.weight_bytes,
                out_bytes=g.out_bytes,
                time_ms={AcceleratorKind.CPU: med},
                spread_ms={AcceleratorKind.CPU: _iqr(samples)},
                memory_bw={AcceleratorKind.CPU: moved / (med / 1e3) if med > 0 else 0.0},
            )
        )
    whole_ms = statistics.median(whole)
    provenance = Provenance(
        kind=ProvenanceKind.MEASURED,
        tool="onnxruntime profiler (CPUExecutionProvider, graph optimisations off)",
        versions={
            "onnxruntime": ort.__version__,
            "cpu": cpu_name(),
            "threads": str(threads),
            "runs": f"{warmup} warm-up + {runs} measured",
        },
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        notes="group time = median over runs of the summed node kernel times; spread = IQR"
        + _threads_note(threads, trial),
    )
    profile = Profile(
        device="cpu",
        precision=Precision.FP32,
        model=ModelInfo.of(graph, model_name),
        provenance={"ort": provenance},
        default_source="ort",
        groups=tuple(profiles),
        whole_model_ms={AcceleratorKind.CPU: whole_ms},
    )
    m = OrtMeasurement(
        profile,
        groups_sum_ms=sum(p.time_ms[AcceleratorKind.CPU] for p in profiles),
        whole_ms=whole_ms,
        unattributed_ms=statistics.median(unattributed) if unattributed else 0.0,
        threads=threads,
        threads_ms=trial,
    )
    if m.warning:
        log.warning(m.warning)
    return m


def _threads_note(threads: int, trial: dict[int, float]) -> str:
    if not trial:
        return f"; {threads} intra-op thread(s), as asked"
    timed = ", ".join(f"{t} -> {ms:.4g} ms" for t, ms in trial.items())
    return f"; {threads} intra-op thread(s), picked by timing the whole model ({timed})"
