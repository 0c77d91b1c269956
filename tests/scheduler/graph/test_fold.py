"""Constant folding and no-op removal on torch-style patterns."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper
from onnx_builders import graph, i64, w

from hxsched.scheduler.graph.onnx_io import load_model


def test_torch_chunk_shape_chain_is_folded(data_dir):
    # Real torch export: chunk -> Shape->Gather->Add->Div->Mul->Slice, view with Constants.
    g = load_model(data_dir / "torch" / "torch_chunk_view_nofold.onnx")
    ops = {n.op_type for n in g.nodes}
    assert not ops & {"Shape", "Gather", "Constant", "Unsqueeze", "Div"}
    for node in g.nodes:
        if node.op_type in ("Slice", "Reshape"):
            assert all(g.is_const(i) for i in node.inputs[1:] if i), node.name
    assert g.model_meta["folded_nodes"] >= 10


def test_dynamic_export_folds_once_shapes_are_fixed(data_dir):
    g = load_model(
        data_dir / "torch" / "torch_chunk_view_dyn_nofold.onnx", {"input": (1, 4, 16, 16)}
    )
    assert not {"Shape", "Gather", "Unsqueeze", "Concat"} & {n.op_type for n in g.nodes}
    assert all(g.tensors[o].shape is not None for n in g.nodes for o in n.outputs)


def test_identity_on_initializers_is_folded(data_dir):
    g = load_model(data_dir / "torch" / "torch_identity_init.onnx")
    assert "Identity" not in {n.op_type for n in g.nodes}
    for node in g.nodes:
        if node.op_type in ("Conv", "BatchNormalization"):
            assert all(g.is_const(i) for i in node.inputs[1:] if i)


def test_dropout_and_identity_on_activations_are_removed():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Dropout", ["a"], ["b"], name="drop"),
        helper.make_node("Identity", ["b"], ["y"], name="id"),
    ]
    g = graph(nodes, {"x": [1, 2, 4, 4]}, ["y"])
    assert [n.name for n in g.nodes] == ["relu"]
    assert g.nodes[0].outputs == ["y"]  # the graph output keeps its name


def test_dropout_whose_mask_is_used_stays():
    nodes = [
        helper.make_node("Dropout", ["x"], ["a", "mask"], name="drop"),
        helper.make_node("Cast", ["mask"], ["m"], to=1, name="cast"),
        helper.make_node("Add", ["a", "m"], ["y"], name="add"),
    ]
    g = graph(nodes, {"x": [1, 2, 4, 4]}, ["y"])
    assert "Dropout" in {n.op_type for n in g.nodes}


def test_quantize_dequantize_are_not_folded():
    weight = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.int8), "wq")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "scale"], ["wf"], name="dq"),
        helper.make_node("Conv", ["x", "wf"], ["y"], name="conv"),
    ]
    from onnx_builders import make_model

    from hxsched.scheduler.graph.onnx_io import graph_from_proto

    model = make_model(nodes, {"x": [1, 2, 4, 4]}, ["y"], {"scale": np.float32(0.1)})
    model.graph.initializer.append(weight)
    g = graph_from_proto(model)
    assert "DequantizeLinear" in {n.op_type for n in g.nodes}


def test_huge_constant_expansion_is_left_as_a_node():
    nodes = [
        helper.make_node("Expand", ["one", "shape"], ["big"], name="expand"),
        helper.make_node("Add", ["x", "big"], ["y"], name="add"),
    ]
    inits = {"one": np.ones((1,), np.float32), "shape": i64(1, 64, 64, 128)}  # 2 MiB
    g = graph(nodes, {"x": [1, 64, 64, 128]}, ["y"], inits)
    assert "Expand" in {n.op_type for n in g.nodes}


def test_transposed_weight_is_folded():
    nodes = [
        helper.make_node("Transpose", ["wt"], ["wT"], perm=[1, 0, 2, 3], name="t"),
        helper.make_node("Conv", ["x", "wT"], ["y"], name="conv"),
    ]
    g = graph(nodes, {"x": [1, 3, 4, 4]}, ["y"], {"wt": w(3, 5, 1, 1)})
    assert [n.op_type for n in g.nodes] == ["Conv"]
    assert g.const_value(g.nodes[0].inputs[1]).shape == (5, 3, 1, 1)
