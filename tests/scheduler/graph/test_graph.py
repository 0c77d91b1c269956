"""The graph view: topological order, cut points, cleanup, copies."""

from __future__ import annotations

import pytest
from onnx import helper
from onnx_builders import graph, make_model

from hxsched.errors import HxschedError
from hxsched.scheduler.graph.graph import format_shape
from hxsched.scheduler.graph.onnx_io import graph_from_proto


def skip_net():
    # x -> a -> b -> c ; c = Add(b, a): tensor a crosses the cuts after a and after b
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="b"),
        helper.make_node("Add", ["b", "a"], ["c"], name="c"),
        helper.make_node("Tanh", ["c"], ["d"], name="d"),
    ]
    return graph(nodes, {"x": [1, 2, 4, 4]}, ["d"])


def test_cut_points_list_crossing_tensors_and_bytes():
    g = skip_net()
    cuts = g.cut_points()
    assert [(c.after, c.before) for c in cuts] == [("a", "b"), ("b", "c"), ("c", "d")]
    assert cuts[0].tensors == ("a",) and cuts[0].bytes == 128
    assert set(cuts[1].tensors) == {"a", "b"} and cuts[1].bytes == 256
    assert cuts[2].tensors == ("c",) and cuts[2].bytes == 128


def test_graph_outputs_and_constants_do_not_cross():
    nodes = [
        helper.make_node("Relu", ["x"], ["early"], name="n0"),
        helper.make_node("Add", ["x", "k"], ["t"], name="n1"),
        helper.make_node("Add", ["t", "k"], ["late"], name="n2"),
    ]
    import numpy as np

    g = graph(
        nodes, {"x": [1, 2, 2, 2]}, ["early", "late"], {"k": np.ones((1, 2, 1, 1), np.float32)}
    )
    cuts = g.cut_points()
    # 'early' is a graph output read by nobody later; 'x' is a graph input; 'k' a constant
    assert cuts[0].tensors == () and cuts[0].bytes == 0
    assert cuts[1].tensors == ("t",)


def test_toposort_restores_order_and_keeps_valid_order():
    nodes = [
        helper.make_node("Tanh", ["b"], ["y"], name="last"),
        helper.make_node("Relu", ["x"], ["a"], name="first"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="middle"),
    ]
    g = graph(nodes, {"x": [1, 1, 2, 2]}, ["y"])
    assert [n.name for n in g.nodes] == ["first", "middle", "last"]


def test_cycle_is_a_clear_error():
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="p"),
        helper.make_node("Relu", ["a"], ["b"], name="q"),
    ]
    with pytest.raises(HxschedError, match="cycle"):
        graph_from_proto(make_model(nodes, {"x": [1, 1, 2, 2]}, ["b"]))


def test_undefined_tensor_is_a_clear_error():
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="p")]
    with pytest.raises(HxschedError, match="ghost"):
        graph_from_proto(make_model(nodes, {"x": [1, 1, 2, 2]}, ["y"]))


def test_cleanup_drops_dead_nodes():
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="live"),
        helper.make_node("Sigmoid", ["x"], ["unused"], name="dead"),
    ]
    g = graph(nodes, {"x": [1, 1, 2, 2]}, ["y"])
    assert [n.name for n in g.nodes] == ["live"]


def test_copy_is_independent():
    g = skip_net()
    c = g.copy()
    c.node("a").set_attr("alpha", 1.0)
    c.tensors["a"].shape = (9,)
    assert "alpha" not in g.node("a").attrs
    assert g.tensors["a"].shape == (1, 2, 4, 4)


def test_unique_names_and_unnamed_nodes():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    g = graph(nodes, {"x": [1, 1, 2, 2]}, ["y"])
    names = [n.name for n in g.nodes]
    assert len(set(names)) == 2 and all(names)
    assert g.unique_name(names[0]) != names[0]
    assert g.unique_name("fresh") == "fresh"


def test_format_shape():
    assert format_shape((1, 3, 640, 640)) == "1x3x640x640"
    assert format_shape(()) == "scalar"
    assert format_shape(None) == "?"
