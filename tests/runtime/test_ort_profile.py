"""Measured CPU profiles with ONNX Runtime's profiler."""

from __future__ import annotations

import pytest

from hxsched.runtime.ort_profile import measure_ort_profile, node_name_from_event, parse_ort_profile
from hxsched.scheduler.cost.groups import make_groups
from hxsched.scheduler.dla.check import check_graph


def test_event_names():
    assert node_name_from_event("/model.0/conv/Conv_kernel_time") == "/model.0/conv/Conv"
    assert (
        node_name_from_event("/model.0/act/Mul/QuickGeluFusion/_kernel_time") == "/model.0/act/Mul"
    )


def test_parse_splits_runs():
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        {"cat": "Node", "name": "a_kernel_time", "ts": 10, "dur": 40},
        {"cat": "Node", "name": "a_fence_before", "ts": 9, "dur": 1},
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        {"cat": "Node", "name": "a_kernel_time", "ts": 210, "dur": 60},
        {"cat": "Node", "name": "b_kernel_time", "ts": 280, "dur": 10},
    ]
    runs = parse_ort_profile(events)
    assert runs.runs == [{"a": 0.04}, {"a": 0.06, "b": 0.01}]
    assert runs.run_ms == [0.1, 0.1]


@pytest.mark.parametrize("which", ["yolov8n", "pix2pix"])
def test_group_times_sum_to_the_whole_model(which, yolov8n_graph, pix2pix_graph):
    """Done-when of the profiles issue: within 10 %, measured both ways on this CPU. The
    machine is shared: a measurement disturbed by other load is taken again (up to 3 times)."""
    graph = yolov8n_graph if which == "yolov8n" else pix2pix_graph
    groups = make_groups(graph, {v.node: v.dla for v in check_graph(graph).verdicts})
    seen = []
    for _ in range(3):
        m = measure_ort_profile(graph, runs=5, warmup=2, groups=groups)
        assert m.unattributed_ms == 0.0
        seen.append(round(m.ratio, 3))
        if 0.9 <= m.ratio <= 1.1:
            break
    assert 0.9 <= m.ratio <= 1.1, seen
    prof = m.profile
    assert prof.device == "cpu" and prof.precision == "fp32"
    assert prof.provenance["ort"].kind == "measured"
    assert "onnxruntime" in prof.provenance["ort"].versions
    assert all(g.time_ms["cpu"] > 0 and "cpu" in g.spread_ms for g in prof.groups)
    assert [(g.first, g.last) for g in prof.groups] == [(g.first, g.last) for g in groups]
