"""Measured profiles on a Jetson: one TensorRT engine per group and accelerator, timed with CUDA
events; hand-overs timed as chained engines; contention from co-running GPU and DLA engines.

The hardware work goes through ``trt_engine`` (lazy tensorrt/pycuda). Everything it decides —
which engines, which layouts, how timings become profile numbers — is pure and tested.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from hxsched import __version__
from hxsched.errors import HxschedError, MissingDependencyError
from hxsched.runtime.backends.trt import engine as te
from hxsched.scheduler.cost.contention import CoRun, fit_contention
from hxsched.scheduler.cost.estimate import estimate_profile
from hxsched.scheduler.graph.graph import Graph
from hxsched.scheduler.graph.onnx_io import to_model_proto
from hxsched.scheduler.graph.segments import extract_segment
from hxsched.scheduler.profile.schema import GroupProfile, Profile, Provenance, Transition
from hxsched.scheduler.types import Accelerator, AcceleratorKind, ProvenanceKind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineJob:
    """One engine to build and time: groups ``first..last`` on ``accelerator``."""

    first_group: int
    last_group: int
    accelerator: Accelerator


def engine_jobs(profile: Profile) -> list[EngineJob]:
    """A GPU engine per group, and a DLA engine per DLA-capable group (on dla0)."""
    jobs = []
    for g in profile.groups:
        jobs.append(EngineJob(g.id, g.id, Accelerator.GPU))
        if AcceleratorKind.DLA in g.time_ms:
            jobs.append(EngineJob(g.id, g.id, Accelerator.DLA0))
    return jobs


def transition_pairs(profile: Profile) -> list[tuple[int, int]]:
    """Cuts where a hand-over can happen: between two groups of which the second (GPU->DLA) or
    first (DLA->GPU) can run on the DLA."""
    return [
        (g.id, g.id + 1)
        for g in profile.groups[:-1]
        if "dla" in g.time_ms or "dla" in profile.groups[g.id + 1].time_ms
    ]


def corun_samples(
    alone_ms: float, beside_ms: Sequence[float], own_bw: float, other_bw: float
) -> list[CoRun]:
    """Co-run measurements as fitting samples (one per run)."""
    if alone_ms <= 0:
        return []
    return [CoRun(own_bw, other_bw, max(1.0, b / alone_ms)) for b in beside_ms]


def _node_range(graph: Graph, g: GroupProfile) -> tuple[int, int]:
    if g.first is None or g.last is None:
        raise HxschedError("the trt backend needs groups with first/last nodes")
    return graph.index_of(g.first), graph.index_of(g.last)


@contextlib.contextmanager
def _loaded(blob: bytes, accelerator: str, log: list[str]) -> Iterator[te.EngineRunner]:
    """An engine deserialized for one measurement and released right after it."""
    runner = te.EngineRunner(blob, Accelerator(accelerator).dla_core, log)
    try:
        yield runner
    finally:
        runner.release()


def measure_trt_profile(
    graph: Graph,
    device_name: str,
    *,
    precision: str = "fp16",
    max_groups: int = 40,
    model_name: str | None = None,
    runs: int = 50,
    warmup: int = 10,
) -> Profile:
    """Measure every group on the GPU and on dla0 of this Jetson (needs TensorRT and pycuda)."""
    from hxsched.capabilities import detect

    caps = detect()
    if not caps.trt_available:
        raise MissingDependencyError(
            "--backend trt needs TensorRT (on a Jetson: JetPack's python3-libnvinfer) and "
            "pycuda (pip install 'hxsched[jetson]'; JETSON.md); use --backend estimate or ort "
            "elsewhere"
        )
    base = estimate_profile(
        graph, device_name, precision=precision, max_groups=max_groups, model_name=model_name
    )
    log: list[str] = []
    major = te.version_tuple(str(te.trt.__version__))[0]
    blobs: dict[tuple[int, str], bytes] = {}
    measured: dict[tuple[int, str], tuple[float, float]] = {}
    jobs = engine_jobs(base)
    for k, job in enumerate(jobs, 1):
        g = base.groups[job.first_group]
        a, b = _node_range(graph, g)
        seg = extract_segment(graph, a, b)
        cfg = te.build_config_for(
            job.accelerator,
            precision,
            inputs_from={n: None for n in seg.inputs},
            outputs_to={n: None for n in seg.outputs},
            trt_major=major,
        )
        logger.info("[%d/%d] building %s on %s", k, len(jobs), g.label, job.accelerator)
        try:
            blob = te.build_engine(to_model_proto(seg).SerializeToString(), cfg, log)
        except HxschedError as exc:
            if Accelerator(job.accelerator).is_dla:
                logger.warning(
                    "%s does not build on the DLA (%s); keeping it GPU-only", g.label, exc
                )
                continue
            raise
        blobs[(g.id, job.accelerator)] = blob
        # one engine alive at a time: a DLA core holds at most 16 loadables ("DLA Supported
        # Layers and Restrictions"), fewer than the DLA-capable groups of every zoo model
        with _loaded(blob, job.accelerator, log) as runner:
            measured[(g.id, job.accelerator)] = te.summarize_ms(runner.time_ms(runs, warmup))
    groups = []
    for g in base.groups:
        times, spread, sources = {}, {}, {}
        for kind, acc in (
            (AcceleratorKind.GPU, Accelerator.GPU),
            (AcceleratorKind.DLA, Accelerator.DLA0),
        ):
            if (g.id, acc) in measured:
                times[kind], spread[kind] = measured[(g.id, acc)]
                sources[f"time_ms.{kind}"] = "trt"
        mem = {k: (g.bytes or 0) / (v / 1e3) for k, v in times.items() if v > 0}
        groups.append(
            replace(
                g,
                time_ms=times,
                spread_ms=spread,
                memory_bw=mem,
                sources=sources,
                dla="dla" in times,
            )
        )
    transitions = []
    for a_id, b_id in transition_pairs(base):
        vals = {}
        for direction, (acc_a, acc_b) in (
            ("g2d", (Accelerator.GPU, Accelerator.DLA0)),
            ("d2g", (Accelerator.DLA0, Accelerator.GPU)),
        ):
            ba, bb = blobs.get((a_id, acc_a)), blobs.get((b_id, acc_b))
            if ba is None or bb is None:
                continue
            with _loaded(ba, acc_a, log) as ra, _loaded(bb, acc_b, log) as rb:
                chain = te.summarize_ms(te.time_chain(ra, rb, runs))[0]
            value, note = te.transition_from_timings(
                chain, measured[(a_id, acc_a)][0], measured[(b_id, acc_b)][0]
            )
            if note:
                logger.warning("transition after g%02d %s: %s", a_id, direction, note)
            vals[direction] = value
        est = next((t for t in base.transitions if t.after == a_id), None)
        transitions.append(
            Transition(
                a_id,
                vals.get("g2d", est.gpu_to_dla_ms if est else 0.0),
                vals.get("d2g", est.dla_to_gpu_ms if est else 0.0),
                bytes=base.groups[a_id].out_bytes,
                source="trt" if len(vals) == 2 else "cost-model",
            )
        )
    contention = base.contention
    samples: list[CoRun] = []
    dla_ids = [g.id for g in groups if "dla" in g.time_ms]
    if dla_ids:
        heavy_gpu = max(groups, key=lambda g: g.time_ms["gpu"]).id
        heavy_dla = max(dla_ids, key=lambda i: groups[i].time_ms["dla"])
        logger.info("co-running the heaviest GPU and DLA groups to fit the contention model")
        with (
            _loaded(blobs[(heavy_gpu, "gpu")], "gpu", log) as ra,
            _loaded(blobs[(heavy_dla, "dla0")], "dla0", log) as rb,
        ):
            ta, tb = te.time_concurrently(ra, rb, runs)
        ga, gb = groups[heavy_gpu], groups[heavy_dla]
        samples += corun_samples(
            ga.time_ms["gpu"], ta, ga.memory_bw.get("gpu", 0.0), gb.memory_bw.get("dla", 0.0)
        )
        samples += corun_samples(
            gb.time_ms["dla"], tb, gb.memory_bw.get("dla", 0.0), ga.memory_bw.get("gpu", 0.0)
        )
        if samples:
            peak = base.contention.peak_gbs if base.contention else 204.8
            contention, rmse = fit_contention(samples, peak)
            logger.info("contention model fitted: %s (rmse %.3f)", contention, rmse)
    versions = {"hxsched": __version__, "tensorrt": str(te.trt.__version__)}
    provenance = dict(base.provenance)
    provenance["trt"] = Provenance(
        ProvenanceKind.MEASURED,
        "TensorRT engines timed with CUDA events around execute_async_v3",
        versions,
        datetime.datetime.now().isoformat(timespec="seconds"),
        f"{warmup} warm-up + {runs} runs per engine; median, IQR spread",
    )
    return replace(
        base,
        provenance=provenance,
        default_source="trt",
        groups=tuple(groups),
        transitions=tuple(transitions),
        contention=contention,
    )
