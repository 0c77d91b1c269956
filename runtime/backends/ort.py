"""``ort``: the embedded default. One ONNX Runtime CPU session per segment; each planned
accelerator becomes a worker thread with its own thread budget and a FIFO queue, so the same
plan runs anywhere: a run waits for its inputs' events, never for the whole pipeline."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from hxsched._compat import require
from hxsched.errors import HxschedError
from hxsched.runtime import nvtx
from hxsched.runtime.backends.base import FrameState, SegmentFailed
from hxsched.runtime.build import InstanceSpec, SegmentSpec

log = logging.getLogger(__name__)


class OrtEvent:
    def __init__(self) -> None:
        self._done = threading.Event()
        self.start_ms = 0.0
        self.end_ms = 0.0
        self.error: BaseException | None = None

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self) -> None:
        self._done.wait()
        if self.error is not None:
            raise SegmentFailed(str(self.error)) from None

    def fire(self, error: BaseException | None = None) -> None:
        self.error = error
        self._done.set()


class OrtStream:
    """A worker thread per accelerator: runs its queue in order, like a CUDA stream."""

    def __init__(self, backend: OrtBackend, accelerator: str) -> None:
        self.backend = backend
        self.accelerator = accelerator
        self._q: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(
            target=self._loop, name=f"hxsched-{accelerator}", daemon=True
        )
        self._thread.start()

    def enqueue(self, seg: SegmentSpec, frame: FrameState, waits: Sequence[OrtEvent]) -> OrtEvent:
        ev = OrtEvent()
        self._q.put((seg, frame, tuple(waits), ev))
        return ev

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            seg, frame, waits, ev = job
            for w in waits:
                w._done.wait()
            failed = next((w.error for w in waits if w.error is not None), None)
            if failed is not None:
                ev.fire(failed)
                continue
            session = self.backend.sessions[seg.name]
            tensors = frame.tensors[seg.instance]
            try:
                feeds = {name: tensors[name] for name in seg.inputs}
                with nvtx.annotate(f"{seg.name} f{frame.index}", self.accelerator):
                    ev.start_ms = self.backend.now_ms()
                    out = session.run(feeds)
                    ev.end_ms = self.backend.now_ms()
                tensors.update(out)
                # free what no later segment of this instance reads (bounded memory)
                for name in seg.inputs:
                    if name not in self.backend.still_needed[seg.name]:
                        tensors.pop(name, None)
                ev.fire()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                ev.end_ms = self.backend.now_ms()
                ev.fire(exc)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=5)


def measured_threads(plan: Any) -> int | None:
    """The intra-op thread count the plan's ONNX Runtime profiles were measured with (picked by
    ``hxsched profile --backend ort`` as the fastest here; the fewest if they differ): running
    with it reproduces the conditions the plan's times were measured in. None if no profile
    of the plan was measured on ONNX Runtime."""
    found: list[int] = []
    for inst in getattr(plan, "instances", ()):
        for src in inst.profile.sources.values():
            threads = src.versions.get("threads") if src.tool.startswith("onnxruntime") else None
            if threads is not None and str(threads).isdigit() and int(threads) > 0:
                found.append(int(threads))
    return min(found) if found else None


class OrtBackend:
    """Sessions with ``threads`` intra-op threads each; by default, the count the plan's measured
    profiles were timed with, else this machine's cores shared among the accelerator workers."""

    name = "ort"
    computes = True

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads
        self.sessions: dict[str, Any] = {}
        self.still_needed: dict[str, set[str]] = {}
        self._streams: dict[str, OrtStream] = {}
        self._t0 = time.perf_counter()
        self.thread_budget = 1

    def prepare(
        self,
        specs: Sequence[InstanceSpec],
        *,
        inflight: int,
    ) -> None:
        from hxsched.runtime.reference import OrtModel

        accels = sorted({s.accelerator for i in specs for s in i.segments})
        cores = os.cpu_count() or 1
        self.thread_budget = self.threads or max(1, cores // max(1, len(accels)))
        for inst in specs:
            for k, seg in enumerate(inst.segments):
                if seg.graph is None:
                    raise HxschedError(f"segment {seg.name} has no model: ort needs the ONNX file")
                log.info(
                    "ONNX Runtime session for %s (%s, %d thread(s))",
                    seg.name,
                    seg.accelerator,
                    self.thread_budget,
                )
                self.sessions[seg.name] = OrtModel(seg.graph, threads=self.thread_budget)
                later = {t for s in inst.segments[k + 1 :] for t in s.inputs}
                self.still_needed[seg.name] = later | set(inst.outputs)
        self._t0 = time.perf_counter()

    def stream(self, accelerator: str) -> OrtStream:
        if accelerator not in self._streams:
            self._streams[accelerator] = OrtStream(self, accelerator)
        return self._streams[accelerator]

    def now_ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1000.0

    def source(self) -> str:
        require("onnxruntime", extra="ort")
        import onnxruntime

        return (
            f"measured: ONNX Runtime {onnxruntime.__version__} CPUExecutionProvider on this "
            f"machine ({os.cpu_count()} cores, {self.thread_budget} thread(s) per worker)"
        )

    def close(self) -> None:
        for s in self._streams.values():
            s.close()
        self._streams.clear()
        for sess in self.sessions.values():
            sess.close()
        self.sessions.clear()
