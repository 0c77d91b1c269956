"""The pipelined executor: one stream per accelerator, frames released one plan period apart and
each segment enqueued at its slot in the plan's timeline (software pipelining), a segment waiting
for its input by event, N frames in flight with back-pressure, outputs in frame order,
per-segment drift watched against the expected times."""

from __future__ import annotations

import contextlib
import heapq
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hxsched.errors import HxschedError
from hxsched.runtime import nvtx
from hxsched.runtime.backends.base import Backend, Event, FrameState, SegmentFailed
from hxsched.runtime.backends.trt.fallback import DriftDetector, FallbackEvent
from hxsched.runtime.build import InstanceSpec
from hxsched.scheduler.planning.plan import Plan

WINDOW = 10_000  # latest samples kept per statistic: long runs stay bounded in memory
MAX_WARMUP = 20  # frames left out of the steady-state rate


@dataclass(frozen=True)
class Slot:
    """Where one segment sits in the steady-state period: its offset, how many periods after
    its frame's release it runs (``lag``), and its start and end counted from that release."""

    instance: int
    segment: int
    accelerator: str
    offset_ms: float
    lag: int
    at_ms: float = 0.0
    end_ms: float = 0.0


def issue_schedule(plan: Plan, specs: Sequence[InstanceSpec]) -> list[Slot]:
    """The plan's timeline as issue slots: segment (i, s) of frame f is issued in period
    f + lag, at its offset. Throughput plans give the steady-state cyclic schedule of
    ``simulate.evaluate_throughput``; latency plans the one-frame schedule in the solver's order
    (all lags 0, the period being the frame's makespan: one frame at a time)."""
    res = plan.resolution_ms or 0.01
    period = round(plan.predicted.period_ms / res)
    starts = {(t.instance, t.segment): t for t in plan.timeline}
    slots = []
    for i, inst in enumerate(specs):
        t = 0
        for s, seg in enumerate(inst.segments):
            rec = starts.get((inst.name, s))
            if rec is None or period <= 0:  # no timeline: chain order, one period per frame
                d = max(1, round(seg.expected_ms / res))
                slots.append(Slot(i, s, seg.accelerator, t * res, 0, t * res, (t + d) * res))
                t += d
                continue
            off = round(rec.start_ms / res)
            end = round(rec.end_ms / res)
            start = t + (off - t) % period
            t = start + (end - off)
            slots.append(
                Slot(i, s, seg.accelerator, off * res, start // period, start * res, t * res)
            )
    return sorted(slots, key=lambda x: (x.lag, x.offset_ms, x.instance, x.segment))


def frames_needed(frame_ms: float, period_ms: float) -> int:
    """Frames a schedule keeps in flight: a frame released every period stays ``frame_ms``."""
    if period_ms <= 0:
        return 1
    return max(1, math.ceil(frame_ms / period_ms - 1e-6))


def inflight_cost(inflight: int, need: int, frame_ms: float, period_ms: float) -> str:
    """What running fewer frames in flight than the schedule keeps costs (empty: nothing)."""
    if inflight >= need:
        return ""
    fps = 1000.0 / period_ms
    capped = min(fps, inflight * 1000.0 / frame_ms)
    return (
        f"--inflight {inflight} is below the {need} frames this schedule keeps in flight (a frame "
        f"takes {frame_ms:.3f} ms, one starts every {period_ms:.3f} ms): running {inflight} in "
        f"flight caps the rate at about {capped:.1f} fps instead of the plan's {fps:.1f}"
    )


@dataclass
class FrameResult:
    index: int
    tag: Any
    outputs: dict[str, dict[str, Any]]  # instance -> output name -> array (empty on sim)
    inputs: dict[str, dict[str, Any]]
    admitted_ms: float
    done_ms: float
    segment_ms: dict[str, float]  # segment name -> run time
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # segment -> start, end
    enqueue: dict[str, tuple[float, float]] = field(default_factory=dict)  # host, if recorded

    @property
    def latency_ms(self) -> float:
        return self.done_ms - self.admitted_ms


@dataclass
class SegmentStats:
    name: str
    accelerator: str
    expected_ms: float
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))  # latest runs
    runs: int = 0

    def add(self, ms: float) -> None:
        self.samples.append(ms)
        self.runs += 1

    def to_dict(self) -> dict[str, Any]:
        med = statistics.median(self.samples) if self.samples else None
        return {
            "accelerator": self.accelerator,
            "runs": self.runs,
            "median_ms": round(med, 4) if med is not None else None,
            "expected_ms": round(self.expected_ms, 4),
            "ratio": round(med / self.expected_ms, 3) if med and self.expected_ms > 0 else None,
        }


@dataclass
class RunStats:
    backend: str
    source: str
    frames: int
    wall_ms: float
    fps: float
    steady_fps: float
    latency_ms: dict[str, float]
    busy: dict[str, float]  # fraction of the run each accelerator was busy
    segments: dict[str, SegmentStats]
    fallback_events: list[FallbackEvent]
    inflight: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "source": self.source,
            "frames": self.frames,
            "wall_ms": round(self.wall_ms, 3),
            "fps": round(self.fps, 2),
            "steady_fps": round(self.steady_fps, 2),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "busy": {k: round(v, 3) for k, v in self.busy.items()},
            "segments": {k: v.to_dict() for k, v in self.segments.items()},
            "fallback_events": [asdict(e) for e in self.fallback_events],
            "inflight": self.inflight,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class _InFlight:
    state: FrameState
    events: dict[tuple[int, int], Event] = field(default_factory=dict)
    enqueue: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)  # host
    last_issue_ms: float = 0.0  # when its last segment is due to be enqueued


class Executor:
    """Runs frames through every instance of a plan on one backend.

    ``expected``: per segment name the time drift is judged against (default: the plan's times
    when the backend measures the plan's device, else the median of each segment's first runs).
    """

    def __init__(
        self,
        plan: Plan,
        specs: Sequence[InstanceSpec],
        backend: Backend,
        *,
        inflight: int | None = None,
        drift: bool = True,
        drift_threshold: float = 1.3,
        drift_sustain: int = 20,
        expected_from_plan: bool = True,
        on_event: Callable[[FallbackEvent], None] | None = None,
        record_enqueue: bool = False,
    ) -> None:
        self.plan = plan
        self.record_enqueue = record_enqueue  # host enqueue times per segment (bench)
        self.specs = list(specs)
        self.backend = backend
        self.slots = issue_schedule(plan, self.specs)
        self.max_lag = max((s.lag for s in self.slots), default=0)
        self.period_ms = float(plan.predicted.period_ms)
        self.frame_ms = max((s.end_ms for s in self.slots), default=0.0)  # one frame, released
        self.need = frames_needed(self.frame_ms, self.period_ms)
        if inflight is not None and inflight < 1:
            raise HxschedError(f"--inflight {inflight}: expected at least 1 frame in flight")
        # default: one frame beyond what the schedule needs, slack for host wake-up jitter on a
        # real clock (frames are released at the plan's period, so slack adds no latency)
        self.inflight = inflight if inflight is not None else self.need + 1
        self.inflight_note = inflight_cost(self.inflight, self.need, self.frame_ms, self.period_ms)
        self.on_event = on_event
        self._drift_on = drift
        self._drift_threshold = drift_threshold
        self._drift_sustain = drift_sustain
        self._expected_from_plan = expected_from_plan
        self.detectors: dict[str, DriftDetector | None] = {}
        self._warm: dict[str, list[float]] = {}
        self.stats = {
            s.name: SegmentStats(s.name, s.accelerator, s.expected_ms)
            for inst in self.specs
            for s in inst.segments
        }
        self.events: deque[FallbackEvent] = deque(maxlen=1000)
        self._heap: list[tuple[float, int, int, int]] = []  # (issue time, frame, inst, seg)
        self._release: float | None = None  # the latest frame's release time
        self._drained = False  # drained since that release: the next one starts a new grid
        self._frames: deque[_InFlight] = deque()
        self._by_index: dict[int, _InFlight] = {}
        self._next = 0
        self._latencies: deque[float] = deque(maxlen=WINDOW)  # percentiles over the latest
        self._early_done: list[float] = []  # the first frames' completion times (warm-up)
        self._n_done = 0
        self._last_done = 0.0
        self._first_admit: float | None = None
        self._first_start: float | None = None
        self._busy: dict[str, float] = {}
        self._prepared = False
        self._on_error: Callable[[Any, int, str], None] | None = None

    # -- set-up ---------------------------------------------------------------------------
    def prepare(self) -> None:
        if not self._prepared:
            self.backend.prepare(self.specs, inflight=self.inflight)
            self._prepared = True

    def close(self) -> None:
        self.backend.close()

    # -- the loop -------------------------------------------------------------------------
    def run(
        self,
        frames: Iterable[dict[str, dict[str, Any]] | tuple[Any, dict] | None],
        on_output: Callable[[FrameResult], None] | None = None,
        on_error: Callable[[Any, int, str], None] | None = None,
    ) -> RunStats:
        """Feed ``frames`` (per instance its input arrays; ``(tag, inputs)`` to carry a handle;
        ``None`` = nothing to do now: finish what is in flight; a source about to block yields
        it first). Frames are released one plan period apart (or on arrival, if later), and each
        segment is enqueued at its slot in the plan's timeline. Returns the run's statistics.

        A frame whose segment fails goes to ``on_error(tag, index, message)`` and the others
        carry on; without ``on_error`` the first failure ends the run with an error."""
        self.prepare()
        self._on_error = on_error
        it: Iterator = iter(frames)
        # a backend with a per-thread device context (trt) makes it current on this thread
        bind = getattr(self.backend, "on_this_thread", None)
        thread = contextlib.ExitStack()
        if bind is not None:
            thread.enter_context(bind())
        try:
            while True:
                item = next(it, StopIteration)
                if item is StopIteration:
                    break
                if item is None:
                    self._drain(on_output)
                    continue
                tag, inputs = item if isinstance(item, tuple) else (None, item)
                self._admit(inputs, tag, on_output)
                self._collect_ready(on_output)
            self._drain(on_output)
        except SegmentFailed as exc:
            raise HxschedError(f"a segment failed on {self.backend.name}: {exc}") from None
        finally:
            thread.close()
        return self.summary()

    def _admit(self, inputs: dict[str, dict[str, Any]], tag: Any, on_output) -> None:
        """Release the next frame one period after the previous one (or now, if later), once
        fewer than ``inflight`` frames are in flight; queue its segments at their slot times."""
        now = self.backend.now_ms()
        target = now if self._release is None else self._release + self.period_ms
        self._issue_until(target)
        self._wait_until(target)
        self._collect_ready(on_output)
        held = self._drained or len(self._frames) >= self.inflight
        while len(self._frames) >= self.inflight:
            self._collect_oldest(on_output)
        now = self.backend.now_ms()
        # on the period's grid, even a little late (host wake-up jitter, real clocks); held
        # back (too few frames in flight, a drain, a slow source): from now on
        release = now if held or now - target >= self.period_ms else target
        self._release, self._drained = release, False
        f = self._next
        self._next += 1
        if self._first_admit is None:
            self._first_admit = release
        item = _InFlight(FrameState(f, inputs, release, tag=tag))
        item.last_issue_ms = release + max((sl.at_ms for sl in self.slots), default=0.0)
        self._frames.append(item)
        self._by_index[f] = item
        for sl in self.slots:
            heapq.heappush(self._heap, (release + sl.at_ms, f, sl.instance, sl.segment))
        self._issue_until(release)

    def _wait_until(self, t_ms: float) -> None:
        """Hold the host until ``t_ms`` on the backend's clock (virtual on sim: no wait)."""
        wait = getattr(self.backend, "wait_until", None)
        if wait is not None:
            wait(t_ms)
            return
        while (left := t_ms - self.backend.now_ms()) > 0.05:
            time.sleep(max(0.0, left - 0.05) / 1000.0)

    def _issue_until(self, t_ms: float) -> None:
        """Enqueue, in time order and each at its slot time, every pending segment run due at or
        before ``t_ms`` (``math.inf``: all of them)."""
        while self._heap and self._heap[0][0] <= t_ms:
            at, f, i, s = heapq.heappop(self._heap)
            self._wait_until(at)
            item = self._by_index[f]
            seg = self.specs[i].segments[s]
            waits = [item.events[(i, s - 1)]] if s > 0 else []
            t0 = self.backend.now_ms() if self.record_enqueue else 0.0
            ev = self.backend.stream(seg.accelerator).enqueue(seg, item.state, waits)
            if self.record_enqueue:
                item.enqueue[(i, s)] = (t0, self.backend.now_ms())
            item.events[(i, s)] = ev

    def _frame_events(self, item: _InFlight) -> list[tuple[str, str, Event]]:
        out = []
        for i, inst in enumerate(self.specs):
            for s, seg in enumerate(inst.segments):
                out.append((seg.name, seg.accelerator, item.events[(i, s)]))
        return out

    def _collect_ready(self, on_output) -> None:
        while self._frames and self._complete(self._frames[0]):
            self._finish(self._frames.popleft(), on_output)

    def _complete(self, item: _InFlight) -> bool:
        n = sum(len(inst.segments) for inst in self.specs)
        return len(item.events) == n and all(e.done() for e in item.events.values())

    def _collect_oldest(self, on_output) -> None:
        self._issue_until(self._frames[0].last_issue_ms)
        self._finish(self._frames.popleft(), on_output)

    def _drain(self, on_output) -> None:
        self._drained = True
        self._issue_until(math.inf)
        while self._frames:
            self._collect_oldest(on_output)

    def _finish(self, item: _InFlight, on_output) -> None:
        evs = self._frame_events(item)
        try:
            for _, _, ev in evs:
                ev.wait()
        except SegmentFailed as exc:
            del self._by_index[item.state.index]
            failed = next((n for n, _, e in evs if getattr(e, "error", None) is not None), "?")
            message = f"segment {failed} failed on frame {item.state.index}: {exc}"
            if self._on_error is None:
                raise HxschedError(f"{self.backend.name}: {message}") from None
            self._on_error(item.state.tag, item.state.index, message)
            return
        done = max(ev.end_ms for _, _, ev in evs)
        first = min(ev.start_ms for _, _, ev in evs)
        if self._first_start is None or first < self._first_start:
            self._first_start = first
        seg_ms, spans = {}, {}
        for name, acc, ev in evs:
            d = max(0.0, ev.end_ms - ev.start_ms)
            seg_ms[name] = d
            spans[name] = (ev.start_ms, ev.end_ms)
            self.stats[name].add(d)
            self._busy[acc] = self._busy.get(acc, 0.0) + d
            self._watch(name, d, item.state.index)
        del self._by_index[item.state.index]
        self._latencies.append(done - item.state.admitted_ms)
        self._n_done += 1
        self._last_done = done
        if len(self._early_done) < MAX_WARMUP:
            self._early_done.append(done)
        if on_output is not None:
            outputs = {}
            if self.backend.computes:
                for inst in self.specs:
                    tensors = item.state.tensors.get(inst.name, {})
                    outputs[inst.name] = {o: tensors[o] for o in inst.outputs if o in tensors}
            with nvtx.annotate(f"frame {item.state.index} out"):
                on_output(
                    FrameResult(
                        item.state.index,
                        item.state.tag,
                        outputs,
                        item.state.inputs,
                        item.state.admitted_ms,
                        done,
                        seg_ms,
                        spans,
                        self._enqueue_by_name(item),
                    )
                )

    def _enqueue_by_name(self, item: _InFlight) -> dict[str, tuple[float, float]]:
        return {self.specs[i].segments[s].name: t for (i, s), t in item.enqueue.items()}

    # -- drift ----------------------------------------------------------------------------
    def _watch(self, name: str, ms: float, frame: int) -> None:
        if not self._drift_on:
            return
        if name in self.detectors and self.detectors[name] is None:
            return
        det = self.detectors.get(name)
        if det is None:
            if self._expected_from_plan:
                expected = self.stats[name].expected_ms
            else:  # the plan's device is not this one: judge drift against the warm-up
                warm = self._warm.setdefault(name, [])
                warm.append(ms)
                if len(warm) < 10:
                    return
                expected = statistics.median(warm[2:])
            if expected <= 0:  # nothing to judge against (e.g. a zero-time segment)
                self.detectors[name] = None
                return
            det = DriftDetector(
                expected, threshold=self._drift_threshold, sustain=self._drift_sustain, segment=name
            )
            self.detectors[name] = det
        event = det.update(ms)
        if event is not None:
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)

    # -- results --------------------------------------------------------------------------
    def summary(self) -> RunStats:
        n = self._n_done
        if n == 0:
            return RunStats(
                self.backend.name,
                self.backend.source(),
                0,
                0.0,
                0.0,
                0.0,
                {"p50": 0.0, "p99": 0.0, "mean": 0.0},
                {},
                self.stats,
                list(self.events),
                self.inflight,
            )
        start = self._first_admit or 0.0
        wall = max(self._last_done - start, 1e-9)
        warm = min(max(1, n // 5), MAX_WARMUP) if n > 5 else 0
        if warm and n - warm >= 2:
            span = self._last_done - self._early_done[warm - 1]
            steady = (n - warm) / span * 1000.0 if span > 0 else 0.0
        else:
            steady = n / wall * 1000.0
        busy_span = max(self._last_done - (self._first_start or start), 1e-9)
        return RunStats(
            backend=self.backend.name,
            source=self.backend.source(),
            frames=n,
            wall_ms=wall,
            fps=n / wall * 1000.0,
            steady_fps=steady,
            latency_ms={
                "p50": percentile(self._latencies, 50),
                "p99": percentile(self._latencies, 99),
                "mean": statistics.fmean(self._latencies),
            },
            busy={a: min(1.0, b / busy_span) for a, b in sorted(self._busy.items())},
            segments=self.stats,
            fallback_events=list(self.events),
            inflight=self.inflight,
        )
