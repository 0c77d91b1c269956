"""``sim``: a complete fake device driven by the plan's segment times. Each stream runs its
segments back to back in enqueue order, a segment starting when its inputs' events have fired
(the semantics of CUDA streams and events); the clock is virtual (tests) or real (demos)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hxsched.errors import HxschedError
from hxsched.runtime.backends.base import FrameState
from hxsched.runtime.build import InstanceSpec, SegmentSpec


@dataclass
class SimEvent:
    start_ms: float
    end_ms: float
    backend: SimBackend

    def done(self) -> bool:
        return self.backend.now_ms() >= self.end_ms

    def wait(self) -> None:
        self.backend.wait_until(self.end_ms)


class SimStream:
    def __init__(self, backend: SimBackend, accelerator: str) -> None:
        self.backend = backend
        self.accelerator = accelerator
        self.free_at = 0.0

    def enqueue(self, seg: SegmentSpec, frame: FrameState, waits: Sequence[SimEvent]) -> SimEvent:
        b = self.backend
        start = max([self.free_at, b.now_ms(), *(w.end_ms for w in waits)])
        end = start + b.duration_ms(seg, frame.index)
        self.free_at = end
        return SimEvent(start, end, b)


def parse_slowdown(text: str) -> tuple[str, float, int]:
    """``pix2pix#0/s1=1.5@200``: segment, factor, from which frame (default 0)."""
    name, sep, rest = text.partition("=")
    factor_s, _, frame_s = rest.partition("@")
    try:
        factor, frame = float(factor_s), int(frame_s or 0)
    except ValueError:
        factor, frame = math.nan, -1
    if not sep or not name or not factor > 0 or frame < 0:
        raise HxschedError(
            f"--slow {text!r}: expected SEGMENT=FACTOR[@FRAME], e.g. pix2pix#0/s1=1.5@200"
        )
    return name, factor, frame


class SimBackend:
    name = "sim"
    computes = False

    def __init__(
        self,
        *,
        real_time: bool = False,
        time_scale: float = 1.0,
        jitter: float = 0.0,
        seed: int = 0,
        slowdowns: Sequence[tuple[str, float, int]] = (),
    ) -> None:
        if time_scale <= 0 or jitter < 0:
            raise HxschedError("sim: --time-scale must be > 0 and --jitter >= 0")
        self.real_time = real_time
        self.time_scale = time_scale
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)
        self.slowdowns = {n: (f, k) for n, f, k in slowdowns}
        self._streams: dict[str, SimStream] = {}
        self._t0 = time.perf_counter()
        self._vnow = 0.0

    def prepare(
        self,
        specs: Sequence[InstanceSpec],
        *,
        inflight: int,
    ) -> None:
        names = {s.name for i in specs for s in i.segments}
        unknown = sorted(set(self.slowdowns) - names)
        if unknown:
            raise HxschedError(
                f"--slow names unknown segment(s) {unknown}; the plan has {sorted(names)}"
            )
        self._t0 = time.perf_counter()
        self._vnow = 0.0

    def duration_ms(self, seg: SegmentSpec, frame: int) -> float:
        d = seg.expected_ms * self.time_scale
        slow = self.slowdowns.get(seg.name)
        if slow is not None and frame >= slow[1]:
            d *= slow[0]
        if self.jitter:
            d *= float(self.rng.lognormal(0.0, self.jitter))
        return d

    def stream(self, accelerator: str) -> SimStream:
        if accelerator not in self._streams:
            self._streams[accelerator] = SimStream(self, accelerator)
        return self._streams[accelerator]

    def now_ms(self) -> float:
        if self.real_time:
            return (time.perf_counter() - self._t0) * 1000.0
        return self._vnow

    def wait_until(self, t_ms: float) -> None:
        if not self.real_time:
            self._vnow = max(self._vnow, t_ms)
            return
        while True:
            left = t_ms - self.now_ms()
            if left <= 0:
                return
            if left > 1.0:
                time.sleep((left - 0.5) / 1000.0)
            elif left > 0.05:
                time.sleep(0)  # yield; then spin the last stretch for precision

    def source(self) -> str:
        clock = "real sleeps" if self.real_time else "virtual clock"
        return f"simulated from the plan's segment times ({clock}, time scale {self.time_scale})"

    def close(self) -> None:
        self._streams.clear()
