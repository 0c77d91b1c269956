"""TensorRT's default placement: convex DLA loadables and GPU islands."""

from __future__ import annotations

from onnx import helper
from onnx_builders import graph

from hxsched.scheduler.dla.placement import MAX_LOADABLES_PER_CORE, default_placement


def chain(ops):
    nodes, prev = [], "x"
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    return graph(nodes, {"x": [1, 2, 4, 4]}, [prev])


def test_chain_splits_at_gpu_nodes():
    g = chain(["Relu", "Relu", "Erf", "Relu", "Erf", "Relu"])
    ok = {n.name: n.op_type != "Erf" for n in g.nodes}
    p = default_placement(g, ok)
    assert [isl.nodes for isl in p.dla_loadables] == [("n0", "n1"), ("n3",), ("n5",)]
    assert [isl.nodes for isl in p.gpu_islands] == [("n2",), ("n4",)]


def test_diamond_through_gpu_is_split_to_stay_convex():
    # a -> b(GPU) -> d ; a -> c -> d : a, c, d are DLA-capable but d cannot join a's loadable
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("Erf", ["a"], ["b"], name="b"),
        helper.make_node("Relu", ["a"], ["c"], name="c"),
        helper.make_node("Add", ["b", "c"], ["d"], name="d"),
    ]
    g = graph(nodes, {"x": [1, 2, 4, 4]}, ["d"])
    p = default_placement(g, {"a": True, "b": False, "c": True, "d": True})
    loadables = [set(isl.nodes) for isl in p.dla_loadables]
    assert {"a", "c"} in loadables
    assert {"d"} in loadables
    # no loadable both feeds b and depends on b
    for isl in loadables:
        assert not ({"a", "d"} <= isl)


def test_parallel_dla_branches_share_a_loadable():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="b"),
        helper.make_node("Tanh", ["a"], ["c"], name="c"),
        helper.make_node("Add", ["b", "c"], ["d"], name="d"),
    ]
    g = graph(nodes, {"x": [1, 2, 4, 4]}, ["d"])
    p = default_placement(g, dict.fromkeys("abcd", True))
    assert len(p.dla_loadables) == 1 and not p.gpu_islands


def test_over_limit_counts_loadables_beyond_sixteen():
    ops = []
    for _ in range(MAX_LOADABLES_PER_CORE + 3):
        ops += ["Relu", "Erf"]
    g = chain(ops)
    p = default_placement(g, {n.name: n.op_type == "Relu" for n in g.nodes})
    assert len(p.dla_loadables) == MAX_LOADABLES_PER_CORE + 3
    assert p.over_limit == 3
    assert p.to_dict()["over_limit"] == 3
