"""``hxsched serve``: the long-running service. Sources spool slices into the journal; one worker
claims them, has each model's role prepare them, streams them through the planned pipeline and
has the roles write the outputs; bad slices are quarantined with their reason; HTTP shows it all."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hxsched._compat import require
from hxsched.errors import HxschedError
from hxsched.files import atomic_write
from hxsched.runtime.service.dicom_io import BadInput, Reason, Slice, read_slice
from hxsched.runtime.service.imaging import preview_png, window_hu
from hxsched.runtime.service.journal import Item, Journal
from hxsched.runtime.service.metrics import Registry
from hxsched.runtime.service.pipeline import Backend, Pipeline, SourceKind
from hxsched.runtime.service.roles import RoleResult, SliceContext, role_handler
from hxsched.runtime.service.sources import FolderSource, Gate, Intake, PhantomSource, ScpSource

if TYPE_CHECKING:
    from hxsched.runtime.executor import Executor
    from hxsched.runtime.service.http import StatusServer

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
    backend: Backend | None = None
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
    item: Item
    slice: Slice
    ct01: np.ndarray  # the first model's CT window, for the preview
    infos: dict[str, Any]  # per instance: what its role's post-processing needs
    t_accept: float
    t_pre: float


class Service:
    def __init__(
        self, pipe: Pipeline, opts: ServiceOptions, say: Callable[[str], None] | None = None
    ) -> None:
        """``say`` is not used (progress is logged); still accepted from older callers."""
        self.pipe, self.opts = pipe, opts
        self.backend_name = Backend(opts.backend or pipe.backend)
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
        self.executor: Executor | None = None
        self.alarms: list[dict[str, str]] = []
        self.sources: list[Any] = []
        self.http: StatusServer | None = None
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

    def _accepted(self, what: Intake) -> None:
        if what != Intake.ACCEPTED:
            self._intake_other += 1  # finished at intake: a duplicate, or quarantined unread
        if what == Intake.ACCEPTED:
            self.m_in.inc()
        elif what == Intake.DUPLICATE:
            self.m_dup.inc()
        elif what == Intake.QUARANTINED:
            self.m_quar.labels(reason=Reason.OVERSIZE.value).inc()

    # -- start ------------------------------------------------------------------------------
    def start(self) -> None:
        _fix_mmap_threshold()
        for module in ("cv2", "pydicom"):  # every slice needs them: say so once, at start
            require(module, extra="service")
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
            self._start_http(self.opts.http_port)
        self._start_executor()
        self._start_sources(self.journal, Gate(self.journal, self.pipe.queue, self.stop_event))
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

    def _start_executor(self) -> None:
        from hxsched.runtime.build import plan_instance_specs
        from hxsched.runtime.executor import Executor
        from hxsched.runtime.service.pipeline import plan_for_pipeline
        from hxsched.runtime.session import make_backend

        self.plan = plan_for_pipeline(self.pipe, self.out / "work")
        self.specs = plan_instance_specs(self.plan, with_models=self.backend_name != Backend.SIM)
        self.models = {m.name: m for m in self.pipe.models}
        for inst in self.plan.instances:
            if inst.model not in self.models:
                raise HxschedError(
                    f"plan instance {inst.name} is not a model of the pipeline", path=self.plan.path
                )
        self.instance_models = {i.name: self.models[i.model] for i in self.plan.instances}
        backend = make_backend(self.backend_name, **self.opts.backend_opts)
        self.executor = ex = Executor(
            self.plan,
            self.specs,
            backend,
            inflight=self.opts.inflight,
            expected_from_plan=self.backend_name != Backend.ORT,
            on_event=self._on_fallback,
        )
        ex.prepare()

    def _start_sources(self, journal: Journal, gate: Gate) -> None:
        for src in self.pipe.sources:
            if src.kind == SourceKind.FOLDER:
                folder = self.opts.input_dir or Path(src.path or "inbox")
                self.sources.append(self._folder(folder, journal, gate))
            elif src.kind == SourceKind.SCP:
                assert src.port is not None and src.ae_title is not None  # Source's defaults
                port = self.opts.scp_port if self.opts.scp_port is not None else src.port
                self.sources.append(self._scp(port, src.ae_title, journal, gate))
            elif src.kind == SourceKind.PHANTOM:
                assert src.count is not None and src.interval_ms is not None
                self.sources.append(self._phantom(src.count, src.interval_ms, journal, gate))
        if self.opts.input_dir and not any(isinstance(s, FolderSource) for s in self.sources):
            self.sources.append(self._folder(self.opts.input_dir, journal, gate))
        if self.opts.phantom:
            self.sources.append(self._phantom(self.opts.phantom, 0.0, journal, gate))
        for s in self.sources:
            s.start()
        self.scp_port = next((s.port for s in self.sources if isinstance(s, ScpSource)), None)

    def _folder(self, folder: Path, journal: Journal, gate: Gate) -> FolderSource:
        return FolderSource(
            folder, journal, gate, max_bytes=self.pipe.max_bytes, on_accept=self._accepted
        )

    def _scp(self, port: int, ae_title: str, journal: Journal, gate: Gate) -> ScpSource:
        return ScpSource(
            journal,
            gate,
            host=self.opts.host,
            port=port,
            ae_title=ae_title,
            on_accept=self._accepted,
        )

    def _phantom(
        self, count: int, interval_ms: float, journal: Journal, gate: Gate
    ) -> PhantomSource:
        return PhantomSource(
            journal, gate, count=count, interval_ms=interval_ms, on_accept=self._accepted
        )

    def _start_http(self, port: int) -> None:
        from hxsched.runtime.service.http import StatusServer

        self.http = http = StatusServer(
            self.opts.host,
            port,
            registry=self.registry,
            status=self.status,
            ready=self.ready,
            live=self.live,
            latest_png=lambda: self.latest_png,
        )
        http.start()

    # -- the worker -----------------------------------------------------------------------
    def _frames(self):
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
                work, inputs = self._prepare(item)
            except BadInput as exc:
                self._quarantine(item, exc.reason, exc.message)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad slice never stops the service
                self._quarantine(item, Reason.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")
                continue
            self.m_stage.labels(stage="prepare").observe(time.monotonic() - t0)
            work.t_pre = time.monotonic()
            yield (work, inputs)

    def _quarantine(self, item: Item, reason: Reason, message: str) -> None:
        assert self.journal is not None
        code = Reason(reason).value
        self.journal.quarantine(item.id, code, message)
        self.m_quar.labels(reason=code).inc()
        self._finished += 1
        _event("slice quarantined", item=item.id, reason=code)

    def _work_loop(self) -> None:
        self._claimed = 0
        assert self.executor is not None  # started before the worker
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
        self._quarantine(work.item, Reason.INFERENCE_ERROR, message)

    def live(self) -> tuple[bool, str]:
        if self._worker is not None and not self._worker.is_alive() and self.error:
            return False, f"worker stopped: {self.error}"
        return True, "ok"

    # -- pre- and post-processing (each model's role does its part) ---------------------------
    def _prepare(self, item: Item) -> tuple[_Work, dict[str, dict[str, np.ndarray]]]:
        sl = read_slice(item.path, max_bytes=self.pipe.max_bytes)
        ct01: np.ndarray | None = None
        infos: dict[str, Any] = {}
        inputs: dict[str, dict[str, np.ndarray]] = {}
        for spec in self.specs:
            m = self.instance_models[spec.name]
            assert m.window is not None  # every role has a default window
            win = window_hu(sl.pixels, preset=m.window) if sl.is_hu else _normalise01(sl.pixels)
            ct01 = win if ct01 is None else ct01
            prepared = role_handler(m.role).prepare(win, m)
            infos[spec.name] = prepared.info
            inputs[spec.name] = {spec.inputs[0] if spec.inputs else "input": prepared.array}
        assert ct01 is not None  # a plan has at least one instance
        return _Work(item, sl, ct01, infos, item.accepted_at, 0.0), inputs

    def plan_model(self, instance: str) -> str:
        return self.instance_models[instance].name

    def _emit(self, result) -> None:
        work: _Work = result.tag
        item = work.item
        # wall clock from hand-over to the pipeline until its outputs are back (the backend's
        # own clock may be virtual on sim)
        self.m_stage.labels(stage="inference").observe(time.monotonic() - work.t_pre)
        t0 = time.monotonic()
        outputs: dict[str, str] = {}
        try:
            done = self._finish_roles(result, work, outputs)
            png = self._preview(work.ct01, done)
            if self.pipe.sinks.previews:
                path = self.out / "previews" / f"{item.id}.png"
                atomic_write(path, png)
                outputs["preview"] = str(path)
        except Exception as exc:  # noqa: BLE001 - a slice that cannot be written is quarantined
            for p in outputs.values():  # no partial outputs for a PACS watcher to pick up
                Path(p).unlink(missing_ok=True)
            self._quarantine(item, Reason.OUTPUT_ERROR, f"{type(exc).__name__}: {exc}")
            return
        assert self.journal is not None
        try:
            self.journal.complete(item.id, outputs)
        except Exception as exc:  # noqa: BLE001 - the journal is the source of truth: stop
            raise HxschedError(f"journal cannot record a finished slice: {exc}") from None
        self.m_stage.labels(stage="write").observe(time.monotonic() - t0)
        findings = sum(len(r.detections) for r in done)
        self._record_done(item, png, findings, result.latency_ms, work.t_accept)

    def _finish_roles(self, result, work: _Work, outputs: dict[str, str]) -> list[RoleResult]:
        """Each instance's output through its role's post-processing and sinks; the files
        written so far are in ``outputs`` (removed again if a later one fails)."""
        done = []
        for k, spec in enumerate(self.specs):
            m = self.instance_models[spec.name]
            handler = role_handler(m.role)
            got = result.outputs.get(spec.name) or {}
            if got:
                out = next(iter(got.values()))
            else:  # sim computes nothing: the role's stand-in (labelled so in every output)
                out = handler.passthrough(next(iter(result.inputs[spec.name].values())))
            ctx = SliceContext(
                work.item.id, work.slice, self.out, self.pipe.sinks, self.backend_name, spec.name, k
            )
            r = handler.finish(out, work.infos[spec.name], m, ctx)
            outputs.update(r.files)
            done.append(r)
        return done

    @staticmethod
    def _preview(ct01: np.ndarray, done: list[RoleResult]) -> bytes:
        """CT | the first synthetic image (or the CT again), every role's boxes on the CT."""
        image = next((r.image for r in done if r.image is not None), None)
        if image is None:
            image = (np.clip(ct01, 0, 1) * 255).astype(np.uint8)
        return preview_png(ct01, image, [d for r in done for d in r.detections])

    def _record_done(
        self, item: Item, png: bytes, findings: int, latency_ms: float, t_accept: float
    ) -> None:
        now = time.time()
        self.m_e2e.observe(max(0.0, now - t_accept))
        self.m_out.inc()
        self._finished += 1
        self._seq += 1
        self.latest_png = png
        self.latest = {"seq": self._seq, "name": item.id, "findings": findings}
        self._fps_window.append(time.monotonic())
        self._fps_window = self._fps_window[-200:]
        if self._seq % 20 == 0 and self.executor is not None:
            for acc, frac in self.executor.summary().busy.items():
                self.m_busy.labels(accelerator=acc).set(frac)
        _event("slice done", item=item.id, detections=findings, latency_ms=round(latency_ms, 2))

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
        busy: dict[str, float] = self.executor.summary().busy if self.executor and self._seq else {}
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
