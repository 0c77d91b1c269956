"""The roofline cost model and its calibration against published figures."""

from __future__ import annotations

import pytest

from hxsched.scheduler.cost.devices import DEVICES, device
from hxsched.scheduler.cost.estimate import (
    DLA_GPU_RATIO_RANGE,
    calibration_table,
    estimate_profile,
    fused_nodes,
)
from hxsched.scheduler.graph.onnx_io import graph_from_proto
from hxsched.scheduler.zoo import build_zoo_model

_CACHE: dict = {}


def zoo(name):
    if name not in _CACHE:
        _CACHE[name] = graph_from_proto(build_zoo_model(name, calibrate_weights=False))
    return _CACHE[name]


def test_calibration_table():
    rows = calibration_table(zoo)
    fits = [r for r in rows if r["kind"] == "fit"]
    assert len(fits) == 6
    for r in fits:  # fitted: within 5 % of every published whole-model time
        assert 0.95 <= r["ratio"] <= 1.05, r
    lo, hi = DLA_GPU_RATIO_RANGE
    for r in rows:
        if r["kind"] == "dla-ratio":
            assert lo - 0.05 <= r["estimated"] <= hi + 0.05, r
    (pipe,) = [r for r in rows if r["kind"] == "pipeline"]
    assert 0.5 <= pipe["ratio"] <= 1.5  # a pipeline figure, not fitted: same order of magnitude


def test_profile_on_a_device_without_dla():
    prof = estimate_profile(zoo("yolov8n"), "orin-nano")
    assert all(set(g.time_ms) == {"gpu"} for g in prof.groups)
    assert prof.transitions == () and not any(g.dla for g in prof.groups)


def test_profile_has_times_transitions_and_memory(pix2pix_graph):
    prof = estimate_profile(pix2pix_graph, "orin-agx")
    assert len(prof.transitions) == len(prof.groups) - 1
    dla_groups = [g for g in prof.groups if g.dla]
    # tiny groups can be quicker on the DLA (no kernel launches), the model as a whole is not
    assert dla_groups
    assert sum(g.time_ms["dla"] for g in dla_groups) > 1.5 * sum(
        g.time_ms["gpu"] for g in dla_groups
    )
    assert all(g.memory_bw["gpu"] > 0 for g in prof.groups)
    assert all(t.gpu_to_dla_ms > 0 and t.dla_to_gpu_ms > 0 for t in prof.transitions)
    assert prof.provenance["cost-model"].kind == "estimated"


def test_fusion_model(yolov8n_graph):
    fused = fused_nodes(yolov8n_graph)
    assert "/model.0/act/Sigmoid" in fused and "/model.0/act/Mul" in fused
    assert "/model.0/conv/Conv" not in fused


def test_unknown_device():
    from hxsched.errors import HxschedError

    with pytest.raises(HxschedError, match="unknown device"):
        device("jetson-thor")
    assert DEVICES["orin-nano"].dla_cores == 0 and DEVICES["orin-agx"].dla_cores == 2


def test_user_errors_are_one_line(yolov8n_graph):
    from hxsched.errors import HxschedError
    from hxsched.scheduler.cost.estimate import whole_model_ms

    with pytest.raises(HxschedError) as err:
        estimate_profile(yolov8n_graph, "orin-agx", precision="fp8")
    assert str(err.value) == "precision 'fp8': expected one of fp16, int8"
    with pytest.raises(HxschedError) as err:
        whole_model_ms(yolov8n_graph, device("orin-nano"), "dla")
    assert str(err.value) == "device orin-nano has no dla: it cannot be estimated there"


def test_devices_name_their_accelerators_with_the_enums():
    from hxsched.scheduler.types import Accelerator, AcceleratorKind

    orin = device("orin-agx")
    assert orin.accelerators == (Accelerator.GPU, Accelerator.DLA0, Accelerator.DLA1)
    assert orin.dla_cores == 2 and device("orin-nano").dla_cores == 0
    assert orin.engine("dla1") is orin.dla and orin.engine(AcceleratorKind.DLA) is orin.dla
    assert orin.engine("gpu").kind is AcceleratorKind.GPU
