"""TensorRT segment engines: the pure decisions (the hardware calls are gpu/jetson tests)."""

from __future__ import annotations

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.backends.trt.engine import (
    TensorIO,
    boundary_io,
    build_config_for,
    summarize_ms,
    transition_from_timings,
)


def test_boundary_formats():
    assert boundary_io("dla0", "gpu", "fp16") == TensorIO("float16", "chw16")
    assert boundary_io("gpu", "dla1", "int8") == TensorIO("int8", "chw32")
    assert boundary_io("gpu", None, "fp16") == TensorIO("float32", "linear")
    assert boundary_io("gpu", "gpu", "fp16") == TensorIO("float16", "linear")
    assert boundary_io("dla0", None, "fp16") == TensorIO("float16", "chw16")


def test_dla_segment_without_fallback_uses_direct_io():
    cfg = build_config_for("dla1", "fp16", inputs_from={"x": "gpu"}, outputs_to={"y": "gpu"})
    assert cfg.dla_core == 1 and cfg.direct_io and not cfg.gpu_fallback
    assert cfg.inputs["x"].format == "chw16"


def test_fallback_turns_off_direct_io_and_gpu_never_falls_back():
    cfg = build_config_for("dla0", "fp16", inputs_from={}, outputs_to={}, allow_gpu_fallback=True)
    assert cfg.gpu_fallback and not cfg.direct_io
    gpu = build_config_for(
        "gpu", "fp16", inputs_from={"x": None}, outputs_to={"y": "dla0"}, allow_gpu_fallback=True
    )
    assert gpu.dla_core is None and not gpu.gpu_fallback and not gpu.direct_io
    assert gpu.outputs["y"] == TensorIO("float16", "chw16")


def test_int8_needs_calibration_before_trt11_and_trt11_is_strongly_typed():
    with pytest.raises(HxschedError, match="calibration"):
        build_config_for("dla0", "int8", inputs_from={}, outputs_to={})
    cfg = build_config_for("dla0", "int8", inputs_from={}, outputs_to={}, trt_major=11)
    assert cfg.strongly_typed
    with pytest.raises(HxschedError):
        build_config_for("dla2", "fp16", inputs_from={}, outputs_to={})
    with pytest.raises(HxschedError):
        build_config_for("gpu", "fp32", inputs_from={}, outputs_to={})


def test_timing_helpers():
    med, iqr = summarize_ms([1.0, 2.0, 3.0, 4.0, 100.0])
    assert med == 3.0 and iqr > 0
    assert transition_from_timings(5.0, 2.0, 2.5) == (0.5, "")
    value, note = transition_from_timings(4.0, 2.0, 2.5)
    assert value == 0.0 and "negative" in note


@pytest.mark.jetson
def test_build_and_time_a_dla_engine(pix2pix_graph):  # pragma: no cover - needs a Jetson
    from hxsched.runtime.backends.trt import engine as te
    from hxsched.scheduler.graph.onnx_io import to_model_proto
    from hxsched.scheduler.graph.segments import extract_segment

    seg = extract_segment(pix2pix_graph, 0, 3)
    cfg = te.build_config_for(
        "dla0",
        "fp16",
        inputs_from={i: None for i in seg.inputs},
        outputs_to={o: None for o in seg.outputs},
    )
    log: list[str] = []
    blob = te.build_engine(to_model_proto(seg).SerializeToString(), cfg, log)
    runner = te.EngineRunner(blob, 0, log)
    assert summarize_ms(runner.time_ms(20, 5))[0] > 0


def test_low_rank_boundaries_stay_linear_on_the_dla():
    """kCHW16/kCHW32 exist only from 3 dimensions: a 2-D DLA output (logits) stays linear."""
    from hxsched.runtime.backends.trt.engine import boundary_io, build_config_for

    assert boundary_io("dla0", "gpu", "fp16", rank=2) == TensorIO("float16", "linear")
    assert boundary_io("dla0", None, "fp16", rank=2) == TensorIO("float32", "linear")
    assert boundary_io("dla0", "gpu", "fp16", rank=3).format == "chw16"
    cfg = build_config_for(
        "dla1", "fp16", inputs_from={"x": "gpu"}, outputs_to={"y": "gpu"}, ranks={"x": 4, "y": 2}
    )
    assert cfg.inputs["x"].format == "chw16" and cfg.outputs["y"].format == "linear"


# --- issue 10: what the hardware calls are given ---------------------------------------------


class _PybindEnum:
    """An ILogger.Severity / flag member as pybind11 renders it: ``str`` is "Type.MEMBER"."""

    def __init__(self, type_name: str, name: str, value: int) -> None:
        self.type_name, self.name, self.value = type_name, name, value

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __str__(self) -> str:
        return f"{self.type_name}.{self.name}"


@pytest.mark.parametrize(
    ("version", "strongly_typed", "names"),
    [
        ("8.5.3.1", False, ("EXPLICIT_BATCH",)),
        ("8.6.1.6", False, ("EXPLICIT_BATCH",)),
        ("10.3.0.30", False, ()),
        ("10.7.0", False, ()),
        ("11.1.0", True, ("STRONGLY_TYPED",)),
    ],
)
def test_network_flags_per_tensorrt_version(version, strongly_typed, names):
    from hxsched.runtime.backends.trt.engine import network_flag_names

    assert network_flag_names(version, strongly_typed=strongly_typed) == names


class _ParserStops(Exception):
    pass


def _fake_trt(version: str, calls: dict):
    """Just enough of ``tensorrt`` for build_engine to reach the ONNX parser."""
    import types

    flag = types.SimpleNamespace(
        EXPLICIT_BATCH=_PybindEnum("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH", 0),
        STRONGLY_TYPED=_PybindEnum("NetworkDefinitionCreationFlag", "STRONGLY_TYPED", 1),
    )

    class Builder:
        def __init__(self, logger):
            calls["logger"] = logger

        def create_network(self, flags=0):
            calls["flags"] = flags
            return "network"

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        def parse(self, model):
            raise _ParserStops

    class ILogger:
        def __init__(self):
            pass

    return types.SimpleNamespace(
        __version__=version,
        Builder=Builder,
        OnnxParser=OnnxParser,
        ILogger=ILogger,
        NetworkDefinitionCreationFlag=flag,
    )


@pytest.mark.parametrize(("version", "flags"), [("8.5.3", 1), ("8.6.1", 1), ("10.3.0", 0)])
def test_build_engine_creates_an_explicit_batch_network_on_tensorrt_8(monkeypatch, version, flags):
    from hxsched.runtime.backends.trt import engine as te

    calls: dict = {}
    monkeypatch.setattr(te, "trt", _fake_trt(version, calls))
    cfg = build_config_for("gpu", "fp16", inputs_from={}, outputs_to={})
    with pytest.raises(_ParserStops):
        te.build_engine(b"onnx", cfg, [])
    assert calls["flags"] == flags


def test_tensorrt_before_8_5_is_refused_in_one_line(monkeypatch):
    from hxsched.errors import MissingDependencyError
    from hxsched.runtime.backends.trt import engine as te

    te.check_tensorrt_version("8.5.2.2")
    te.check_tensorrt_version("10.3.0")
    with pytest.raises(MissingDependencyError) as exc:
        te.check_tensorrt_version("8.4.1.5")
    text = str(exc.value)
    assert "8.4.1.5" in text and ">= 8.5" in text and "JETSON.md" in text and "\n" not in text
    monkeypatch.setattr(te, "trt", _fake_trt("8.2.1", {}))
    with pytest.raises(MissingDependencyError, match="too old"):
        te.build_engine(b"", build_config_for("gpu", "fp16", inputs_from={}, outputs_to={}), [])


def test_our_logger_writes_lines_the_fallback_parser_reads(monkeypatch):
    """The line exactly as the logger writes it (a pybind11 enum renders as Severity.WARNING,
    which the parser cannot read)."""
    from hxsched.runtime.backends.trt import engine as te
    from hxsched.runtime.backends.trt.fallback import parse_builder_log

    monkeypatch.setattr(te, "trt", _fake_trt("10.3.0", {}))
    lines: list[str] = []
    logger = te._Logger(lines)
    warn = _PybindEnum("Severity", "WARNING", 2)
    info = _PybindEnum("Severity", "INFO", 3)
    logger.log(
        warn,
        "Layer '/model.22/Div' (ELEMENTWISE): Unsupported on DLA. Switching this "
        "layer's device type to GPU.",
    )
    logger.log(info, "---------- Layers Running on DLA ----------")
    logger.log(info, "[DlaLayer] {ForeignNode[/model.0/conv/Conv.../model.21/Add]}")
    logger.log(info, "---------- Layers Running on GPU ----------")
    logger.log(info, "[GpuLayer] ELEMENTWISE: /model.22/Div")
    assert lines[0].startswith("[TRT] [W] Layer '/model.22/Div'")
    assert lines[1] == "[TRT] [I] ---------- Layers Running on DLA ----------"
    report = parse_builder_log(lines)
    assert "/model.22/Div" in report.switched
    assert report.dla_layers == ("{ForeignNode[/model.0/conv/Conv.../model.21/Add]}",)
    assert report.gpu_layers == ("/model.22/Div",)
    assert [
        te.severity_letter(_PybindEnum("Severity", n, i)) for i, n in enumerate("FEWIV")
    ] == list("FEWIV")


def test_int8_on_tensorrt_11_needs_a_qdq_model_not_a_cache():
    from hxsched.runtime.backends.trt.engine import check_int8_source

    check_int8_source("10.3.0", "cal.cache", has_qdq=False)  # calibrators exist up to 10.x
    check_int8_source("11.1.0", None, has_qdq=True)
    check_int8_source("11.1.0", None)  # model not known yet
    with pytest.raises(HxschedError, match="no INT8 calibrators.*QDQ"):
        check_int8_source("11.1.0", "cal.cache", has_qdq=True)
    with pytest.raises(HxschedError, match="only from a QDQ model"):
        check_int8_source("11.1.0", None, has_qdq=False)


def test_int8_builds_read_the_calibration_cache(monkeypatch, tmp_path):
    import types

    from hxsched.runtime.backends.trt import engine as te

    cache = tmp_path / "cal.cache"
    cache.write_bytes(b"TRT-8601-EntropyCalibration2\nimages: 3c00f9f4\n")

    class Calibrator:
        def __init__(self):
            pass

    flags = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    monkeypatch.setattr(
        te, "trt", types.SimpleNamespace(IInt8EntropyCalibrator2=Calibrator, BuilderFlag=flags)
    )

    class Config:
        def __init__(self):
            self.flags: list[str] = []
            self.int8_calibrator = None

        def set_flag(self, f):
            self.flags.append(f)

    config = Config()
    cfg = build_config_for(
        "gpu", "int8", inputs_from={}, outputs_to={}, calibration_cache=str(cache)
    )
    kept = te._configure_precision(config, cfg)
    assert config.flags == ["FP16", "INT8"] and config.int8_calibrator is kept
    assert isinstance(kept, Calibrator)
    assert kept.read_calibration_cache() == cache.read_bytes()
    assert kept.get_batch(["images"]) is None and kept.get_batch_size() == 1
    assert (
        te.calibration_sha256(str(cache))
        == __import__("hashlib").sha256(cache.read_bytes()).hexdigest()
    )
    assert te.calibration_sha256(None) == ""
    fp16 = Config()
    assert (
        te._configure_precision(
            fp16, build_config_for("gpu", "fp16", inputs_from={}, outputs_to={})
        )
        is None
    )
    assert fp16.flags == ["FP16"] and fp16.int8_calibrator is None


def test_dla_linear_pads_w_to_64_bytes():
    from hxsched.runtime.backends.trt.engine import padded_nbytes

    assert padded_nbytes((1, 3, 640, 640), "float16", "dla_linear") == 3 * 640 * 640 * 2
    assert padded_nbytes((1, 3, 8, 10), "float16", "dla_linear") == 3 * 8 * 32 * 2
    assert padded_nbytes((1, 3, 640, 640), "float16", "chw16") == 16 * 640 * 640 * 2


def test_engine_runner_pads_dla_buffers_and_uses_the_primary_context(monkeypatch):
    import types

    from hxsched.runtime.backends.trt import engine as te

    seen: dict = {"alloc": [], "stack": [], "streams": []}

    class Ctx:
        def push(self):
            seen["stack"].append(self)

        @staticmethod
        def pop():
            seen["stack"].pop()

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["x", "y"][i]

        def get_tensor_shape(self, name):
            return (1, 3, 640, 640) if name == "x" else (1, 1000)

        def get_tensor_dtype(self, name):
            return "half"

        def get_tensor_format(self, name):
            fmt = "CHW16" if name == "x" else "LINEAR"
            return _PybindEnum("TensorFormat", fmt, 0)

        def create_execution_context(self):
            return types.SimpleNamespace(set_tensor_address=lambda name, ptr: None)

    class Runtime:
        def __init__(self, logger):
            self.DLA_core = -1

        def deserialize_cuda_engine(self, blob):
            assert self.DLA_core == 0
            return Engine()

    class Stream:
        def __init__(self, flags=0):
            seen["streams"].append(flags)

        def synchronize(self):
            pass

    cuda = types.SimpleNamespace(
        init=lambda: None,
        Device=lambda n: types.SimpleNamespace(retain_primary_context=Ctx),
        Context=Ctx,
        Stream=Stream,
        mem_alloc=lambda n: seen["alloc"].append(n) or len(seen["alloc"]),
        memset_d8=lambda buf, value, n: None,
    )
    trt = types.SimpleNamespace(
        Runtime=Runtime, ILogger=type("ILogger", (), {}), nptype=lambda t: "float16"
    )
    monkeypatch.setattr(te, "trt", trt)
    monkeypatch.setattr(te, "cuda", cuda)
    runner = te.EngineRunner(b"engine", 0, [])
    assert seen["alloc"] == [16 * 640 * 640 * 2, 1000 * 2]  # C padded to 16 for kCHW16
    assert seen["streams"] == [te.CU_STREAM_NON_BLOCKING] and len(seen["stack"]) == 1
    runner.release()
    assert seen["stack"] == [] and runner.engine is None
