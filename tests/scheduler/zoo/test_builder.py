"""The zoo's ONNX writer: torch-style names and parameter counting."""

from __future__ import annotations

import numpy as np

from hxsched.scheduler.zoo.builder import ModelBuilder, count_parameters, param_prefix


def test_param_prefix_follows_torch_module_names():
    assert param_prefix("/model.22/cv2.0/cv2.0.0/conv") == "model.22.cv2.0.0.conv"
    assert param_prefix("/model.2/m.0/cv1/conv") == "model.2.m.0.cv1.conv"
    assert param_prefix("/model/model/model.1/model/model.1") == "model.model.1.model.1"
    assert param_prefix("/model/model/model.0") == "model.model.0"


def test_node_names_repeat_like_the_exporter():
    b = ModelBuilder("g", seed=0)
    x = b.input("x", [1, 2, 4, 4])
    first = b.op("/blk", "Relu", [x])
    second = b.op("/blk", "Relu", [first])
    assert [n.name for n in b.nodes] == ["/blk/Relu", "/blk/Relu_1"]
    assert second == "/blk/Relu_1_output_0"


def test_count_parameters_skips_batchnorm_statistics():
    b = ModelBuilder("g", seed=0)
    x = b.input("x", [1, 2, 4, 4])
    w = b.weight("w", np.zeros((3, 2, 1, 1), np.float32))
    h = b.op("/c", "Conv", [x, w])
    stats = [b.weight(n, np.zeros(3, np.float32)) for n in ("g", "b", "m", "v")]
    y = b.op("/bn", "BatchNormalization", [h, *stats])
    b.output(y, "y", [1, 3, 4, 4])
    assert count_parameters(b.build()) == 6 + 3 + 3
