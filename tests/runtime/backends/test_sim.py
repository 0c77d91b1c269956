"""The sim backend: stream semantics, virtual and real clocks, injected slowdowns."""

from __future__ import annotations

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.backends import sim
from hxsched.runtime.backends.base import FrameState
from hxsched.runtime.backends.sim import SimBackend, parse_slowdown
from hxsched.runtime.build import SegmentSpec


def seg(name="m#0", k=0, acc="gpu", ms=1.0):
    return SegmentSpec(name, k, acc, 0, 0, ms)


def test_stream_runs_in_order_and_waits_for_inputs():
    b = SimBackend()
    gpu, dla = b.stream("gpu"), b.stream("dla0")
    f = FrameState(0, {})
    a = dla.enqueue(seg(acc="dla0", ms=2.0), f, [])
    c = gpu.enqueue(seg(k=1, ms=1.0), f, [a])  # waits for a
    d = gpu.enqueue(seg("n#0", ms=0.5), f, [])  # queued behind c on the same stream
    assert (a.start_ms, a.end_ms) == (0.0, 2.0)
    assert (c.start_ms, c.end_ms) == (2.0, 3.0)
    assert (d.start_ms, d.end_ms) == (3.0, 3.5)
    assert not d.done()
    d.wait()
    assert d.done() and b.now_ms() == 3.5


class _FakeTime:
    """``time`` for the sim module: ``sleep`` advances the clock, every reading costs ``tick``."""

    def __init__(self, tick_s=1e-6):
        self.now_s, self.tick_s, self.sleeps = 100.0, tick_s, []

    def perf_counter(self):
        self.now_s += self.tick_s
        return self.now_s

    def sleep(self, s):
        self.sleeps.append(s)
        self.now_s += s


def test_real_clock_sleeps_until_the_end(monkeypatch):
    """The wake-up logic on an injected clock (how precisely this machine's sleeps land is
    measured by ``benchmarks/bench_executor.py``): no return before the end, sleep while far
    from it, then spin the last stretch, and no overshoot beyond the clock's resolution."""
    clock = _FakeTime()
    monkeypatch.setattr(sim, "time", clock)
    b = SimBackend(real_time=True)
    b.prepare([], inflight=1)
    ev = b.stream("gpu").enqueue(seg(ms=20.0), FrameState(0, {}), [])
    assert ev.end_ms == pytest.approx(20.0, abs=0.005) and not ev.done()
    ev.wait()
    assert ev.end_ms <= b.now_ms() < ev.end_ms + 0.005
    assert ev.done()
    assert clock.sleeps[0] == pytest.approx(0.0195, abs=1e-4)  # (left - 0.5 ms) in one sleep
    assert sum(clock.sleeps) < 0.020  # the last stretch is spun, not slept past the end


def test_slowdown_parsing_and_effect():
    assert parse_slowdown("p#0/s1=1.5@20") == ("p#0/s1", 1.5, 20)
    assert parse_slowdown("p#0/s1=2") == ("p#0/s1", 2.0, 0)
    for bad in ("p#0/s1", "=2", "p=x", "p=-1", "p=2@-3"):
        with pytest.raises(HxschedError):
            parse_slowdown(bad)
    b = SimBackend(slowdowns=[("m#0/s0", 3.0, 5)])
    assert b.duration_ms(seg(), 4) == 1.0 and b.duration_ms(seg(), 5) == 3.0
    with pytest.raises(HxschedError, match="unknown segment"):
        SimBackend(slowdowns=[("x/s9", 2.0, 0)]).prepare([], inflight=1)
