"""``hxsched serve``: the long-running CT -> MRI + stroke service. Sources spool slices into
the journal; one worker claims them, prepares them, streams them through the planned pipeline
and writes the outputs; bad slices are quarantined with their reason; HTTP shows it all."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hxsched.errors import HxschedError
from hxsched.files import atomic_write
from hxsched.runtime.service.journal import Journal
from hxsched.runtime.service.metrics import Registry
from hxsched.runtime.service.pipeline import Pipeline, PipelineModel
from hxsched.runtime.service.sources import FolderSource, Gate, PhantomSource, ScpSource

log = logging.getLogger("hxsched.service")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; callers pass only ids, counts and reasons (never patient data)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        return json.dumps(out)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("hxsched")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _event(msg: str, **fields: Any) -> None:
    log.info(msg, extra={"fields": fields})


@dataclass
class ServiceOptions:
    output: Path
    backend: str | None = None
    input_dir: Path | None = None
    host: str = "127.0.0.1"
    http_port: int | None = 8080  # None: no HTTP
    scp_port: int | None = None  # override the pipeline's
    phantom: int | None = None  # add a phantom source of this many slices
    stop_after: int | None = None  # exit once this many slices are finished (demo, tests)
    inflight: int | None = None
    backend_opts: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Work:
    item: Any
    slice: Any
    prep: dict[str, Any]
    t_accept: float
    t_pre: float


class Service:
    def __init__(self, pipe: Pipeline, opts: ServiceOptions, say=None) -> None:
        self.pipe, self.opts = pipe, opts
        self.say = say or (lambda m: None)
        self.backend_name = opts.backend or pipe.backend
        self.out = opts.output
        self.stop_event = threading.Event()
        self.ready_reason = "starting"
        self.journal: Journal | None = None
        self.registry = Registry()
        self._metrics()
        self.latest_png: bytes | None = None
        self.latest: dict[str, Any] = {}
        self._seq = 0
        self._finished = 0
        self._t0 = time.monotonic()
        self._fps_window: list[float] = []
        self.executor = None
        self.alarms: list[dict[str, str]] = []
        self.sources: list[Any] = []
        self.http = None
        self.error: str | None = None
        self._worker: threading.Thread | None = None
        self._claimed = 0
        self._intake_other = 0
        self.final_counts: dict[str, int] = {}

    # -- metrics --------------------------------------------------------------------------
    def _metrics(self) -> None:
        r = self.registry
        self.m_in = r.counter("hxsched_frames_in_total", "slices accepted (durably spooled)")
        self.m_out = r.counter("hxsched_frames_out_total", "slices fully processed")
        self.m_quar = r.counter("hxsched_quarantined_total", "slices quarantined", ("reason",))
        self.m_dup = r.counter("hxsched_duplicates_total", "slices received again (deduplicated)")
        self.m_drop = r.counter("hxsched_dropped_total", "slices dropped by policy")
        self.m_fb = r.counter(
            "hxsched_fallback_events_total", "fallback/drift events", ("segment",)
        )
        self.m_stage = r.histogram("hxsched_stage_latency_seconds", "per-stage latency", ("stage",))
        self.m_e2e = r.histogram("hxsched_end_to_end_latency_seconds", "accept to outputs written")
        self.m_queue = r.gauge("hxsched_queue_depth", "slices waiting or in flight", ("queue",))
        self.m_busy = r.gauge("hxsched_accelerator_busy_ratio", "fraction busy", ("accelerator",))

    def _accepted(self, what: str) -> None:
        if what != "accepted":
            self._intake_other += 1  # finished at intake: a duplicate, or quarantined unread
        if what == "accepted":
            self.m_in.inc()
        elif what == "duplicate":
            self.m_dup.inc()
        elif what == "quarantined":
            self.m_quar.labels(reason="oversize").inc()

    # -- start ------------------------------------------------------------------------------
    def start(self) -> None:
        _fix_mmap_threshold()
        from hxsched.runtime.build import plan_instance_specs
        from hxsched.runtime.executor import Executor
        from hxsched.runtime.service.pipeline import plan_for_pipeline
        from hxsched.runtime.session import make_backend

        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HxschedError(
                f"cannot use the output folder: {exc.strerror}", path=self.out
            ) from None
        self.journal = Journal(self.out / "journal")
        requeued = self.journal.recover()
        if requeued:
            _event("recovered in-flight slices after a restart", requeued=requeued)
        self.m_queue.labels(queue="journal").set_function(self.journal.pending)
        if self.opts.http_port is not None:
            self._start_http()
        self.plan = plan_for_pipeline(self.pipe, self.out / "work", self.say)
        self.specs = plan_instance_specs(self.plan, with_models=self.backend_name != "sim")
        self.models = {m.name: m for m in self.pipe.models}
        for inst in self.plan.instances:
            if inst.model not in self.models:
                raise HxschedError(
                    f"plan instance {inst.name} is not a model of the pipeline", path=self.plan.path
                )
        backend = make_backend(self.backend_name, **self.opts.backend_opts)
        self.executor = Executor(
            self.plan,
            self.specs,
            backend,
            inflight=self.opts.inflight,
            expected_from_plan=self.backend_name != "ort",
            on_event=self._on_fallback,
            progress=self.say,
        )
        self.executor.prepare()
        gate = Gate(self.journal, self.pipe.queue, self.stop_event)
        for src in self.pipe.sources:
            if src.kind == "folder":
                folder = self.opts.input_dir or Path(src.path or "inbox")
                self.sources.append(
                    FolderSource(
                        folder,
                        self.journal,
                        gate,
                        max_bytes=self.pipe.max_bytes,
                        on_accept=self._accepted,
                    )
                )
            elif src.kind == "scp":
                scp = ScpSource(
                    self.journal,
                    gate,
                    host=self.opts.host,
                    port=self.opts.scp_port if self.opts.scp_port is not None else src.port,
                    ae_title=src.ae_title,
                    on_accept=self._accepted,
                )
                self.sources.append(scp)
            elif src.kind == "phantom":
                self.sources.append(
                    PhantomSource(
                        self.journal,
                        gate,
                        count=src.count,
                        interval_ms=src.interval_ms,
                        on_accept=self._accepted,
                    )
                )
        if self.opts.input_dir and not any(isinstance(s, FolderSource) for s in self.sources):
            self.sources.append(
                FolderSource(
                    self.opts.input_dir,
                    self.journal,
                    gate,
                    max_bytes=self.pipe.max_bytes,
                    on_accept=self._accepted,
                )
            )
        if self.opts.phantom:
            self.sources.append(
                PhantomSource(
                    self.journal,
                    gate,
                    count=self.opts.phantom,
                    interval_ms=0.0,
                    on_accept=self._accepted,
                )
            )
        for s in self.sources:
            s.start()
        self.scp_port = next((s.port for s in self.sources if isinstance(s, ScpSource)), None)
        self._worker = threading.Thread(target=self._work_loop, name="hxsched-worker", daemon=True)
        self._worker.start()
        self.ready_reason = ""
        _event(
            "service ready",
            backend=self.backend_name,
            plan=str(self.plan.path),
            instances=[i.name for i in self.plan.instances],
            scp_port=self.scp_port,
            http_port=self.http.port if self.http else None,
        )

    def _start_http(self) -> None:
        from hxsched.runtime.service.http import StatusServer

        self.http = StatusServer(
            self.opts.host,
            self.opts.http_port,
            registry=self.registry,
            status=self.status,
            ready=self.ready,
            live=self.live,
            latest_png=lambda: self.latest_png,
        )
        self.http.start()

    # -- the worker -----------------------------------------------------------------------
    def _frames(self):
        from hxsched.runtime.service.dicom_io import BadInput

        assert self.journal is not None
        while not self.stop_event.is_set():
            handled = self._claimed + self._intake_other
            if self.opts.stop_after is not None and handled >= self.opts.stop_after:
                return
            items = self.journal.claim(1)
            if not items:
                yield None  # nothing waiting: let the pipeline finish what is in flight
                self.stop_event.wait(0.05)
                continue
            item = items[0]
            self._claimed += 1
            t0 = time.monotonic()
            try:
                sl, prep, inputs = self._prepare(item)
            except BadInput as exc:
                self._quarantine(item, exc.reason, exc.message)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad slice never stops the service
                self._quarantine(item, "processing-error", f"{type(exc).__name__}: {exc}")
                continue
            self.m_stage.labels(stage="prepare").observe(time.monotonic() - t0)
            yield (_Work(item, sl, prep, item.accepted_at, time.monotonic()), inputs)

    def _quarantine(self, item, reason: str, message: str) -> None:
        assert self.journal is not None
        self.journal.quarantine(item.id, reason, message)
        self.m_quar.labels(reason=reason).inc()
        self._finished += 1
        _event("slice quarantined", item=item.id, reason=reason)

    def _work_loop(self) -> None:
        self._claimed = 0
        try:
            self.executor.run(self._frames(), on_output=self._emit, on_error=self._failed)
        except Exception as exc:  # noqa: BLE001 - reported on /health and in the log
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready_reason = f"pipeline failed: {self.error}"
            log.error("pipeline failed", extra={"fields": {"error": self.error}})
        finally:
            # the worker is the service: when it ends, the process ends (exit 1 on failure),
            # and a supervisor's restart finishes what is in flight from the journal
            self.stop_event.set()

    def _failed(self, work, index: int, message: str) -> None:
        self._quarantine(work.item, "inference-error", message)

    def live(self) -> tuple[bool, str]:
        if self._worker is not None and not self._worker.is_alive() and self.error:
            return False, f"worker stopped: {self.error}"
        return True, "ok"

    # -- pre- and post-processing -------------------------------------------------------------
    def _prepare(self, item):
        from hxsched.runtime.service.dicom_io import read_slice
        from hxsched.runtime.service.imaging import (
            letterbox,
            to_pix2pix_input,
            window_hu,
        )

        sl = read_slice(item.path, max_bytes=self.pipe.max_bytes)
        prep: dict[str, Any] = {}
        inputs: dict[str, dict[str, np.ndarray]] = {}
        for spec in self.specs:
            m: PipelineModel = self.models[self.plan_model(spec.name)]
            win = window_hu(sl.pixels, preset=m.window) if sl.is_hu else _normalise01(sl.pixels)
            prep.setdefault("ct01", win)
            if m.role == "synth":
                arr = to_pix2pix_input(win, channels=m.channels, size=m.size)
            else:
                boxed, info = letterbox(win, size=m.size)
                prep[f"letterbox:{spec.name}"] = info
                arr = _to_nchw3(boxed)
            name = spec.inputs[0] if spec.inputs else "input"
            inputs[spec.name] = {name: arr}
        return sl, prep, inputs

    def plan_model(self, instance: str) -> str:
        return next(i.model for i in self.plan.instances if i.name == instance)

    def _emit(self, result) -> None:
        from hxsched.runtime.service.dicom_io import write_secondary_capture
        from hxsched.runtime.service.imaging import (
            decode_yolov8,
            detections_to_json,
            pix2pix_output_to_uint8,
            preview_png,
        )

        work: _Work = result.tag
        item, sl = work.item, work.slice
        # wall clock from hand-over to the pipeline until its outputs are back (the backend's
        # own clock may be virtual on sim)
        self.m_stage.labels(stage="inference").observe(time.monotonic() - work.t_pre)
        t0 = time.monotonic()
        outputs: dict[str, str] = {}
        mri = None
        dets: list = []
        try:
            h, w = sl.pixels.shape[:2]
            for k, spec in enumerate(self.specs):
                m = self.models[self.plan_model(spec.name)]
                out = self._output_of(result, spec, m)
                if m.role == "synth":
                    img = pix2pix_output_to_uint8(out, size=(h, w))
                    mri = img if mri is None else mri
                    if self.pipe.sinks.get("dicom"):
                        path = self.out / "dicom" / spec.name.replace("#", "_") / f"{item.id}.dcm"
                        desc = m.series_description or f"hxsched {m.name} - NOT FOR DIAGNOSTIC USE"
                        if self.backend_name == "sim":
                            desc += " [sim backend: CT passed through, not a model output]"
                        write_secondary_capture(
                            img,
                            sl,
                            path,
                            series_uid=self._series_uid(sl, spec.name),
                            series_number=1001 + k,
                            series_description=desc,
                        )
                        outputs[f"dicom:{spec.name}"] = str(path)
                else:
                    info = work.prep[f"letterbox:{spec.name}"]
                    found = decode_yolov8(out, info, conf=m.conf, iou=m.iou, max_det=m.max_det)
                    dets.extend(found)
                    if self.pipe.sinks.get("detections"):
                        doc = detections_to_json(found, info)
                        doc.update(
                            {
                                "item": item.id,
                                "model": m.name,
                                "instance": spec.name,
                                "backend": self.backend_name,
                                "note": "screening aid from synthetic weights; not for diagnosis",
                            }
                        )
                        path = (
                            self.out
                            / "detections"
                            / f"{item.id}.{spec.name.replace('#', '_')}.json"
                        )
                        atomic_write(path, (json.dumps(doc, indent=1) + "\n").encode())
                        outputs[f"detections:{spec.name}"] = str(path)
            ct8 = work.prep["ct01"]
            png = preview_png(
                ct8, mri if mri is not None else (np.clip(ct8, 0, 1) * 255).astype(np.uint8), dets
            )
            if self.pipe.sinks.get("previews"):
                path = self.out / "previews" / f"{item.id}.png"
                atomic_write(path, png)
                outputs["preview"] = str(path)
        except Exception as exc:  # noqa: BLE001 - a slice that cannot be written is quarantined
            for p in outputs.values():  # no partial outputs for a PACS watcher to pick up
                Path(p).unlink(missing_ok=True)
            self._quarantine(item, "output-error", f"{type(exc).__name__}: {exc}")
            return
        assert self.journal is not None
        try:
            self.journal.complete(item.id, outputs)
        except Exception as exc:  # noqa: BLE001 - the journal is the source of truth: stop
            raise HxschedError(f"journal cannot record a finished slice: {exc}") from None
        self.m_stage.labels(stage="write").observe(time.monotonic() - t0)
        now = time.time()
        self.m_e2e.observe(max(0.0, now - work.t_accept))
        self.m_out.inc()
        self._finished += 1
        self._seq += 1
        self.latest_png = png
        self.latest = {"seq": self._seq, "name": item.id, "findings": len(dets)}
        self._fps_window.append(time.monotonic())
        self._fps_window = self._fps_window[-200:]
        if self._seq % 20 == 0:
            for acc, frac in self.executor.summary().busy.items():
                self.m_busy.labels(accelerator=acc).set(frac)
        _event(
            "slice done", item=item.id, detections=len(dets), latency_ms=round(result.latency_ms, 2)
        )

    def _output_of(self, result, spec, m: PipelineModel) -> np.ndarray:
        got = result.outputs.get(spec.name) or {}
        if got:
            return next(iter(got.values()))
        # sim computes nothing: pass the prepared CT through (labelled so in every output)
        arr = result.inputs[spec.name]
        x = next(iter(arr.values()))
        if m.role == "synth":
            return x
        return np.zeros((1, 84, 8400), np.float32)

    def _series_uid(self, sl, instance: str) -> str:
        from pydicom.uid import generate_uid

        base = (sl.meta or {}).get("SeriesInstanceUID") or sl.log_id
        return generate_uid(entropy_srcs=["hxsched-synthetic", str(base), instance])

    # -- fallback -----------------------------------------------------------------------------
    def _on_fallback(self, event) -> None:
        self.m_fb.labels(segment=event.segment).inc()
        self.alarms.append({"level": "warning", "message": f"{event.segment}: {event.reason}"})
        self.alarms = self.alarms[-20:]
        log.warning(
            "fallback/drift event",
            extra={"fields": {"segment": event.segment, "source": event.source}},
        )

    # -- status -------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        if self.ready_reason:
            return False, self.ready_reason
        ex = self.executor
        if ex is not None and any(d is not None and d.alarm for d in list(ex.detectors.values())):
            return False, "fallback/drift alarm active"
        return True, "ready"

    def counts(self) -> dict[str, int]:
        return self.journal.counts() if self.journal else dict(self.final_counts)

    def status(self) -> dict[str, Any]:
        c = self.counts()
        win = self._fps_window
        fps = (len(win) - 1) / (win[-1] - win[0]) if len(win) > 2 and win[-1] > win[0] else 0.0
        e2e = self.m_e2e
        busy = self.executor.summary().busy if self.executor and self._seq else {}
        return {
            "state": "ready" if self.ready()[0] else self.ready()[1],
            "pipeline": self.pipe.name,
            "backend": self.backend_name,
            "fps": round(fps, 2),
            "frames_in": c.get("accepted", 0) + c.get("processing", 0) + c.get("done", 0),
            "frames_out": c.get("done", 0),
            "pending": self.journal.pending() if self.journal else 0,
            "quarantined": c.get("quarantined", 0),
            "dropped": c.get("dropped", 0),
            "duplicates": c.get("duplicates", 0),
            "uptime_s": round(time.monotonic() - self._t0, 1),
            "latency_ms": {"p50": _ms(e2e.quantile(0.5)), "p99": _ms(e2e.quantile(0.99))},
            "latency_note": "accept to outputs written, wall clock, histogram estimate since start",
            "queues": {"journal": self.journal.pending() if self.journal else 0},
            "accelerators": {k: round(v, 3) for k, v in busy.items()},
            "alarms": list(self.alarms),
            "latest": dict(self.latest),
            "numbers": self.executor.backend.source() if self.executor else "",
        }

    # -- stop -----------------------------------------------------------------------------------
    def wait(self, timeout_s: float | None = None) -> bool:
        return self.stop_event.wait(timeout_s)

    def stop(self, drain_s: float = 30.0) -> None:
        """Stop taking slices, finish what is in flight, close everything."""
        self.stop_event.set()
        for s in self.sources:
            if isinstance(s, ScpSource):
                s.stop()
            elif s.is_alive():
                s.join(timeout=5.0)
        if self._worker is not None:
            self._worker.join(timeout=drain_s)
            if self._worker.is_alive():  # still busy: leave it the journal, the restart redoes it
                log.error("worker did not drain in time; in-flight slices are redone on restart")
                return
        if self.executor is not None:
            self.executor.close()
        if self.http is not None:
            self.http.stop()
        if self.journal is not None:
            self.final_counts = self.journal.counts()
            self.journal.close()
            self.journal = None

    def install_signal_handlers(self) -> None:
        def handler(signum, frame) -> None:
            _event("signal received: draining", signal=signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _fix_mmap_threshold(nbytes: int = 256 << 10) -> None:
    """Keep large allocations (every slice's arrays, 0.25-5 MB) in their own mappings, which go
    back to the OS when freed. glibc otherwise raises this threshold after the first such free
    and serves later arrays from the heap, where a long run leaves them fragmented: RSS creeps."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, nbytes)
    except (OSError, AttributeError):
        pass


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def _normalise01(px: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(px)), float(np.max(px))
    if hi <= lo:
        return np.zeros_like(px, dtype=np.float32)
    return ((px - lo) / (hi - lo)).astype(np.float32)


def _to_nchw3(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, np.float32)
    if a.ndim == 2:
        a = np.repeat(a[None], 3, axis=0)
    elif a.ndim == 3 and a.shape[-1] in (1, 3):
        a = a.transpose(2, 0, 1)
        if a.shape[0] == 1:
            a = np.repeat(a, 3, axis=0)
    return np.ascontiguousarray(a[None])
