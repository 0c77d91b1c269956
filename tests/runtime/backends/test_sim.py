"""The sim backend: stream semantics, virtual and real clocks, injected slowdowns."""

from __future__ import annotations

import time

import pytest

from hxsched.errors import HxschedError
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


def test_real_clock_sleeps_until_the_end():
    b = SimBackend(real_time=True)
    b.prepare([], inflight=1)
    ev = b.stream("gpu").enqueue(seg(ms=20.0), FrameState(0, {}), [])
    t0 = time.perf_counter()
    ev.wait()
    assert time.perf_counter() - t0 >= 0.015


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
