"""Entropy calibration against the reference algorithm, the TensorRT cache text format (round
trip, known values), the QDQ model, and the cache as the trt backend's calibrator hands it on."""

from __future__ import annotations

import struct
from collections import Counter

import numpy as np
import onnx
import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.validate.calibrate import (
    Histogram,
    cache_text,
    calibrate,
    calibrate_graph,
    entropy_amax,
    parse_cache,
    qdq_graph,
    read_cache,
    scale_hex,
    trt_version_tag,
    write_cache,
)
from hxsched.scheduler.graph.onnx_io import graph_from_proto


def _reference_amax(hist, edges, stride, start_bin=128, nbins=128):
    """NVIDIA pytorch-quantization ``calib/histogram.py: _compute_amax_entropy``, loop for loop
    (scipy.stats.entropy replaced by its definition)."""
    bins = hist.copy()
    bins[0] = bins[1]
    divergences = []
    for i in range(start_bin, len(bins) + 1, stride):
        counts = np.zeros(nbins)
        space = np.linspace(0, i, num=nbins + 1)
        dig = np.digitize(range(i), space) - 1
        dig[bins[:i] == 0] = -1
        for idx, d in enumerate(dig):
            if d != -1:
                counts[d] += bins[idx]
        for key, val in Counter(dig).items():
            if key != -1:
                counts[key] /= val
        q = np.array([counts[d] if d != -1 else 0.0 for d in dig])
        q /= q.sum()
        p = np.array(bins[:i], float)
        p[-1] += bins[i:].sum()
        p /= p.sum()
        m = p > 0
        with np.errstate(divide="ignore"):
            divergences.append(float(np.sum(p[m] * np.log(p[m] / q[m]))))
    d = np.array(divergences)
    return edges[(len(d) - 1 - np.argmin(d[::-1])) * stride + start_bin]


@pytest.mark.parametrize("kind", ["normal", "relu", "bimodal"])
def test_entropy_threshold_is_the_reference_algorithms(kind):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(50_000)
    if kind == "relu":
        x = np.maximum(x, 0) * 3
    elif kind == "bimodal":
        x = np.concatenate([x * 0.1, rng.normal(4, 0.3, 5_000)])
    h = Histogram()
    h.add(x)
    edges = np.linspace(0, h.amax, 2049)
    assert h.counts is not None
    assert entropy_amax(h.counts, edges, stride=64) == _reference_amax(h.counts, edges, 64)


def test_histogram_range_grows_and_scales_are_amax_over_127():
    rng = np.random.default_rng(0)
    small, big = rng.standard_normal(20_000), rng.standard_normal(20_000) * 3
    scales = calibrate([{"t": small}, {"t": big}, {"z": np.zeros(10)}], stride=32)
    assert scales["z"] == 0.0
    assert 0 < scales["t"] * 127 <= np.abs(np.concatenate([small, big])).max()
    h = Histogram()
    h.add(small)
    h.add(big)
    assert h.counts is not None and h.counts.sum() == 40_000


def test_cache_round_trip_and_known_values(tmp_path):
    assert trt_version_tag("8.6.1") == "8601"
    assert trt_version_tag("10.3.0") == "10300"
    assert trt_version_tag("8.5") == "8500"
    assert scale_hex(1.0) == "3f800000"
    # the example in ONNX Runtime's TensorRT EP (tensorrt_execution_provider_utils.h)
    example = parse_cache("TRT-7103-EntropyCalibration2\ndata_0: 4000889d\n")
    assert example.version == "7103" and example.algorithm == "EntropyCalibration2"
    assert example.scales["data_0"] == struct.unpack(">f", bytes.fromhex("4000889d"))[0]
    rng = np.random.default_rng(1)
    scales = {
        f"/model.{k}/act/Mul_output_0": float(np.float32(v))
        for k, v in enumerate(rng.uniform(1e-4, 2, 40))
    }
    scales["images"] = 1 / 127
    path = write_cache(tmp_path / "calib.cache", scales, "8.6.1")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert all(len(ln.rsplit(": ", 1)[1]) == 8 for ln in lines[1:])
    back = read_cache(path)
    assert list(back) == list(scales)
    assert all(back[k] == np.float32(v) for k, v in scales.items())  # bit for bit
    assert cache_text({"a": 0.0, "b": 1.0}, "8.6.1").count("\n") == 2  # no scale: no line


def test_bad_caches_are_one_line_errors(tmp_path):
    for text in ("", "hello\n", "TRT-8601-EntropyCalibration2\nx: nothex\n"):
        with pytest.raises(HxschedError) as e:
            parse_cache(text, "c.cache")
        assert "\n" not in str(e.value) and "c.cache" in str(e.value)
    with pytest.raises(HxschedError):
        read_cache(tmp_path / "missing.cache")
    with pytest.raises(HxschedError):
        trt_version_tag("ten")


def test_qdq_model_from_the_same_ranges(data_dir):
    pytest.importorskip("onnxruntime")
    from hxsched.runtime.reference import OrtModel, random_inputs

    g = graph_from_proto(onnx.load(str(data_dir / "torch" / "torch_unet_tiny.onnx")))
    feeds = [random_inputs(g, k) for k in range(3)]
    scales = calibrate_graph(g, feeds, stride=16)
    assert "input" in scales and "output" in scales and len(scales) == 10 + 1
    q = qdq_graph(g, scales)
    ops = [n.op_type for n in q.nodes]
    assert ops.count("QuantizeLinear") == sum(s > 0 for s in scales.values())
    assert (
        ops.count("DequantizeLinear") == ops.count("QuantizeLinear") + 4
    )  # + 2 Conv, 2 ConvTranspose weights
    ref = OrtModel(g).run(feeds[0])["output"]
    out = OrtModel(q).run(feeds[0])["output"]
    from hxsched.runtime.validate.metrics import cosine

    assert cosine(ref, out) > 0.95


class _Base:
    """Stands in for tensorrt.IInt8EntropyCalibrator2 (a pybind11 trampoline in TensorRT)."""

    def __init__(self) -> None:
        pass


def test_the_trt_backend_hands_the_cache_to_tensorrt(tmp_path, monkeypatch):
    """The calls TensorRT makes on an IInt8EntropyCalibrator2 with a cache (NvInfer.h: the
    builder reads the cache first and asks for batches only if there is none), recorded on the
    trt backend's calibrator: the cache comes back byte for byte, and parses to our scales."""
    import types

    from hxsched.runtime.backends.trt import engine

    monkeypatch.setattr(engine, "trt", types.SimpleNamespace(IInt8EntropyCalibrator2=_Base))
    scales = {"input": 0.02, "/conv/Conv_output_0": 0.5}
    path = write_cache(tmp_path / "c.cache", scales, "8.6.1")
    cal = engine._CacheCalibrator(path.read_bytes())
    calls = [("get_batch_size", cal.get_batch_size())]
    blob = cal.read_calibration_cache()
    calls.append(("read_calibration_cache", len(blob)))
    if not blob:  # pragma: no cover - TensorRT would calibrate from batches
        calls.append(("get_batch", cal.get_batch(["input"])))
    assert calls == [("get_batch_size", 1), ("read_calibration_cache", path.stat().st_size)]
    assert blob == path.read_bytes()
    parsed = parse_cache(blob.decode())
    assert parsed.version == "8601"
    assert parsed.scales == {k: float(np.float32(v)) for k, v in scales.items()}
