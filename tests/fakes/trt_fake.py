"""A strict fake of the ``tensorrt`` module for one recorded version, on the CPU.

Engines really run: the serialized "engine" carries the segment's ONNX model, which
onnxruntime executes on the CPU, reading and writing the fake device memory in each tensor's
layout (kLINEAR, or kCHW16/kCHW32: ``[N][(C+V-1)/V][H][W][V]``, NvInferRuntimeBase.h
``TensorFormat``). The builder logs in TensorRT's words (the DLA fallback lines of
tests/data/trt/*.log); the behaviours TensorRT documents are enforced (see ``Limits``)."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fakes.surface import Strict, StrictModule, bind, load

MAGIC = b"FAKETRT\x01"
# "only 16 DLA loadable can be loaded concurrently per core" (TensorRT Developer Guide, DLA
# Supported Layers and Restrictions, General Restrictions)
DLA_LOADABLES_PER_CORE = 16
# ops the fake DLA runs (TensorRT Developer Guide, "DLA Supported Layers"); others fall back
DLA_OPS = frozenset(
    [
        "Conv",
        "ConvTranspose",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Clip",
        "MaxPool",
        "AveragePool",
        "BatchNormalization",
        "Add",
        "Sub",
        "Mul",
        "Max",
        "Min",
        "Concat",
        "Resize",
        "PRelu",
        "Identity",
    ]
)
_LAYER_TYPE = {
    "Conv": "CONVOLUTION",
    "ConvTranspose": "DECONVOLUTION",
    "Relu": "ACTIVATION",
    "Sigmoid": "ACTIVATION",
    "MaxPool": "POOLING",
    "Add": "ELEMENTWISE",
    "Mul": "ELEMENTWISE",
    "Div": "ELEMENTWISE",
    "Reshape": "SHUFFLE",
    "Transpose": "SHUFFLE",
    "Softmax": "SOFTMAX",
    "Concat": "CONCATENATION",
}
_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}
_NP.update({"BOOL": np.bool_, "UINT8": np.uint8, "INT64": np.int64})
_ATTR_TYPES = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32"}
_ATTR_TYPES.update({"bool": "BOOL", "uint8": "UINT8", "int64": "INT64"})
_VECTOR = {"CHW16": 16, "CHW32": 32, "CHW4": 4, "CHW2": 2}
_ONNX_ERROR_IMPLICIT = (
    "In node -1 (importModel): INVALID_VALUE: Assertion failed: "
    '!mImporterCtx.network()->hasImplicitBatchDimension() && "This version of the ONNX parser '
    "only supports TensorRT INetworkDefinitions with an explicit batch dimension. Please ensure "
    'the network was created using the EXPLICIT_BATCH NetworkDefinitionCreationFlag."'
)


class FakeDeviceFault(RuntimeError):
    """The fake's memory checker: what on a device would be an out-of-bounds access."""


@dataclass
class Stats:
    """What the fake saw (for assertions)."""

    builds: int = 0
    executions: int = 0
    max_dla_alive: int = 0


def padded_bytes(shape: tuple[int, ...], dtype: Any, fmt: str) -> int:
    dims = list(shape)
    vec = _VECTOR.get(fmt, 1)
    if vec > 1 and len(dims) >= 3:
        dims[-3] = -(-dims[-3] // vec) * vec
    return int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize


def _to_layout(arr: np.ndarray, fmt: str) -> np.ndarray:
    vec = _VECTOR.get(fmt, 1)
    if vec == 1 or arr.ndim < 3:
        return np.ascontiguousarray(arr)
    lead, (c, h, w) = arr.shape[:-3], arr.shape[-3:]
    g = -(-c // vec)
    out = np.zeros((*lead, g * vec, h, w), arr.dtype)
    out[..., :c, :, :] = arr
    out = out.reshape(*lead, g, vec, h, w)
    return np.ascontiguousarray(np.moveaxis(out, -3, -1))  # [.., g, h, w, vec]


def _from_layout(flat: np.ndarray, shape: tuple[int, ...], dtype: Any, fmt: str) -> np.ndarray:
    vec = _VECTOR.get(fmt, 1)
    n = padded_bytes(shape, dtype, fmt)
    raw = flat[:n].view(dtype)
    if vec == 1 or len(shape) < 3:
        return raw.reshape(shape)
    lead, (c, h, w) = shape[:-3], shape[-3:]
    g = -(-c // vec)
    v = np.moveaxis(raw.reshape(*lead, g, h, w, vec), -1, -3)
    return v.reshape(*lead, g * vec, h, w)[..., :c, :, :]


@dataclass
class State:
    """One fake ``tensorrt`` module's shared state (every fake class's ``_t``)."""

    mod: Any
    version: str
    drv: Any  # the fake pycuda driver state: its memory, streams, contexts
    dla_cores: int
    stats: Stats = field(default_factory=Stats)
    alive: dict[int, weakref.WeakSet] = field(default_factory=dict)  # DLA engines per core

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def say(self, logger: Any, severity: str, msg: str) -> None:
        """A message to a TensorRT logger (a Python ``ILogger``: our code's own)."""
        logger.log(getattr(self.mod.ILogger.Severity, severity), msg)


class ILogger:
    _t: State

    def __init__(self) -> None:
        pass


class IInt8EntropyCalibrator2:
    """The trampoline base our calibrator subclasses (pyInt8.cpp): the builder calls back into
    ``read_calibration_cache`` / ``get_batch`` (see ``_read_calibrator``)."""

    _t: State

    def __init__(self) -> None:
        pass


class Logger:
    _t: State

    def __init__(self, min_severity: Any = None) -> None:
        self._min = min_severity
        self._lines: list[str] = []

    def log(self, severity: Any, msg: str) -> None:
        self._lines.append(f"{severity}: {msg}")


class ITensor:
    _t: State

    def __init__(self, name: str, shape: tuple[int, ...], is_input: bool) -> None:
        self._name, self._shape, self._input = name, shape, is_input
        self._dtype = self._t.mod.DataType.FLOAT
        self._formats = 1 << int(self._t.mod.TensorFormat.LINEAR)

    name = property(lambda self: self._name)
    shape = property(lambda self: tuple(self._shape))
    is_network_input = property(lambda self: self._input)
    is_network_output = property(lambda self: not self._input)

    @property
    def dtype(self) -> Any:
        return self._dtype

    @dtype.setter
    def dtype(self, value: Any) -> None:
        self._dtype = self._t.mod.DataType(int(value))

    @property
    def allowed_formats(self) -> int:
        return self._formats

    @allowed_formats.setter
    def allowed_formats(self, value: int) -> None:
        self._formats = int(value)

    def _format(self) -> str:
        """The one format the engine gets: the lowest allowed one (LINEAR when none)."""
        fmts = [f for f in self._t.mod.TensorFormat if self._formats >> int(f) & 1]
        return fmts[0].name if fmts else "LINEAR"


class INetworkDefinition:
    _t: State

    def __init__(self, flags: int) -> None:
        flag = self._t.mod.NetworkDefinitionCreationFlag
        explicit = 1 << int(flag.EXPLICIT_BATCH) if "EXPLICIT_BATCH" in flag.__members__ else 0
        # TensorRT 8.x: flags without EXPLICIT_BATCH make an implicit-batch network
        # (NvInfer.h createNetworkV2); from 10.0 networks are always explicit batch.
        self._implicit = self._t.major < 10 and not (flags & explicit)
        self._inputs: list[Any] = []
        self._outputs: list[Any] = []
        self._model: bytes | None = None

    has_implicit_batch_dimension = property(lambda self: self._implicit)
    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))
    num_layers = property(lambda self: len(self._nodes()) if self._model else 0)

    def get_input(self, index: int) -> Any:
        return self._inputs[index]

    def get_output(self, index: int) -> Any:
        return self._outputs[index]

    def _nodes(self) -> list[Any]:
        import onnx

        return list(onnx.load_from_string(self._model).graph.node)


class ParserError:
    _t: State

    def __init__(self, text: str) -> None:
        self._text = text

    def desc(self) -> str:
        return self._text

    def __str__(self) -> str:
        return self._text


class OnnxParser:
    _t: State

    def __init__(self, network: Any, logger: Any) -> None:
        self._network, self._logger, self._errors = network, logger, []

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index: int) -> Any:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx

        net, mod = self._network, self._t.mod
        if net._implicit:
            self._errors.append(mod.ParserError(_ONNX_ERROR_IMPLICIT))
            self._t.say(self._logger, "ERROR", _ONNX_ERROR_IMPLICIT)
            return False
        proto = onnx.load_from_string(bytes(model))
        inits = {i.name for i in proto.graph.initializer}
        for v in proto.graph.input:
            if v.name not in inits:
                net._inputs.append(mod.ITensor(v.name, _dims(v), True))
        for v in proto.graph.output:
            net._outputs.append(mod.ITensor(v.name, _dims(v), False))
        net._model = bytes(model)
        return True


class IBuilderConfig:
    _t: State

    def __init__(self) -> None:
        self._flags: set[str] = set()
        self._pools: dict[str, int] = {}
        self._device = self._t.mod.DeviceType.GPU
        self._dla_core = -1
        self._calibrator = None

    def set_flag(self, flag: Any) -> None:
        self._flags.add(self._t.mod.BuilderFlag(int(flag)).name)

    def clear_flag(self, flag: Any) -> None:
        self._flags.discard(self._t.mod.BuilderFlag(int(flag)).name)

    def get_flag(self, flag: Any) -> bool:
        return self._t.mod.BuilderFlag(int(flag)).name in self._flags

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        self._pools[self._t.mod.MemoryPoolType(int(pool)).name] = int(pool_size)

    def get_memory_pool_limit(self, pool: Any) -> int:
        return self._pools.get(self._t.mod.MemoryPoolType(int(pool)).name, 0)

    @property
    def default_device_type(self) -> Any:
        return self._device

    @default_device_type.setter
    def default_device_type(self, value: Any) -> None:
        self._device = self._t.mod.DeviceType(int(value))

    @property
    def DLA_core(self) -> int:  # noqa: N802 - the binding's name
        return self._dla_core

    @DLA_core.setter
    def DLA_core(self, value: int) -> None:  # noqa: N802
        self._dla_core = int(value)

    @property
    def int8_calibrator(self) -> Any:
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, value: Any) -> None:
        self._calibrator = value

    def can_run_on_DLA(self, layer: Any) -> bool:  # noqa: N802
        return getattr(layer, "_op", "") in DLA_OPS


class IHostMemory:
    _t: State

    def __init__(self, data: bytes) -> None:
        self._data = data

    nbytes = property(lambda self: len(self._data))

    def __bytes__(self) -> bytes:
        return self._data

    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(self._data)


class Builder:
    _t: State

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    num_DLA_cores = property(lambda self: self._t.dla_cores)  # noqa: N815
    platform_has_fast_fp16 = property(lambda self: True)
    platform_has_fast_int8 = property(lambda self: True)
    logger = property(lambda self: self._logger)

    def create_network(self, flags: int = 0) -> Any:
        return self._t.mod.INetworkDefinition(int(flags))

    def create_builder_config(self) -> Any:
        return self._t.mod.IBuilderConfig()

    def build_serialized_network(self, network: Any, config: Any) -> Any:
        return _build(self._t, self._logger, network, config)


def _refusal(t: State, network: Any, config: Any) -> str | None:
    """Why the builder cannot start on this network and config (its ERROR line), if it cannot."""
    dla = config._device == t.mod.DeviceType.DLA
    if network._model is None:
        return "2: [network.cpp::validate] Error Code 2: empty network"
    if dla and not 0 <= config._dla_core < t.dla_cores:
        return f"Cannot create DLA engine, {config._dla_core} not available"
    if dla and "INT8" in config._flags and config._calibrator is None:
        return (  # the builder's words (NVIDIA/TensorRT#1973)
            "4: input/output with DataType Int8 in network without Q/DQ layers must have "
            f"dynamic range set when no calibrator is used. (tensor: {network._inputs[0].name})"
        )
    return None


def _place(t: State, logger: Any, nodes: list[Any], config: Any) -> list[str] | None:
    """The nodes of a DLA engine that go to the GPU (None: no GPU fallback allowed)."""
    gpu = []
    for n in nodes:
        if n.op_type not in DLA_OPS:
            kind = _LAYER_TYPE.get(n.op_type, n.op_type.upper())
            t.say(
                logger,
                "WARNING",
                f"Layer '{n.name}' ({kind}): Unsupported on DLA. Switching this layer's device "
                "type to GPU.",
            )
            gpu.append(n.name)
    if gpu and "GPU_FALLBACK" not in config._flags:
        t.say(
            logger,
            "ERROR",
            "4: [network.cpp::validate] Error Code 4: Internal Error (DLA validation failed)",
        )
        return None
    return gpu


def _io(t: State, logger: Any, network: Any) -> dict[str, dict] | None:
    io = {}
    tensors = [(x, "INPUT") for x in network._inputs] + [(x, "OUTPUT") for x in network._outputs]
    for tensor, mode in tensors:
        fmt = tensor._format()
        if fmt in _VECTOR and len(tensor.shape) < 3:  # C is dims[-3]: no vectorised layout
            t.say(logger, "ERROR", f"9: [{tensor.name}]: no implementation for format {fmt}")
            return None
        io[tensor.name] = {
            "shape": list(tensor.shape),
            "dtype": tensor._dtype.name,
            "format": fmt,
            "mode": mode,
        }
    return io


def _sections(t: State, logger: Any, nodes: list[Any], dla_nodes: list[str], gpu: list[str]):
    """The builder's INFO summary of where layers run (as in tests/data/trt/*.log)."""
    t.say(logger, "INFO", "---------- Layers Running on DLA ----------")
    if dla_nodes:
        t.say(logger, "INFO", f"[DlaLayer] {{ForeignNode[{dla_nodes[0]}...{dla_nodes[-1]}]}}")
    t.say(logger, "INFO", "---------- Layers Running on GPU ----------")
    for n in nodes:
        if n.name in gpu:
            kind = _LAYER_TYPE.get(n.op_type, "PLUGIN_V2")
            t.say(logger, "INFO", f"[GpuLayer] {kind}: {n.name}")


def _read_calibrator(t: State, logger: Any, calibrator: Any) -> dict[str, float] | None:
    """What TensorRT does with an IInt8 calibrator that has a cache: read it, check its header
    (``TRT-<version>-EntropyCalibration2``) and take one float32 scale per tensor (big-endian
    hex); without a cache it would calibrate from ``get_batch``, which here has no data."""
    import struct

    cache = calibrator.read_calibration_cache()
    if not cache and calibrator.get_batch(["input"]) is None:
        t.say(logger, "ERROR", "Calibration failure occurred with no scaling factors detected.")
        return None
    text = bytes(cache).decode("ascii")
    lines = text.splitlines()
    if not lines or not lines[0].startswith("TRT-") or "Calibration" not in lines[0]:
        t.say(logger, "ERROR", "Calibration table does not match calibrator algorithm type.")
        return None
    scales = {}
    for line in lines[1:]:
        name, _, hexval = line.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
    return scales


def _build(t: State, logger: Any, network: Any, config: Any) -> Any:
    t.stats.builds += 1
    t.say(logger, "INFO", "[MemUsageChange] Init CUDA: CPU +0, GPU +0, now: CPU 0, GPU 0 (MiB)")
    why = _refusal(t, network, config)
    if why:
        t.say(logger, "ERROR", why)
        return None
    nodes = network._nodes()
    dla = config._device == t.mod.DeviceType.DLA
    gpu = _place(t, logger, nodes, config) if dla else [n.name for n in nodes]
    io = _io(t, logger, network)
    if gpu is None or io is None:
        return None
    dla_nodes = [n.name for n in nodes if n.name not in gpu]
    _sections(t, logger, nodes, dla_nodes, gpu)
    if "INT8" in config._flags and config._calibrator is None:
        t.say(
            logger,
            "WARNING",
            "Calibrator is not being used. Users must provide dynamic "
            "range for all tensors that are not Int32 or Bool.",
        )
    scales: dict[str, float] = {}
    if "INT8" in config._flags and config._calibrator is not None:
        scales = _read_calibrator(t, logger, config._calibrator)
        if scales is None:
            return None
    header = {
        "version": t.version,
        "dla": dla,
        "io": io,
        "dla_nodes": dla_nodes,
        "gpu_nodes": gpu,
        "flags": sorted(config._flags),
        "calibration": scales,
    }
    return t.mod.IHostMemory(MAGIC + json.dumps(header).encode() + b"\n" + network._model)


class Runtime:
    _t: State

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._dla_core = -1

    @property
    def DLA_core(self) -> int:  # noqa: N802
        return self._dla_core

    @DLA_core.setter
    def DLA_core(self, value: int) -> None:  # noqa: N802
        self._dla_core = int(value)

    num_DLA_cores = property(lambda self: self._t.dla_cores)  # noqa: N815

    def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
        t, data = self._t, bytes(serialized_engine)
        if not data.startswith(MAGIC):
            t.say(
                self._logger,
                "ERROR",
                "1: [runtime.cpp::parsePlan] Error Code 1: "
                "Serialization (Serialization assertion plan->header.magicTag failed.)",
            )
            return None
        head, model = data[len(MAGIC) :].split(b"\n", 1)
        meta = json.loads(head)
        if meta["version"] != t.version:
            t.say(
                self._logger,
                "ERROR",
                "6: The engine plan file is not compatible with this "
                f"version of TensorRT, expecting library version {t.version} got "
                f"{meta['version']}, please rebuild.",
            )
            return None
        core = max(self._dla_core, 0) if meta["dla"] else None
        pool = t.alive.setdefault(core, weakref.WeakSet()) if core is not None else None
        if pool is not None and len(pool) >= DLA_LOADABLES_PER_CORE:
            # the documented limit; TensorRT's own wording for it is not on record
            t.say(
                self._logger,
                "ERROR",
                f"1: [dlaUtils] DLA core {core}: cannot load "
                f"loadable, {len(pool)} of {DLA_LOADABLES_PER_CORE} loaded",
            )
            return None
        engine = t.mod.ICudaEngine(meta, model, core)
        if pool is not None:
            pool.add(engine)
            t.stats.max_dla_alive = max(t.stats.max_dla_alive, len(pool))
        return engine


class ICudaEngine:
    _t: State

    def __init__(self, meta: dict, model: bytes, core: int | None) -> None:
        self._meta, self._model, self._core = meta, model, core
        self._names = list(meta["io"])
        self._session: Any = None

    num_io_tensors = property(lambda self: len(self._names))
    num_layers = property(lambda self: len(self._meta["gpu_nodes"]) + bool(self._meta["dla_nodes"]))

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def _io(self, name: str) -> dict:
        return self._meta["io"][name]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._io(name)["shape"])

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(self._t.mod.DataType, self._io(name)["dtype"])

    def get_tensor_format(self, name: str, profile_index: int = 0) -> Any:
        return getattr(self._t.mod.TensorFormat, self._io(name)["format"])

    def get_tensor_mode(self, name: str) -> Any:
        return getattr(self._t.mod.TensorIOMode, self._io(name)["mode"])

    def create_execution_context(self, strategy: Any = None) -> Any:
        return self._t.mod.IExecutionContext(self)

    def create_engine_inspector(self) -> Any:
        return self._t.mod.EngineInspector(self)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        if self._session is None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self._session = ort.InferenceSession(
                self._model, opts, providers=["CPUExecutionProvider"]
            )
        outs = [o.name for o in self._session.get_outputs()]
        return dict(zip(outs, self._session.run(outs, feeds), strict=True))


class EngineInspector:
    _t: State

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def get_engine_information(self, format: Any) -> str:  # noqa: A002 - the binding's name
        """The LAYER_NAMES_ONLY shape of the inspector's JSON (a DLA run is one ForeignNode)."""
        m = self._engine._meta
        layers = []
        if m["dla_nodes"]:
            layers.append(f"{{ForeignNode[{m['dla_nodes'][0]}...{m['dla_nodes'][-1]}]}}")
        layers += m["gpu_nodes"]
        return json.dumps({"Layers": layers, "Bindings": list(m["io"])})


class IExecutionContext:
    _t: State

    def __init__(self, engine: Any) -> None:
        self._engine = engine  # keeps the engine (and its DLA loadable) alive
        self._addr: dict[str, int] = {}

    engine = property(lambda self: self._engine)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self._engine._meta["io"]:
            return False
        self._addr[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addr.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        return _execute(self._t, self, stream_handle)


def _buffer(drv: Any, ctx: Any, name: str, io: dict) -> np.ndarray:
    """The device buffer bound to ``name``, checked against the tensor's padded layout and,
    for an input, against the layout its producer wrote."""
    addr = ctx._addr[name]
    buf = drv.memory[addr]
    need = padded_bytes(tuple(io["shape"]), _NP[io["dtype"]], io["format"])
    if buf.nbytes < need:
        raise FakeDeviceFault(
            f"tensor {name}: the buffer holds {buf.nbytes} B but the {io['dtype']} "
            f"{io['format']} layout of {io['shape']} needs {need} B"
        )
    written = drv.layouts.get(addr)
    if io["mode"] == "INPUT" and written not in (None, (io["dtype"], io["format"])):
        raise FakeDeviceFault(
            f"tensor {name}: the buffer was written as {written[0]} {written[1]} but this "
            f"engine reads it as {io['dtype']} {io['format']}"
        )
    return buf


def _execute(t: State, ctx: Any, stream_handle: int) -> bool:
    drv = t.drv
    stream = drv.streams.get(int(stream_handle))
    # TensorRT runs in the calling thread's current context, or the primary context when none
    # is current (CUDA Runtime API, "Interactions with the CUDA Driver API").
    runtime_ctx = drv.current() or drv.primary
    if stream is None or runtime_ctx is None or stream._ctx is not runtime_ctx:
        return False
    meta = ctx._engine._meta
    if any(ctx._addr.get(n) not in drv.memory for n in meta["io"]):
        return False  # an address not set, or freed
    bufs = {n: _buffer(drv, ctx, n, io) for n, io in meta["io"].items()}
    feeds = {
        n: _from_layout(bufs[n], tuple(io["shape"]), _NP[io["dtype"]], io["format"])
        for n, io in meta["io"].items()
        if io["mode"] == "INPUT"
    }
    outs = ctx._engine._run({n: v.astype(np.float32) for n, v in feeds.items()})
    for name, value in outs.items():
        io = meta["io"][name]
        arr = _to_layout(np.asarray(value).astype(_NP[io["dtype"]]), io["format"])
        flat = arr.reshape(-1).view(np.uint8)
        bufs[name][: flat.nbytes] = flat
        drv.layouts[ctx._addr[name]] = (io["dtype"], io["format"])
    t.stats.executions += 1
    return True


_IMPLS = (
    ILogger,
    IInt8EntropyCalibrator2,
    Logger,
    ITensor,
    INetworkDefinition,
    ParserError,
    OnnxParser,
    IBuilderConfig,
    IHostMemory,
    Builder,
    Runtime,
    ICudaEngine,
    EngineInspector,
    IExecutionContext,
)


def build_tensorrt(version: str, cuda_driver: Any, *, dla_cores: int = 2) -> StrictModule:
    """A fresh ``tensorrt`` module for one recorded version, sharing ``cuda_driver``'s memory."""
    surface = load("tensorrt", version)["tensorrt"]
    mod: Any = StrictModule("tensorrt", surface, version)
    state = State(mod, version, cuda_driver, dla_cores)

    def nptype(trt_type: Any) -> Any:
        return _NP[mod.DataType(int(trt_type)).name]

    impls = {c.__name__: type(c.__name__ + "Impl", (c, Strict), {}) for c in _IMPLS}
    bind(mod, impls, {"nptype": nptype}, {"__version__": version}, shared=state)
    for attr, member in _ATTR_TYPES.items():
        if attr in surface.attributes and member in surface.enums["DataType"]:
            setattr(mod, attr, getattr(mod.DataType, member))
    object.__setattr__(mod, "_stats", state.stats)
    return mod


def _dims(value_info: Any) -> tuple[int, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(int(d.dim_value) if d.dim_value > 0 else 1 for d in dims)
