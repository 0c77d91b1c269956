"""Measured profiles on a Jetson: one TensorRT engine per group and accelerator, timed with CUDA
events; hand-overs timed as chained engines; contention from co-running GPU and DLA engines.

The hardware work goes through ``trt_engine`` (lazy tensorrt/pycuda). Everything it decides —
which engines, which layouts, how timings become profile numbers — is pure and tested.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from hxsched import __version__
from hxsched.errors import HxschedError
from hxsched.runtime.backends.trt import engine as te
from hxsched.scheduler.cost.contention import CoRun, fit_contention
from hxsched.scheduler.cost.estimate import estimate_profile
from hxsched.scheduler.graph.graph import Graph
from hxsched.scheduler.graph.onnx_io import to_model_proto
from hxsched.scheduler.graph.segments import extract_segment
from hxsched.scheduler.profile.schema import GroupProfile, Profile, Provenance, Transition


@dataclass(frozen=True)
class EngineJob:
    """One engine to build and time: groups ``first..last`` on ``accelerator``."""

    first_group: int
    last_group: int
    accelerator: str


def engine_jobs(profile: Profile) -> list[EngineJob]:
    """A GPU engine per group, and a DLA engine per DLA-capable group (on dla0)."""
    jobs = []
    for g in profile.groups:
        jobs.append(EngineJob(g.id, g.id, "gpu"))
        if "dla" in g.time_ms:
            jobs.append(EngineJob(g.id, g.id, "dla0"))
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


def measure_trt_profile(
    graph: Graph,
    device_name: str,
    *,
    precision: str = "fp16",
    max_groups: int = 40,
    model_name: str | None = None,
    runs: int = 50,
    warmup: int = 10,
    progress: Callable[[str], None] | None = None,
) -> Profile:
    """Measure every group on the GPU and on dla0 of this Jetson (needs TensorRT and pycuda)."""
    say = progress or (lambda _m: None)
    from hxsched.capabilities import detect

    caps = detect()
    if not caps.trt_available:
        raise HxschedError(
            "--backend trt needs TensorRT (on a Jetson: JetPack's python3-libnvinfer) and "
            "pycuda (pip install 'hxsched[jetson]'); use --backend estimate or ort elsewhere"
        )
    base = estimate_profile(
        graph, device_name, precision=precision, max_groups=max_groups, model_name=model_name
    )
    log: list[str] = []
    runners: dict[tuple[int, str], te.EngineRunner] = {}
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
        )
        say(f"[{k}/{len(jobs)}] building {g.label} on {job.accelerator}")
        try:
            blob = te.build_engine(to_model_proto(seg).SerializeToString(), cfg, log)
        except HxschedError as exc:
            if job.accelerator.startswith("dla"):
                say(f"  {g.label} does not build on the DLA ({exc}); keeping it GPU-only")
                continue
            raise
        runner = te.EngineRunner(blob, cfg.dla_core, log)
        runners[(g.id, job.accelerator)] = runner
        measured[(g.id, job.accelerator)] = te.summarize_ms(runner.time_ms(runs, warmup))
    groups = []
    for g in base.groups:
        times, spread, sources = {}, {}, {}
        for kind, acc in (("gpu", "gpu"), ("dla", "dla0")):
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
        for direction, (acc_a, acc_b) in (("g2d", ("gpu", "dla0")), ("d2g", ("dla0", "gpu"))):
            ra, rb = runners.get((a_id, acc_a)), runners.get((b_id, acc_b))
            if ra is None or rb is None:
                continue
            chain = te.summarize_ms(te.time_chain(ra, rb, runs))[0]
            value, note = te.transition_from_timings(
                chain, measured[(a_id, acc_a)][0], measured[(b_id, acc_b)][0]
            )
            if note:
                say(f"  transition after g{a_id:02d} {direction}: {note}")
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
    contention = dict(base.contention)
    samples: list[CoRun] = []
    dla_ids = [g.id for g in groups if "dla" in g.time_ms]
    if dla_ids:
        heavy_gpu = max(groups, key=lambda g: g.time_ms["gpu"]).id
        heavy_dla = max(dla_ids, key=lambda i: groups[i].time_ms["dla"])
        ra, rb = runners[(heavy_gpu, "gpu")], runners[(heavy_dla, "dla0")]
        say("co-running the heaviest GPU and DLA groups to fit the contention model")
        ta, tb = te.time_concurrently(ra, rb, runs)
        ga, gb = groups[heavy_gpu], groups[heavy_dla]
        samples += corun_samples(
            ga.time_ms["gpu"], ta, ga.memory_bw.get("gpu", 0.0), gb.memory_bw.get("dla", 0.0)
        )
        samples += corun_samples(
            gb.time_ms["dla"], tb, gb.memory_bw.get("dla", 0.0), ga.memory_bw.get("gpu", 0.0)
        )
        if samples:
            model, rmse = fit_contention(samples, base.contention.get("peak_gbs", 204.8))
            contention = model.to_dict()
            say(f"contention model fitted: {contention} (rmse {rmse:.3f})")
    versions = {"hxsched": __version__, "tensorrt": str(te.trt.__version__)}
    provenance = dict(base.provenance)
    provenance["trt"] = Provenance(
        "measured",
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
