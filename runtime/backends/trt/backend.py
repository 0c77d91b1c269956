"""``trt``: TensorRT engines on CUDA streams (a Jetson, or any NVIDIA GPU for GPU-only plans).

One CUDA stream per accelerator; a segment waits for its input with ``cudaStreamWaitEvent``;
boundary tensors live in a ring of device buffers (one slot per frame in flight) shared by
producer and consumer, so nothing crosses the host between segments. tensorrt and pycuda are
imported lazily; every decision is made by pure functions (``trt_engine``, ``engine_cache``,
``fallback``) that the tests cover on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hxsched.errors import HxschedError
from hxsched.runtime import nvtx
from hxsched.runtime.backends.base import FrameState
from hxsched.runtime.backends.trt.engine import BuildConfig, build_config_for
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

_VECTOR = {"chw16": 16, "chw32": 32}
_ITEM = {"float32": 4, "float16": 2, "int8": 1}


def padded_nbytes(shape: Sequence[int], dtype: str, fmt: str) -> int:
    """Bytes of a tensor in a (possibly vectorised) layout: kCHW16/kCHW32 pad channels (dim 1)
    up to a multiple of 16/32, the DLA-native formats."""
    dims = [int(d) for d in shape]
    vec = _VECTOR.get(fmt, 1)
    if vec > 1 and len(dims) >= 3:  # the vectorised dimension is C = dims[-3]
        dims[-3] = -(-dims[-3] // vec) * vec
    return int(np.prod(dims)) * _ITEM[dtype] if dims else _ITEM[dtype]


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


def unpack_vectorized(buf: np.ndarray, shape: Sequence[int], vec: int) -> np.ndarray:
    """The inverse of :func:`pack_vectorized`, back to float32 NCHW."""
    if vec == 1:
        return np.asarray(buf, dtype=np.float32).reshape(shape)
    if len(shape) != 4:
        raise HxschedError(f"vectorised layouts take NCHW tensors here, got shape {tuple(shape)}")
    n, c, h, w = (int(d) for d in shape)
    groups = -(-c // vec)
    v = np.asarray(buf).reshape(n, groups, h, w, vec).transpose(0, 1, 4, 2, 3)
    return v.reshape(n, groups * vec, h, w)[:, :c].astype(np.float32)


def segment_config(
    seg: SegmentSpec,
    precision: str,
    *,
    allow_gpu_fallback: bool,
    calibration_cache: str | None,
    trt_version: str,
) -> BuildConfig:
    """The build decisions for one planned segment (pure); refuses what cannot run before any
    build starts (INT8 DLA tensors handed to or from the host)."""
    if precision == "int8" and seg.accelerator.startswith("dla"):
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
    )


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
    )


def check_fallbacks(
    seg: SegmentSpec, inspector_json: str | None, log: list[str]
) -> list[FallbackEvent]:
    """Planned-DLA nodes that TensorRT put on the GPU (by name, with TensorRT's reason)."""
    if not seg.accelerator.startswith("dla") or seg.graph is None:
        return []
    planned = [n.name for n in seg.graph.nodes]
    layers = parse_inspector_json(inspector_json) if inspector_json else None
    return find_fallbacks(
        planned, layers=layers, log=parse_builder_log(log), segment=seg.name, node_order=planned
    )


@dataclass
class TrtEvent:
    start: Any
    end: Any
    done_event: Any
    base: Any
    on_done: Callable[[], None] | None = None
    _finished: bool = False

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
    def __init__(self, backend: TrtBackend, accelerator: str) -> None:
        self.backend = backend
        self.accelerator = accelerator
        self.stream = backend.cuda.Stream()

    def enqueue(self, seg: SegmentSpec, frame: FrameState, waits: Sequence[TrtEvent]) -> TrtEvent:
        b, cuda = self.backend, self.backend.cuda
        slot = frame.index % b.inflight
        ctx = b.contexts[seg.name]
        for w in waits:
            self.stream.wait_for_event(w.end)
        for name in seg.inputs:
            buf = b.buffers[(seg.instance, name, slot)]
            if seg.inputs_from.get(name) is None:  # from the host: pinned copy, then upload
                host = b.host[(seg.instance, name, slot)]
                vec, shape = b.layout[(seg.instance, name)]
                value = np.asarray(frame.tensors[seg.instance][name])
                np.copyto(host, pack_vectorized(value, vec, host.dtype.name).reshape(host.shape))
                cuda.memcpy_htod_async(buf, host, self.stream)
            ctx.set_tensor_address(name, int(buf))
        for name in seg.outputs:
            ctx.set_tensor_address(name, int(b.buffers[(seg.instance, name, slot)]))
        start, end, done = cuda.Event(), cuda.Event(), cuda.Event()
        with nvtx.annotate(f"{seg.name} f{frame.index}", self.accelerator):
            start.record(self.stream)
            if not ctx.execute_async_v3(stream_handle=self.stream.handle):
                raise HxschedError(f"TensorRT execute_async_v3 failed for {seg.name}")
            end.record(self.stream)
        to_host = [n for n in seg.outputs if seg.outputs_to.get(n) is None]
        for name in to_host:
            cuda.memcpy_dtoh_async(
                b.host[(seg.instance, name, slot)],
                b.buffers[(seg.instance, name, slot)],
                self.stream,
            )
        done.record(self.stream)

        def fill() -> None:
            for name in to_host:
                vec, shape = b.layout[(seg.instance, name)]
                host = b.host[(seg.instance, name, slot)]
                frame.tensors[seg.instance][name] = unpack_vectorized(host, shape, vec)

        return TrtEvent(start, end, done, b.base, fill)


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
        self.inflight = 1
        self._engines: dict[str, Any] = {}
        self._streams: dict[str, TrtStream] = {}
        self._t0 = time.perf_counter()

    def _import(self) -> None:
        try:
            import pycuda.autoinit  # noqa: F401 - creates the CUDA context
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as exc:
            raise HxschedError(
                f"--backend trt needs TensorRT and pycuda ({exc.name} is missing): on a Jetson "
                "TensorRT comes with JetPack (python3-libnvinfer) and pycuda with "
                "pip install 'hxsched[jetson]'; elsewhere use --backend ort or sim"
            ) from None
        self.trt, self.cuda = trt, cuda

    def device_identity(self) -> tuple[str, str, str]:
        dev = self.cuda.Context.get_device()
        major, minor = dev.compute_capability()
        return self.trt.__version__, dev.name(), f"{major}.{minor}"

    def engine_for(self, seg: SegmentSpec, progress: Callable[[str], None] | None) -> bytes:
        from hxsched.runtime.backends.trt.engine import build_engine
        from hxsched.scheduler.graph.onnx_io import to_model_proto

        version, device, cc = self.device_identity()
        cfg = segment_config(
            seg,
            self.precision,
            allow_gpu_fallback=self.allow_gpu_fallback,
            calibration_cache=self.calibration_cache,
            trt_version=version,
        )
        key = engine_key(seg, cfg, trt_version=version, device_name=device, compute_capability=cc)
        cached = self.cache.get(key)
        if cached is not None:
            for d in self.cache.meta(key).get("fallbacks", []):
                self.fallbacks.append(FallbackEvent(**d))
            if progress:
                progress(f"{seg.name}: engine from cache ({self.cache.path_for(key).name})")
            return cached
        if progress:
            progress(
                f"{seg.name}: building a TensorRT {cfg.precision} engine on "
                f"{seg.accelerator} (this takes minutes)"
            )
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
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._import()
        self.inflight = inflight
        total = sum(len(i.segments) for i in specs)
        done = 0
        for inst in specs:
            for seg in inst.segments:
                done += 1
                if seg.graph is None:
                    raise HxschedError(f"segment {seg.name} has no model: trt needs the ONNX file")
                if progress:
                    progress(f"[{done}/{total}] {seg.name}")
                blob = self.engine_for(seg, progress)
                dla = int(seg.accelerator[3:]) if seg.accelerator.startswith("dla") else None
                engine = self._deserialize(blob, dla)
                self.contexts[seg.name] = engine.create_execution_context()
                self._allocate(seg, engine)
        # the clock stream never waits for the others (non-blocking), so reading the time does
        # not drain the pipeline
        self._clock = self.cuda.Stream(flags=self.cuda.stream_flags.NON_BLOCKING)
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
            fmt = str(engine.get_tensor_format(name)).rsplit(".", 1)[-1].lower()
            if dtype.name not in _ITEM:
                raise HxschedError(
                    f"{seg.name}: tensor {name} has type {dtype.name}; segment "
                    "boundaries must be float32, float16 or int8"
                )
            nbytes = padded_nbytes(shape, dtype.name, fmt)
            vec = _VECTOR.get(fmt, 1)
            self.layout[(seg.instance, name)] = (vec, shape)
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
                from_host = name in seg.inputs and seg.inputs_from.get(name) is None
                to_host = name in seg.outputs and seg.outputs_to.get(name) is None
                if (from_host or to_host) and key not in self.host:
                    count = nbytes // dtype.itemsize
                    self.host[key] = cuda.pagelocked_empty((count,), dtype)

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
        version, device, cc = self.device_identity()
        return f"measured: TensorRT {version} on {device} (sm {cc}), CUDA events, {self.precision}"

    def close(self) -> None:
        self.contexts.clear()
        self.buffers.clear()
        self.host.clear()
        self._engines.clear()
        self._streams.clear()
