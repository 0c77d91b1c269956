"""Reference runs on ONNX Runtime: seeded inputs and max-abs-diff comparisons."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx_builders import graph

from hxsched.errors import HxschedError
from hxsched.runtime.reference import OrtModel, compare_graphs, random_inputs


def relu_graph(op="Relu"):
    return graph([helper.make_node(op, ["x"], ["y"], name="n")], {"x": [1, 2, 3, 3]}, ["y"])


def test_random_inputs_are_seeded():
    g = relu_graph()
    a, b, c = random_inputs(g, 1), random_inputs(g, 1), random_inputs(g, 2)
    assert np.array_equal(a["x"], b["x"]) and not np.array_equal(a["x"], c["x"])
    assert a["x"].dtype == np.float32 and a["x"].shape == (1, 2, 3, 3)


def test_compare_identical_and_different_graphs():
    same = compare_graphs(relu_graph(), relu_graph(), samples=2)
    assert same.passed and same.worst == 0.0 and same.samples == 2
    diff = compare_graphs(relu_graph(), relu_graph("Sigmoid"), samples=1)
    assert not diff.passed and diff.worst > 0.1
    data = diff.to_dict()
    assert data["passed"] is False and "onnxruntime" in data["backend"]


def test_ort_model_runs():
    out = OrtModel(relu_graph()).run({"x": -np.ones((1, 2, 3, 3), np.float32)})
    assert float(out["y"].max()) == 0.0


def test_unrunnable_model_is_a_clear_error():
    g = graph([helper.make_node("Relu", ["x"], ["y"], name="n")], {"x": [1, 2, 3, 3]}, ["y"])
    g.nodes[0].op_type = "NoSuchOp"
    with pytest.raises(HxschedError, match="ONNX Runtime cannot run"):
        OrtModel(g)
