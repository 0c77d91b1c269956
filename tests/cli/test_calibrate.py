"""``hxsched calibrate``: a TensorRT calibration cache from saved inputs that parses back to the
same scales, the QDQ model for TensorRT 11, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from hxsched.cli import main

pytest.importorskip("onnxruntime")


@pytest.fixture
def unet_data(tmp_path, data_dir):
    model = tmp_path / "unet.onnx"
    model.write_bytes((data_dir / "torch" / "torch_unet_tiny.onnx").read_bytes())
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((1, 4, 32, 32)).astype(np.float32) for _ in range(3)]
    for k, x in enumerate(feeds):
        np.save(d / f"x{k}.npy", x)
    return model, d, feeds


def test_cache_round_trip(unet_data, tmp_path, capsys):
    from hxsched.runtime.validate.calibrate import calibrate_graph, read_cache
    from hxsched.scheduler.graph.onnx_io import load_model

    model, d, feeds = unet_data
    cache = tmp_path / "unet.cache"
    args = ["calibrate", str(model), "--data", str(d), "-o", str(cache), "--stride", "16"]
    rc = main([*args, "--trt-version", "8.6.1", "--qdq", str(tmp_path / "q.onnx"), "--json", "-q"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["header"] == "TRT-8601-EntropyCalibration2" and doc["tensors"] == 11
    assert cache.read_text().splitlines()[0] == "TRT-8601-EntropyCalibration2"
    want = calibrate_graph(load_model(model), [{"input": x} for x in feeds], stride=16)
    got = read_cache(cache)
    assert got == {k: float(np.float32(v)) for k, v in want.items() if v > 0}
    onnx.checker.check_model(onnx.load(str(tmp_path / "q.onnx")))


def test_tensorrt_11_gets_a_qdq_model(unet_data, tmp_path, capsys):
    from hxsched.runtime.reference import OrtModel
    from hxsched.scheduler.graph.onnx_io import load_model

    model, d, feeds = unet_data
    out = tmp_path / "unet.qdq.onnx"
    rc = main(["calibrate", str(model), "--data", str(d), "-o", str(out), "--trt-version", "11.1.0", "--stride", "32", "-q"])  # fmt: skip
    assert rc == 0 and "wrote" in capsys.readouterr().out
    g = load_model(out)
    assert sum(n.op_type == "QuantizeLinear" for n in g.nodes) >= 10
    y = OrtModel(g).run({"input": feeds[0]})["output"]
    ref = OrtModel(load_model(model)).run({"input": feeds[0]})["output"]
    assert np.abs(y - ref).max() < 0.2


def _err(capsys, *argv: str) -> str:
    rc = main(["calibrate", *argv, "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "Traceback" not in err, err
    return err


def test_one_line_errors(unet_data, tmp_path, capsys, monkeypatch):
    import sys

    model, d, _ = unet_data
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable here
    assert "--trt-version" in _err(capsys, str(model), "--data", str(d), "-o", str(tmp_path / "c"))
    assert "expected X.Y.Z" in _err(capsys, str(model), "--data", str(d), "-o", "c", "--trt-version", "x")  # fmt: skip
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 32, 32), np.float32))
    assert "wrong size" in _err(capsys, str(model), "--data", str(tmp_path / "bad.npy"), "-o", "c", "--trt-version", "8.6.1")  # fmt: skip
    assert "11" in _err(capsys, str(model), "--data", str(d), "-o", "c.cache", "--trt-version", "11.1.0")  # fmt: skip
