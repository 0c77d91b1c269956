"""Measured CPU profiles with ONNX Runtime's profiler."""

from __future__ import annotations

import os
import statistics

import numpy as np
import pytest

from hxsched.runtime import ort_profile
from hxsched.runtime.ort_profile import (
    RunTimes,
    measure_ort_profile,
    node_name_from_event,
    parse_ort_profile,
)
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


class _FakeClock:
    """``time`` for the module under test: each ``perf_counter`` call is ``step_ms`` later."""

    def __init__(self, step_ms):
        self.step_s, self.now_s = step_ms / 1e3, 0.0

    def perf_counter(self):
        self.now_s += self.step_s
        return self.now_s


@pytest.mark.parametrize("which", ["yolov8n", "pix2pix"])
def test_group_times_are_the_sums_of_the_node_times(
    which, yolov8n_graph, pix2pix_graph, monkeypatch
):
    """Attribution, not this machine's speed (the 10 % goal on a real CPU is
    ``benchmarks/bench_profile.py``): ONNX Runtime's real profile gives the node names, then
    injected node times (node k in run r: (k + 1)(r + 1) µs) and a whole-model time equal to
    the median run's node total must give group medians that sum to exactly the whole model."""
    graph = yolov8n_graph if which == "yolov8n" else pix2pix_graph
    groups = make_groups(graph, {v.node: v.dla for v in check_graph(graph).verdicts})
    warmup, runs = 2, 5
    index = {n.name: k for k, n in enumerate(graph.nodes)}
    named: list[set[str]] = []

    def injected(events):
        real = parse_ort_profile(events)
        named.extend(set(run) for run in real.runs)
        fake = [
            {name: (index.get(name, -2) + 1) * (r + 1) * 1e-3 for name in run}
            for r, run in enumerate(real.runs)
        ]
        return RunTimes(fake, [sum(run.values()) for run in fake])

    per_run_ms = sum((k + 1) * 1e-3 for k in range(len(graph.nodes)))  # run r: (r + 1) x this
    measured = [r + 1 for r in range(warmup, warmup + runs)]
    whole_ms = per_run_ms * statistics.median(measured)
    monkeypatch.setattr(ort_profile, "parse_ort_profile", injected)
    monkeypatch.setattr(ort_profile, "time", _FakeClock(whole_ms))
    threads = os.cpu_count() or 1  # as asked: no thread-count trial runs on the fake clock
    m = measure_ort_profile(graph, runs=runs, warmup=warmup, groups=groups, threads=threads)

    assert len(named) == warmup + runs
    assert all(names == set(index) for names in named)  # every node timed, nothing else
    assert m.unattributed_ms == 0.0
    assert m.whole_ms == pytest.approx(whole_ms, rel=1e-12)
    for g, pg in zip(groups, m.profile.groups, strict=True):
        samples = [sum((index[n] + 1) * f * 1e-3 for n in g.nodes) for f in measured]
        assert pg.time_ms["cpu"] == pytest.approx(statistics.median(samples), rel=1e-12)
        assert pg.spread_ms["cpu"] == pytest.approx(
            float(np.subtract(*np.percentile(samples, [75, 25]))), rel=1e-9
        )
    assert m.groups_sum_ms == pytest.approx(sum(g.time_ms["cpu"] for g in m.profile.groups))
    assert m.ratio == pytest.approx(1.0, rel=1e-12)
    prof = m.profile
    assert prof.device == "cpu" and prof.precision == "fp32"
    assert prof.provenance["ort"].kind == "measured"
    assert "onnxruntime" in prof.provenance["ort"].versions
    assert all(g.time_ms["cpu"] > 0 and "cpu" in g.spread_ms for g in prof.groups)
    assert [(g.first, g.last) for g in prof.groups] == [(g.first, g.last) for g in groups]
    assert prof.whole_model_ms["cpu"] == m.whole_ms


def _uniform_times(events):
    """Every profiled node 1 µs per run (the node names from ONNX Runtime's real profile)."""
    real = parse_ort_profile(events)
    fake = [{name: 1e-3 for name in run} for run in real.runs]
    return RunTimes(fake, [sum(run.values()) for run in fake])


def test_a_group_sum_far_from_the_whole_model_warns_in_one_line(data_dir, monkeypatch, caplog):
    from hxsched.scheduler.graph.onnx_io import load_model

    graph = load_model(data_dir / "torch" / "torch_unet_tiny.onnx")
    monkeypatch.setattr(ort_profile, "parse_ort_profile", _uniform_times)
    nodes_ms = len(graph.nodes) * 1e-3
    for whole_ms, warns in ((nodes_ms / 0.73, True), (nodes_ms, False), (nodes_ms / 1.2, True)):
        monkeypatch.setattr(ort_profile, "time", _FakeClock(whole_ms))
        caplog.clear()
        with caplog.at_level("WARNING", logger="hxsched.runtime.ort_profile"):
            m = measure_ort_profile(graph, runs=3, warmup=1, threads=1)
        lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert (m.warning is not None) == warns and len(lines) == int(warns)
        if warns:
            assert lines == [m.warning] and "\n" not in m.warning
            assert "may be unreliable" in m.warning and f"{m.ratio:.0%}" in m.warning
        assert m.profile.provenance["ort"].versions["threads"] == "1"
        assert "1 intra-op thread(s), as asked" in m.profile.provenance["ort"].notes


def test_candidate_thread_counts():
    assert ort_profile.candidate_threads(1) == (1,)
    assert ort_profile.candidate_threads(2) == (1, 2)
    assert ort_profile.candidate_threads(12) == (1, 6, 12)


@pytest.mark.parametrize("slower", [1, 2])
def test_the_thread_count_is_picked_by_timing_the_whole_model(data_dir, monkeypatch, slower):
    """Sessions whose runs take 9 ms with ``slower`` threads and 5 ms otherwise (a fake clock
    that the fake sessions advance): the faster count is picked, recorded in the provenance."""
    from hxsched.scheduler.graph.onnx_io import load_model

    clock = _FakeClock(0.0)

    class Session:
        def __init__(self, threads, profile_dir):
            self.threads, self.real = threads, real_session(b"", threads, profile_dir)

        def run(self, names, feeds):
            clock.now_s += (9.0 if self.threads == slower else 5.0) / 1e3
            return self.real.run(names, feeds)

        def end_profiling(self):
            return self.real.end_profiling()

    graph = load_model(data_dir / "torch" / "torch_unet_tiny.onnx")
    model = ort_profile.to_model_proto(graph).SerializeToString()

    def real_session(_, threads, profile_dir):
        return original(model, threads, profile_dir)

    original = ort_profile._session
    monkeypatch.setattr(ort_profile, "_session", lambda b, t, d: Session(t, d))
    monkeypatch.setattr(ort_profile, "time", clock)
    monkeypatch.setattr(ort_profile.os, "cpu_count", lambda: 2)
    m = measure_ort_profile(graph, runs=2, warmup=1)
    assert m.threads == 3 - slower and set(m.threads_ms) == {1, 2}
    assert m.threads_ms[slower] == pytest.approx(9.0) and m.threads_ms[3 - slower] == pytest.approx(
        5.0
    )
    prov = m.profile.provenance["ort"]
    assert prov.versions["threads"] == str(3 - slower)
    assert f"{3 - slower} intra-op thread(s), picked by timing the whole model" in prov.notes
