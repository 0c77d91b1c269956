"""The pipelined executor: issue order from the plan, achieved period, order, back-pressure."""

from __future__ import annotations

from itertools import pairwise

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.backends.sim import SimBackend
from hxsched.runtime.build import plan_instance_specs
from hxsched.runtime.executor import MAX_WARMUP, Executor, issue_schedule, percentile


def test_issue_schedule_lags_follow_the_cyclic_timeline(small_plan):
    specs = plan_instance_specs(small_plan, with_models=False)
    slots = issue_schedule(small_plan, specs)
    assert len(slots) == sum(len(i.segments) for i in specs)
    for i in range(len(specs)):
        lags = [
            s.lag for s in sorted((s for s in slots if s.instance == i), key=lambda s: s.segment)
        ]
        assert lags == sorted(lags) and lags[0] == 0


def test_sim_achieves_the_planned_period_and_keeps_frame_order(small_plan):
    specs = plan_instance_specs(small_plan, with_models=False)
    ex = Executor(small_plan, specs, SimBackend())
    seen = []
    stats = ex.run(({} for _ in range(400)), on_output=lambda r: seen.append(r.index))
    assert seen == list(range(400))
    assert stats.steady_fps == pytest.approx(small_plan.predicted.fps, rel=0.005)
    for acc, busy in small_plan.predicted.busy_ms.items():
        assert stats.busy[acc] == pytest.approx(busy / small_plan.predicted.period_ms, abs=0.02)


def test_too_few_frames_in_flight_is_raised_not_deadlocked(small_plan):
    specs = plan_instance_specs(small_plan, with_models=False)
    ex = Executor(small_plan, specs, SimBackend(), inflight=1)
    assert ex.inflight == ex.max_lag + 2 and "raised --inflight" in ex.inflight_note
    assert ex.run({} for _ in range(50)).frames == 50
    with pytest.raises(HxschedError):
        Executor(small_plan, specs, SimBackend(), inflight=0)


def test_pipelining_overlaps_frames_and_one_at_a_time_does_not(small_plan):
    """Pipelining is what buys the throughput, on the virtual clock (the same comparison with
    real sleeps and on ONNX Runtime is ``benchmarks/bench_executor.py``): draining after every
    frame runs frames strictly one after another at exactly 1/latency, while the pipelined run
    admits each frame before the previous one is done and completes over 1.25 frames per
    single-frame latency."""
    specs = plan_instance_specs(small_plan, with_models=False)
    piped_out, serial_out = [], []
    piped = Executor(small_plan, specs, SimBackend()).run(
        ({} for _ in range(200)), on_output=piped_out.append
    )
    serial = Executor(small_plan, specs, SimBackend()).run(
        (x for k in range(200) for x in ({}, None)),  # drain after every frame
        on_output=serial_out.append,
    )
    assert [r.index for r in serial_out] == list(range(200)) == [r.index for r in piped_out]
    assert all(b.admitted_ms >= a.done_ms for a, b in pairwise(serial_out))
    latency = serial_out[0].latency_ms
    assert all(r.latency_ms == pytest.approx(latency, rel=1e-9) for r in serial_out)
    assert serial.steady_fps == pytest.approx(1000.0 / latency, rel=1e-9)
    steady = piped_out[MAX_WARMUP:]
    assert all(b.admitted_ms < a.done_ms for a, b in pairwise(steady))
    assert piped.steady_fps * latency / 1000.0 > 1.25  # frames done per single-frame latency


def test_drift_raises_one_event_and_idle_gaps_drain(small_plan):
    specs = plan_instance_specs(small_plan, with_models=False)
    name = specs[0].segments[-1].name
    got = []
    ex = Executor(small_plan, specs, SimBackend(slowdowns=[(name, 1.8, 50)]), on_event=got.append)
    stats = ex.run({} for _ in range(200))
    assert len(got) == 1 and got[0].segment == name and got[0].source == "runtime-drift"
    assert stats.fallback_events == got
    assert stats.segments[name].to_dict()["ratio"] == pytest.approx(1.8, rel=0.01)


def test_latency_percentiles():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile([], 50) == 0.0


class _FailingEvent:
    def __init__(self, inner, fail):
        self.inner, self.fail = inner, fail
        self.start_ms, self.end_ms = inner.start_ms, inner.end_ms
        self.error = "boom" if fail else None

    def done(self):
        return self.inner.done()

    def wait(self):
        self.inner.wait()
        if self.fail:
            from hxsched.runtime.backends.base import SegmentFailed

            raise SegmentFailed("boom")


class _FailingStream:
    def __init__(self, inner, bad_frame):
        self.inner, self.bad = inner, bad_frame
        self.accelerator = inner.accelerator

    def enqueue(self, seg, frame, waits):
        ev = self.inner.enqueue(seg, frame, [w.inner for w in waits])
        return _FailingEvent(ev, frame.index == self.bad and seg.index == 0)


class _FailingSim(SimBackend):
    def stream(self, accelerator):
        return _FailingStream(super().stream(accelerator), 3)


def test_a_failing_frame_goes_to_on_error_and_the_others_carry_on(small_plan):
    specs = plan_instance_specs(small_plan, with_models=False)
    got, errors = [], []
    ex = Executor(small_plan, specs, _FailingSim())
    stats = ex.run(
        ((k, {}) for k in range(8)),
        on_output=lambda r: got.append(r.tag),
        on_error=lambda tag, index, msg: errors.append((tag, index, msg)),
    )
    assert got == [0, 1, 2, 4, 5, 6, 7] and stats.frames == 7
    assert errors and errors[0][:2] == (3, 3) and "failed on frame 3" in errors[0][2]
    with pytest.raises(HxschedError, match="failed on frame 3"):
        Executor(small_plan, specs, _FailingSim()).run({} for _ in range(8))
