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


def test_profile_keeps_few_dla_engines_alive(yolov8n_graph, monkeypatch):
    """More DLA-capable groups than the 16 loadables a DLA core holds: every engine is timed and
    released, so at most two are alive at once (a chained or co-run pair)."""
    import types

    from hxsched import capabilities
    from hxsched.runtime.backends.trt import engine as te

    alive: list[object] = []
    peak = {"all": 0, "dla": 0}
    built: list[str] = []

    class Runner:
        def __init__(self, blob, dla_core, log):
            self.dla = dla_core is not None
            alive.append(self)
            peak["all"] = max(peak["all"], len(alive))
            peak["dla"] = max(peak["dla"], sum(r.dla for r in alive))
            if sum(r.dla for r in alive) > 16:
                raise AssertionError("a 17th DLA loadable on one core")

        def time_ms(self, runs, warmup):
            return [1.0, 1.1, 0.9]

        def release(self):
            alive.remove(self)

    def build(onnx_bytes, cfg, log):
        built.append(cfg.accelerator)
        return cfg.accelerator.encode()

    monkeypatch.setattr(te, "EngineRunner", Runner)
    monkeypatch.setattr(te, "build_engine", build)
    monkeypatch.setattr(te, "time_chain", lambda a, b, runs: [2.5] * runs)
    monkeypatch.setattr(te, "time_concurrently", lambda a, b, runs: ([1.2] * runs, [1.3] * runs))
    monkeypatch.setattr(te, "trt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(
        capabilities, "detect", lambda: types.SimpleNamespace(trt_available=True), raising=False
    )
    prof = measure_trt_profile(yolov8n_graph, "orin-agx", runs=3, warmup=1)
    assert built.count("dla0") > 16  # more DLA engines than a core holds
    assert peak["all"] <= 2 and alive == []
    assert sum("dla" in g.time_ms for g in prof.groups) == built.count("dla0")
