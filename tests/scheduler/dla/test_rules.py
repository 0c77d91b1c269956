"""Every DLA rule, on both sides of each limit."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx_builders import graph, i64, one_op, w

from hxsched.errors import HxschedError
from hxsched.scheduler.dla.ops import OPS, op_support
from hxsched.scheduler.dla.rules import (
    RULES,
    CheckContext,
    node_verdict,
    validate_options,
)


def verdict(g, node_name=None, **ctx):
    node = g.node(node_name) if node_name else g.nodes[-1]
    reasons, ids = node_verdict(node, CheckContext(g, **ctx))
    return reasons, ids


def conv(x, cout, k, *, cin=None, group=1, **attrs):
    cin = cin if cin is not None else x[1]
    kernel = k if isinstance(k, list) else [k, k]
    return one_op("Conv", x, {"W": w(cout, cin // group, *kernel)}, group=group, **attrs)


def deconv(x, cout, k, **attrs):
    kernel = k if isinstance(k, list) else [k, k]
    return one_op("ConvTranspose", x, {"W": w(x[1], cout, *kernel)}, **attrs)


def resize(x, scales, mode="nearest", coord="asymmetric", nearest="floor", sizes=None):
    consts = {"": None, "scales": np.array(scales, np.float32)}
    order = ["", "scales"]
    if sizes is not None:
        consts = {"": None, "sizes": i64(*sizes)}
        order = ["", "", "sizes"]
    return one_op(
        "Resize",
        x,
        {k: v for k, v in consts.items() if k},
        const_order=order,
        mode=mode,
        coordinate_transformation_mode=coord,
        nearest_mode=nearest,
    )


def equal_then_cast():
    nodes = [
        helper.make_node("Equal", ["x", "x"], ["e"], name="eq"),
        helper.make_node("Cast", ["e"], ["y"], to=1, name="cast"),
    ]
    return graph(nodes, {"x": [1, 4, 8, 8]}, ["y"]), "eq"


def reshape_after_concat():
    nodes = [
        helper.make_node("Concat", ["x", "x"], ["c"], axis=1, name="cat"),
        helper.make_node("Reshape", ["c", "shape"], ["y"], name="rs"),
    ]
    return graph(nodes, {"x": [1, 4, 8, 8]}, ["y"], {"shape": i64(1, 8, 4, 16)})


def reshape_alone():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["y"], name="rs"),
    ]
    return graph(nodes, {"x": [1, 4, 8, 8]}, ["y"], {"shape": i64(1, 8, 4, 8)})


def two_input(op, a, b, **attrs):
    node = helper.make_node(op, ["x", "b"], ["y"], name="the_op", **attrs)
    return graph([node], {"x": a}, ["y"], {"b": b})


# (case id, graph factory, context, expected rule id or None for "runs on DLA")
CASES = [
    # common tensor rules
    ("rank4 ok", lambda: one_op("Relu", [1, 3, 8, 8]), {}, None),
    ("rank3", lambda: one_op("Relu", [1, 3, 8]), {}, "tensor.rank4"),
    ("dims 8192", lambda: one_op("Relu", [1, 1, 2, 8192]), {}, None),
    ("dims 8193", lambda: one_op("Relu", [1, 1, 2, 8193]), {}, "tensor.dims"),
    ("batch 4096", lambda: one_op("Relu", [4096, 1, 2, 2]), {}, None),
    ("batch 4097", lambda: one_op("Relu", [4097, 1, 2, 2]), {}, "tensor.dims"),
    (
        "int32 activations",
        lambda: graph(
            [helper.make_node("Add", ["x", "x"], ["y"], name="add")],
            {"x": [1, 2, 4, 4]},
            ["y"],
            elem=6,
        ),
        {},
        "tensor.dtype",
    ),
    ("trt11 fp32", lambda: one_op("Relu", [1, 3, 8, 8]), {"trt": "11"}, "tensor.typed_fp16"),
    (
        "trt11 fp16",
        lambda: graph(
            [helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 3, 8, 8]}, ["y"], elem=10
        ),
        {"trt": "11"},
        None,
    ),
    ("trt8.6 fp32", lambda: one_op("Relu", [1, 3, 8, 8]), {"trt": "8.6"}, None),
    # parameters must be constants
    (
        "conv weight const",
        lambda: conv([1, 4, 8, 8], 4, 3, pads=[1, 1, 1, 1]),
        {},
        None,
    ),
    (
        "conv weight runtime",
        lambda: one_op("Conv", [1, 4, 8, 8], extra_inputs={"W": [4, 4, 3, 3]}),
        {},
        "params.const",
    ),
    # element-wise constant operands
    ("add per-channel", lambda: two_input("Add", [1, 4, 8, 8], w(1, 4, 1, 1)), {}, None),
    ("add chw-1-1", lambda: two_input("Mul", [1, 4, 8, 8], w(4, 1, 1)), {}, None),
    ("add scalar", lambda: two_input("Add", [1, 4, 8, 8], np.float32(2.0)), {}, None),
    (
        "add full const",
        lambda: two_input("Add", [1, 4, 8, 8], w(1, 4, 8, 8)),
        {},
        "eltwise.const_operand",
    ),
    (
        "concat const",
        lambda: two_input("Concat", [1, 4, 8, 8], w(1, 4, 8, 8), axis=1),
        {},
        "eltwise.const_operand",
    ),
    # comparisons
    ("equal fp16", equal_then_cast, {"precision": "fp16"}, "compare.int8"),
    ("equal int8 + cast", equal_then_cast, {"precision": "int8"}, None),
    # convolution
    ("conv 2d", lambda: conv([1, 4, 40, 40], 4, 32), {}, None),
    ("conv 1d", lambda: one_op("Conv", [1, 4, 16], {"W": w(4, 4, 3)}), {}, "conv.2d"),
    ("conv kernel 33", lambda: conv([1, 1, 40, 40], 1, 33), {}, "conv.kernel"),
    ("conv stride 8", lambda: conv([1, 1, 40, 40], 1, 3, strides=[8, 8]), {}, None),
    ("conv stride 9", lambda: conv([1, 1, 40, 40], 1, 3, strides=[9, 9]), {}, "conv.stride"),
    ("conv pad < kernel", lambda: conv([1, 1, 16, 16], 1, 3, pads=[2, 2, 2, 2]), {}, None),
    (
        "conv pad = kernel",
        lambda: conv([1, 1, 16, 16], 1, 3, pads=[3, 3, 3, 3]),
        {},
        "conv.padding",
    ),
    ("conv pad 31", lambda: conv([1, 1, 40, 40], 1, 32, pads=[31, 31, 31, 31]), {}, None),
    ("conv pad 32", lambda: conv([1, 1, 40, 40], 1, 32, pads=[32, 32, 32, 32]), {}, "conv.padding"),
    ("conv same pads", lambda: conv([1, 1, 16, 16], 1, 3, auto_pad="SAME_UPPER"), {}, None),
    ("conv dilation 32", lambda: conv([1, 1, 70, 70], 1, 3, dilations=[32, 32]), {}, None),
    (
        "conv dilation 33",
        lambda: conv([1, 1, 70, 70], 1, 3, dilations=[33, 33]),
        {},
        "conv.dilation",
    ),
    ("conv 8192 maps", lambda: conv([1, 1, 2, 2], 8192, 1), {}, None),
    ("conv 8193 maps", lambda: conv([1, 1, 2, 2], 8193, 1), {}, "conv.out_channels"),
    ("conv 8192 groups", lambda: conv([1, 8192, 1, 1], 8192, 1, group=8192), {}, None),
    ("conv 8193 groups", lambda: conv([1, 8193, 1, 1], 8193, 1, group=8193), {}, "conv.groups"),
    ("int8 groups of 4", lambda: conv([1, 8, 4, 4], 8, 1, group=2), {"precision": "int8"}, None),
    (
        "int8 groups of 2",
        lambda: conv([1, 4, 4, 4], 4, 1, group=2),
        {"precision": "int8"},
        "conv.int8_group_size",
    ),
    ("fp16 groups of 2", lambda: conv([1, 4, 4, 4], 4, 1, group=2), {"precision": "fp16"}, None),
    # deconvolution
    ("deconv pads 0", lambda: deconv([1, 2, 8, 8], 2, 4, strides=[2, 2]), {}, None),
    (
        "deconv pads 1",
        lambda: deconv([1, 2, 8, 8], 2, 4, strides=[2, 2], pads=[1, 1, 1, 1]),
        {},
        "deconv.padding",
    ),
    (
        "deconv auto_pad",
        lambda: deconv([1, 2, 8, 8], 2, 4, strides=[2, 2], auto_pad="SAME_UPPER"),
        {},
        "deconv.padding",
    ),
    (
        "deconv output_shape",
        lambda: deconv([1, 2, 8, 8], 2, 4, strides=[2, 2], output_shape=[16, 16]),
        {},
        "deconv.padding",
    ),
    (
        "deconv output_padding",
        lambda: deconv([1, 2, 8, 8], 2, 3, strides=[2, 2], output_padding=[1, 1]),
        {},
        "deconv.padding",
    ),
    ("deconv kernel 32", lambda: deconv([1, 1, 4, 4], 1, 32), {}, None),
    ("deconv kernel 33", lambda: deconv([1, 1, 4, 4], 1, 33), {}, "deconv.kernel"),
    ("deconv kernel 1x64", lambda: deconv([1, 1, 4, 4], 1, [1, 64]), {}, None),
    ("deconv kernel 64x64", lambda: deconv([1, 1, 4, 4], 1, [64, 64]), {}, "deconv.kernel"),
    ("deconv stride 32", lambda: deconv([1, 1, 2, 2], 1, 2, strides=[32, 32]), {}, None),
    ("deconv stride 33", lambda: deconv([1, 1, 2, 2], 1, 2, strides=[33, 33]), {}, "deconv.stride"),
    (
        "deconv groups 2",
        lambda: one_op("ConvTranspose", [1, 4, 4, 4], {"W": w(4, 2, 2, 2)}, group=2),
        {},
        "deconv.groups",
    ),
    (
        "deconv dilation 2",
        lambda: deconv([1, 1, 4, 4], 1, 2, dilations=[2, 2]),
        {},
        "deconv.dilation",
    ),
    ("deconv 8193 maps", lambda: deconv([1, 1, 1, 1], 8193, 1), {}, "conv.out_channels"),
    # pooling
    ("maxpool 8", lambda: one_op("MaxPool", [1, 1, 16, 16], kernel_shape=[8, 8]), {}, None),
    (
        "maxpool 9",
        lambda: one_op("MaxPool", [1, 1, 16, 16], kernel_shape=[9, 9]),
        {},
        "pool.window",
    ),
    ("maxpool 1d", lambda: one_op("MaxPool", [1, 1, 16], kernel_shape=[2]), {}, "pool.window"),
    (
        "maxpool stride 16",
        lambda: one_op("MaxPool", [1, 1, 40, 40], kernel_shape=[2, 2], strides=[16, 16]),
        {},
        None,
    ),
    (
        "maxpool stride 17",
        lambda: one_op("MaxPool", [1, 1, 40, 40], kernel_shape=[2, 2], strides=[17, 17]),
        {},
        "pool.stride",
    ),
    (
        "maxpool pad 7",
        lambda: one_op("MaxPool", [1, 1, 16, 16], kernel_shape=[8, 8], pads=[7, 7, 7, 7]),
        {},
        None,
    ),
    (
        "maxpool pad 8",
        lambda: one_op("MaxPool", [1, 1, 16, 16], kernel_shape=[8, 8], pads=[8, 8, 8, 8]),
        {},
        "pool.padding",
    ),
    (
        "avgpool exclusive xavier",
        lambda: one_op("AveragePool", [1, 1, 8, 8], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        {"target": "xavier", "trt": "8.5"},
        "pool.xavier_inclusive",
    ),
    (
        "avgpool exclusive orin",
        lambda: one_op("AveragePool", [1, 1, 8, 8], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        {"target": "orin"},
        None,
    ),
    (
        "avgpool inclusive xavier",
        lambda: one_op(
            "AveragePool", [1, 1, 8, 8], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
        ),
        {"target": "xavier", "trt": "8.5"},
        None,
    ),
    ("gap 8x8", lambda: one_op("GlobalAveragePool", [1, 4, 8, 8]), {}, None),
    ("gap 9x9", lambda: one_op("GlobalAveragePool", [1, 4, 9, 9]), {}, "pool.global_window"),
    # concat, slice, reshape
    (
        "concat C",
        lambda: one_op("Concat", [1, 2, 4, 4], extra_inputs={"b": [1, 3, 4, 4]}, axis=1),
        {},
        None,
    ),
    (
        "concat -3",
        lambda: one_op("Concat", [1, 2, 4, 4], extra_inputs={"b": [1, 3, 4, 4]}, axis=-3),
        {},
        None,
    ),
    (
        "concat W",
        lambda: one_op("Concat", [1, 2, 4, 4], extra_inputs={"b": [1, 2, 4, 5]}, axis=-1),
        {},
        "concat.channel_axis",
    ),
    (
        "concat H",
        lambda: one_op("Concat", [1, 2, 4, 4], extra_inputs={"b": [1, 2, 5, 4]}, axis=2),
        {},
        "concat.channel_axis",
    ),
    ("concat single", lambda: one_op("Concat", [1, 2, 4, 4], axis=1), {}, "concat.channel_axis"),
    (
        "slice C",
        lambda: one_op("Slice", [1, 8, 4, 4], {"s": i64(0), "e": i64(4), "a": i64(1)}),
        {},
        None,
    ),
    (
        "slice batch",
        lambda: one_op("Slice", [2, 8, 4, 4], {"s": i64(0), "e": i64(1), "a": i64(0)}),
        {},
        "slice.shape",
    ),
    (
        "slice step 2",
        lambda: one_op(
            "Slice", [1, 8, 4, 4], {"s": i64(0), "e": i64(8), "a": i64(1), "st": i64(2)}
        ),
        {},
        "slice.shape",
    ),
    (
        "clip runtime bound",
        lambda: one_op("Clip", [1, 8, 4, 4], extra_inputs={"lo": []}),
        {},
        "params.const",
    ),
    (
        "data-dependent shape",
        lambda: one_op(
            "Slice", [1, 8, 4, 4], {"e": i64(4)}, extra_inputs={"s": [1]}, input_types={"s": 7}
        ),
        {},
        "tensor.static",
    ),
    (
        "split C",
        lambda: one_op("Split", [1, 8, 4, 4], {"sp": i64(4, 4)}, axis=1, n_out=2),
        {},
        None,
    ),
    (
        "split batch",
        lambda: one_op("Split", [2, 8, 4, 4], {"sp": i64(1, 1)}, axis=0, n_out=2),
        {},
        "slice.shape",
    ),
    (
        "split int8",
        lambda: one_op("Split", [1, 8, 4, 4], {"sp": i64(4, 4)}, axis=1, n_out=2),
        {"precision": "int8"},
        "slice.fp16_only",
    ),
    (
        "reshape after concat orin",
        reshape_after_concat,
        {"target": "orin"},
        "reshape.next_to_slice_concat",
    ),
    ("reshape after concat xavier", reshape_after_concat, {"target": "xavier", "trt": "8.5"}, None),
    ("reshape alone", reshape_alone, {}, None),
    # resize
    ("resize nearest x2", lambda: resize([1, 2, 4, 4], [1, 1, 2, 2]), {}, None),
    ("resize nearest x32", lambda: resize([1, 1, 2, 2], [1, 1, 32, 32]), {}, None),
    ("resize nearest x33", lambda: resize([1, 1, 2, 2], [1, 1, 33, 33]), {}, "resize.scales"),
    ("resize fractional", lambda: resize([1, 1, 4, 4], [1, 1, 1.5, 1.5]), {}, "resize.scales"),
    ("resize batch scale", lambda: resize([1, 1, 4, 4], [2, 1, 2, 2]), {}, "resize.scales"),
    ("resize sizes", lambda: resize([1, 1, 4, 4], None, sizes=[1, 1, 8, 8]), {}, "resize.scales"),
    (
        "resize linear x4",
        lambda: resize([1, 1, 4, 4], [1, 1, 4, 4], "linear", "half_pixel"),
        {},
        None,
    ),
    (
        "resize linear x5",
        lambda: resize([1, 1, 4, 4], [1, 1, 5, 5], "linear", "half_pixel"),
        {},
        "resize.scales",
    ),
    (
        "resize half_pixel ceil",
        lambda: resize([1, 1, 4, 4], [1, 1, 2, 2], "nearest", "half_pixel", "round_prefer_ceil"),
        {},
        None,
    ),
    (
        "resize align_corners",
        lambda: resize([1, 1, 4, 4], [1, 1, 2, 2], "nearest", "align_corners", "floor"),
        {},
        "resize.mode",
    ),
    (
        "resize asym round",
        lambda: resize([1, 1, 4, 4], [1, 1, 2, 2], "nearest", "asymmetric", "round_prefer_floor"),
        {},
        "resize.mode",
    ),
    (
        "resize linear xavier",
        lambda: resize([1, 1, 4, 4], [1, 1, 2, 2], "linear", "half_pixel"),
        {"target": "xavier", "trt": "8.5"},
        "resize.mode",
    ),
    (
        "resize linear asym",
        lambda: resize([1, 1, 4, 4], [1, 1, 2, 2], "linear", "asymmetric"),
        {},
        "resize.mode",
    ),
    (
        "resize cubic",
        lambda: resize([1, 1, 4, 4], [1, 1, 2, 2], "cubic", "half_pixel"),
        {},
        "resize.mode",
    ),
    # softmax, lrn, fc
    ("softmax C 1024", lambda: one_op("Softmax", [1, 1024, 2, 2], axis=1), {}, None),
    ("softmax C 1025", lambda: one_op("Softmax", [1, 1025, 2, 2], axis=1), {}, "softmax.axis"),
    ("softmax C 8192 alone", lambda: one_op("Softmax", [1, 8192, 1, 1], axis=1), {}, None),
    ("softmax batch axis", lambda: one_op("Softmax", [2, 4, 2, 2], axis=0), {}, "softmax.axis"),
    (
        "softmax int8",
        lambda: one_op("Softmax", [1, 4, 2, 2], axis=1),
        {"precision": "int8"},
        "softmax.fp16_only",
    ),
    ("lrn 5", lambda: one_op("LRN", [1, 8, 4, 4], size=5), {}, None),
    ("lrn 4", lambda: one_op("LRN", [1, 8, 4, 4], size=4), {}, "lrn.window"),
    ("gemm 8192", lambda: one_op("Gemm", [1, 16], {"B": w(16, 8192)}), {}, None),
    ("gemm 8193", lambda: one_op("Gemm", [1, 16], {"B": w(16, 8193)}), {}, "fc.out_channels"),
    # op table and version/target gating
    ("gather", lambda: one_op("Gather", [1, 4, 4, 4], {"i": i64(0, 1)}, axis=1), {}, "op.Gather"),
    (
        "div trt8.6",
        lambda: two_input("Div", [1, 4, 4, 4], np.float32(2.0)),
        {"trt": "8.6"},
        "op.Div.trt",
    ),
    ("div trt10", lambda: two_input("Div", [1, 4, 4, 4], np.float32(2.0)), {"trt": "10"}, None),
    (
        "softmax xavier",
        lambda: one_op("Softmax", [1, 4, 2, 2], axis=1),
        {"target": "xavier", "trt": "8.5"},
        "op.Softmax.target",
    ),
    ("leakyrelu", lambda: one_op("LeakyRelu", [1, 4, 2, 2], alpha=0.2), {}, None),
    ("hardsigmoid", lambda: one_op("HardSigmoid", [1, 4, 2, 2]), {}, "op.HardSigmoid"),
    ("erf", lambda: one_op("Erf", [1, 4, 2, 2]), {}, "op.Erf"),
    (
        "unknown op",
        lambda: one_op("Mod", [1, 4, 2, 2], extra_inputs={"b": [1, 4, 2, 2]}, fmod=1),
        {},
        "op.Mod",
    ),
    (
        "reducemax trt8.6",
        lambda: one_op("ReduceMax", [1, 4, 4, 4], axes=[2, 3], keepdims=1, opset=17),
        {},
        "op.ReduceMax.trt",
    ),
    (
        "reducemax trt10",
        lambda: one_op("ReduceMax", [1, 4, 4, 4], axes=[2, 3], keepdims=1, opset=17),
        {"trt": "10"},
        None,
    ),
    ("prelu const slope", lambda: one_op("PRelu", [1, 4, 2, 2], {"s": w(4, 1, 1)}), {}, None),
    (
        "prelu runtime slope",
        lambda: one_op("PRelu", [1, 4, 2, 2], extra_inputs={"s": [4, 1, 1]}),
        {},
        "params.const",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rule_case(case):
    _, make, ctx, expected = case
    g, name = make(), None
    if isinstance(g, tuple):
        g, name = g
    reasons, ids = verdict(g, name, **ctx)
    if expected is None:
        assert reasons == [], reasons
    else:
        assert expected in ids, (ids, reasons)
        assert all(r.strip() for r in reasons)


def test_every_rule_is_exercised_on_its_failing_side():
    failing = {c[3] for c in CASES if c[3]}
    missing = [r.id for r in RULES if r.id not in failing]
    assert missing == []


def test_every_rule_and_op_cites_a_source():
    for r in RULES:
        assert r.summary and len(r.source) > 10, r.id
    for op, support in OPS.items():
        assert support.source, op
        if support.since_trt or support.targets != ("orin", "xavier"):
            assert support.gpu_reason, op


def test_custom_domain_op_stays_on_gpu():
    support = op_support("EfficientNMS_TRT", "trt.plugins")
    assert support.layer is None and "plugin" in support.gpu_reason


def test_reasons_name_the_numbers():
    g = deconv([1, 2, 8, 8], 2, 4, strides=[2, 2], pads=[1, 1, 1, 1])
    reasons, _ = verdict(g)
    assert reasons == [
        "ConvTranspose pads [1,1,1,1]: DLA deconvolution requires padding 0 "
        "(hxsched rewrite makes it pads 0 + an exact crop)"
    ]


@pytest.mark.parametrize(
    ("target", "trt", "precision", "ok"),
    [
        ("orin", "8.6", "fp16", True),
        ("orin", "11", "int8", True),
        ("xavier", "8.5", "fp16", True),
        ("xavier", "11", "fp16", False),
        ("thor", "8.6", "fp16", False),
        ("orin", "9", "fp16", False),
        ("orin", "8.6", "fp32", False),
    ],
)
def test_validate_options(target, trt, precision, ok):
    if ok:
        validate_options(target, trt, precision)
    else:
        with pytest.raises(HxschedError):
            validate_options(target, trt, precision)
