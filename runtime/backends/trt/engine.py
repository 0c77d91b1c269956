"""TensorRT engines for segments: build decisions (pure) and the thin hardware calls.

Only the functions at the bottom touch tensorrt/pycuda, and they import them lazily; every
decision they act on is made by a pure function above, which the tests cover.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hxsched._compat import lazy_import
from hxsched.errors import HxschedError, MissingDependencyError
from hxsched.scheduler.types import Accelerator, Precision

trt = lazy_import("tensorrt")
cuda = lazy_import("pycuda.driver")

WORKSPACE_BYTES = 1 << 30
# TensorRT releases the trt backend supports (version prefixes: JetPack 5.1 = 8.5, JetPack 6.0
# = 8.6, JetPack 6.1/6.2 = 10.x); tests/runtime/backends/trt/test_conformance.py checks every
# TensorRT attribute used here against the recorded API surface of each.
SUPPORTED_TRT: tuple[str, ...] = ("8.5", "8.6", "10")
# pycuda's Stream takes the raw CUstreamFlags int (it has no stream_flags enum; pycuda
# src/wrapper/wrap_cudadrv.cpp, ``Stream(flags=0)``); CU_STREAM_NON_BLOCKING = 0x1 in cuda.h.
CU_STREAM_NON_BLOCKING = 1
# The oldest TensorRT with the name-based I/O API used here (num_io_tensors, set_tensor_address,
# execute_async_v3 appear in the Python bindings at 8.5; JetPack 5.0.x ships 8.4).
MIN_TRT = (8, 5)
# ILogger.Severity: kINTERNAL_ERROR=0, kERROR=1, kWARNING=2, kINFO=3, kVERBOSE=4
# (NvInferRuntimeBase.h); rendered as the one-letter tags of TensorRT's own samples' logger.
_SEVERITY_LETTERS = "FEWIV"
_VECTOR = {"chw16": 16, "chw32": 32}
_ITEM = {"float32": 4, "float16": 2, "int8": 1}


@dataclass(frozen=True)
class TensorIO:
    """How one segment input/output is laid out at the engine boundary."""

    dtype: str  # "float32", "float16" or "int8"
    # "linear", "chw16" (FP16, DLA-native), "chw32" (INT8, DLA-native) or "dla_linear" (DLA
    # planar, W padded to 64 bytes: used only where that padding is empty, i.e. plain NCHW)
    format: str


@dataclass(frozen=True)
class BuildConfig:
    accelerator: Accelerator
    precision: Precision  # fp16 or int8
    gpu_fallback: bool
    direct_io: bool
    inputs: dict[str, TensorIO] = field(default_factory=dict)
    outputs: dict[str, TensorIO] = field(default_factory=dict)
    calibration_cache: str | None = None
    strongly_typed: bool = False  # TensorRT 11: precision comes from the ONNX types

    @property
    def dla_core(self) -> int | None:
        return self.accelerator.dla_core


def _is_dla(accelerator: str) -> bool:
    """A DLA core's name (dla0, dla1, or a misspelled dlaN the caller then refuses)."""
    return accelerator.startswith("dla")


def boundary_io(this: str, other: str | None, precision: str, rank: int = 4) -> TensorIO:
    """Layout of a tensor between this segment's engine and ``other`` (None = the host).

    Tensors handed to or from a DLA use the DLA-native format on both sides (kCHW16 for FP16,
    kCHW32 for INT8), so no reformat kernel runs on the GPU; model inputs/outputs stay FP32
    linear so the host can read them; GPU-to-GPU hand-overs use linear FP16 (half the bytes).
    """
    on_dla = _is_dla(this) or (other is not None and _is_dla(other))
    if on_dla and rank < 3:  # vectorised formats exist only from 3 dimensions (C is dims[-3])
        return TensorIO("float16", "linear") if other is not None else TensorIO("float32", "linear")
    if on_dla:
        if precision == Precision.INT8:
            return TensorIO("int8", "chw32")
        return TensorIO("float16", "chw16")
    if other is None:
        return TensorIO("float32", "linear")
    return TensorIO("float16", "linear")


def build_config_for(
    accelerator: str,
    precision: str,
    *,
    inputs_from: dict[str, str | None],
    outputs_to: dict[str, str | None],
    allow_gpu_fallback: bool = False,
    calibration_cache: str | None = None,
    trt_major: int = 10,
    ranks: dict[str, int] | None = None,
    layouts: dict[str, TensorIO] | None = None,
) -> BuildConfig:
    """Everything the builder needs for one segment; ``inputs_from``/``outputs_to`` name the
    accelerator on the other side of each boundary tensor (None for the host); ``layouts``
    (one per tensor, decided over all its readers) override the pairwise choice."""
    if precision not in (Precision.FP16, Precision.INT8):
        raise HxschedError(f"precision {precision!r}: TensorRT segments build in fp16 or int8")
    if _is_dla(accelerator) and accelerator not in (Accelerator.DLA0, Accelerator.DLA1):
        raise HxschedError(f"unknown DLA core {accelerator!r} (dla0 or dla1)")
    try:
        acc = Accelerator(accelerator)
    except ValueError:
        raise HxschedError(
            f"accelerator {accelerator!r}: TensorRT runs on gpu, dla0 or dla1"
        ) from None
    is_dla = acc.is_dla
    if precision == Precision.INT8 and calibration_cache is None and trt_major < 11:
        raise HxschedError("INT8 needs a calibration cache (--calibration-cache)")
    rk = ranks or {}
    fixed = layouts or {}
    ins = {
        n: fixed.get(n) or boundary_io(accelerator, src, precision, rk.get(n, 4))
        for n, src in inputs_from.items()
    }
    outs = {
        n: fixed.get(n) or boundary_io(accelerator, dst, precision, rk.get(n, 4))
        for n, dst in outputs_to.items()
    }
    fallback = allow_gpu_fallback and is_dla
    return BuildConfig(
        accelerator=acc,
        precision=Precision(precision),
        gpu_fallback=fallback,
        # DIRECT_IO forbids reformat layers at the boundary: only sound when every boundary
        # tensor already has the engine's native layout, i.e. on DLA without fallback.
        direct_io=is_dla and not fallback,
        inputs=ins,
        outputs=outs,
        calibration_cache=calibration_cache,
        strongly_typed=trt_major >= 11,
    )


def summarize_ms(samples: Sequence[float]) -> tuple[float, float]:
    """(median, inter-quartile range) of timing samples."""
    if not samples:
        raise HxschedError("no timing samples")
    ordered = sorted(samples)
    med = statistics.median(ordered)
    if len(ordered) < 4:
        return med, ordered[-1] - ordered[0]
    q = statistics.quantiles(ordered, n=4)
    return med, q[2] - q[0]


def transition_from_timings(
    chain_ms: float, first_ms: float, second_ms: float
) -> tuple[float, str]:
    """The hand-over cost of running two segments back to back on different accelerators.

    HaX-CoNN's differencing gave negative values on noise; we clamp them at 0 and say so.
    """
    value = chain_ms - first_ms - second_ms
    if value < 0:
        return 0.0, f"measured {value:.4f} ms (negative: timing noise), recorded as 0"
    return value, ""


def version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string; (0, 0) when unreadable."""
    parts = (version.split(".") + ["0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return 0, 0


def check_tensorrt_version(version: str) -> None:
    """Refuse a TensorRT older than the name-based API (one line, with what to do)."""
    if version_tuple(version) < MIN_TRT:
        raise MissingDependencyError(
            f"TensorRT {version} is too old: hxsched needs TensorRT >= 8.5 (JetPack 5.1 or "
            "later); see JETSON.md, 'JetPack 5.1'"
        )


def network_flag_names(version: str, *, strongly_typed: bool) -> tuple[str, ...]:
    """The NetworkDefinitionCreationFlag members to set for this TensorRT.

    8.x: EXPLICIT_BATCH, or the network is implicit-batch and the ONNX parser refuses it
    (NvInfer.h 8.6 ``kEXPLICIT_BATCH``); 10.x: none ("Ignored because networks are always
    explicit batch in TensorRT 10.0"); 11: STRONGLY_TYPED (precision from the ONNX types)."""
    names: list[str] = []
    if version_tuple(version)[0] < 10:
        names.append("EXPLICIT_BATCH")
    if strongly_typed:
        names.append("STRONGLY_TYPED")
    return tuple(names)


def severity_letter(severity: Any) -> str:
    """ILogger.Severity as TensorRT's own loggers print it ([F] [E] [W] [I] [V])."""
    try:
        return _SEVERITY_LETTERS[int(severity)]
    except (TypeError, ValueError, IndexError):
        return "I"


def format_log_line(severity: Any, msg: str) -> str:
    """One builder-log line as our logger keeps it: ``[TRT] [W] msg``, the form
    :func:`fallback.parse_builder_log` reads (pybind11 renders the enum itself as
    ``Severity.WARNING``, which it does not)."""
    return f"[TRT] [{severity_letter(severity)}] {msg}"


def padded_nbytes(shape: Sequence[int], dtype: str, fmt: str) -> int:
    """Bytes of a tensor in a (possibly vectorised) layout: kCHW16/kCHW32 pad channels up to a
    multiple of 16/32, ``[N][(C+V-1)/V][H][W][V]`` with C = dims[-3] ("the vector dimension is
    third to last", TensorFormat in NvInferRuntimeBase.h)."""
    dims = [int(d) for d in shape]
    vec = _VECTOR.get(fmt, 1)
    if vec > 1 and len(dims) >= 3:
        dims[-3] = -(-dims[-3] // vec) * vec
    if fmt == "dla_linear" and dims:  # [N][C][H][roundUp(W, 64/elementSize)] ("I/O Formats on DLA")
        per_row = 64 // _ITEM[dtype]
        dims[-1] = -(-dims[-1] // per_row) * per_row
    return int(np.prod(dims)) * _ITEM[dtype] if dims else _ITEM[dtype]


def vector_size(fmt: str) -> int:
    """Elements per vector of a TensorRT format name ("chw16" -> 16, "linear" -> 1)."""
    return _VECTOR.get(fmt, 1)


def format_name(tensor_format: Any) -> str:
    """A TensorRT TensorFormat enum as our lower-case name (``TensorFormat.CHW16`` -> chw16)."""
    return str(tensor_format).rsplit(".", 1)[-1].lower()


def calibration_sha256(path: str | None) -> str:
    """Content hash of a calibration cache ("" without one), part of the engine key."""
    if path is None:
        return ""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise HxschedError(
            f"cannot read the calibration cache: {exc.strerror}", path=path
        ) from None


def check_int8_source(
    trt_version: str, calibration_cache: str | None, has_qdq: bool | None = None
) -> None:
    """INT8 needs scales: a calibration cache on TensorRT <= 10 (read by a calibrator), a QDQ
    model on TensorRT 11, which has no calibrators ("IInt8Calibrator" is gone in 11.x);
    ``has_qdq`` None: the model is not known yet (checked again before the build)."""
    if version_tuple(trt_version)[0] < 11:
        return
    if calibration_cache is not None:
        raise HxschedError(
            f"TensorRT {trt_version} has no INT8 calibrators, so --calibration-cache cannot "
            "be used: export a QDQ model (QuantizeLinear/DequantizeLinear) and drop the cache"
        )
    if has_qdq is False:
        raise HxschedError(
            f"TensorRT {trt_version} builds INT8 only from a QDQ model (QuantizeLinear/"
            "DequantizeLinear nodes), and this segment has none: quantize the ONNX model first"
        )


# ---------------------------------------------------------------------------------------------
# Hardware (lazy tensorrt / pycuda)
# ---------------------------------------------------------------------------------------------
class _Logger:
    """A TensorRT logger that keeps the messages (fallback detection reads them)."""

    def __new__(cls, lines: list[str]):
        base: Any = trt.ILogger  # a class of the lazily imported module, unknown to mypy

        class Keep(base):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                lines.append(format_log_line(severity, msg))

        return Keep()


class _CacheCalibrator:
    """An IInt8EntropyCalibrator2 that only replays a calibration cache: ``get_batch`` returns
    None (no data), ``read_calibration_cache`` the cache's bytes (pyInt8.cpp, TensorRT 8.5-10.x)."""

    def __new__(cls, cache: bytes):
        base: Any = trt.IInt8EntropyCalibrator2

        class FromCache(base):
            def __init__(self) -> None:
                base.__init__(self)

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names: Any) -> None:
                return None

            def read_calibration_cache(self) -> bytes:
                return cache

            def write_calibration_cache(self, data: Any) -> None:
                return None

        return FromCache()


_DTYPES = {"float32": "float32", "float16": "float16", "int8": "int8"}
_FORMATS = {"linear": "LINEAR", "chw16": "CHW16", "chw32": "CHW32", "dla_linear": "DLA_LINEAR"}


def build_engine(onnx_bytes: bytes, cfg: BuildConfig, log: list[str]) -> bytes:
    """Build a serialized engine for one segment; raises with the builder's words on failure."""
    version = str(trt.__version__)
    check_tensorrt_version(version)
    logger = _Logger(log)
    builder = trt.Builder(logger)
    flags = 0
    for name in network_flag_names(version, strongly_typed=cfg.strongly_typed):
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise HxschedError(f"TensorRT's ONNX parser rejected the segment: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    calibrator = _configure_precision(config, cfg)  # kept alive until the build returns
    _configure_device(builder, config, cfg)
    for i in range(network.num_inputs):
        _apply_io(network.get_input(i), cfg.inputs, cfg.strongly_typed)
    for i in range(network.num_outputs):
        _apply_io(network.get_output(i), cfg.outputs, cfg.strongly_typed)
    blob = builder.build_serialized_network(network, config)
    del calibrator
    if blob is None:
        tail = " | ".join(line for line in log[-6:] if "[E]" in line or "Error" in line)
        raise HxschedError(
            f"TensorRT could not build the {cfg.accelerator} engine: {tail or 'see log'}"
        )
    return bytes(blob)


def _configure_precision(config: Any, cfg: BuildConfig) -> Any:
    """FP16/INT8 flags and the cache-replaying calibrator (none on strongly typed TensorRT 11,
    where BuilderFlag.FP16 and calibrators no longer exist)."""
    if cfg.strongly_typed:
        return None
    config.set_flag(trt.BuilderFlag.FP16)
    if cfg.precision != Precision.INT8:
        return None
    config.set_flag(trt.BuilderFlag.INT8)
    if cfg.calibration_cache is None:
        return None
    calibrator = _CacheCalibrator(Path(cfg.calibration_cache).read_bytes())
    config.int8_calibrator = calibrator
    return calibrator


def _configure_device(builder: Any, config: Any, cfg: BuildConfig) -> None:
    if cfg.dla_core is not None:
        if builder.num_DLA_cores <= cfg.dla_core:
            raise HxschedError(
                f"{cfg.accelerator} requested but this device has {builder.num_DLA_cores} DLA cores"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg.dla_core
        if not cfg.strongly_typed:  # removed in TensorRT 11
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        if cfg.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if cfg.direct_io:
        config.set_flag(trt.BuilderFlag.DIRECT_IO)


def _apply_io(tensor: Any, layout: dict[str, TensorIO], strongly_typed: bool) -> None:
    io = layout.get(tensor.name)
    if io is None:
        return
    if not strongly_typed:  # ITensor.dtype is read-only in TensorRT 11 (the ONNX type rules)
        tensor.dtype = getattr(trt, _DTYPES[io.dtype])
    tensor.allowed_formats = 1 << int(getattr(trt.TensorFormat, _FORMATS[io.format]))


def primary_context(driver: Any) -> Any:
    """Device 0's primary context, pushed on this thread: the context TensorRT's CUDA runtime
    calls use ("Interactions with the CUDA Driver API", CUDA Runtime API), so pycuda and
    TensorRT share streams and pointers. ``pycuda.autoinit`` would make a second, non-primary
    context current only on the importing thread. Pop it with ``driver.Context.pop()``."""
    driver.init()
    primary = driver.Device(0).retain_primary_context()
    primary.push()
    return primary


class EngineRunner:
    """One deserialized engine with device buffers, run on a CUDA stream."""

    def __init__(self, engine_bytes: bytes, dla_core: int | None, log: list[str]) -> None:
        self._ctx = primary_context(cuda)
        self._runtime = trt.Runtime(_Logger(log))
        if dla_core is not None:
            self._runtime.DLA_core = dla_core  # before deserialising (trtexec does the same)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            cuda.Context.pop()
            raise HxschedError("TensorRT could not deserialize the engine (corrupt or stale)")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream(CU_STREAM_NON_BLOCKING)
        self.buffers: dict[str, Any] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            fmt = format_name(self.engine.get_tensor_format(name))
            nbytes = max(padded_nbytes(shape, dtype.name, fmt), 1)  # DLA formats pad C
            self.buffers[name] = cuda.mem_alloc(nbytes)
            cuda.memset_d8(self.buffers[name], 0, nbytes)  # padding lanes are read too
            self.context.set_tensor_address(name, int(self.buffers[name]))

    def enqueue(self) -> None:
        if not self.context.execute_async_v3(stream_handle=self.stream.handle):
            raise HxschedError("TensorRT execute_async_v3 failed")

    def time_ms(self, runs: int, warmup: int) -> list[float]:
        """Per-run device time with CUDA events around execute_async_v3."""
        for _ in range(warmup):
            self.enqueue()
        self.stream.synchronize()
        samples = []
        for _ in range(runs):
            start, end = cuda.Event(), cuda.Event()
            start.record(self.stream)
            self.enqueue()
            end.record(self.stream)
            end.synchronize()
            samples.append(end.time_since(start))
        return samples

    def release(self) -> None:
        """Free the engine (a DLA core holds at most 16 loadables at once) and pop the context."""
        if self._ctx is None:
            return
        self.stream.synchronize()
        self.buffers.clear()
        self.context = None
        self.engine = None
        self._runtime = None
        self._ctx = None
        cuda.Context.pop()


def time_concurrently(
    a: EngineRunner, b: EngineRunner, runs: int
) -> tuple[list[float], list[float]]:
    """Run two engines on their own streams at once; each one's per-run time (ms)."""
    ta, tb = [], []
    for _ in range(runs):
        ea0, ea1, eb0, eb1 = cuda.Event(), cuda.Event(), cuda.Event(), cuda.Event()
        ea0.record(a.stream)
        eb0.record(b.stream)
        a.enqueue()
        b.enqueue()
        ea1.record(a.stream)
        eb1.record(b.stream)
        ea1.synchronize()
        eb1.synchronize()
        ta.append(ea1.time_since(ea0))
        tb.append(eb1.time_since(eb0))
    return ta, tb


def time_chain(a: EngineRunner, b: EngineRunner, runs: int) -> list[float]:
    """``a`` then ``b`` (on its own stream, waiting by event): time from a's start to b's end."""
    out = []
    for _ in range(runs):
        start, handoff, end = cuda.Event(), cuda.Event(), cuda.Event()
        start.record(a.stream)
        a.enqueue()
        handoff.record(a.stream)
        b.stream.wait_for_event(handoff)
        b.enqueue()
        end.record(b.stream)
        end.synchronize()
        out.append(end.time_since(start))
    return out
