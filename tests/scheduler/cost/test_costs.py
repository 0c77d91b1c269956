"""FLOPs and bytes per node."""

from __future__ import annotations

from onnx import helper
from onnx_builders import graph, w

from hxsched.scheduler.cost.costs import model_element_bytes, node_cost


def test_conv_and_deconv_flops():
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("ConvTranspose", ["c", "T"], ["y"], strides=[2, 2], name="up"),
    ]
    g = graph(nodes, {"x": [1, 3, 8, 8]}, ["y"], {"W": w(16, 3, 3, 3), "T": w(16, 4, 2, 2)})
    conv = node_cost(g, g.node("conv"))
    assert conv.flops == 2 * (16 * 8 * 8) * 3 * 9
    assert conv.weight_bytes == 16 * 3 * 9 * 4 and conv.in_bytes == 3 * 64 * 4
    up = node_cost(g, g.node("up"))
    assert up.flops == 2 * (16 * 8 * 8) * 4 * 4
    assert up.out_bytes == 4 * 16 * 16 * 4


def test_movement_and_scaling():
    g = graph(
        [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2])], {"x": [1, 2, 4, 4]}, ["y"]
    )
    c = node_cost(g, g.nodes[0])
    assert c.flops == 0 and c.bytes == 2 * 32 * 4
    half = c.scaled(2, 4)
    assert half.bytes == c.bytes // 2 and half.flops == c.flops
    assert model_element_bytes(g) == 4


def test_yolov8n_total_flops_match_ultralytics(yolov8n_graph):
    total = sum(node_cost(yolov8n_graph, n).flops for n in yolov8n_graph.nodes)
    # Ultralytics reports 8.7 GFLOPs for the fused YOLOv8n (multiply-adds x 2)
    assert abs(total / 8.74e9 - 1) < 0.03
