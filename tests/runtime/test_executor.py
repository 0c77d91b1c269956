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


def test_too_few_frames_in_flight_runs_as_asked_and_says_what_it_costs(small_plan):
    """Never silently raised: the depth asked for is the depth run, the note names the cost, and
    the achieved rate is the cap the note predicts (frames per frame time), not the plan's."""
    specs = plan_instance_specs(small_plan, with_models=False)
    ex = Executor(small_plan, specs, SimBackend(), inflight=1)
    assert ex.need >= 2 and ex.inflight == 1
    assert "below the" in ex.inflight_note and "caps the rate" in ex.inflight_note
    stats = ex.run({} for _ in range(50))
    assert stats.frames == 50 and stats.inflight == 1
    assert stats.steady_fps == pytest.approx(1000.0 / ex.frame_ms, rel=1e-6)
    assert stats.steady_fps < small_plan.predicted.fps
    assert stats.latency_ms["p50"] == pytest.approx(small_plan.predicted.latency_ms, rel=1e-6)
    at_need = Executor(small_plan, specs, SimBackend(), inflight=ex.need)
    assert at_need.inflight_note == ""
    assert at_need.run({} for _ in range(200)).steady_fps == pytest.approx(
        small_plan.predicted.fps, rel=0.005
    )
    with pytest.raises(HxschedError, match="at least 1"):
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


_CASES = {
    "gan_yolo": (("pix2pix_unet256_dla", 1), ("yolov8n", 1)),
    "dual_gan": (("pix2pix_unet256", 2),),
}


@pytest.fixture(scope="module")
def case_plans():
    from hxsched.scheduler.planning.planner import ModelInput, make_plan
    from hxsched.scheduler.profile.schema import load_profile
    from hxsched.scheduler.profile.store import shipped_dir

    def plan(models, objective):
        inputs = [
            ModelInput(n, load_profile(shipped_dir() / "orin-agx" / f"{n}.yaml"), "s", count=c)
            for n, c in models
        ]
        return make_plan(inputs, "orin-agx", objective=objective, time_limit_s=30).plan

    return {
        (case, obj): plan(models, obj)
        for case, models in _CASES.items()
        for obj in ("throughput", "latency")
    }


@pytest.mark.parametrize("objective", ["throughput", "latency"])
@pytest.mark.parametrize("case", sorted(_CASES))
def test_sim_delivers_the_predicted_fps_and_latency(case_plans, case, objective):
    """The executor follows the plan's timeline: on the virtual clock the achieved steady-state
    fps and latency p50 are the predicted ones (the issue's goal is 3 %; the clock is exact)."""
    plan = case_plans[(case, objective)]
    specs = plan_instance_specs(plan, with_models=False)
    done = []
    stats = Executor(plan, specs, SimBackend()).run(({} for _ in range(300)), on_output=done.append)
    assert stats.steady_fps == pytest.approx(plan.predicted.fps, rel=0.005)
    assert stats.latency_ms["p50"] == pytest.approx(plan.predicted.latency_ms, rel=0.005)
    assert stats.latency_ms["p99"] == pytest.approx(plan.predicted.latency_ms, rel=0.005)
    release = [r.admitted_ms for r in done]
    assert all(b - a == pytest.approx(plan.predicted.period_ms) for a, b in pairwise(release))
    if objective == "latency":  # one frame at a time, in the solver's order
        assert all(b.admitted_ms >= a.done_ms - 1e-9 for a, b in pairwise(done))
        first = {n: s for n, (s, _) in done[0].spans.items()}
        for t in plan.timeline:
            name = f"{t.instance}/s{t.segment}"
            assert first[name] == pytest.approx(t.start_ms, abs=1e-6)


@pytest.mark.parametrize("case", sorted(_CASES))
def test_every_depth_runs_as_asked(case_plans, case):
    plan = case_plans[(case, "throughput")]
    specs = plan_instance_specs(plan, with_models=False)
    for depth in range(1, 5):
        ex = Executor(plan, specs, SimBackend(), inflight=depth)
        stats = ex.run({} for _ in range(120))
        assert ex.inflight == stats.inflight == depth
        cap = min(plan.predicted.fps, depth * 1000.0 / ex.frame_ms)
        assert stats.steady_fps == pytest.approx(cap, rel=0.005)
        assert bool(ex.inflight_note) == (depth < ex.need)


def test_a_slow_source_releases_frames_when_they_come(small_plan):
    """Frames that arrive slower than the period start on arrival (no catch-up burst); the
    source says ``None`` before it blocks, so what is in flight finishes on time."""
    specs = plan_instance_specs(small_plan, with_models=False)
    backend = SimBackend()
    gap = 3 * small_plan.predicted.period_ms

    def slow():
        for _ in range(20):
            yield None
            backend.wait_until(backend.now_ms() + gap)
            yield {}

    done = []
    Executor(small_plan, specs, backend).run(slow(), on_output=done.append)
    assert all(b.admitted_ms - a.admitted_ms >= gap - 1e-9 for a, b in pairwise(done))
    assert all(r.latency_ms == pytest.approx(small_plan.predicted.latency_ms) for r in done)
