"""Importer and exporter: bad files, dynamic shapes, external data, real torch exports."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx_builders import make_model, w

from hxsched.errors import HxschedError
from hxsched.runtime.reference import OrtModel
from hxsched.scheduler.graph.onnx_io import (
    graph_from_proto,
    load_model,
    parse_shape_arg,
    save_model,
    to_model_proto,
)

TORCH_FIXTURES = [
    ("torch_chunk_view", None),
    ("torch_chunk_view_nofold", None),
    ("torch_chunk_view_dyn", {"input": (1, 4, 16, 16)}),
    ("torch_chunk_view_dyn_nofold", {"input": (1, 4, 16, 16)}),
    ("torch_concat_last", None),
    ("torch_dynamic_batch", {"input": (1, 4, 16, 16)}),
    ("torch_identity_init", None),
    ("torch_opset11", None),
    ("torch_unet_tiny", None),
]


def conv_model(path, *, external=False):
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 16, 8, 8]}, {"W": w(16, 3, 3, 3)})
    kept = onnx.ModelProto()
    kept.CopyFrom(model)  # onnx.save_model moves data out of the proto it is given
    if external:
        onnx.save_model(
            model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0
        )
    else:
        onnx.save_model(model, str(path))
    return kept


@pytest.mark.parametrize("name,shapes", TORCH_FIXTURES)
def test_real_torch_exports_load_and_keep_their_function(data_dir, name, shapes):
    """Load, fold, export again: ONNX Runtime still gives torch's recorded output."""
    path = data_dir / "torch" / f"{name}.onnx"
    io = np.load(data_dir / "torch" / f"{name}_io.npz")
    if shapes is not None:  # dynamic exports: fix the shapes torch was run with
        shapes = {k: tuple(io[k].shape) for k in shapes}
    g = load_model(path, shapes)
    assert all(t.shape is not None for n in g.nodes for t in map(g.tensors.get, n.outputs))
    feeds = {k: io[k] for k in io.files if k in g.inputs}
    assert feeds, io.files
    out = OrtModel(g).run(feeds)
    expected = [io[k] for k in io.files if k not in g.inputs]
    got = list(out.values())
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "text,expected",
    [("images=1x3x640x640", ("images", (1, 3, 640, 640))), ("a:b=2,3", ("a:b", (2, 3)))],
)
def test_parse_shape(text, expected):
    assert parse_shape_arg(text) == expected


@pytest.mark.parametrize("text", ["images", "=1x3", "x=1xax3", "x=0x3", "x="])
def test_parse_shape_rejects(text):
    with pytest.raises(HxschedError, match="--shape"):
        parse_shape_arg(text)


def test_missing_file(tmp_path):
    with pytest.raises(HxschedError) as err:
        load_model(tmp_path / "nope.onnx")
    assert str(err.value) == f"{tmp_path / 'nope.onnx'}: no such file"


def test_directory(tmp_path):
    with pytest.raises(HxschedError, match="directory"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"hello, I am not a model\n", b"", b"\x08\x07" + b"\xff" * 40],
    ids=["text", "empty", "junk"],
)
def test_not_onnx(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(HxschedError) as err:
        load_model(path)
    assert str(path) in str(err.value) and "ONNX" in str(err.value)


def test_truncated(tmp_path):
    good = tmp_path / "good.onnx"
    conv_model(good)
    blob = good.read_bytes()
    for cut in (len(blob) // 3, len(blob) // 2, len(blob) - 5):
        bad = tmp_path / f"cut{cut}.onnx"
        bad.write_bytes(blob[:cut])
        with pytest.raises(HxschedError) as err:
            load_model(bad)
        assert str(bad) in str(err.value)


def test_invalid_graph_is_reported(tmp_path):
    nodes = [helper.make_node("Relu", ["ghost"], ["y"], name="r")]
    model = make_model(nodes, {"x": [1, 1, 2, 2]}, {"y": [1, 1, 2, 2]})
    path = tmp_path / "invalid.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(HxschedError, match="invalid ONNX model"):
        load_model(path)


def test_dynamic_shape_refused_then_fixed(data_dir):
    path = data_dir / "torch" / "torch_dynamic_batch.onnx"
    with pytest.raises(HxschedError) as err:
        load_model(path)
    msg = str(err.value)
    assert "dynamic input shape" in msg and "--shape input=1x4x16x16" in msg
    g = load_model(path, {"input": (1, 4, 16, 16)})
    assert g.tensors["input"].shape == (1, 4, 16, 16)


@pytest.mark.parametrize(
    "shapes,match",
    [
        ({"nope": (1, 4, 16, 16)}, "no such input"),
        ({"input": (1, 4, 16)}, "rank 4"),
        ({"input": (1, 5, 16, 16)}, "contradicts"),
    ],
)
def test_bad_shape_overrides(data_dir, shapes, match):
    with pytest.raises(HxschedError, match=match):
        load_model(data_dir / "torch" / "torch_dynamic_batch.onnx", shapes)


def test_old_opset_refused_new_opset_warned():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    with pytest.raises(HxschedError, match="opset 9"):
        graph_from_proto(make_model(nodes, {"x": [1, 1, 2, 2]}, ["y"], opset=9))
    g = graph_from_proto(make_model(nodes, {"x": [1, 1, 2, 2]}, ["y"], opset=21))
    assert any("opset 21" in m for m in g.model_meta["warnings"])


def test_external_data_round_trip(tmp_path):
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    model = conv_model(src, external=True)
    g = load_model(src)
    np.testing.assert_array_equal(
        g.const_value("W"), numpy_helper.to_array(model.graph.initializer[0])
    )
    out = tmp_path / "out" / "m.onnx"
    save_model(g, out)
    assert (out.parent / "m.onnx.data").exists()  # external stays external
    again = load_model(out)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    a, b = OrtModel(g).run(feeds), OrtModel(again).run(feeds)
    np.testing.assert_array_equal(a["y"], b["y"])


def test_missing_and_truncated_external_data(tmp_path):
    src = tmp_path / "m.onnx"
    conv_model(src, external=True)
    data = tmp_path / "w.bin"
    with open(data, "r+b") as f:
        f.truncate(10)
    with pytest.raises(HxschedError, match="truncated"):
        load_model(src)
    data.unlink()
    with pytest.raises(HxschedError, match="missing|not regular"):
        load_model(src)


def test_model_over_2gb_with_external_data_loads_without_reading_weights(tmp_path):
    """A 2.4 GB weight in a sparse external file: loading and checking never reads it."""
    cout = cin = 8192
    weight = onnx.TensorProto()
    weight.name = "W"
    weight.data_type = onnx.TensorProto.FLOAT
    weight.dims.extend([cout, cin, 3, 3])
    weight.data_location = onnx.TensorProto.EXTERNAL
    size = cout * cin * 9 * 4
    for key, value in (("location", "big.bin"), ("offset", "0"), ("length", str(size))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    model = make_model(nodes, {"x": [1, cin, 1, 1]}, {"y": [1, cout, 1, 1]})
    model.graph.initializer.append(weight)
    path = tmp_path / "big.onnx"
    onnx.save_model(model, str(path))
    with open(tmp_path / "big.bin", "wb") as f:  # sparse: no disk blocks written
        f.truncate(size)
    assert size > 2**31
    g = load_model(path)
    assert g.tensors["W"].nbytes == size and g.tensors["W"]._value is None
    from hxsched.scheduler.dla.check import check_graph

    report = check_graph(g)
    assert report.incompatible == []
    assert g.cut_points()[0].bytes == cout * 4
    skeleton = to_model_proto(g, weights="skeleton")
    assert skeleton.ByteSize() < 1 << 20


def test_skeleton_keeps_small_constants_only(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="r")]
    from onnx_builders import graph

    g = graph(nodes, {"x": [1, 4, 4, 4]}, ["y"], {"shape": np.array([1, 16, 4, 1], np.int64)})
    sk = to_model_proto(g, weights="skeleton")
    assert [i.name for i in sk.graph.initializer] == ["shape"]
    assert os.environ.get("HXSCHED_NEVER_SET") is None
