"""``hxsched bench``: measure a plan the way trtexec measures an engine (warm-up, duration,
latency percentiles, per-frame times) and, with ``--against baselines``, its baselines too."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hxsched.cli._common import add_json, add_quiet, add_shape, emit, parse_shapes, table
from hxsched.errors import HxschedError

log = logging.getLogger(__name__)

HELP = "benchmark a plan on ort, sim or trt (trtexec-style), optionally against its baselines"
SCHEMA = "hxsched.bench/1"
BASELINES = ("gpu-only", "naive", "trt-default")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help=HELP,
        description=HELP + ". Like trtexec: --warmup ms of frames left out, then --duration "
        "seconds and at least --iterations frames measured; throughput, latency "
        "mean/std/p50/p90/p95/p99/max, per-segment times, per-accelerator busy and overlap, "
        "each beside the plan's prediction. --against baselines runs the GPU-only, naive and "
        "TensorRT-default plans on the same backend in the same run.",
    )
    p.add_argument("plan", help="plan.yaml (from hxsched plan) or a pipeline YAML")
    p.add_argument("--backend", choices=("ort", "sim", "trt"), default=None)
    p.add_argument("--warmup", type=float, default=200.0, help="warm-up, ms (default 200)")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds (default 3)")
    p.add_argument("--iterations", type=int, default=10, help="at least this many frames")
    p.add_argument("--max-frames", type=int, default=100_000, help="stop after this many frames")
    p.add_argument("--inflight", type=int, help="frames in flight (default: the schedule's + 1)")
    p.add_argument("--threads", type=int, help="ort: threads per accelerator worker")
    p.add_argument("--real-time", action="store_true", help="sim: real sleeps")
    p.add_argument(
        "--against", choices=("baselines",), help="also run the plan's baselines, same backend"
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        nargs="+",
        help="real inputs, cycled: slices (DICOM CT, PNG, TIFF files or folders) through each "
        "model's own pre-processing (CT window, letterbox), as the service does; or one .npz "
        "(keys INPUT or INSTANCE/INPUT; an array of the input's shape, or a stack of frames) "
        "or .npy (a model with one input)",
    )
    p.add_argument(
        "--save-outputs",
        metavar="DIR",
        help="write the plan's outputs for each input set once: DIR/<set>/<instance>.<output>.npy "
        "and DIR/index.json (ort, trt)",
    )
    p.add_argument("--export-times", metavar="FILE", help="per-frame times (trtexec fields), JSON")
    p.add_argument(
        "--plots", metavar="DIR", help="measured vs predicted bars, latency CDF (PNG+SVG)"
    )
    p.add_argument(
        "--nsys-sqlite",
        metavar="FILE",
        help="also read a recorded run's nsys SQLite export (nsys export --type sqlite): "
        "device busy time per accelerator and overlap, beside this run's",
    )
    add_shape(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------
# Records (the --json output; schemas/hxsched.bench-1.schema.json documents them)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyStats:
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True)
class SegmentSplit:
    """trt: one segment's medians from its CUDA events (copy stream and segment stream)."""

    enqueue_ms: float  # host wall time in its enqueue calls
    h2d_ms: float
    compute_ms: float
    d2h_ms: float


@dataclass(frozen=True)
class SegmentTimes:
    accelerator: str
    runs: int
    mean_ms: float
    median_ms: float
    p99_ms: float
    expected_ms: float
    ratio: float | None  # median / expected
    split: SegmentSplit | None = None  # trt only


@dataclass(frozen=True)
class SplitStats:
    """trt: each frame's time split as trtexec splits a query (all its segments together)."""

    enqueue_ms: LatencyStats  # host wall time: binding setup, copy calls, execute_async_v3
    pack_ms: LatencyStats  # host: casting inputs into their pinned buffers
    h2d_ms: LatencyStats
    compute_ms: LatencyStats
    d2h_ms: LatencyStats
    end_to_end_ms: LatencyStats  # first upload to last download (trtexec endToEndMs)


# why a backend has no split: it makes no host<->device copies to time
NO_SPLIT = {
    "sim": "no enqueue/copy/compute split on sim: it simulates the plan's times and makes no "
    "host<->device copies (use --backend trt)",
    "ort": "no enqueue/copy/compute split on ort: ONNX Runtime's CPU provider computes in host "
    "memory, so there are no host<->device copies to time (use --backend trt)",
}


@dataclass(frozen=True)
class Predicted:
    fps: float | None
    latency_ms: float | None


@dataclass(frozen=True)
class BenchRun:
    name: str  # "plan" or a baseline's name
    backend: str
    source: str
    inflight: int
    warmup_frames: int
    frames: int
    measured_ms: float
    throughput_fps: float
    latency_ms: LatencyStats
    enqueue_ms: LatencyStats | None  # host time in enqueue calls per frame (all segments)
    predicted: Predicted
    fps_over_predicted: float | None
    latency_p50_over_predicted: float | None
    busy: dict[str, float]  # fraction of the measured span each accelerator was busy
    overlap: float  # fraction of the measured span with two or more accelerators busy
    segments: dict[str, SegmentTimes]
    notes: tuple[str, ...] = ()
    split: SplitStats | None = None  # trt only (NO_SPLIT says why elsewhere)


@dataclass(frozen=True)
class NsysSummary:
    file: str
    segment_runs: int
    host_ranges: int  # segments without CUDA activity (DLA): their NVTX host range stands in
    span_ms: float
    busy_ms: dict[str, float]
    overlap_ms: float


@dataclass(frozen=True)
class BenchReport:
    schema: str
    plan: str
    backend: str
    warmup_ms: float
    duration_s: float
    iterations: int
    runs: tuple[BenchRun, ...]
    beaten_by: tuple[str, ...] = ()  # baselines faster than the plan, measured
    export_times: str | None = None
    data: str | None = None  # --data: what fed the frames
    saved_outputs: str | None = None  # --save-outputs folder
    plots: tuple[str, ...] = ()
    nsys: NsysSummary | None = None  # --nsys-sqlite
    notes: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def latency_stats(values: Sequence[float]) -> LatencyStats:
    from hxsched.runtime.executor import percentile

    if not values:
        return LatencyStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    p50, p90, p95, p99 = (percentile(values, q) for q in (50, 90, 95, 99))
    return LatencyStats(
        mean=round(statistics.fmean(values), 4),
        std=round(statistics.pstdev(values), 4),
        min=round(min(values), 4),
        p50=round(p50, 4),
        p90=round(p90, 4),
        p95=round(p95, 4),
        p99=round(p99, 4),
        max=round(max(values), 4),
    )


def union_length(spans: Sequence[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def overlap_length(per_acc: dict[str, list[tuple[float, float]]]) -> float:
    """Time with two or more accelerators busy (a sweep over every span's start and end)."""
    points = []
    for spans in per_acc.values():
        for a, b in _merged(spans):
            points += [(a, 1), (b, -1)]
    points.sort()
    busy, last, total = 0, 0.0, 0.0
    for t, d in points:
        if busy >= 2:
            total += t - last
        busy += d
        last = t
    return total


def _merged(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def export_record(r, accelerators: dict[str, str], times: dict | None = None) -> dict[str, Any]:
    """One frame as trtexec's ``--exportTimes`` writes it (TensorRT samples/common
    sampleReporting.cpp, exportJSONTrace), plus hxsched's per-segment spans. ``computeMs`` is
    the time a segment of the frame was computing; on trt (``times``: the backend's event times
    by (frame, segment)) also trtexec's ``startH2dMs``..``endD2hMs``, ``h2dMs``, ``d2hMs`` and
    ``endToEndMs``, and hxsched's ``hostEnqueueMs`` and ``packMs``. ``latencyMs`` stays the
    frame's release to its last compute end (trtexec's is h2dMs + computeMs + d2hMs)."""
    from hxsched.runtime.backends.trt.backend import copy_split

    starts = [s for s, _ in r.spans.values()]
    ends = [e for _, e in r.spans.values()]
    runs = {n: times[(r.index, n)] for n in r.spans if times and (r.index, n) in times}
    rec: dict[str, Any] = {"frame": r.index, "releaseMs": round(r.admitted_ms, 5)}
    if r.enqueue:
        rec["startEnqMs"] = round(min(a for a, _ in r.enqueue.values()), 5)
        rec["endEnqMs"] = round(max(b for _, b in r.enqueue.values()), 5)
    rec["startComputeMs"] = round(min(starts), 5)
    rec["endComputeMs"] = round(max(ends), 5)
    rec["computeMs"] = round(union_length(list(r.spans.values())), 5)
    rec["latencyMs"] = round(r.latency_ms, 5)
    if runs:
        rec.update(split_fields(copy_split(list(runs.values()))))
    rec["segments"] = {
        n: {"accelerator": accelerators[n], "startMs": round(a, 5), "endMs": round(b, 5)}
        | (_segment_split_fields(copy_split([runs[n]])) if n in runs else {})
        for n, (a, b) in r.spans.items()
    }
    return rec


def split_fields(sp) -> dict[str, float]:
    """A CopySplit under trtexec's ``--exportTimes`` names (and two of hxsched's)."""
    out = {}
    for tag, pair in (("H2d", sp.h2d), ("D2h", sp.d2h)):
        if pair is not None:
            out[f"start{tag}Ms"], out[f"end{tag}Ms"] = round(pair[0], 5), round(pair[1], 5)
    out |= {"h2dMs": round(sp.h2d_ms, 5), "d2hMs": round(sp.d2h_ms, 5)}
    out["endToEndMs"] = round(sp.end_to_end_ms, 5)
    out |= {"hostEnqueueMs": round(sp.enqueue_ms, 5), "packMs": round(sp.pack_ms, 5)}
    return out


def _segment_split_fields(sp) -> dict[str, float]:
    return {
        "h2dMs": round(sp.h2d_ms, 5),
        "computeMs": round(sp.compute_ms, 5),
        "d2hMs": round(sp.d2h_ms, 5),
        "hostEnqueueMs": round(sp.enqueue_ms, 5),
    }


def figures(
    name: str,
    plan,
    stats,
    results: Sequence,
    warm: int,
    inflight_note: str,
    scale: float,
    own_device: bool = True,
    times: dict | None = None,
) -> BenchRun:
    """The measured frames (after warm-up) as a BenchRun beside the plan's prediction (ratios
    only where the backend measures the plan's own device: sim, or trt on it); ``times``: the
    trt backend's event times by (frame, segment), for the enqueue/copy/compute split."""
    measured = results[warm:]
    lat = [r.latency_ms for r in measured]
    enq = [sum(b - a for a, b in r.enqueue.values()) for r in measured if r.enqueue]
    done = [r.done_ms for r in measured]
    span_ms = (done[-1] - done[0]) if len(done) > 1 else 0.0
    fps = (len(done) - 1) / span_ms * 1000.0 if span_ms > 0 else 0.0
    per_acc: dict[str, list[tuple[float, float]]] = {}
    seg_runs: dict[str, list[float]] = {}
    accelerators = {n: s.accelerator for n, s in stats.segments.items()}
    for r in measured:
        for n, (a, b) in r.spans.items():
            per_acc.setdefault(accelerators[n], []).append((a, b))
            seg_runs.setdefault(n, []).append(b - a)
    t0 = min((a for s in per_acc.values() for a, _ in s), default=0.0)
    t1 = max((b for s in per_acc.values() for _, b in s), default=0.0)
    window = max(t1 - t0, 1e-9)
    pred = Predicted(plan.predicted.fps, plan.predicted.latency_ms)
    p50 = statistics.median(lat) if lat else 0.0
    own = scale if scale > 0 else 1.0
    return BenchRun(
        name=name,
        backend=stats.backend,
        source=stats.source,
        inflight=stats.inflight,
        warmup_frames=warm,
        frames=len(measured),
        measured_ms=round(span_ms, 4),
        throughput_fps=round(fps, 3),
        latency_ms=latency_stats(lat),
        enqueue_ms=latency_stats(enq) if enq else None,
        predicted=pred,
        fps_over_predicted=round(fps * own / pred.fps, 4)
        if own_device and pred.fps and fps
        else None,
        latency_p50_over_predicted=round(p50 / own / pred.latency_ms, 4)
        if own_device and pred.latency_ms and lat
        else None,
        busy={a: round(union_length(s) / window, 4) for a, s in sorted(per_acc.items())},
        overlap=round(overlap_length(per_acc) / window, 4),
        segments={
            n: _segment_times(stats.segments[n], v, _segment_split(measured, n, times))
            for n, v in sorted(seg_runs.items())
        },
        notes=tuple(
            n
            for n in (inflight_note, _device_note(plan, stats, own_device), _split_note(stats))
            if n
        ),
        split=frame_split_stats(measured, times),
    )


def _split_note(stats) -> str:
    return NO_SPLIT.get(stats.backend, "")


def frame_split_stats(measured: Sequence, times: dict | None) -> SplitStats | None:
    """Statistics of each measured frame's split (None without event times: ort, sim)."""
    from hxsched.runtime.backends.trt.backend import copy_split

    splits = []
    for r in measured:
        runs = [times[(r.index, n)] for n in r.spans if (r.index, n) in times] if times else []
        if runs:
            splits.append(copy_split(runs))
    if not splits:
        return None
    return SplitStats(
        enqueue_ms=latency_stats([s.enqueue_ms for s in splits]),
        pack_ms=latency_stats([s.pack_ms for s in splits]),
        h2d_ms=latency_stats([s.h2d_ms for s in splits]),
        compute_ms=latency_stats([s.compute_ms for s in splits]),
        d2h_ms=latency_stats([s.d2h_ms for s in splits]),
        end_to_end_ms=latency_stats([s.end_to_end_ms for s in splits]),
    )


def _segment_split(measured: Sequence, name: str, times: dict | None) -> SegmentSplit | None:
    from hxsched.runtime.backends.trt.backend import copy_split

    if not times:
        return None
    splits = [copy_split([times[(r.index, name)]]) for r in measured if (r.index, name) in times]
    if not splits:
        return None
    med = statistics.median
    return SegmentSplit(
        enqueue_ms=round(med(s.enqueue_ms for s in splits), 4),
        h2d_ms=round(med(s.h2d_ms for s in splits), 4),
        compute_ms=round(med(s.compute_ms for s in splits), 4),
        d2h_ms=round(med(s.d2h_ms for s in splits), 4),
    )


def _device_note(plan, stats, own_device: bool) -> str:
    if own_device:
        return ""
    return (
        f"the plan's figures are for {plan.device}; {stats.backend} measures this machine, so "
        "compare the runs with one another, not with the prediction"
    )


def _segment_times(seg, runs: list[float], split: SegmentSplit | None = None) -> SegmentTimes:
    from hxsched.runtime.executor import percentile

    med = statistics.median(runs)
    return SegmentTimes(
        accelerator=seg.accelerator,
        runs=len(runs),
        mean_ms=round(statistics.fmean(runs), 4),
        median_ms=round(med, 4),
        p99_ms=round(percentile(runs, 99), 4),
        expected_ms=round(seg.expected_ms, 4),
        ratio=round(med / seg.expected_ms, 4) if seg.expected_ms > 0 else None,
        split=split,
    )


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchOptions:
    backend: str
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    iterations: int = 10
    max_frames: int = 100_000
    inflight: int | None = None
    backend_opts: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # --shape
    data: tuple[str, ...] = ()  # --data
    models: dict[str, Any] = field(default_factory=dict)  # a pipeline's PipelineModel by name
    save_outputs: str | None = None  # --save-outputs

    def __post_init__(self) -> None:
        if self.warmup_ms < 0 or self.duration_s < 0:
            raise HxschedError("--warmup and --duration must be >= 0")
        if self.iterations < 2 or self.max_frames < self.iterations:
            raise HxschedError("--iterations must be >= 2 and --max-frames >= --iterations")
        if self.save_outputs and self.backend == "sim":
            raise HxschedError("--save-outputs needs a backend that computes (ort or trt), not sim")


def bench_plan(
    name: str, plan, opts: BenchOptions, say: Callable[[str], None] = log.info
) -> tuple[BenchRun, list, dict | None]:
    """Run ``plan`` for the warm-up and the duration: its BenchRun, the measured frames and, on
    trt, every segment run's event times by (frame, segment)."""
    from hxsched.runtime.executor import Executor
    from hxsched.runtime.session import input_pool, make_backend, measures_plan_device, specs_for

    backend = make_backend(opts.backend, **{"plan": plan, **opts.backend_opts})
    if opts.backend == "trt":
        backend.times = {}  # the trt backend keeps each run's event times when asked
    specs = specs_for(plan, opts.backend, opts.shapes)
    own = measures_plan_device(plan, opts.backend)
    ex = Executor(
        plan, specs, backend, inflight=opts.inflight, expected_from_plan=own, record_enqueue=True
    )
    results: list = []
    try:
        ex.prepare()
        names, pool = input_sets(specs, opts) if opts.data else ([], input_pool(specs))
        stats = ex.run(_frames(ex, pool, opts, name, say), on_output=results.append)
    finally:
        ex.close()
    if opts.save_outputs and name == "plan":
        save_outputs(results, names or [f"seeded-{k}" for k in range(len(pool))], opts.save_outputs)
    t0 = results[0].admitted_ms if results else 0.0
    warm = sum(1 for r in results if r.admitted_ms < t0 + opts.warmup_ms)
    warm = min(warm, max(0, len(results) - opts.iterations))
    scale = float(opts.backend_opts.get("time_scale", 1.0)) if opts.backend == "sim" else 1.0
    times = getattr(backend, "times", None)
    run_ = figures(name, plan, stats, results, warm, ex.inflight_note, scale, own, times)
    return run_, results[warm:], times


MAX_INPUT_SETS = 64  # slices held in memory at once (cycled); a CT series can hold hundreds
TENSOR_FILES = (".npz", ".npy")


def input_sets(specs: Sequence, opts: BenchOptions) -> tuple[list[str], list[dict]]:
    """(a name for each input set, the sets) from ``--data``: one tensor file, or slices."""
    paths = opts.data
    if len(paths) == 1 and Path(paths[0]).suffix.lower() in TENSOR_FILES:
        pool = data_pool(specs, paths[0])
        return [f"set{k:04d}" for k in range(len(pool))], pool
    return slice_pool(specs, paths, opts.models)


def slice_pool(specs: Sequence, paths: Sequence[str], models: dict[str, Any]):
    """Each slice through each model's own pre-processing (the CT window, then resize or
    letterbox), as the service prepares it: the pipeline's settings for its models, else the
    role's defaults for the role the model's output shape tells (``hxsched validate``'s)."""
    from hxsched.runtime.validate.validate import (
        collect_samples,
        infer_role,
        pipeline_model,
        prepare,
    )

    samples = collect_samples(list(paths))
    if len(samples) > MAX_INPUT_SETS:
        log.info(f"--data: the first {MAX_INPUT_SETS} of {len(samples)} inputs, cycled")
        samples = samples[:MAX_INPUT_SETS]
    names = [f"{k:04d}-{Path(s.name).stem}" for k, s in enumerate(samples)]
    live = [i for i in specs if i.graph is not None]
    if not live:
        return names, [{} for _ in samples]  # sim: no tensors flow
    settings = {}
    for inst in live:
        if len(inst.graph.inputs) != 1:
            raise HxschedError(
                f"{inst.name} has {len(inst.graph.inputs)} inputs: slices feed models with one "
                "image input; give its tensors as .npz"
            )
        settings[inst.name] = models.get(inst.model) or pipeline_model(inst, infer_role(inst.graph))
    pool = []
    for s in samples:
        feeds = {}
        for inst in live:
            m = settings[inst.name]
            feeds[inst.name] = {inst.graph.inputs[0]: prepare(s, inst, m.role, m)[0]}
        pool.append(feeds)
    return names, pool


def save_outputs(results: Sequence, names: Sequence[str], folder: str) -> Path:
    """Every output of the first frame of each input set as ``folder/<set>/<instance>.<output>.npy``
    and ``folder/index.json`` (set -> files)."""
    import re

    import numpy as np

    out = Path(folder)
    index: dict[str, list[str]] = {}

    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text)

    for r in results:
        if r.index >= len(names) or names[r.index] in index:
            continue
        where = out / safe(names[r.index])
        where.mkdir(parents=True, exist_ok=True)
        files = index.setdefault(names[r.index], [])
        for inst, tensors in r.outputs.items():
            for oname, value in tensors.items():
                f = where / f"{safe(inst)}.{safe(oname)}.npy"
                np.save(f, np.asarray(value), allow_pickle=False)
                files.append(str(f.relative_to(out)))
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return out


def data_pool(specs: Sequence, path: str) -> list[dict]:
    """Input sets from ``path`` (.npz or .npy) for every instance's model inputs, cycled."""
    import numpy as np

    if not any(i.graph is not None for i in specs):
        return [{}]  # sim: no tensors flow
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise HxschedError(f"cannot read --data: {exc}", path=path) from None
    arrays = dict(loaded.items()) if hasattr(loaded, "files") else {"": loaded}
    per: dict[str, dict[str, list]] = {}
    for inst in specs:
        if inst.graph is None:
            continue
        for name in inst.graph.inputs:
            per.setdefault(inst.name, {})[name] = _frames_of(arrays, inst, name, path)
    n = max(len(v) for feeds in per.values() for v in feeds.values())
    return [
        {inst: {k: v[f % len(v)] for k, v in feeds.items()} for inst, feeds in per.items()}
        for f in range(n)
    ]


def _frames_of(arrays: dict, inst, name: str, path: str) -> list:
    import numpy as np
    from onnx import helper

    keys = (f"{inst.name}/{name}", f"{inst.model}/{name}", name)
    key = next((k for k in keys if k in arrays), "" if set(arrays) == {""} else None)
    if key is None:
        raise HxschedError(
            f"no array for input {name!r} of {inst.name} (keys tried: {', '.join(keys)}; "
            f"the file has {', '.join(sorted(arrays)) or 'none'})",
            path=path,
        )
    t = inst.graph.tensors[name]
    a = np.asarray(arrays[key]).astype(helper.tensor_dtype_to_np_dtype(t.elem_type), copy=False)
    shape = tuple(t.shape or ())
    if a.shape == shape:
        return [a]
    if a.ndim == len(shape) + 1 and a.shape[1:] == shape and len(a) > 0:
        return list(a)
    raise HxschedError(
        f"input {name!r} of {inst.name} expects shape {list(shape)} (or frames of it), "
        f"got {list(a.shape)}",
        path=path,
    )


def _frames(ex, pool, opts: BenchOptions, name: str, say) -> Iterator[dict]:
    """Inputs until the warm-up and the duration have passed on the backend's clock and at
    least ``iterations`` frames were measured; a progress line about once a second."""
    clock = ex.backend.now_ms
    start, wall, k, measured = clock(), time.monotonic(), 0, 0
    end = start + opts.warmup_ms + opts.duration_s * 1000.0
    while k < opts.max_frames:
        now = clock()
        if now >= start + opts.warmup_ms:
            measured += 1
        if now >= end and measured > opts.iterations:
            return
        if time.monotonic() - wall >= 1.0:
            wall = time.monotonic()
            say(f"bench {name}: {k} frames, {(now - start) / 1000.0:.1f} s")
        yield pool[k % len(pool)]
        k += 1


def baseline_plans(plan, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """The plan's baselines as runnable plans, from the profiles the plan was made from."""
    from hxsched.runtime.session import instance_profile
    from hxsched.scheduler.planning.baselines import all_baselines
    from hxsched.scheduler.planning.problem import Instance, build_problem

    profiles = {}
    for pi in plan.instances:
        if pi.model not in profiles:
            profiles[pi.model] = instance_profile(plan, pi, shapes)
    instances = [Instance(pi.name, pi.model, profiles[pi.model]) for pi in plan.instances]
    cmodel = None
    if plan.contention is not None:
        cmodel = next((p.contention for p in profiles.values() if p.contention), None)
    problem = build_problem(
        instances,
        plan.accelerators,
        objective=plan.objective,
        max_switches=plan.max_switches,
        resolution_ms=plan.resolution_ms,
        contention=cmodel,
        **({"levels": plan.contention.levels} if plan.contention and cmodel else {}),
    )
    return {run.name: _as_plan(plan, problem, run) for run in all_baselines(problem)}


def _as_plan(plan, problem, run):
    from hxsched.scheduler.planning.plan import PlanSegment
    from hxsched.scheduler.planning.plan import Predicted as PlanPredicted
    from hxsched.scheduler.planning.planner import timeline_records

    res = plan.resolution_ms
    ev = run.evaluation
    act = {(a.instance, a.segment): a for a in ev.timeline if a.frame == 0}
    instances = []
    for idx, (pi, cfg) in enumerate(zip(plan.instances, run.selection, strict=True)):
        groups = problem.instances[idx].profile.groups
        segs = []
        for s, seg in enumerate(cfg.segments):
            a = act.get((idx, s))
            busy = (a.end - a.start) if a is not None else seg.busy
            segs.append(
                PlanSegment(
                    groups=(seg.first, seg.last),
                    first_node=groups[seg.first].first,
                    last_node=groups[seg.last].last,
                    accelerator=seg.accelerator,
                    ms=round(seg.ms, 5),
                    busy_ms=round(busy * res, 5),
                    transition_ms=round(seg.transition * res, 5),
                )
            )
        instances.append(dataclasses.replace(pi, segments=tuple(segs)))
    period = round(ev.period * res, 5)
    predicted = PlanPredicted(
        period_ms=period,
        fps=round(1000.0 / period, 2),
        latency_ms=round(ev.latency * res, 5),
        busy_ms={a: round(t * res, 5) for a, t in ev.busy.items()},
        source=f"{run.name} baseline: hxsched simulator on the plan's profiles",
    )
    return dataclasses.replace(
        plan,
        max_switches=max(len(c.segments) - 1 for c in run.selection),
        predicted=predicted,
        solver=None,
        baselines={},
        instances=tuple(instances),
        timeline=timeline_records([i.name for i in plan.instances], ev, res),
        edges=tuple(sorted(ev.edges)),
    )


def bench(plan, path: str, opts: BenchOptions, against: bool, say=log.info) -> tuple:
    """Every run of one ``hxsched bench``: (report, each run's measured frames by name, each
    run's trt event times by name: None on ort and sim)."""
    plans = {"plan": plan}
    if against:
        plans.update(baseline_plans(plan, opts.shapes))
    runs, frames, times = [], {}, {}
    for name, p in plans.items():
        say(f"bench {name} on {opts.backend}: warm-up {opts.warmup_ms:g} ms, {opts.duration_s:g} s")
        run_, got, times[name] = bench_plan(name, p, opts, say)
        runs.append(run_)
        frames[name] = got
    beaten = tuple(r.name for r in runs[1:] if r.throughput_fps > runs[0].throughput_fps)
    report = BenchReport(
        schema=SCHEMA,
        plan=path,
        backend=opts.backend,
        warmup_ms=opts.warmup_ms,
        duration_s=opts.duration_s,
        iterations=opts.iterations,
        runs=tuple(runs),
        beaten_by=beaten,
    )
    return report, frames, times


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from hxsched.cli.run import load_run_target
    from hxsched.codec import encode

    plan, backend = load_run_target(args.plan, args.backend)
    opts = BenchOptions(
        backend=backend,
        warmup_ms=args.warmup,
        duration_s=args.duration,
        iterations=args.iterations,
        max_frames=args.max_frames,
        inflight=args.inflight,
        backend_opts={"threads": args.threads, "real_time": args.real_time},
        shapes=parse_shapes(args.shape),
        data=tuple(args.data or ()),
        models=_pipeline_models(args.plan) if args.data else {},
        save_outputs=args.save_outputs,
    )
    report, frames, times = bench(plan, args.plan, opts, args.against == "baselines")
    if args.data:
        report = dataclasses.replace(report, data=_data_note(opts))
    if args.save_outputs:
        report = dataclasses.replace(report, saved_outputs=args.save_outputs)
    if args.export_times:
        accs = {n: s.accelerator for n, s in report.runs[0].segments.items()}
        records = [export_record(r, accs, times["plan"]) for r in frames["plan"]]
        Path(args.export_times).write_text(json.dumps(records, indent=1) + "\n")
        report = dataclasses.replace(report, export_times=args.export_times)
    if args.plots:
        from hxsched.scheduler.planning.chart import write_bench_plots

        lat: dict[str, Sequence[float]] = {
            name: [r.latency_ms for r in got] for name, got in frames.items()
        }
        paths = write_bench_plots(report.runs, lat, args.plots)
        report = dataclasses.replace(report, plots=tuple(str(p) for p in paths))
    if args.nsys_sqlite:
        report = dataclasses.replace(report, nsys=nsys_summary(plan, args.nsys_sqlite))
    emit(args, encode(report), lambda: human(report))
    return 0


def _pipeline_models(path: str) -> dict[str, Any]:
    """A pipeline file's models by name (their pre-processing settings); {} for a plan."""
    from hxsched.files import read_yaml

    head = read_yaml(path)
    if not (isinstance(head, dict) and str(head.get("schema", "")).startswith("hxsched.pipeline")):
        return {}
    from hxsched.runtime.service.pipeline import pipeline_from_dict

    return {m.name: m for m in pipeline_from_dict(head, path).models}


def _data_note(opts: BenchOptions) -> str:
    if len(opts.data) == 1 and Path(opts.data[0]).suffix.lower() in TENSOR_FILES:
        return f"{opts.data[0]}: saved tensors, cycled"
    return (
        f"{' '.join(opts.data)}: slices through each model's own pre-processing (CT window, "
        f"resize or letterbox), the first {MAX_INPUT_SETS} at most, cycled"
    )


def nsys_summary(plan, path: str) -> NsysSummary:
    from hxsched.runtime.nsys_sqlite import read_nsys_sqlite

    accs = {
        f"{i.name}/s{k}": str(s.accelerator)
        for i in plan.instances
        for k, s in enumerate(i.segments)
    }
    tl = read_nsys_sqlite(path, accs)
    return NsysSummary(
        file=path,
        segment_runs=len(tl.runs),
        host_ranges=sum(r.host_range for r in tl.runs),
        span_ms=round(tl.span_ms, 4),
        busy_ms={a: round(v, 4) for a, v in tl.busy_ms.items()},
        overlap_ms=round(tl.overlap_ms, 4),
    )


def human(rep: BenchReport) -> str:
    lines = []
    if rep.beaten_by:
        lines.append(
            f"MEASURED: {', '.join(rep.beaten_by)} beat the plan on {rep.backend} "
            "(measured throughput). Re-plan with measured times: hxsched profile --backend "
            f"{rep.backend}, then hxsched plan --profile ..."
        )
    plan = rep.runs[0]
    lines.append(
        f"{rep.plan} on {rep.backend}: {plan.frames} frames measured after {plan.warmup_frames} "
        f"warm-up, {plan.inflight} in flight"
    )
    lines.append(f"  numbers: {plan.source}")
    rows = [
        [
            r.name,
            f"{r.throughput_fps:.2f}",
            _fmt(r.predicted.fps),
            _fmt(r.fps_over_predicted, ".3f"),
            f"{r.latency_ms.p50:.3f}",
            _fmt(r.predicted.latency_ms, ".3f"),
            _fmt(r.latency_p50_over_predicted, ".3f"),
            f"{r.latency_ms.p99:.3f}",
            f"{r.overlap:.0%}",
        ]
        for r in rep.runs
    ]
    head = ["run", "fps", "predicted", "ratio", "p50 ms", "predicted", "ratio", "p99 ms", "overlap"]
    lines += ["", table(rows, head)]
    lat = plan.latency_ms
    lines.append(
        f"\nplan latency ms: mean {lat.mean} std {lat.std} min {lat.min} p50 {lat.p50} "
        f"p90 {lat.p90} p95 {lat.p95} p99 {lat.p99} max {lat.max}"
    )
    if plan.enqueue_ms is not None:
        lines.append(
            f"plan enqueue ms (host): mean {plan.enqueue_ms.mean} p99 {plan.enqueue_ms.p99}"
        )
    if plan.split is not None:
        sp = plan.split
        lines.append(
            f"plan split ms per frame (median): host enqueue {sp.enqueue_ms.p50}, pack "
            f"{sp.pack_ms.p50}; H2D {sp.h2d_ms.p50}, compute {sp.compute_ms.p50}, D2H "
            f"{sp.d2h_ms.p50} of end-to-end {sp.end_to_end_ms.p50}"
        )
    lines.append("busy: " + ", ".join(f"{a} {v:.0%}" for a, v in plan.busy.items()))
    lines += ["", _segment_table(plan)]
    for r in rep.runs:
        for n in r.notes:
            lines.append(f"note ({r.name}): {n}")
    if rep.export_times:
        lines.append(f"per-frame times: {rep.export_times}")
    for p in rep.plots:
        lines.append(f"plot: {p}")
    if rep.nsys is not None:
        ns = rep.nsys
        busy = ", ".join(f"{a} {v:.3f} ms" for a, v in ns.busy_ms.items())
        lines.append(
            f"nsys {ns.file}: {ns.segment_runs} segment runs over {ns.span_ms:.3f} ms; busy "
            f"{busy}; overlap {ns.overlap_ms:.3f} ms ({ns.host_ranges} from NVTX host ranges)"
        )
    return "\n".join(lines)


def _segment_table(run_: BenchRun) -> str:
    head = ["segment", "accelerator", "runs", "median", "p99", "planned"]
    split = any(s.split is not None for s in run_.segments.values())
    if split:
        head += ["enqueue", "h2d", "compute", "d2h"]
    rows = []
    for n, s in run_.segments.items():
        row = [n, s.accelerator, str(s.runs), f"{s.median_ms}", f"{s.p99_ms}", f"{s.expected_ms}"]
        if split:
            sp = s.split
            row += (
                [f"{sp.enqueue_ms}", f"{sp.h2d_ms}", f"{sp.compute_ms}", f"{sp.d2h_ms}"]
                if sp is not None
                else ["-"] * 4
            )
        rows.append(row)
    return table(rows, head)


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)
