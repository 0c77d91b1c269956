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
