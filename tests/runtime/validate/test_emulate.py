"""FP16/INT8 emulation: BatchNorm folding is exact, round trips sit at fusion boundaries, and
FP16 storage changes outputs where ONNX Runtime's own CPU "FP16" does not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx_builders import graph

from hxsched.runtime.reference import OrtModel, random_inputs
from hxsched.runtime.validate.emulate import (
    Mode,
    boundary_tensors,
    emulate,
    fold_batchnorm,
    per_channel_fake_quant,
)
from hxsched.runtime.validate.metrics import error_stats
from hxsched.scheduler.graph.onnx_io import graph_from_proto, to_model_proto

pytest.importorskip("onnxruntime")


def _conv_chain(layers: int = 6, ch: int = 16, gain: float = 3.0):
    """Conv 3x3 + LeakyReLU layers whose activations grow to the hundreds (FP16 storage then
    loses ~0.03-0.25 per value)."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], {}, "x"
    for k in range(layers):
        cin = 3 if k == 0 else ch
        inits[f"w{k}"] = (rng.standard_normal((ch, cin, 3, 3)) * gain / np.sqrt(cin * 9)).astype(
            np.float32
        )
        inits[f"b{k}"] = (rng.standard_normal(ch) * 0.1).astype(np.float32)
        nodes.append(
            helper.make_node(
                "Conv", [x, f"w{k}", f"b{k}"], [f"c{k}"], name=f"conv{k}", pads=[1, 1, 1, 1]
            )
        )
        nodes.append(helper.make_node("LeakyRelu", [f"c{k}"], [f"a{k}"], name=f"act{k}", alpha=0.1))
        x = f"a{k}"
    return graph(nodes, {"x": [1, 3, 32, 32]}, [x], inits)


def _ort_fp16_conversion(g):
    """What ``onnxconverter_common.convert_float_to_float16(keep_io_types=True)`` makes: every
    float tensor and weight FP16, Casts at the model's inputs and outputs."""
    m = to_model_proto(g)
    gp = m.graph
    for init in gp.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name)
            )
    for vi in gp.value_info:
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    x, y = gp.input[0].name, gp.output[0].name
    for n in gp.node:
        n.input[:] = [f"{x}/h" if i == x else i for i in n.input]
        n.output[:] = [f"{y}/h" if o == y else o for o in n.output]
    gp.node.insert(0, helper.make_node("Cast", [x], [f"{x}/h"], to=onnx.TensorProto.FLOAT16))
    gp.node.append(helper.make_node("Cast", [f"{y}/h"], [y], to=onnx.TensorProto.FLOAT))
    return m


def _run_proto(m, feeds):
    import onnxruntime as ort

    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def test_fp16_emulation_changes_what_ort_fp16_does_not():
    g = _conv_chain()
    feeds = random_inputs(g, 0)
    ref = OrtModel(g).run(feeds)["a5"].astype(np.float64)
    assert np.abs(ref).max() > 100  # FP16 storage matters at this magnitude
    ort16 = _run_proto(_ort_fp16_conversion(g), feeds).astype(np.float64)
    rounded_weights = g.copy()
    for t in rounded_weights.tensors.values():
        if t.const and t.value is not None:
            t.set_value(t.value.astype(np.float16).astype(np.float32))
    fp32_rounded = OrtModel(rounded_weights).run(feeds)["a5"]
    em = emulate(g, Mode.FP16)
    out = OrtModel(em.graph).run(feeds)["a5"].astype(np.float64)
    err_em, err_ort = np.abs(out - ref).max(), np.abs(ort16 - ref).max()
    print(f"max |diff| vs FP32: emulation {err_em:.4f}, ORT FP16 conversion {err_ort:.4f}")
    # ORT's CPU casts back to FP32 around each node and drops the casts between them: its
    # "FP16" model is FP32 with rounded weights, while the emulation stores every activation
    assert np.abs(ort16 - fp32_rounded).max() <= 1e-3 * np.abs(ref).max()
    assert np.abs(out - fp32_rounded).max() > 0
    assert err_em > 1.2 * err_ort
    # FP16 storage: each stored activation is exactly representable in FP16
    assert np.array_equal(out, out.astype(np.float16).astype(np.float64))


def test_round_trips_only_at_fusion_boundaries():
    g = _conv_chain(layers=2)
    bounds = boundary_tensors(g)
    assert set(bounds) == {
        "x",
        "a0",
        "a1",
    }  # a Conv's output before its fused LeakyReLU is not stored
    em = emulate(g, Mode.FP16)
    casts = [n for n in em.graph.nodes if n.op_type == "Cast"]
    assert len(casts) == 2 * 3
    assert em.graph.outputs == ["a1"]


def test_batchnorm_folding_is_exact_in_fp32():
    rng = np.random.default_rng(1)
    inits = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "s": rng.uniform(0.5, 2, 8).astype(np.float32),
        "b": rng.standard_normal(8).astype(np.float32),
        "m": rng.standard_normal(8).astype(np.float32),
        "v": rng.uniform(0.5, 2, 8).astype(np.float32),
        "wt": rng.standard_normal((8, 4, 2, 2)).astype(np.float32),
        "s2": rng.uniform(0.5, 2, 4).astype(np.float32),
        "b2": rng.standard_normal(4).astype(np.float32),
        "m2": rng.standard_normal(4).astype(np.float32),
        "v2": rng.uniform(0.5, 2, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("ConvTranspose", ["r", "wt"], ["d"], name="deconv", strides=[2, 2]),
        helper.make_node("BatchNormalization", ["d", "s2", "b2", "m2", "v2"], ["y"], name="bn2"),
    ]
    g = graph(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    feeds = random_inputs(g, 0)
    ref = OrtModel(g).run(feeds)["y"]
    h = g.copy()
    assert fold_batchnorm(h) == 2
    assert [n.op_type for n in h.nodes] == ["Conv", "Relu", "ConvTranspose"]
    assert np.abs(OrtModel(h).run(feeds)["y"] - ref).max() <= 1e-4
    assert np.array_equal(g.const_value("w"), inits["w"])  # the original is untouched


def test_int8_emulation_quantizes_boundaries_and_weights_per_channel():
    g = _conv_chain(layers=3, gain=1.0)
    feeds = random_inputs(g, 0)
    ref = OrtModel(g).run(feeds)["a2"]
    scales = {"x": 4.0 / 127, "a0": 3.0 / 127, "a1": 3.0 / 127}  # a2 has none: FP16
    em = emulate(g, Mode.INT8, scales)
    ops = [n.op_type for n in em.graph.nodes]
    assert ops.count("QuantizeLinear") == 3 and ops.count("Cast") == 2
    assert set(em.quantized) == {"x", "a0", "a1"}
    out = OrtModel(em.graph).run(feeds)["a2"]
    s = error_stats(ref, out)
    assert s.max_abs > 0 and s.cosine > 0.99
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    q, sc = per_channel_fake_quant(w, 0)
    assert sc.shape == (4,)
    np.testing.assert_allclose(
        np.abs(q).reshape(4, -1).max(axis=1), np.abs(w).reshape(4, -1).max(axis=1), rtol=1e-6
    )
    assert np.all(np.abs(q - w) <= sc.reshape(4, 1, 1, 1) / 2 + 1e-7)


def test_fp32_mode_is_the_model_itself(data_dir):
    g = graph_from_proto(onnx.load(str(data_dir / "torch" / "torch_unet_tiny.onnx")))
    feeds = random_inputs(g, 0)
    same = OrtModel(emulate(g, Mode.FP32).graph).run(feeds)["output"]
    assert np.array_equal(same, OrtModel(g).run(feeds)["output"])
    em = emulate(g, Mode.FP16)
    assert em.folded_bn == 1  # ConvTranspose + BatchNorm, as TensorRT fuses them
    diff = error_stats(OrtModel(g).run(feeds)["output"], OrtModel(em.graph).run(feeds)["output"])
    assert 0 < diff.max_abs < 1e-2
