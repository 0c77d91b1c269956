"""``trt``: TensorRT engines on CUDA streams (a Jetson, or any NVIDIA GPU for GPU-only plans).

One CUDA stream per accelerator; a segment waits for its input with ``cudaStreamWaitEvent``;
boundary tensors live in a ring of device buffers (one slot per frame in flight) shared by
producer and consumer, so nothing crosses the host between segments. tensorrt and pycuda are
imported lazily; every decision is made by pure functions (``engine``, ``engine_cache``,
``fallback``) that the tests cover on a CPU.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hxsched.errors import HxschedError, MissingDependencyError
from hxsched.runtime import nvtx
from hxsched.runtime.backends.base import FrameState
from hxsched.runtime.backends.trt.engine import (
    CU_STREAM_NON_BLOCKING,
    BuildConfig,
    TensorIO,
    boundary_io,
    build_config_for,
    calibration_sha256,
    check_int8_source,
    check_tensorrt_version,
    format_name,
    padded_nbytes,
    primary_context,
    vector_size,
)
from hxsched.runtime.backends.trt.engine_cache import (
    EngineCache,
    EngineKey,
    io_layout_text,
    trt_major,
)
from hxsched.runtime.backends.trt.fallback import (
    FallbackEvent,
    find_fallbacks,
    parse_builder_log,
    parse_inspector_json,
)
from hxsched.runtime.build import InstanceSpec, SegmentSpec
from hxsched.scheduler.types import Accelerator

logger = logging.getLogger(__name__)

_ITEM = {"float32": 4, "float16": 2, "int8": 1}


def pack_vectorized(arr: np.ndarray, vec: int, dtype: str) -> np.ndarray:
    """NCHW to TensorRT's vectorised kCHW16/kCHW32 layout: channels padded to ``vec`` and
    interleaved innermost ([N, C/vec, H, W, vec]), as the DLA reads its inputs."""
    if vec == 1:
        return np.ascontiguousarray(arr, dtype=dtype)
    if arr.ndim != 4:
        raise HxschedError(f"vectorised layouts take NCHW tensors here, got shape {arr.shape}")
    n, c, h, w = arr.shape
    groups = -(-c // vec)
    out = np.zeros((n, groups * vec, h, w), dtype=dtype)
    out[:, :c] = arr
    return np.ascontiguousarray(out.reshape(n, groups, vec, h, w).transpose(0, 1, 3, 4, 2))


def pack_into(dst: np.ndarray, arr: np.ndarray, vec: int) -> None:
    """Write NCHW ``arr`` into the flat host buffer ``dst`` in layout ``vec`` with one strided,
    casting copy per channel group; the padding lanes are not written (zeroed at allocation).

    Measured with benchmarks/bench_trt_pack.py (2026-12-01, a shared 2-core x86 VM under load),
    1x3x640x640 float32 -> FP16, medians: full :func:`pack_vectorized` + copy 21.7 ms, this
    strided kCHW16 copy 8.4 ms, a plain contiguous cast (kDLA_LINEAR) 5.8 ms; for 1x3x256x256:
    4.2, 1.3 and 0.9 ms. Against a 2.66 ms plan period (DLA-first YOLOv8n) the full pack is
    hopeless, so host-fed DLA tensors whose kDLA_LINEAR padding is empty (W * 2 bytes a
    multiple of 64: 640, 256) use kDLA_LINEAR, a DLA-native input format that DIRECT_IO accepts
    without a reformat layer ("I/O Formats on DLA"), and take the cast; the rest take this
    strided copy. Both run on the issuing thread while the accelerators work on earlier frames.
    A GPU-side reformat was not chosen: it puts a GPU kernel in front of every DLA frame."""
    if vec == 1:
        np.copyto(dst.reshape(arr.shape), arr, casting="unsafe")
        return
    if arr.ndim != 4:
        raise HxschedError(f"vectorised layouts take NCHW tensors here, got shape {arr.shape}")
    n, c, h, w = arr.shape
    groups = -(-c // vec)
    view = dst.reshape(n, groups, h, w, vec)
    for g in range(groups):
        lo, hi = g * vec, min(c, (g + 1) * vec)
        np.copyto(view[:, g, :, :, : hi - lo], arr[:, lo:hi].transpose(0, 2, 3, 1), "unsafe")


def unpack_vectorized(buf: np.ndarray, shape: Sequence[int], vec: int) -> np.ndarray:
    """The inverse of :func:`pack_vectorized`, back to float32 NCHW: always a new array, never a
    view of ``buf`` (a reused pinned ring-buffer slot that a later frame overwrites)."""
    if vec == 1:
        return np.array(buf, dtype=np.float32).reshape(shape)
    if len(shape) != 4:
        raise HxschedError(f"vectorised layouts take NCHW tensors here, got shape {tuple(shape)}")
    n, c, h, w = (int(d) for d in shape)
    groups = -(-c // vec)
    v = np.asarray(buf).reshape(n, groups, h, w, vec).transpose(0, 1, 4, 2, 3)
    return v.reshape(n, groups * vec, h, w)[:, :c].astype(np.float32)


def missing_binding_message(missing: str | None, python: tuple[int, int], other: list[str]) -> str:
    """What to do when tensorrt or pycuda cannot be imported; ``other`` lists TensorRT bindings
    installed for another Python (JetPack 5's is for the system Python 3.8)."""
    if missing == "tensorrt" and other:
        return (
            f"TensorRT's Python binding is installed for another Python ({', '.join(other)}), "
            f"not for this Python {python[0]}.{python[1]}: build the binding for this Python "
            "(JETSON.md, 'JetPack 5.1'), or use JetPack 6 (Python 3.10)"
        )
    return (
        f"--backend trt needs TensorRT and pycuda ({missing} is missing): on a Jetson "
        "TensorRT comes with JetPack (python3-libnvinfer) and pycuda with "
        "pip install 'hxsched[jetson]' (JETSON.md); elsewhere use --backend ort or sim"
    )


def foreign_trt_bindings(
    python: tuple[int, int], roots: Sequence[str] = ("/usr/lib",)
) -> list[str]:
    """Directories of TensorRT bindings for Pythons other than ``python``."""
    mine = f"python{python[0]}.{python[1]}"
    found = []
    for root in roots:
        for d in sorted(Path(root).glob("python3*/dist-packages/tensorrt")):
            if d.parent.parent.name != mine:
                found.append(str(d))
    return found


def instance_layouts(
    segs: Sequence[SegmentSpec], precision: str, *, allow_gpu_fallback: bool
) -> dict[str, TensorIO]:
    """One layout per boundary tensor of an instance, decided over its producer and *all* its
    readers (they share one device buffer): DLA-native when any side is a DLA, FP32 linear
    when the host reads or writes it and no DLA does, FP16 linear between GPU segments. A DLA
    side of rank < 3 has no vectorised format: refused unless GPU fallback may reformat."""
    sides: dict[str, set[str | None]] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    where: dict[str, str] = {}
    for seg in segs:
        for t in seg.inputs:
            sides.setdefault(t, set()).update({seg.accelerator, seg.inputs_from.get(t)})
            shapes.setdefault(t, _shape(seg, t))
            where[t] = seg.name
        for t in seg.outputs:
            sides.setdefault(t, set()).update({seg.accelerator, seg.outputs_to.get(t)})
            shapes.setdefault(t, _shape(seg, t))
            where.setdefault(t, seg.name)
    return {
        t: tensor_layout(t, s, precision, shapes[t], where[t], allow_gpu_fallback)
        for t, s in sides.items()
    }


def tensor_layout(
    t: str,
    sides: set[str | None],
    precision: str,
    shape: tuple[int, ...] | None,
    seg: str,
    fallback: bool,
) -> TensorIO:
    """The layout of one tensor given every accelerator that touches it (None: the host)."""
    dla = sorted(a for a in sides if a is not None and Accelerator(a).is_dla)
    host = None in sides
    rank = len(shape) if shape is not None else 4
    if dla and rank < 3 and not fallback:
        raise HxschedError(
            f"{seg}: tensor {t} has rank {rank} and crosses {dla[0]}; DLA I/O takes only "
            "kDLA_LINEAR, kDLA_HWC4, kCHW16 and kCHW32 (TensorRT, 'I/O Formats on DLA'): plan "
            "the cut elsewhere or allow GPU fallback (--allow-gpu-fallback)"
        )
    gpu = any(a is not None and not Accelerator(a).is_dla for a in sides)
    if dla and host and not gpu and precision == "fp16" and _plain_dla_linear(shape):
        # Host <-> DLA only: kDLA_LINEAR, whose W padding is empty here, so the host writes
        # plain NCHW FP16 (see pack_into for the measured packing costs).
        return TensorIO("float16", "dla_linear")
    if dla:
        return boundary_io(dla[0], None if host else Accelerator.GPU.value, precision, rank)
    return TensorIO("float32", "linear") if host else TensorIO("float16", "linear")


def _plain_dla_linear(shape: tuple[int, ...] | None) -> bool:
    """Whether a rank-4 FP16 tensor in kDLA_LINEAR is byte for byte NCHW (W fills 64 bytes)."""
    return shape is not None and len(shape) == 4 and shape[-1] > 0 and (shape[-1] * 2) % 64 == 0


def _shape(seg: SegmentSpec, name: str) -> tuple[int, ...] | None:
    if seg.graph is None:
        return None
    t = seg.graph.tensors.get(name)
    if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
        return None
    return tuple(int(d) for d in t.shape)


def segment_config(
    seg: SegmentSpec,
    precision: str,
    *,
    allow_gpu_fallback: bool,
    calibration_cache: str | None,
    trt_version: str,
    layouts: dict[str, TensorIO] | None = None,
) -> BuildConfig:
    """The build decisions for one planned segment (pure); refuses what cannot run before any
    build starts (INT8 DLA tensors handed to or from the host, INT8 without scales);
    ``layouts`` from :func:`instance_layouts` (one per tensor over all its readers)."""
    if precision == "int8":
        check_int8_source(trt_version, calibration_cache)
    if precision == "int8" and Accelerator(seg.accelerator).is_dla:
        edge = [t for t, src in seg.inputs_from.items() if src is None]
        edge += [t for t, dst in seg.outputs_to.items() if dst is None]
        if edge:
            raise HxschedError(
                f"{seg.name}: INT8 DLA tensors cannot cross to the host "
                f"({', '.join(edge)}); plan a GPU segment at the model's edges"
            )
    return build_config_for(
        seg.accelerator,
        precision,
        inputs_from=dict(seg.inputs_from),
        outputs_to=dict(seg.outputs_to),
        allow_gpu_fallback=allow_gpu_fallback,
        calibration_cache=calibration_cache,
        trt_major=trt_major(trt_version),
        ranks=_ranks(seg),
        layouts={t: io for t, io in (layouts or {}).items() if t in seg.inputs or t in seg.outputs},
    )


def _has_qdq(seg: SegmentSpec) -> bool:
    """Whether the segment carries its own INT8 scales (QuantizeLinear/DequantizeLinear)."""
    if seg.graph is None:
        return False
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in seg.graph.nodes)


def _ranks(seg: SegmentSpec) -> dict[str, int]:
    """Rank of every boundary tensor (4 where the shape is unknown)."""
    if seg.graph is None:
        return {}
    out = {}
    for name in (*seg.inputs, *seg.outputs):
        t = seg.graph.tensors.get(name)
        out[name] = len(t.shape) if t is not None and t.shape is not None else 4
    return out


def engine_key(
    seg: SegmentSpec,
    cfg: BuildConfig,
    *,
    trt_version: str,
    device_name: str,
    compute_capability: str,
) -> EngineKey:
    return EngineKey(
        trt_version=trt_version,
        device_name=device_name,
        compute_capability=compute_capability,
        dla_core=cfg.dla_core,
        precision=cfg.precision,
        segment_sha256=seg.digest,
        gpu_fallback=cfg.gpu_fallback,
        direct_io=cfg.direct_io,
        io_layout=io_layout_text(cfg.inputs, cfg.outputs),
        calibration_sha256=calibration_sha256(cfg.calibration_cache)
        if cfg.precision == "int8"
        else "",
    )


def check_fallbacks(
    seg: SegmentSpec, inspector_json: str | None, log: list[str]
) -> list[FallbackEvent]:
    """Planned-DLA nodes that TensorRT put on the GPU (by name, with TensorRT's reason)."""
    if not Accelerator(seg.accelerator).is_dla or seg.graph is None:
        return []
    planned = [n.name for n in seg.graph.nodes]
    layers = parse_inspector_json(inspector_json) if inspector_json else None
    return find_fallbacks(
        planned, layers=layers, log=parse_builder_log(log), segment=seg.name, node_order=planned
    )


@dataclass(frozen=True)
class RunTimes:
    """One segment run as its CUDA events saw it (ms on the backend's clock: since ``base``),
    and the host's time issuing it (wall clock, ms)."""

    compute: tuple[float, float]  # the segment's stream, around execute_async_v3
    h2d: tuple[float, float] | None = None  # the copy stream, around the uploads (host inputs)
    d2h: tuple[float, float] | None = None  # the copy stream, around the downloads (host outputs)
    enqueue_ms: float = 0.0  # binding setup, copy calls, execute_async_v3 (trtexec's enqueue)
    pack_ms: float = 0.0  # casting the host inputs into their pinned buffers (before enqueue)


@dataclass(frozen=True)
class CopySplit:
    """A frame's time (or one segment run's) split as trtexec splits a query (TensorRT
    samples/common/sampleReporting.cpp): host enqueue, then device time attributed to compute
    first, host->device copy where no compute runs, device->host copy where neither runs, so
    ``h2d_ms + compute_ms + d2h_ms <= end_to_end_ms``; for one segment run (the copies wait for
    the compute and the compute for the copies) they are the plain durations."""

    enqueue_ms: float
    pack_ms: float
    h2d_ms: float
    compute_ms: float
    d2h_ms: float
    start_ms: float  # the first upload's start, else the first compute start
    end_ms: float  # the last download's end, else the last compute end
    h2d: tuple[float, float] | None  # first upload start, last upload end
    d2h: tuple[float, float] | None  # first download start, last download end

    @property
    def end_to_end_ms(self) -> float:
        """trtexec's ``endToEndMs``: the first upload to the last download."""
        return self.end_ms - self.start_ms


def _union(spans: Sequence[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _hull(spans: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    return (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None


def copy_split(runs: Sequence[RunTimes]) -> CopySplit:
    """The split of one frame's segment runs (pure: event times in, durations out)."""
    if not runs:
        raise HxschedError("copy_split needs at least one segment run")
    comp = [r.compute for r in runs]
    up = [r.h2d for r in runs if r.h2d is not None]
    down = [r.d2h for r in runs if r.d2h is not None]
    c = _union(comp)
    ch = _union(comp + up)
    allspans = comp + up + down
    return CopySplit(
        enqueue_ms=sum(max(0.0, r.enqueue_ms) for r in runs),
        pack_ms=sum(max(0.0, r.pack_ms) for r in runs),
        h2d_ms=ch - c,
        compute_ms=c,
        d2h_ms=_union(allspans) - ch,
        start_ms=min(a for a, _ in allspans),
        end_ms=max(b for _, b in allspans),
        h2d=_hull(up),
        d2h=_hull(down),
    )


@dataclass
class TrtEvent:
    start: Any
    end: Any
    done_event: Any
    base: Any
    on_done: Callable[[], None] | None = None
    _finished: bool = False
    h2d: tuple[Any, Any] | None = None  # timing events around the uploads (copy stream)
    d2h: tuple[Any, Any] | None = None  # timing events around the downloads (copy stream)
    enqueue_ms: float = 0.0
    pack_ms: float = 0.0

    def times(self) -> RunTimes:
        """The run's event times; only once it is done (``cuEventElapsedTime`` needs both
        events completed)."""

        def span(pair: tuple[Any, Any]) -> tuple[float, float]:
            return float(pair[0].time_since(self.base)), float(pair[1].time_since(self.base))

        return RunTimes(
            compute=span((self.start, self.end)),
            h2d=span(self.h2d) if self.h2d is not None else None,
            d2h=span(self.d2h) if self.d2h is not None else None,
            enqueue_ms=self.enqueue_ms,
            pack_ms=self.pack_ms,
        )

    @property
    def start_ms(self) -> float:
        return float(self.start.time_since(self.base))

    @property
    def end_ms(self) -> float:
        return float(self.end.time_since(self.base))

    def done(self) -> bool:
        return bool(self.done_event.query())

    def wait(self) -> None:
        self.done_event.synchronize()
        if not self._finished and self.on_done is not None:
            self.on_done()
        self._finished = True


class TrtStream:
    """One accelerator: a compute stream and a copy stream beside it, so that the upload of the
    next frame and the download of the last overlap this frame's compute."""

    def __init__(self, backend: TrtBackend, accelerator: str) -> None:
        self.backend = backend
        self.accelerator = accelerator
        # non-blocking: no implicit sync with the legacy default stream (CUDA Runtime API,
        # "Stream synchronization behavior")
        self.stream = backend.cuda.Stream(CU_STREAM_NON_BLOCKING)
        self.copies = backend.cuda.Stream(CU_STREAM_NON_BLOCKING)

    def enqueue(self, seg: SegmentSpec, frame: FrameState, waits: Sequence[TrtEvent]) -> TrtEvent:
        b, cuda = self.backend, self.backend.cuda
        slot = frame.index % b.inflight
        ctx = b.contexts[seg.name]
        t_pack = time.perf_counter()
        uploads = [n for n in seg.inputs if seg.inputs_from.get(n) is None]
        for name in uploads:  # from the host: packed into its pinned buffer first
            vec, shape = b.layout[(seg.instance, name)]
            pack_into(
                b.host[(seg.instance, name, slot)],
                np.asarray(frame.tensors[seg.instance][name]),
                vec,
            )
        t_enq = time.perf_counter()
        # timing events on the copy stream around the uploads and the downloads, as trtexec
        # times H2D and D2H (TensorRT samples/common/sampleInference.cpp)
        h2d = (cuda.Event(), cuda.Event()) if uploads else None
        if h2d is not None:
            h2d[0].record(self.copies)
        for name in uploads:
            key = (seg.instance, name, slot)
            cuda.memcpy_htod_async(b.buffers[key], b.host[key], self.copies)
        if h2d is not None:
            h2d[1].record(self.copies)
            up = cuda.Event(cuda.event_flags.DISABLE_TIMING)
            up.record(self.copies)
            self.stream.wait_for_event(up)
        for name in seg.inputs:
            ctx.set_tensor_address(name, int(b.buffers[(seg.instance, name, slot)]))
        for w in waits:
            self.stream.wait_for_event(w.end)
        for name in seg.outputs:
            ctx.set_tensor_address(name, int(b.buffers[(seg.instance, name, slot)]))
        # the host waits on ``done`` only: it sleeps instead of spinning a core that packs
        # inputs (pycuda event_flags.BLOCKING_SYNC = cudaEventBlockingSync), and is not timed
        flags = cuda.event_flags
        start, end = cuda.Event(), cuda.Event()
        done = cuda.Event(flags.BLOCKING_SYNC | flags.DISABLE_TIMING)
        with nvtx.annotate(f"{seg.name} f{frame.index}", self.accelerator):
            start.record(self.stream)
            if not ctx.execute_async_v3(stream_handle=self.stream.handle):
                raise HxschedError(f"TensorRT execute_async_v3 failed for {seg.name}")
            end.record(self.stream)
        to_host = [n for n in seg.outputs if seg.outputs_to.get(n) is None]
        d2h = (cuda.Event(), cuda.Event()) if to_host else None
        if d2h is not None:
            self.copies.wait_for_event(end)
            d2h[0].record(self.copies)
            for name in to_host:
                cuda.memcpy_dtoh_async(
                    b.host[(seg.instance, name, slot)],
                    b.buffers[(seg.instance, name, slot)],
                    self.copies,
                )
            d2h[1].record(self.copies)
            done.record(self.copies)
        else:
            done.record(self.stream)
        t_end = time.perf_counter()

        def fill() -> None:
            for name in to_host:
                vec, shape = b.layout[(seg.instance, name)]
                host = b.host[(seg.instance, name, slot)]
                frame.tensors[seg.instance][name] = unpack_vectorized(host, shape, vec)
            if b.times is not None:  # bench: every event of the run has completed by now
                b.times[(frame.index, seg.name)] = ev.times()

        ev = TrtEvent(start, end, done, b.base, fill, h2d=h2d, d2h=d2h)
        ev.enqueue_ms = (t_end - t_enq) * 1e3
        ev.pack_ms = (t_enq - t_pack) * 1e3
        return ev


def import_bindings() -> tuple[Any, Any]:
    """``tensorrt`` and ``pycuda.driver``, or one line saying what to install."""
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as exc:
        py = (sys.version_info[0], sys.version_info[1])
        other = foreign_trt_bindings(py) if exc.name == "tensorrt" else []
        raise MissingDependencyError(missing_binding_message(exc.name, py, other)) from None
    check_tensorrt_version(str(trt.__version__))
    return trt, cuda


class TrtBackend:
    name = "trt"
    computes = True

    def __init__(
        self,
        *,
        precision: str = "fp16",
        allow_gpu_fallback: bool = False,
        calibration_cache: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.precision = precision
        self.allow_gpu_fallback = allow_gpu_fallback
        self.calibration_cache = calibration_cache
        if cache_dir is None:
            from hxsched.config import settings

            cache_dir = settings().cache_dir / "engines"
        self.cache = EngineCache(cache_dir)
        self.fallbacks: list[FallbackEvent] = []
        self.contexts: dict[str, Any] = {}
        self.buffers: dict[tuple[str, str, int], Any] = {}
        self.host: dict[tuple[str, str, int], Any] = {}
        self.layout: dict[tuple[str, str], tuple[int, tuple[int, ...]]] = {}
        self.io_types: dict[tuple[str, str], tuple[str, str]] = {}  # (dtype, format) per tensor
        self.inflight = 1
        # (frame, segment) -> its event times, kept only when a caller asks (hxsched bench)
        self.times: dict[tuple[int, str], RunTimes] | None = None
        self._engines: dict[int, tuple[Any, Any]] = {}  # id(engine): (runtime, engine)
        self._streams: dict[str, TrtStream] = {}
        self._layouts: dict[str, dict[str, TensorIO]] = {}
        self._ctx: Any = None  # device 0's primary context, pushed on the preparing thread
        self._identity: tuple[str, str, str] | None = None
        self._t0 = time.perf_counter()

    def _import(self) -> None:
        trt, cuda = import_bindings()
        self.trt, self.cuda = trt, cuda
        if self._ctx is None:
            self._ctx = primary_context(cuda)
        self._identity = self._query_identity()

    def _query_identity(self) -> tuple[str, str, str]:
        dev = self.cuda.Context.get_device()
        major, minor = dev.compute_capability()
        return str(self.trt.__version__), str(dev.name()), f"{major}.{minor}"

    def device_identity(self) -> tuple[str, str, str]:
        """(TensorRT version, device name, compute capability), read once at prepare time so
        that threads without a CUDA context (the HTTP handlers) never call CUDA."""
        if self._identity is None:
            raise HxschedError("the trt backend is not prepared yet")
        return self._identity

    @contextlib.contextmanager
    def on_this_thread(self) -> Iterator[None]:
        """Make the primary context current on a thread that issues work (pycuda's context
        stack is per thread), and pop it afterwards."""
        if self._ctx is None:
            yield
            return
        self._ctx.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def engine_for(self, seg: SegmentSpec) -> bytes:
        from hxsched.runtime.backends.trt.engine import build_engine
        from hxsched.scheduler.graph.onnx_io import to_model_proto

        version, device, cc = self.device_identity()
        cfg = segment_config(
            seg,
            self.precision,
            allow_gpu_fallback=self.allow_gpu_fallback,
            calibration_cache=self.calibration_cache,
            trt_version=version,
            layouts=self._layouts.get(seg.instance),
        )
        if self.precision == "int8":
            check_int8_source(version, self.calibration_cache, _has_qdq(seg))
        key = engine_key(seg, cfg, trt_version=version, device_name=device, compute_capability=cc)
        cached = self.cache.get(key)
        if cached is not None:
            for d in self.cache.meta(key).get("fallbacks", []):
                self.fallbacks.append(FallbackEvent(**d))
            logger.info("%s: engine from cache (%s)", seg.name, self.cache.path_for(key).name)
            return cached
        logger.info(
            "%s: building a TensorRT %s engine on %s (this takes minutes)",
            seg.name,
            cfg.precision,
            seg.accelerator,
        )
        if seg.graph is None:
            raise HxschedError(f"segment {seg.name} has no model: trt needs the ONNX file")
        log: list[str] = []
        t0 = time.monotonic()
        try:
            blob = build_engine(to_model_proto(seg.graph).SerializeToString(), cfg, log)
        except HxschedError as exc:
            report = parse_builder_log(log)
            named = "; ".join(f"{k}: {v}" for k, v in list(report.switched.items())[:5])
            hint = " (allow GPU fallback with --allow-gpu-fallback)" if named else ""
            raise HxschedError(
                f"{seg.name}: {exc}" + (f" [not on DLA: {named}]{hint}" if named else "")
            ) from None
        engine = self._deserialize(blob, cfg.dla_core)
        inspector = engine.create_engine_inspector()
        info = inspector.get_engine_information(self.trt.LayerInformationFormat.JSON)
        del inspector
        self._engines.pop(id(engine), None)  # inspected only: do not keep a second copy
        del engine
        found = check_fallbacks(seg, info, log)
        self.fallbacks.extend(found)
        self.cache.put(
            key,
            blob,
            {
                "segment": seg.name,
                "build_s": round(time.monotonic() - t0, 1),
                "fallbacks": [asdict(e) for e in found],
            },
        )
        return blob

    def _deserialize(self, blob: bytes, dla_core: int | None) -> Any:
        runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        if dla_core is not None:
            runtime.DLA_core = dla_core  # before deserialising, or the engine lands on core 0
        engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise HxschedError(
                "TensorRT could not deserialize the engine (corrupt or built by "
                "another TensorRT): rebuild with hxsched build"
            )
        self._engines[id(engine)] = (runtime, engine)
        return engine

    def prepare(
        self,
        specs: Sequence[InstanceSpec],
        *,
        inflight: int,
    ) -> None:
        for seg in (s for inst in specs for s in inst.segments):  # before touching the device
            if seg.graph is None:
                raise HxschedError(f"segment {seg.name} has no model: trt needs the ONNX file")
        self._import()
        self.inflight = inflight
        total = sum(len(i.segments) for i in specs)
        done = 0
        for inst in specs:
            self._layouts[inst.name] = instance_layouts(
                inst.segments, self.precision, allow_gpu_fallback=self.allow_gpu_fallback
            )
            for seg in inst.segments:
                done += 1
                logger.info("[%d/%d] %s", done, total, seg.name)
                blob = self.engine_for(seg)
                engine = self._deserialize(blob, Accelerator(seg.accelerator).dla_core)
                self.contexts[seg.name] = engine.create_execution_context()
                self._allocate(seg, engine)
        # the clock stream never waits for the others (non-blocking), so reading the time does
        # not drain the pipeline
        self._clock = self.cuda.Stream(CU_STREAM_NON_BLOCKING)
        self.base = self.cuda.Event()
        self.base.record(self._clock)
        self.base.synchronize()
        self._t0 = time.perf_counter()

    def _allocate(self, seg: SegmentSpec, engine: Any) -> None:
        trt, cuda = self.trt, self.cuda
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            fmt = format_name(engine.get_tensor_format(name))
            if dtype.name not in _ITEM:
                raise HxschedError(
                    f"{seg.name}: tensor {name} has type {dtype.name}; segment "
                    "boundaries must be float32, float16 or int8"
                )
            nbytes = padded_nbytes(shape, dtype.name, fmt)
            vec = vector_size(fmt)
            self.layout[(seg.instance, name)] = (vec, shape)
            self.io_types[(seg.instance, name)] = (dtype.name, fmt)
            if (
                vec > 1
                and dtype.name == "int8"
                and (
                    (name in seg.inputs and seg.inputs_from.get(name) is None)
                    or (name in seg.outputs and seg.outputs_to.get(name) is None)
                )
            ):
                raise HxschedError(
                    f"{seg.name}: INT8 DLA tensors cannot cross to the host; "
                    "plan a GPU segment at the model's edges"
                )
            for slot in range(self.inflight):
                key = (seg.instance, name, slot)
                if key not in self.buffers:  # the producer's buffer is the consumer's
                    self.buffers[key] = cuda.mem_alloc(max(nbytes, 1))
                    cuda.memset_d8(self.buffers[key], 0, max(nbytes, 1))  # padding lanes
                from_host = name in seg.inputs and seg.inputs_from.get(name) is None
                to_host = name in seg.outputs and seg.outputs_to.get(name) is None
                if (from_host or to_host) and key not in self.host:
                    count = nbytes // dtype.itemsize
                    self.host[key] = cuda.pagelocked_empty((count,), dtype)
                    self.host[key].fill(0)  # pack_into never writes the padding lanes

    def read_tensor(
        self, instance: str, name: str, *, slot: int = 0, int8_scale: float | None = None
    ) -> np.ndarray:
        """A tensor's value in its device buffer as float32 NCHW, after its frame completed:
        ``hxsched validate`` reads what one segment hands the next (the pipeline never copies
        it to the host); an INT8 tensor is dequantized with its scale (amax / 127)."""
        vec, shape = self.layout[(instance, name)]
        dtype, fmt = self.io_types[(instance, name)]
        if dtype == "int8" and int8_scale is None:
            raise HxschedError(f"{instance}: INT8 tensor {name} is read without its scale")
        host = np.empty(padded_nbytes(shape, dtype, fmt) // _ITEM[dtype], dtype)
        self.cuda.memcpy_dtoh(host, self.buffers[(instance, name, slot)])
        if fmt == "dla_linear":  # [N][C][H][W padded to 64 bytes] ("I/O Formats on DLA")
            padded = (*shape[:-1], host.size // max(1, int(np.prod(shape[:-1]))))
            host = np.ascontiguousarray(host.reshape(padded)[..., : shape[-1]])
        out = unpack_vectorized(host, shape, vec)
        return out * np.float32(int8_scale) if dtype == "int8" else out

    def stream(self, accelerator: str) -> TrtStream:
        if accelerator not in self._streams:
            self._streams[accelerator] = TrtStream(self, accelerator)
        return self._streams[accelerator]

    def now_ms(self) -> float:
        ev = self.cuda.Event()
        ev.record(self._clock)
        ev.synchronize()
        return float(ev.time_since(self.base))

    def source(self) -> str:
        if self._identity is None:  # asked before prepare (a status page during start-up)
            return f"measured: TensorRT (device not opened yet), CUDA events, {self.precision}"
        version, device, cc = self.device_identity()
        return f"measured: TensorRT {version} on {device} (sm {cc}), CUDA events, {self.precision}"

    def close(self) -> None:
        """Free everything with the context current: the preparing thread's push is popped,
        or, closing from another thread, a push made here for the purpose."""
        if self._ctx is not None:
            if self.cuda.Context.get_current() is None:
                self._ctx.push()
            self.cuda.Context.synchronize()  # nothing in flight reads a buffer freed below
        self.contexts.clear()
        self.buffers.clear()
        self.host.clear()
        self._engines.clear()
        self._streams.clear()
        if self._ctx is not None:
            self._ctx = None
            self.cuda.Context.pop()
