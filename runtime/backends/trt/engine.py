"""TensorRT engines for segments: build decisions (pure) and the thin hardware calls.

Only the functions at the bottom touch tensorrt/pycuda, and they import them lazily; every
decision they act on is made by a pure function above, which the tests cover.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hxsched._compat import lazy_import
from hxsched.errors import HxschedError

trt = lazy_import("tensorrt")
cuda = lazy_import("pycuda.driver")

WORKSPACE_BYTES = 1 << 30


@dataclass(frozen=True)
class TensorIO:
    """How one segment input/output is laid out at the engine boundary."""

    dtype: str  # "float32", "float16" or "int8"
    format: str  # "linear", "chw16" (FP16, DLA-native) or "chw32" (INT8, DLA-native)


@dataclass(frozen=True)
class BuildConfig:
    accelerator: str  # "gpu", "dla0", "dla1"
    precision: str  # "fp16" or "int8"
    gpu_fallback: bool
    direct_io: bool
    inputs: dict[str, TensorIO] = field(default_factory=dict)
    outputs: dict[str, TensorIO] = field(default_factory=dict)
    calibration_cache: str | None = None
    strongly_typed: bool = False  # TensorRT 11: precision comes from the ONNX types

    @property
    def dla_core(self) -> int | None:
        return int(self.accelerator[3:]) if self.accelerator.startswith("dla") else None


def boundary_io(this: str, other: str | None, precision: str, rank: int = 4) -> TensorIO:
    """Layout of a tensor between this segment's engine and ``other`` (None = the host).

    Tensors handed to or from a DLA use the DLA-native format on both sides (kCHW16 for FP16,
    kCHW32 for INT8), so no reformat kernel runs on the GPU; model inputs/outputs stay FP32
    linear so the host can read them; GPU-to-GPU hand-overs use linear FP16 (half the bytes).
    """
    on_dla = this.startswith("dla") or (other is not None and other.startswith("dla"))
    if on_dla and rank < 3:  # vectorised formats exist only from 3 dimensions (C is dims[-3])
        return TensorIO("float16", "linear") if other is not None else TensorIO("float32", "linear")
    if on_dla:
        return TensorIO("int8", "chw32") if precision == "int8" else TensorIO("float16", "chw16")
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
) -> BuildConfig:
    """Everything the builder needs for one segment; ``inputs_from``/``outputs_to`` name the
    accelerator on the other side of each boundary tensor (None for the host)."""
    if precision not in ("fp16", "int8"):
        raise HxschedError(f"precision {precision!r}: TensorRT segments build in fp16 or int8")
    is_dla = accelerator.startswith("dla")
    if is_dla and accelerator not in ("dla0", "dla1"):
        raise HxschedError(f"unknown DLA core {accelerator!r} (dla0 or dla1)")
    if precision == "int8" and calibration_cache is None and trt_major < 11:
        raise HxschedError("INT8 needs a calibration cache (--calibration-cache)")
    rk = ranks or {}
    ins = {
        n: boundary_io(accelerator, src, precision, rk.get(n, 4)) for n, src in inputs_from.items()
    }
    outs = {
        n: boundary_io(accelerator, dst, precision, rk.get(n, 4)) for n, dst in outputs_to.items()
    }
    fallback = allow_gpu_fallback and is_dla
    return BuildConfig(
        accelerator=accelerator,
        precision=precision,
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


# ---------------------------------------------------------------------------------------------
# Hardware (lazy tensorrt / pycuda)
# ---------------------------------------------------------------------------------------------
class _Logger:
    """A TensorRT logger that keeps the messages (fallback detection reads them)."""

    def __new__(cls, lines: list[str]):
        class Keep(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                lines.append(f"[{severity}] {msg}")

        return Keep()


_DTYPES = {"float32": "float32", "float16": "float16", "int8": "int8"}
_FORMATS = {"linear": "LINEAR", "chw16": "CHW16", "chw32": "CHW32"}


def build_engine(onnx_bytes: bytes, cfg: BuildConfig, log: list[str]) -> bytes:
    """Build a serialized engine for one segment; raises with the builder's words on failure."""
    logger = _Logger(log)
    builder = trt.Builder(logger)
    flags = 0
    if cfg.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise HxschedError(f"TensorRT's ONNX parser rejected the segment: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not cfg.strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        if cfg.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    if cfg.dla_core is not None:
        if builder.num_DLA_cores <= cfg.dla_core:
            raise HxschedError(
                f"{cfg.accelerator} requested but this device has {builder.num_DLA_cores} DLA cores"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg.dla_core
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        if cfg.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if cfg.direct_io:
        config.set_flag(trt.BuilderFlag.DIRECT_IO)
    for i in range(network.num_inputs):
        _apply_io(network.get_input(i), cfg.inputs)
    for i in range(network.num_outputs):
        _apply_io(network.get_output(i), cfg.outputs)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        tail = " | ".join(line for line in log[-6:] if "ERROR" in line or "Error" in line)
        raise HxschedError(
            f"TensorRT could not build the {cfg.accelerator} engine: {tail or 'see log'}"
        )
    return bytes(blob)


def _apply_io(tensor: Any, layout: dict[str, TensorIO]) -> None:
    io = layout.get(tensor.name)
    if io is None:
        return
    tensor.dtype = getattr(trt, _DTYPES[io.dtype])
    tensor.allowed_formats = 1 << int(getattr(trt.TensorFormat, _FORMATS[io.format]))


class EngineRunner:
    """One deserialized engine with device buffers, run on a CUDA stream."""

    def __init__(self, engine_bytes: bytes, dla_core: int | None, log: list[str]) -> None:
        import numpy as np
        import pycuda.autoinit  # noqa: F401 - creates the CUDA context

        self._runtime = trt.Runtime(_Logger(log))
        if dla_core is not None:
            self._runtime.DLA_core = dla_core  # before deserialising (trtexec does the same)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise HxschedError("TensorRT could not deserialize the engine (corrupt or stale)")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.buffers: dict[str, Any] = {}
        self.host: dict[str, Any] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self.buffers[name] = cuda.mem_alloc(max(nbytes, 1))
            self.host[name] = cuda.pagelocked_empty(shape, dtype)
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
