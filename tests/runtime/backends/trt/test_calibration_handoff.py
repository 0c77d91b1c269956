"""`hxsched calibrate`'s cache reaches TensorRT: an INT8 build on the strict fake reads it through
the backend's calibrator and gets the same scale for every tensor."""

from __future__ import annotations

import json

import numpy as np
from fakes.models import tiny_graph
from fakes.trt_fake import MAGIC

from hxsched.runtime.backends.trt import engine as te
from hxsched.runtime.validate.calibrate import calibrate_graph, read_cache, write_cache
from hxsched.scheduler.graph.onnx_io import to_model_proto


def _built_header(blob: bytes) -> dict:
    assert blob.startswith(MAGIC)
    head, _ = blob[len(MAGIC) :].split(b"\n", 1)
    return json.loads(head)


def test_an_int8_build_reads_the_calibration_cache(fake_trt, tmp_path):
    g = tiny_graph()
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    scales = calibrate_graph(g, feeds)
    assert scales and all(s > 0 for s in scales.values())
    cache = write_cache(tmp_path / "calib.cache", scales, fake_trt.version)
    cfg = te.build_config_for(
        "gpu",
        "int8",
        inputs_from={"x": None},
        outputs_to={"y": None},
        calibration_cache=str(cache),
        trt_major=int(fake_trt.version.split(".")[0]),
    )
    log: list[str] = []
    blob = te.build_engine(to_model_proto(g).SerializeToString(), cfg, log)
    got = _built_header(blob)["calibration"]
    want = read_cache(cache)
    assert set(got) == set(want) == set(scales)
    for name, scale in want.items():
        assert np.float32(got[name]) == np.float32(scale)  # bit for bit through the hex form


def test_an_int8_build_without_a_cache_is_refused_before_tensorrt(fake_trt):
    import pytest

    from hxsched.errors import HxschedError

    with pytest.raises(HxschedError, match="INT8 needs a calibration cache"):
        te.build_config_for("gpu", "int8", inputs_from={"x": None}, outputs_to={"y": None})
