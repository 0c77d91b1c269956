"""DLA fallback detection on recorded TensorRT artifacts (see tests/data/trt/SOURCES.md)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.backends.trt.fallback import (
    BuilderLogReport,
    DriftDetector,
    EngineLayer,
    FallbackEvent,
    find_fallbacks,
    layer_onnx_nodes,
    parse_builder_log,
    parse_inspector_json,
)

TRT = Path(__file__).resolve().parents[3] / "data" / "trt"
TRTEXEC = Path(__file__).resolve().parents[3] / "data" / "trtexec"


def _log(name: str) -> BuilderLogReport:
    return parse_builder_log((TRT / name).read_text().splitlines())


def _by_name(layers: list[EngineLayer]) -> dict[str, EngineLayer]:
    return {layer.name: layer for layer in layers}


# --- engine inspector JSON -----------------------------------------------------------------------


def test_detailed_gpu_engine_layers():
    path = TRT / "trex_resnet18_a100_fp16.graph.excerpt.json"
    layers = parse_inspector_json(path.read_bytes(), path=str(path))
    assert len(layers) == 9
    assert all(layer.device == "gpu" for layer in layers)
    reformats = [layer.name for layer in layers if layer.reformat]
    assert reformats == [
        "Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1",
        "Reformatting CopyNode for Input Tensor 0 to Conv_5 + Add_6 + Relu_7",
        "Reformatting CopyNode for Input Tensor 0 to reshape_after_Gemm_48",
        "Reformatting CopyNode for Output Tensor 0 to reshape_after_Gemm_48",
    ]
    by = _by_name(layers)
    assert by["Conv_0 + Relu_1"].onnx_nodes == ("Conv_0", "Relu_1")
    assert by["Conv_0 + Relu_1"].layer_type == "CaskConvolution"
    # A NoOp that is a folded Shuffle, not a reformat: kept, named after itself only.
    assert not by["reshape_after_Gemm_48"].reformat
    assert by["reshape_after_Gemm_48"].onnx_nodes == ("reshape_after_Gemm_48",)
    assert all(layer.onnx_nodes == () for layer in layers if layer.reformat)


def test_detailed_trt10_fields_and_dict_input():
    data = json.loads((TRT / "trt10_resnet18_detailed.excerpt.json").read_text())
    (layer,) = parse_inspector_json(data)
    assert layer.reformat and layer.device == "gpu" and layer.onnx_nodes == ()
    assert layer.layer_type == "Reformat"


def test_metadata_names_the_onnx_nodes():
    # The Metadata value is the complete part of the real (cut-off) paste; TacticName is real too.
    text = (TRT / "trt10_resnet18_detailed.metadata_fragment.txt").read_text()
    meta = re.search(r'"Metadata": "(.*\])', text).group(1)
    tactic = re.search(r'"TacticName": "([^"]+)"', text).group(1)
    layer = {"Name": "fused conv", "LayerType": "CaskConvolution", "TacticName": tactic}
    layer["Metadata"] = json.loads(f'"{meta}"')
    (parsed,) = parse_inspector_json({"Layers": [layer]})
    assert parsed.onnx_nodes == ("resnetv15_stage3_conv4_fwd", "resnetv15_stage3_batchnorm4_fwd")
    assert parsed.device == "gpu"


def test_names_only_gpu_engine_with_myelin_foreign_nodes():
    path = TRT / "detr_resnet50_trt10.layer_names.excerpt.json"
    layers = parse_inspector_json(path.read_text())
    assert len(layers) == 33
    assert {layer.device for layer in layers} == {"gpu"}  # a ForeignNode is no proof of DLA
    by = _by_name(layers)
    assert by["PWN(PWN(/Sub), PWN(/Div))"].onnx_nodes == ("/Sub", "/Div")
    assert by[
        "PWN(/Constant_11_output_0_clone_1 + ONNXTRT_Broadcast_782, PWN(/Mul_1))"
    ].onnx_nodes == (
        "/Constant_11_output_0_clone_1",
        "ONNXTRT_Broadcast_782",
        "/Mul_1",
    )
    parallel = (
        "/model/bbox_predictor/0/MatMul + /model/bbox_predictor/0/Add || "
        "/model/class_labels_classifier/MatMul + /model/class_labels_classifier/Add"
    )
    assert by[parallel].onnx_nodes == (
        "/model/bbox_predictor/0/MatMul",
        "/model/bbox_predictor/0/Add",
        "/model/class_labels_classifier/MatMul",
        "/model/class_labels_classifier/Add",
    )
    for name in (
        "/Unsqueeze_output_0 copy",
        "/Unsqueeze_3_copy_output",
        "reshape_after_/model/bbox_predictor/0/MatMul_copy_input",
        "Reformatting CopyNode for Input Tensor 1 to {ForeignNode[ONNXTRT_castHelper_772.../Gather_3]}",
    ):
        assert by[name].reformat and by[name].onnx_nodes == ()
    assert not by["/Unsqueeze_3"].reformat
    assert not by["reshape_before_/model/model/decoder/5/fc1/MatMul"].reformat


def _profile_names(text: str) -> list[str]:
    rows = [re.sub(r"^\[[^\]]*\] \[I\]\s+", "", line) for line in text.splitlines()[1:]]
    return [re.sub(r"(\s+[\d.]+){3}$", "", row) for row in rows]


def test_names_of_a_dla_engine():
    names = _profile_names((TRT / "trt3143_orin_dla_profile.txt").read_text())
    assert names[:2] == ["images to nvm", "{ForeignNode[Conv_0...Concat_198]}"]
    by = _by_name(parse_inspector_json(names))
    foreign = by["{ForeignNode[Conv_0...Concat_198]}"]
    assert foreign.device is None  # names alone cannot tell DLA from Myelin
    assert foreign.onnx_nodes == ("Conv_0", "Concat_198") and not foreign.reformat
    for name in ("images to nvm", "head_3 from nvm", "images copy finish"):
        assert by[name].reformat and by[name].device == "dla" and by[name].onnx_nodes == ()


def test_trt7_names_of_a_dla_subgraph():
    rows = json.loads((TRTEXEC / "haxconn_googlenet_gpu_transition_at_53.profile.json").read_text())
    layers = parse_inspector_json([row["name"] for row in rows[1:]])
    dla = [layer for layer in layers if layer.device == "dla" and not layer.reformat]
    assert len(dla) == 1 and dla[0].name.startswith("{inception_4b/1x1,inception_4b/relu_1x1,")
    assert "loss3/classifier" in dla[0].onnx_nodes and not dla[0].reformat
    by = _by_name(layers)
    assert by["prob"].device == "gpu" and by["prob"].onnx_nodes == ("prob",)
    assert by["inception_3a/1x1 copy"].reformat
    assert by["pool1/norm1 input reformatter 0"].reformat
    assert sum(layer.reformat for layer in layers if layer.name.startswith("{")) == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("<html>", "not JSON"),
        (b"\xff\xfe{", "not UTF-8"),
        ('{"Bindings": []}', "no 'Layers' list"),
        ('{"Layers": [{"LayerType": "Reformat"}]}', "engine layer 0"),
        ('{"Layers": ["a", 3]}', "engine layer 1"),
        ("42", "must be a JSON object or list"),
    ],
)
def test_bad_inspector_input(data, message):
    with pytest.raises(HxschedError, match=message) as info:
        parse_inspector_json(data, path="engine.json")
    assert info.value.path == "engine.json" and "\n" not in str(info.value)


def test_layer_onnx_nodes_expands_foreign_node_ranges():
    order = ["Conv_0", "Relu_1", "Conv_2", "Relu_3", "Conv_4"]
    assert layer_onnx_nodes("{ForeignNode[Relu_1...Relu_3]}", order) == (
        "Relu_1",
        "Conv_2",
        "Relu_3",
    )
    assert layer_onnx_nodes("{ForeignNode[Relu_1...Relu_3]}") == ("Relu_1", "Relu_3")
    assert layer_onnx_nodes("{ForeignNode[Relu_1...Missing_9]}", order) == ("Relu_1", "Missing_9")
    log = _log("jetson_dla_tutorial_model_bn.log")
    fused = layer_onnx_nodes(log.dla_layers[1])
    assert fused[0] == "Gemm_15" and "linear.bias" in fused
    assert "(Unnamed Layer* 20) [ElementWise]" in fused
    # Myelin ranges name fused endpoints.
    assert layer_onnx_nodes(
        "{ForeignNode[/Constant_7_output_0 + ONNXTRT_Broadcast.../Einsum_1]}"
    ) == (
        "/Constant_7_output_0",
        "ONNXTRT_Broadcast",
        "/Einsum_1",
    )


# --- builder logs ---------------------------------------------------------------------------------


def test_log_sections_trt8():
    log = _log("jetson_dla_tutorial_model_gn.log")
    assert log.dla_layers == (
        "{ForeignNode[Conv_0]}",
        "{ForeignNode[Relu_10...Conv_11]}",
        "{ForeignNode[Relu_21...Conv_22]}",
        "{ForeignNode[Relu_32...Conv_33]}",
        "{ForeignNode[Relu_43]}",
    )
    assert log.gpu_layers[:2] == (
        "Reshape_2 + (Unnamed Layer* 7) [Shuffle]",
        "InstanceNormalization_5",
    )
    assert len(log.gpu_layers) == 6 and not log.switched and not log.warnings


def test_log_switches_with_reasons_trt85():
    log = _log("ultralytics_23488_jp5_orin.log")
    assert (
        log.switched["/model.23/Concat_6"] == "DLA only supports concatenation on the C dimension"
    )
    assert log.switched["/model.23/Expand_1"] == "DLA only supports slicing 4 dimensional tensors"
    assert log.switched["/model.10/m/m.0/attn/MatMul_1"].startswith("MatMul is unsupported on DLA")
    assert log.switched["/model.23/GatherElements_1"] == "Unsupported on DLA (GATHER)"
    assert log.switched["/model.10/m/m.0/attn/Reshape"] == (
        "This version of DLA does not support reshape layers directly connected to Slice or Concat"
    )
    assert log.switched["/model.23/Mod"].startswith(
        "Input tensor has less than 4 dimensions for /m"
    )
    assert len(log.switched) == 16
    assert log.dla_layers == (
        "{ForeignNode[/model.0/conv/Conv.../model.10/m/m.0/attn/qkv/conv/Conv]}",
        "{ForeignNode[/model.10/m/m.0/attn/Split.../model.10/m/m.0/attn/Transpose]}",
    )
    assert not log.gpu_layers
    assert not any("Switching" in w for w in log.warnings)
    assert "DLA does not support dynamic shape tensor: /model.23/TopK_1_output_1" in log.warnings


def test_log_switches_trt86_and_old_forms():
    log = _log("ultralytics_16449_yolov8m_jp6.log")
    assert log.switched["/model.22/Div"] == "DLA cores do not support DIV ElementWise operation"
    assert log.switched["/model.22/Reshape"] == "Unsupported on DLA (SHUFFLE)"
    old = _log("yolov3_86_xavier_trt5.log")
    assert old.switched == {
        "layer81-act": "not running on DLA",
        "layer84-route": "Concatenation on DLA requires at least two inputs",
        "layer85-act": "not running on DLA",
        "layer86-upsample": "not running on DLA",
    }
    limit = _log("deepstream_yolo_27_xavier.log")
    assert limit.switched["conv_37"] == "DLA supports only 8 subgraphs per DLA core"


def test_log_sections_trt7_one_line_each():
    text = (TRT / "tensorrt_demos_200_trt7.log").read_text()
    log = parse_builder_log(text)  # a whole string works too
    assert len(log.dla_layers) == 8
    assert log.dla_layers[0].startswith("{Tanh_3,Mul_4,Conv_5,")
    assert log.gpu_layers[0] == "Conv_0" and log.gpu_layers[-1] == "Softplus_12"
    assert "(Unnamed Layer* 692) [Constant] + (Unnamed Layer* 693) [Shuffle]" in log.gpu_layers
    assert len(log.gpu_layers) == 22


def test_log_old_header_with_new_entries():
    log = _log("sample_cudla_readme.log")
    assert log.dla_layers == ("{ForeignNode[(Unnamed Layer* 0) [ElementWise]]}",)
    assert log.gpu_layers == ()
    assert layer_onnx_nodes(log.dla_layers[0]) == ("(Unnamed Layer* 0) [ElementWise]",)


# --- fallbacks -----------------------------------------------------------------------------------


def test_fallbacks_from_the_gpu_section():
    planned = ["Conv_0", "Reshape_2", "InstanceNormalization_5", "Mul_8", "Add_9", "Relu_10"]
    events = find_fallbacks(planned, log=_log("jetson_dla_tutorial_model_gn.log"), segment="s0")
    assert [e.node for e in events] == ["Reshape_2", "InstanceNormalization_5", "Mul_8", "Add_9"]
    assert all(e.source == "builder-log" and e.segment == "s0" for e in events)
    assert events[1].layer == "InstanceNormalization_5"
    assert "Layers Running on GPU" in events[0].reason


def test_helper_layers_are_not_fallbacks_of_their_node():
    planned = ["Conv_0", "Relu_7", "GlobalAveragePool_8", "Gemm_15"]
    events = find_fallbacks(planned, log=_log("jetson_dla_tutorial_model_bn.log"), segment="s")
    assert [e.node for e in events] == ["GlobalAveragePool_8"]


def test_switched_nodes_carry_the_reason():
    planned = {"/model.0/conv/Conv", "/model.23/Concat_6", "/model.22/m.0/m.0.1/attn/MatMul"}
    order = ["/model.0/conv/Conv", "/model.22/m.0/m.0.1/attn/MatMul", "/model.23/Concat_6"]
    events = find_fallbacks(
        planned, log=_log("ultralytics_23488_jp5_orin.log"), segment="head", node_order=order
    )
    assert [(e.node, e.source) for e in events] == [
        ("/model.22/m.0/m.0.1/attn/MatMul", "builder-log"),
        ("/model.23/Concat_6", "builder-log"),
    ]
    assert events[1].reason == "DLA only supports concatenation on the C dimension"


def test_fallbacks_from_inspector_only():
    layers = parse_inspector_json((TRT / "trex_resnet18_a100_fp16.graph.excerpt.json").read_text())
    planned = ["Conv_0", "Relu_1", "Conv_5", "Gemm_48"]
    events = find_fallbacks(planned, layers=layers, log=None, segment="gpu-built")
    # Conv_5 is named only by a reformat layer in this excerpt: not evidence of anything.
    assert [e.node for e in events] == ["Conv_0", "Relu_1", "Gemm_48"]
    assert events[0].source == "inspector" and "CaskConvolution" in events[0].reason
    assert events[0].layer == "Conv_0 + Relu_1"


def test_explicit_gpu_beats_a_range_and_log_beats_inspector():
    order = ["a", "b", "c", "d"]
    layers = [
        EngineLayer("{ForeignNode[a...d]}", "DLA", "dla", ("a", "d"), False),
        EngineLayer("c", "CaskConvolution", "gpu", ("c",), False),
        EngineLayer("Reformatting CopyNode for Input Tensor 0 to c", "Reformat", "gpu", (), True),
    ]
    log = BuilderLogReport(switched={"c": "DLA only supports FP16 and Int8 precision type"})
    events = find_fallbacks(order, layers=layers, log=log, segment="x", node_order=order)
    assert events == [
        FallbackEvent(
            "x", "c", "DLA only supports FP16 and Int8 precision type", "builder-log", "c"
        )
    ]
    assert [e.node for e in find_fallbacks(order, layers=layers, segment="x")] == ["c"]
    # Unknown-device layers (names-only ForeignNode) are no evidence either way.
    unknown = [EngineLayer("{ForeignNode[a...d]}", None, None, ("a", "d"), False)]
    assert find_fallbacks(order, layers=unknown, segment="x", node_order=order) == []


# --- runtime drift -------------------------------------------------------------------------------


@pytest.mark.parametrize("expected", [0, -1.0, math.nan, math.inf])
def test_drift_rejects_bad_expected(expected):
    with pytest.raises(HxschedError, match="expected latency"):
        DriftDetector(expected)


def test_drift_raises_once_when_sustained_and_rearms():
    d = DriftDetector(2.0, segment="seg1")  # alpha .2, threshold 1.3, sustain 20, warmup 5
    assert all(d.update(50.0) is None for _ in range(5))  # warm-up is ignored entirely
    assert d.ewma is None and d.ratio is None
    assert all(d.update(2.0) is None for _ in range(30))
    assert d.ratio == pytest.approx(1.0) and not d.alarm
    # At 2x, the EWMA (2 - 0.8^k) x 2 ms crosses 1.3x at k = 2; 20 more over-threshold updates.
    events = [d.update(4.0) for _ in range(40)]
    fired = [i for i, e in enumerate(events) if e is not None]
    assert fired == [20]
    event = events[20]
    assert event.source == "runtime-drift" and event.segment == "seg1" and event.node is None
    assert "2.0 ms" in event.reason or "2 ms" in event.reason
    assert d.alarm and d.ratio > 1.3
    assert d.update(math.nan) is None and d.update(-1.0) is None
    while d.ratio > 1.3:
        assert d.update(2.0) is None
    assert not d.alarm
    # The EWMA starts just under the threshold now, so it crosses one update sooner.
    assert [i for i in range(40) if d.update(4.0) is not None] == [19]


def test_drift_ignores_nan_and_short_spikes():
    d = DriftDetector(1.0, warmup=0, sustain=3)
    for ms in [1.0, math.nan, 2.0, 1.0, 1.0, 2.0, math.inf, 1.0]:
        assert d.update(ms) is None
    # Only finite samples count: 1 -> 1.2 -> 1.16 -> 1.128 -> 1.3024 (over once) -> 1.24192.
    assert d.ewma == pytest.approx(1.24192)
    assert not d.alarm
