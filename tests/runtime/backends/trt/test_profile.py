"""Measured Jetson profiles: the pure planning of what to build and how timings become numbers."""

from __future__ import annotations

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.backends.trt.profile import (
    corun_samples,
    engine_jobs,
    measure_trt_profile,
    transition_pairs,
)
from hxsched.scheduler.cost.estimate import estimate_profile


def test_engine_jobs_and_transition_pairs(yolov8n_graph):
    prof = estimate_profile(yolov8n_graph, "orin-agx")
    jobs = engine_jobs(prof)
    n_dla = sum(1 for g in prof.groups if "dla" in g.time_ms)
    assert len(jobs) == len(prof.groups) + n_dla
    assert {j.accelerator for j in jobs} == {"gpu", "dla0"}
    pairs = transition_pairs(prof)
    assert pairs and all(b == a + 1 for a, b in pairs)
    # the last cut sits between two GPU-only head groups: no hand-over is possible there
    assert (len(prof.groups) - 2, len(prof.groups) - 1) not in pairs


def test_corun_samples():
    s = corun_samples(2.0, [2.4, 1.9], 1e9, 2e9)
    assert [round(x.slowdown, 2) for x in s] == [1.2, 1.0]
    assert corun_samples(0.0, [1.0], 1, 1) == []


def test_without_tensorrt_the_backend_says_how_to_get_it(yolov8n_graph, monkeypatch):
    from hxsched import capabilities

    capabilities.detect.cache_clear()
    monkeypatch.setenv("HXSCHED_FORCE_CPU", "1")
    with pytest.raises(HxschedError, match="needs TensorRT"):
        measure_trt_profile(yolov8n_graph, "orin-agx")
    capabilities.detect.cache_clear()
