"""``hxsched validate --backend trt``: the plan's segment engines, built as ``hxsched build
--backend trt`` builds them (or taken from its engine cache), chained on the strict TensorRT/pycuda
fake (tests/fakes: engines run their segment's ONNX on the CPU in the tensor's real layout), and
compared with FP32 ONNX Runtime by the same code as the emulation; one line without TensorRT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hxsched.cli import main

pytest.importorskip("onnxruntime")

from fakes import FakeStack, install  # noqa: E402
from fakes.models import SUPPORTED_RECORDED, tiny_graph  # noqa: E402
from fakes.trt_fake import MAGIC  # noqa: E402


@pytest.fixture(params=SUPPORTED_RECORDED)
def fake_trt(request, monkeypatch, tmp_path) -> FakeStack:
    """``tensorrt`` and ``pycuda`` replaced by the fake of one recorded version."""
    from hxsched import capabilities

    monkeypatch.setenv("HXSCHED_CACHE_DIR", str(tmp_path / "cache"))
    yield install(monkeypatch, request.param)
    capabilities.detect.cache_clear()


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory) -> Path:
    """The tiny model planned for orin-agx: a dla0 segment (its output handed to the GPU in
    FP16 kCHW16, 3 channels padded to 16) then a GPU one."""
    from hxsched.scheduler.cost.estimate import estimate_profile
    from hxsched.scheduler.graph.onnx_io import load_model, save_model
    from hxsched.scheduler.planning.plan import save_plan
    from hxsched.scheduler.planning.planner import ModelInput, make_plan

    out = tmp_path_factory.mktemp("tiny")
    save_model(tiny_graph(), out / "tiny.onnx")
    g = load_model(out / "tiny.onnx")
    prof = estimate_profile(g, "orin-agx", model_name="tiny")
    plan = make_plan(
        [ModelInput("tiny", prof, "estimated", g, str(out / "tiny.onnx"))],
        "orin-agx",
        time_limit_s=10,
    ).plan
    path = Path(save_plan(plan, out / "tiny.plan.yaml"))
    assert "accelerator: dla0" in path.read_text()
    return path


@pytest.fixture(scope="module")
def gpu_plan(tiny_plan) -> Path:
    """The same cut with both segments on the GPU (INT8 DLA tensors cannot cross to the host)."""
    text = tiny_plan.read_text().replace("accelerator: dla0", "accelerator: gpu")
    path = tiny_plan.parent / "tiny_gpu.plan.yaml"
    path.write_text(text.replace("stream: dla0", "stream: gpu"))
    return path


@pytest.fixture(scope="module")
def tensors(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tensors")
    rng = np.random.default_rng(0)
    for k in range(3):
        np.save(d / f"x{k}.npy", rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    return d


LOOSE = ["--min-psnr", "0", "--min-ssim", "0", "--min-cosine", "0"]
STRIDE = ["--calibration-stride", "32"]  # the entropy search on every 32nd bin: quick


def _validate(capsys, *argv: str) -> tuple[int, dict]:
    rc = main(["validate", *argv, "--backend", "trt", "--json", "-q"])
    captured = capsys.readouterr()
    assert rc in (0, 1), captured.err
    return rc, json.loads(captured.out)


def _engines(tmp_path: Path) -> list[dict]:
    """The header of every engine in the cache (the fake's serialized form)."""
    out = []
    for f in sorted((tmp_path / "cache").rglob("*.engine")):
        blob = f.read_bytes()
        assert blob.startswith(MAGIC)
        out.append(json.loads(blob[len(MAGIC) :].split(b"\n", 1)[0]))
    return out


def test_fp16_engines_are_compared_with_fp32(fake_trt, tiny_plan, tensors, tmp_path, capsys):
    # hxsched build --backend trt first: validate must find exactly its engines in the cache
    assert main(["build", str(tiny_plan), "--backend", "trt", "-o", str(tmp_path / "b"), "-q"]) == 0
    assert fake_trt.stats.builds == 2
    capsys.readouterr()
    rc, doc = _validate(capsys, str(tiny_plan), "--data", str(tensors))
    assert rc == 0 and doc["passed"] and doc["backend"] == "trt"
    # the provenance: TensorRT measured the deployed side, on which device
    assert doc["note"].startswith(f"measured: TensorRT {fake_trt.version} on Orin (fake) (sm 8.7)")
    assert "emulation" not in doc["note"]
    (r,) = doc["instances"]
    assert [(s["accelerator"], s["mode"], s["boundaries"]) for s in r["segments"]] == [
        ("dla0", "fp16", None),
        ("gpu", "fp16", None),
    ]
    # the DLA -> GPU tensor, read back from its kCHW16 device buffer, and the model output:
    # FP16 storage on the device changed them (the fake computes in FP32 between its I/O)
    by = {b["tensor"]: b for b in r["boundaries"]}
    assert set(by) == {"a2", "y"}
    for b in by.values():
        assert 0 < b["stats"]["max_abs"] < 2e-3 and b["stats"]["cosine"] > 0.99999
    assert r["image"]["psnr_min"] > 60 and r["image"]["ssim_min"] > 0.9999
    # the call sequence held on the strict fake: no engine built beyond build's two (both from
    # its cache), each run once per input, the primary context pushed and popped in pairs
    assert fake_trt.stats.builds == 2 and fake_trt.stats.executions == 2 * 3
    assert fake_trt.driver.stack() == []
    engines = _engines(tmp_path)
    assert [e["dla"] for e in engines].count(True) == 1
    assert next(e for e in engines if e["dla"])["io"]["a2"]["format"] == "CHW16"
    # without the cache the engines are built again, and give the same answers
    for f in (tmp_path / "cache").rglob("*.engine"):
        f.unlink()
    rc, again = _validate(capsys, str(tiny_plan), "--data", str(tensors))
    assert rc == 0 and fake_trt.stats.builds == 4
    assert again["instances"][0]["outputs"] == r["outputs"]


def test_the_report_says_tensorrt_measured_it(fake_trt, tiny_plan, tensors, capsys, tmp_path):
    pytest.importorskip("cv2")
    argv = ["validate", str(tiny_plan), "--data", str(tensors), "--backend", "trt"]
    rc = main([*argv, "--report", str(tmp_path / "r"), "-q"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith(f"precision fp16, 3 input(s); measured: TensorRT {fake_trt.version}")
    header = next(line for line in out.splitlines() if "boundary tensor" in line)
    assert header.split()[:3] == ["segment", "on", "TensorRT"] and "emulated" not in out
    page = (tmp_path / "r" / "index.html").read_text()
    assert f"measured: TensorRT {fake_trt.version} on Orin (fake)" in page
    if fake_trt.version == SUPPORTED_RECORDED[-1]:
        with capsys.disabled():
            print("\n" + out)


def test_int8_reads_the_calibration_cache(fake_trt, gpu_plan, tensors, tmp_path, capsys):
    from hxsched.runtime.validate.calibrate import read_cache

    cache = tmp_path / "tiny.cache"
    argv = ["calibrate", str(gpu_plan), "--data", str(tensors), "-o", str(cache), "--stride", "32"]
    assert main([*argv, "-q"]) == 0
    capsys.readouterr()
    want = read_cache(cache)
    args = [str(gpu_plan), "--data", str(tensors), "--precision", "int8", *STRIDE, *LOOSE]
    rc, doc = _validate(capsys, *args, "--calibration-cache", str(cache))
    assert rc == 0 and str(cache) in doc["calibration"]
    assert all(s["mode"] == "int8" for s in doc["instances"][0]["segments"])
    given = _engines(tmp_path)
    assert len(given) == 2
    for e in given:  # every scale reached the builder bit for bit through the calibrator
        assert "INT8" in e["flags"]
        assert {k: np.float32(v) for k, v in e["calibration"].items()} == {
            k: np.float32(v) for k, v in want.items()
        }
    # without a cache: calibrated on --data as hxsched calibrate does, the same scales
    for f in (tmp_path / "cache").rglob("*.engine"):
        f.unlink()
    rc, fly = _validate(capsys, *args)
    assert rc == 0 and "written as a TensorRT calibration cache" in fly["calibration"]
    for e in _engines(tmp_path):
        assert e["calibration"] == given[0]["calibration"]
    assert fake_trt.driver.stack() == []


def _one_line(capsys, *argv: str) -> str:
    rc = main(["validate", *argv, "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("missing", ["tensorrt", "pycuda.driver"])
def test_without_tensorrt_one_line_naming_the_jetson_extra(
    missing, monkeypatch, tiny_plan, tensors, capsys
):
    monkeypatch.setitem(sys.modules, missing, None)  # import of it fails (ImportError)
    err = _one_line(capsys, str(tiny_plan), "--data", str(tensors), "--backend", "trt")
    assert "hxsched[jetson]" in err and "--backend trt needs TensorRT and pycuda" in err


def test_trt_refuses_what_it_cannot_build(fake_trt, tiny_plan, tensors, capsys, tmp_path):
    base = [str(tiny_plan), "--data", str(tensors)]
    err = _one_line(capsys, *base, "--backend", "trt", "--precision", "plan")
    assert "--precision fp16 or int8" in err
    err = _one_line(capsys, *base, "--calibration-cache", str(tmp_path / "c.cache"))
    assert "--calibration-cache is for --backend trt" in err
    # INT8 on a DLA segment fed from the host: refused before any build (as hxsched build)
    err = _one_line(capsys, *base, "--backend", "trt", "--precision", "int8", *STRIDE)
    assert "INT8 DLA tensors cannot cross to the host" in err
    assert fake_trt.stats.builds == 0 and fake_trt.driver.stack() == []


@pytest.mark.parametrize(
    ("dtype", "fmt", "shape"),
    [("int8", "chw32", (1, 3, 4, 5)), ("float16", "chw16", (1, 20, 2, 3)),
     ("float16", "dla_linear", (1, 2, 3, 5))],
)  # fmt: skip
def test_read_tensor_undoes_the_device_layout(fake_trt, dtype, fmt, shape):
    """What validate reads back between segments: kCHW32 INT8 dequantized with its scale,
    kCHW16 FP16 with its padding lanes dropped, kDLA_LINEAR with W padded to 64 bytes."""
    from hxsched.runtime.backends.trt.backend import TrtBackend, pack_vectorized
    from hxsched.runtime.backends.trt.engine import padded_nbytes, primary_context

    cuda = fake_trt.cuda
    be = TrtBackend(cache_dir="unused")
    be.trt, be.cuda = fake_trt.trt, cuda
    primary_context(cuda)
    rng = np.random.default_rng(1)
    value = rng.integers(-127, 128, shape).astype(np.float32)
    if fmt == "dla_linear":
        n, c, h, w = shape
        raw = np.zeros((n, c, h, 32), np.float16)  # 64 bytes a row
        raw[..., :w] = value
        vec = 1
    else:
        vec = 32 if fmt == "chw32" else 16
        raw = pack_vectorized(value, vec, dtype)
    buf = cuda.mem_alloc(padded_nbytes(shape, dtype, fmt))
    cuda.memcpy_htod(buf, np.ascontiguousarray(raw))
    be.buffers[("m", "t", 0)] = buf
    be.layout[("m", "t")] = (vec, shape)
    be.io_types[("m", "t")] = (dtype, fmt)
    try:
        if dtype == "int8":
            from hxsched.errors import HxschedError

            with pytest.raises(HxschedError, match="without its scale"):
                be.read_tensor("m", "t")
            got = be.read_tensor("m", "t", int8_scale=0.5)
            np.testing.assert_array_equal(got, value * np.float32(0.5))
        else:
            np.testing.assert_array_equal(be.read_tensor("m", "t"), value)
    finally:
        be.buffers.clear()
        cuda.Context.pop()
