"""The exact ConvTranspose rewrite: same function, DLA-clean, refusals when inexact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper
from onnx_builders import graph, w

from hxsched.runtime.reference import compare_graphs
from hxsched.scheduler.dla.check import check_graph
from hxsched.scheduler.dla.rewrite import needs_crop_rewrite, rewrite_for_dla


def deconv_graph(cin, cout, size, k, s, pads=None, out_pad=None, group=1, dil=1, **extra):
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "group": group, "dilations": [dil, dil]}
    if pads is not None:
        attrs["pads"] = pads
    if out_pad is not None:
        attrs["output_padding"] = out_pad
    attrs.update(extra)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "W", "B"], ["d"], name="up", **attrs),
        helper.make_node("Relu", ["d"], ["y"], name="act"),
    ]
    inits = {"W": w(cin, cout // group, k, k, seed=3), "B": w(cout, seed=4)}
    return graph(nodes, {"x": [1, cin, size, size]}, ["y"], inits)


def test_pix2pix_rewrite_is_exact_and_dla_clean(pix2pix_graph):
    rewritten = pix2pix_graph.copy()
    result = rewrite_for_dla(rewritten)
    assert len(result.rewrites) == 8 and not result.refusals
    assert all(r.pads == (1, 1, 1, 1) for r in result.rewrites)
    after = check_graph(rewritten)
    assert after.incompatible == []
    assert len(after.placement.dla_loadables) == 1
    cmp = compare_graphs(pix2pix_graph, rewritten, samples=1)
    assert cmp.passed and cmp.worst <= 1e-4
    # the original is untouched
    assert len(check_graph(pix2pix_graph).incompatible) == 8


def test_names_stay_traceable(pix2pix_graph):
    rewritten = pix2pix_graph.copy()
    rewrite_for_dla(rewritten)
    for node in pix2pix_graph.nodes:
        assert rewritten.has_node(node.name)
        if node.op_type == "ConvTranspose":
            crop = rewritten.node(f"{node.name}/crop")
            assert crop.op_type == "Slice"
            assert crop.outputs == node.outputs  # downstream nodes read the same tensor
            assert rewritten.node(node.name).attr("pads") == [0, 0, 0, 0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(1, 5),
    s=st.integers(1, 3),
    size=st.integers(2, 6),
    pb=st.integers(0, 2),
    pe=st.integers(0, 2),
    op=st.integers(0, 2),
    dil=st.integers(1, 2),
)
def test_rewrite_equals_original_on_random_deconvolutions(k, s, size, pb, pe, op, dil):
    full = s * (size - 1) + (k - 1) * dil + 1
    out = full + op - 2 * 0 - pb - pe
    # ONNX Runtime requires output_padding < stride, and the output must not be empty
    if op >= s or out <= 0 or pb + pe >= full:
        return
    g = deconv_graph(2, 3, size, k, s, pads=[pb, pb, pe, pe], out_pad=[op, op], dil=dil)
    rewritten = g.copy()
    result = rewrite_for_dla(rewritten)
    if op > pe:
        assert len(result.refusals) == 1 and "output_padding" in result.refusals[0].reason
        return
    if pb == pe == op == 0:
        assert not result.rewrites and not result.refusals
        return
    assert len(result.rewrites) == 1
    assert compare_graphs(g, rewritten, samples=1).worst <= 1e-5
    assert rewritten.node("up").attr("pads") == [0, 0, 0, 0]
    assert rewritten.node("up").attr("output_padding") is None


@pytest.mark.parametrize(
    "extra",
    [
        {"auto_pad": "SAME_UPPER"},
        {"auto_pad": "SAME_LOWER"},
        {"output_shape": [12, 12]},
    ],
)
def test_implicit_pads_are_rewritten(extra):
    g = deconv_graph(2, 2, 6, 4, 2, **extra)
    assert needs_crop_rewrite(g, g.node("up"))
    rewritten = g.copy()
    result = rewrite_for_dla(rewritten)
    assert len(result.rewrites) == 1
    assert compare_graphs(g, rewritten, samples=1).worst <= 1e-5
    node = rewritten.node("up")
    assert node.attr("auto_pad") is None and node.attr("output_shape") is None
    assert check_graph(rewritten).incompatible == []


def test_output_padding_beyond_end_pad_is_refused():
    g = deconv_graph(2, 2, 4, 3, 2, pads=[0, 0, 0, 0], out_pad=[1, 1])
    result = rewrite_for_dla(g)
    assert not result.rewrites
    assert "bias" in result.refusals[0].reason
    assert g.node("up").attr("output_padding") == [1, 1]  # left as it was


def test_grouped_deconvolution_is_rewritten_exactly_but_still_flagged():
    g = deconv_graph(4, 4, 5, 4, 2, pads=[1, 1, 1, 1], group=2)
    rewritten = g.copy()
    assert len(rewrite_for_dla(rewritten).rewrites) == 1
    assert compare_graphs(g, rewritten, samples=1).worst <= 1e-5
    reasons = [r for v in check_graph(rewritten).incompatible for r in v.reasons]
    assert any("groups" in r for r in reasons) and not any("padding 0" in r for r in reasons)


def test_unpadded_model_is_left_alone():
    g = deconv_graph(2, 2, 4, 2, 2, pads=[0, 0, 0, 0])
    before = [(n.name, n.op_type) for n in g.nodes]
    result = rewrite_for_dla(g)
    assert not result.rewrites and not result.refusals
    assert [(n.name, n.op_type) for n in g.nodes] == before
    assert np.all(g.node("up").attr("pads") == [0, 0, 0, 0])
