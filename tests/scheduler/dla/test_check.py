"""The checker on the zoo's models and on real exports."""

from __future__ import annotations

import gzip

import pytest

from hxsched.scheduler.dla.check import check_graph


def test_pix2pix_flags_exactly_the_eight_conv_transposes(pix2pix_graph):
    report = check_graph(pix2pix_graph, target="orin")
    bad = report.incompatible
    assert len(bad) == 8
    assert {v.op_type for v in bad} == {"ConvTranspose"}
    assert all("requires padding 0" in v.reasons[0] for v in bad)
    convt = [n.name for n in pix2pix_graph.nodes if n.op_type == "ConvTranspose"]
    assert sorted(v.node for v in bad) == sorted(convt)
    # encoder + one island after each of 7 inner deconvolutions + the final Tanh
    assert len(report.placement.dla_loadables) == 9
    assert len(report.placement.gpu_islands) == 8


@pytest.mark.parametrize("target,trt", [("orin", "8.5"), ("orin", "10"), ("xavier", "8.5")])
def test_pix2pix_same_verdict_across_versions(pix2pix_graph, target, trt):
    report = check_graph(pix2pix_graph, target=target, trt=trt)
    assert {v.op_type for v in report.incompatible} == {"ConvTranspose"}


def test_yolov8n_flags_head_not_backbone(yolov8n_graph):
    report = check_graph(yolov8n_graph, target="orin", trt="8.6")
    flagged = {v.node for v in report.incompatible}
    # Every flagged node is in the Detect head, after the per-level box/cls convolutions.
    assert all(n.startswith("/model.22/") for n in flagged)
    assert not any("/cv2." in n or "/cv3." in n for n in flagged)
    assert not [v for v in report.incompatible if v.op_type == "Conv" and "/dfl/" not in v.node]
    # The nodes real TensorRT logs flag (ultralytics#16449, #18012): Reshape (SHUFFLE), Div,
    # non-channel Concat, 3-D Slice.
    must = {
        "/model.22/Reshape",
        "/model.22/Concat_3",
        "/model.22/Div_1",
        "/model.22/Slice",
        "/model.22/Slice_1",
        "/model.22/dfl/Reshape",
        "/model.22/dfl/Softmax",
    }
    assert must <= flagged
    reasons = {v.node: v.reasons for v in report.incompatible}
    assert any("concatenation on the C dimension" in r for r in reasons["/model.22/Concat_3"])
    assert any("DIV" in r for r in reasons["/model.22/Div_1"])
    # the whole backbone and neck is one DLA loadable
    assert len(report.placement.dla_loadables) == 1
    data = report.to_dict()
    for key in ("model", "target", "trt", "nodes", "dla_incompatible", "dla_segments"):
        assert key in data
    assert data["nodes"] == len(yolov8n_graph)
    assert data["dla_segments"] == 1
    assert {"node", "op_type", "reason"} <= set(data["dla_incompatible"][0])


def test_real_ultralytics_exports_flag_the_head_only(data_dir):
    """Recorded real exports (weights zeroed, structure untouched) of two Ultralytics versions."""
    import onnx

    from hxsched.scheduler.graph.onnx_io import graph_from_proto

    fixtures = sorted((data_dir / "exports").glob("yolov8n_ultralytics_*_zeroed.onnx.gz"))
    assert len(fixtures) >= 2, "recorded Ultralytics exports missing"
    for gz in fixtures:
        model = onnx.load_from_string(gzip.decompress(gz.read_bytes()))
        graph = graph_from_proto(model, path=gz.name)
        # Identity-aliased initializers and the Shape/Gather chunk arithmetic are folded away
        assert not any(n.op_type in ("Identity", "Shape", "Gather", "Constant") for n in graph)
        report = check_graph(graph)
        flagged = report.incompatible
        assert flagged, gz.name
        assert all(v.node.startswith("/model.22/") for v in flagged), gz.name
        assert not any("/cv2." in v.node or "/cv3." in v.node for v in flagged), gz.name
        assert len(report.placement.dla_loadables) == 1


def test_xavier_moves_softmax_and_trt11_rejects_fp32(yolov8n_graph, pix2pix_graph):
    xavier = check_graph(yolov8n_graph, target="xavier")
    soft = [v for v in xavier.incompatible if v.op_type == "Softmax"]
    assert soft and "Xavier" in soft[0].reasons[0]
    trt11 = check_graph(pix2pix_graph, target="orin", trt="11")
    assert len(trt11.incompatible) == len(pix2pix_graph)
    assert "strongly typed" in trt11.incompatible[0].reasons[0]


def test_int8_moves_split_slices(yolov8n_graph):
    fp16 = check_graph(yolov8n_graph, precision="fp16")
    int8 = check_graph(yolov8n_graph, precision="int8")
    assert len(int8.incompatible) > len(fp16.incompatible)
    assert any(
        v.op_type == "Split" and "FP16 only" in " ".join(v.reasons) for v in int8.incompatible
    )


def test_summary_line(pix2pix_graph):
    text = check_graph(pix2pix_graph).summary()
    assert "8 DLA-incompatible (ConvTransposex8)" in text
    assert "9 DLA loadables" in text
