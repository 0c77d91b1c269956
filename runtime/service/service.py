"""``hxsched serve``: the long-running service. Sources spool slices into the journal; one worker
claims them, has each model's role prepare them, streams them through the planned pipeline and
has the roles write the outputs; bad slices are quarantined with their reason; HTTP shows it all."""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hxsched._compat import require
from hxsched.errors import HxschedError
from hxsched.runtime.service.dicom_io import Reason
from hxsched.runtime.service.inbox import FolderSource
from hxsched.runtime.service.intake import Gate, Intake, resource_trouble
from hxsched.runtime.service.journal import GROUP_MAX, Item, Journal
from hxsched.runtime.service.logsafe import JsonLogFormatter, setup_logging  # noqa: F401
from hxsched.runtime.service.metrics import Registry
from hxsched.runtime.service.outbox import Outbox, OutboxCounters, outbox_entries
from hxsched.runtime.service.pipeline import Backend, Pipeline, Source, SourceKind
from hxsched.runtime.service.roles import role_handler
from hxsched.runtime.service.scp import ScpSettings, ScpSource
from hxsched.runtime.service.sources import PhantomSource
from hxsched.runtime.service.workers import (
    Finished,
    HostConfig,
    Hosts,
    Instance,
    Prepared,
    remove_partial_outputs,
)

if TYPE_CHECKING:
    from hxsched.runtime.executor import Executor
    from hxsched.runtime.service.http import StatusServer

log = logging.getLogger("hxsched.service")


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
    workers: int | None = None  # host worker processes (override the pipeline's; 0: none)
    replay: bool = (
        False  # sim: replay outputs recorded once on ONNX Runtime (runtime/service/replay.py)
    )
    backend_opts: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Work:
    item: Item
    slot: int  # its hand-over slot in the host path (-1 once given back: ``_free_slot``)
    t_accept: float
    t_claim: float = 0.0
    t_pre: float = 0.0
    t_out: float = 0.0


BUSY_MEANING = {
    Backend.ORT: "ONNX Runtime: the fraction of the run each accelerator's CPU worker thread "
    "spent running segments (wall clock)",
    Backend.SIM: "sim: virtual, the fraction of the plan's simulated time each stream was "
    "busy (no device; nothing measured)",
    Backend.TRT: "TensorRT: the fraction of the run each CUDA stream had work enqueued "
    "(CUDA events)",
}


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
        self.hosts: Hosts | None = None
        self._works: dict[str, _Work] = {}
        # prepared slices for the pipeline; None: a hand-over slot came free (claim more)
        self._prepared: queue.Queue[Prepared | None] = queue.Queue()
        self._slot_lock = threading.Lock()
        self._done_q: queue.Queue[Finished | None] = queue.Queue()
        self._committer: threading.Thread | None = None
        self._last_preview = -1e9
        self.host_cpu: dict[str, float] = {}  # stage -> CPU seconds, all workers
        self._cpu_children: dict[str, Any] = {}  # stage -> its m_cpu child (_add_cpu)
        self.host_slices = 0
        self.gate: Gate | None = None
        self.held_reason = ""  # resource trouble: sources hold, nothing is claimed (``_hold``)
        self._hold_lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._probe_s = PROBE_S
        self._resumed_at = -1e9
        self.outbox: Outbox | None = None  # the PACS sink (``sinks.pacs``; None: files only)

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
        self.m_busy = r.gauge(
            "hxsched_accelerator_busy_ratio",
            "fraction busy; " + "; ".join(BUSY_MEANING.values()),
            ("accelerator", "meaning"),
        )
        self.m_cpu = r.counter(
            "hxsched_host_cpu_seconds_total", "host path CPU time per stage", ("stage",)
        )
        self.m_skip = r.counter(
            "hxsched_inbox_skipped_total",
            "inbox entries skipped (symlinks, not regular files, unreadable, refused)",
            ("why",),
        )
        self.m_holds = r.counter(
            "hxsched_holds_total", "times the service held for resource trouble (disk full)"
        )
        self.m_held = r.gauge("hxsched_held", "1 while held for resource trouble, else 0")
        self.m_held.set_function(lambda: 1.0 if self.held_reason else 0.0)
        self.m_outbox_queued = r.gauge(
            "hxsched_outbox_queued", "results queued to be sent to the PACS (sinks.pacs)"
        )
        self.m_outbox_queued.set_function(lambda: self.outbox.queued() if self.outbox else 0)
        self.m_outbox = OutboxCounters(
            r.counter("hxsched_outbox_sent_total", "results the PACS confirmed (C-STORE)"),
            r.counter("hxsched_outbox_retries_total", "results queued again to retry later"),
            r.counter("hxsched_outbox_failed_total", "results the PACS refused for good"),
        )

    def _accepted(self, what: Intake, reason: str | None = None) -> None:
        """A source's outcome; ``reason``: the quarantine reason code (None: oversize)."""
        if what != Intake.ACCEPTED:
            self._intake_other += 1  # finished at intake: a duplicate, or quarantined unread
        if what == Intake.ACCEPTED:
            self.m_in.inc()
        elif what == Intake.DUPLICATE:
            self.m_dup.inc()
        elif what == Intake.QUARANTINED:
            self.m_quar.labels(reason=str(reason or Reason.OVERSIZE.value)).inc()

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
        self._recovered(self.journal)
        if removed := remove_partial_outputs(self.out, self.journal):  # interrupted attempts'
            _event("removed partial outputs and temp files after a restart", files=removed)
        self.m_queue.labels(queue="journal").set_function(self.journal.pending)
        self._start_outbox(self.journal)
        if self.opts.http_port is not None:
            self._start_http(self.opts.http_port)
        self._start_executor()
        self._start_hosts()
        self.gate = Gate(self.journal, self.pipe.queue, self.stop_event, on_trouble=self._hold)
        trouble = self._probe_once()
        if trouble is not None:  # a start on a full disk: held from the outset, resumes by itself
            self._hold(trouble)
        self._start_sources(self.journal, self.gate)
        self._worker = threading.Thread(target=self._work_loop, name="hxsched-worker", daemon=True)
        self._worker.start()
        self.ready_reason = ""
        _event(
            "service ready",
            backend=self.backend_name,
            plan=str(self.plan.path),
            instances=[i.name for i in self.plan.instances],
            workers=self.workers,
            scp_port=self.scp_port,
            http_port=self.http.port if self.http else None,
        )

    def _recovered(self, journal: Journal) -> None:
        """Recover what a crash interrupted; the items it quarantined (``crashed-repeatedly``,
        ``spool_missing``) are counted by reason and logged."""
        requeued = journal.recover()
        quarantined: dict[str, int] = {}
        for item_id, reason in journal.recovered.quarantined:
            self.m_quar.labels(reason=reason).inc()
            quarantined[reason] = quarantined.get(reason, 0) + 1
            _event("slice quarantined at recovery", item=item_id, reason=reason)
        if requeued or quarantined:
            _event("recovered after a restart", requeued=requeued, quarantined=quarantined)

    def _start_outbox(self, journal: Journal) -> None:
        """The PACS sink's sender (``sinks.pacs``): it sends what a restart found queued too."""
        sink = self.pipe.sinks.pacs
        if sink is None:
            return
        bound = OUTBOX_BOUND_FACTOR * self.pipe.queue
        self.outbox = Outbox(journal, sink, self.m_outbox, bound=bound, on_over=self._hold)
        self.outbox.start()

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

    def _start_hosts(self) -> None:
        from hxsched.runtime.service.replay import replay_files

        assert self.executor is not None
        insts = []
        for k, spec in enumerate(self.specs):
            m = self.instance_models[spec.name]
            name = spec.inputs[0] if spec.inputs else "input"
            insts.append(Instance(spec.name, m, name, role_handler(m.role).input_shape(m), k))
        replay = replay_files(self) if self.backend_name == Backend.SIM else {}
        cfg = HostConfig(self.pipe, self.out, self.backend_name.value, tuple(insts), replay)
        self.workers = w = _workers(self.opts.workers, self.pipe.workers)
        # hand-over slots: the executor's frames in flight, and per worker enough for a slice
        # being read, one queued behind it, one being written and one queued to be (slots come
        # back as soon as a slice's outputs are written, so the workers never wait on a commit)
        slots = self.executor.inflight + SLOTS_PER_WORKER * max(1, w) + 4
        guard = self.journal.decoding if self.journal is not None and w == 0 else None
        self.hosts = Hosts(cfg, w, slots, self._prepared.put, self._on_finished, self._lost, guard)
        self._committer = threading.Thread(
            target=self._commit_loop, name="hxsched-commit", daemon=True
        )
        self._committer.start()

    def _start_sources(self, journal: Journal, gate: Gate) -> None:
        for src in self.pipe.sources:
            if src.kind == SourceKind.FOLDER:
                folder = self.opts.input_dir or Path(src.path or "inbox")
                assert src.stable_s is not None  # Source's default
                self.sources.append(self._folder(folder, journal, gate, src.stable_s))
            elif src.kind == SourceKind.SCP:
                assert src.port is not None and src.ae_title is not None  # Source's defaults
                port = self.opts.scp_port if self.opts.scp_port is not None else src.port
                self.sources.append(self._scp(port, src, journal, gate))
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

    def _folder(
        self, folder: Path, journal: Journal, gate: Gate, stable_s: float = 1.0
    ) -> FolderSource:
        return FolderSource(
            folder,
            journal,
            gate,
            max_bytes=self.pipe.max_bytes,
            on_accept=self._accepted,
            stable_s=stable_s,
            on_skip=lambda why: self.m_skip.labels(why=why).inc(),
        )

    def _scp(self, port: int, src: Source, journal: Journal, gate: Gate) -> ScpSource:
        assert src.ae_title is not None  # Source's default
        return ScpSource(
            journal,
            gate,
            host=self.opts.host,
            port=port,
            ae_title=src.ae_title,
            on_accept=self._accepted,
            settings=ScpSettings.of(src, self.pipe),
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

    # -- the worker: claims, hands slices to the host workers, feeds the executor ------------
    def _frames(self):
        assert self.journal is not None and self.hosts is not None
        while not self.stop_event.is_set():
            if self._enough() and not self._works:
                return
            if self.hosts.failed:
                raise HxschedError(self.hosts.failed)
            self._dispatch()
            # with frames in the pipeline, wait for the next slice only briefly: the executor
            # finishes a frame's later segments when the next frame comes or on a drain, so a
            # long wait here would hold every frame of a slow stream back by that long
            in_pipeline = any(w.t_pre and not w.t_out for w in self._works.values())
            yield from self._handover(timeout_s=DRAIN_WAIT_S if in_pipeline else 0.05)
        # stopping: what was claimed and is being read still goes through (a few slots' worth)
        t0 = time.monotonic()
        while any(w.t_pre == 0.0 for w in list(self._works.values())):
            if time.monotonic() - t0 > 30.0:
                return  # left in the journal as processing: a restart redoes them
            yield from self._handover(timeout_s=0.05)

    def _handover(self, timeout_s: float):
        """The next prepared slice for the pipeline (None: nothing ready within the timeout)."""
        assert self.hosts is not None
        try:
            got = self._prepared.get(timeout=timeout_s)
        except queue.Empty:
            yield None  # nothing prepared: let the pipeline finish what is in flight
            return
        if got is None:
            return  # a slot came free: back to claiming (the pipeline keeps what is in flight)
        work = self._works[got.item_id]
        self._add_cpu(got.cpu)
        if got.error is not None:
            self._quarantine(work.item, Reason(got.error[0]), got.error[1])
            self._release(work)
            return
        work.t_pre = time.monotonic()
        self.m_stage.labels(stage="prepare").observe(work.t_pre - work.t_claim)
        yield (work, self.hosts.inputs(work.slot))

    def _enough(self) -> bool:
        stop = self.opts.stop_after
        return stop is not None and self._claimed + self._intake_other >= stop

    def _dispatch(self) -> None:
        """Claim as many slices as there are free hand-over slots and send them to be read."""
        assert self.journal is not None and self.hosts is not None
        n = self.hosts.free.qsize()
        if self.opts.stop_after is not None:
            n = min(n, self.opts.stop_after - self._claimed - self._intake_other)
        if n <= 0 or self.held_reason:  # held: nothing is claimed until the trouble clears
            return
        try:
            claimed = self.journal.claim(n)
        except Exception as exc:
            if not self._trouble(exc):
                raise
            return
        for item in claimed:
            self._claimed += 1
            work = _Work(item, self.hosts.free.get_nowait(), item.accepted_at, time.monotonic())
            self._works[item.id] = work
            self.hosts.prepare(item.id, str(item.path), work.slot)

    def _release(self, work: _Work) -> None:
        self._works.pop(work.item.id, None)
        self._free_slot(work)

    def _free_slot(self, work: _Work) -> None:
        """Give ``work``'s hand-over slot back (once) and wake the worker to claim into it."""
        assert self.hosts is not None
        with self._slot_lock:
            slot, work.slot = work.slot, -1
        if slot >= 0:
            self.hosts.free.put(slot)
            self._prepared.put(None)

    def _on_finished(self, f: Finished) -> None:
        """A host worker's answer: the slot's arrays are no longer needed (the outputs are
        written), so it goes back at once; the slice stays claimed until its commit."""
        work = self._works.get(f.item_id)
        if work is not None:
            self._free_slot(work)
        self._done_q.put(f)

    def _quarantine(self, item: Item, reason: Reason, message: str) -> None:
        assert self.journal is not None
        code = Reason(reason).value
        self.journal.quarantine(item.id, code, message)
        self.m_quar.labels(reason=code).inc()
        self._finished += 1
        _event("slice quarantined", item=item.id, reason=code)

    def _lost(self, item_id: str, slot: int, reason: Reason, message: str) -> None:
        """A host worker died on this slice (decode-limit: killed by its memory or time limit):
        only it is charged."""
        work = self._works.get(item_id)
        if work is not None:
            self._quarantine(work.item, reason, message)
            self._release(work)

    def _work_loop(self) -> None:
        self._claimed = 0
        assert self.executor is not None  # started before the worker
        try:
            self.executor.run(self._frames(), on_output=self._emit, on_error=self._failed)
            self._wait_finished()
        except Exception as exc:  # noqa: BLE001 - reported on /health and in the log
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready_reason = f"pipeline failed: {self.error}"
            log.error("pipeline failed", extra={"fields": {"error": self.error}})
        finally:
            # the worker is the service: when it ends, the process ends (exit 1 on failure),
            # and a supervisor's restart finishes what is in flight from the journal
            self.stop_event.set()

    def _wait_finished(self, timeout_s: float = 60.0) -> None:
        """Until every slice handed to the pipeline has its outputs committed (or the error)."""
        t0 = time.monotonic()
        while self._works and self.error is None and time.monotonic() - t0 < timeout_s:
            time.sleep(0.01)

    def _failed(self, work, index: int, message: str) -> None:
        self._quarantine(work.item, Reason.INFERENCE_ERROR, message)
        assert self.hosts is not None
        self.hosts.drop(work.item.id, work.slot)
        self._release(work)

    def live(self) -> tuple[bool, str]:
        if self._worker is not None and not self._worker.is_alive() and self.error:
            return False, f"worker stopped: {self.error}"
        return True, "ok"

    def plan_model(self, instance: str) -> str:
        return self.instance_models[instance].name

    def _emit(self, result) -> None:
        """The executor's outputs of a slice: to its host worker, to be decoded and written."""
        work: _Work = result.tag
        # wall clock from hand-over to the pipeline until its outputs are back (the backend's
        # own clock may be virtual on sim)
        work.t_out = time.monotonic()
        self.m_stage.labels(stage="inference").observe(work.t_out - work.t_pre)
        outputs = {k: next(iter(v.values())) for k, v in (result.outputs or {}).items() if v}
        now = time.monotonic()
        preview = now - self._last_preview >= self.pipe.sinks.preview_every_s
        if preview:
            self._last_preview = now
        assert self.hosts is not None
        self.hosts.finish(work.item.id, work.slot, str(work.item.path), outputs or None, preview)

    # -- group commit of finished slices ---------------------------------------------------------
    def _commit_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None or not self._commit_held(batch):
                return

    def _commit_held(self, batch: list[Finished]) -> bool:
        """Commit a batch; on resource trouble hold and retry it once the trouble clears.
        False: the service stops (an error, or stopping while held: a restart redoes it)."""
        while True:
            try:
                self._commit(batch)
                return True
            except Exception as exc:  # noqa: BLE001 - the journal is the source of truth: stop
                if self._trouble(exc) and self._until_resumed():
                    continue
                if self.stop_event.is_set() and self.held_reason:
                    return False
                self.error = f"journal cannot record finished slices: {exc}"
                self.ready_reason = f"pipeline failed: {self.error}"
                log.error("pipeline failed", extra={"fields": {"error": self.error}})
                self.stop_event.set()
                return False

    # -- hold and resume on resource trouble (disk full, I/O errors) ----------------------------
    def _trouble(self, exc: BaseException) -> bool:
        """If ``exc`` is resource trouble, hold (True); else False."""
        why = resource_trouble(exc)
        if why is not None:
            self._hold(why)
        return why is not None

    def _hold(self, reason: str) -> None:
        """Resource trouble (not bad input): readiness false with the reason, sources held
        back (the gate admits nothing), nothing claimed; a probe resumes once it clears."""
        with self._hold_lock:
            if self.gate is not None:
                self.gate.held_reason = reason
            first = not self.held_reason
            self.held_reason = reason
            if not first:
                return
            self.m_holds.inc()
            if time.monotonic() - self._resumed_at < 10 * self._probe_s:  # back again soon
                self._probe_s = min(PROBE_MAX_S, self._probe_s * 2)
            else:
                self._probe_s = PROBE_S
            log.warning("held: resource trouble", extra={"fields": {"reason": reason}})
            # one probe per hold: it ends (under this lock) only by resuming
            self._probe = threading.Thread(target=self._probe_loop, name="hxsched-probe")
            self._probe.daemon = True
            self._probe.start()

    def _probe_loop(self) -> None:
        while not self.stop_event.wait(self._probe_s):
            why = self._probe_once()
            if why is None:
                with self._hold_lock:
                    self.held_reason = ""
                    self._resumed_at = time.monotonic()
                    if self.gate is not None:
                        self.gate.resume()
                log.warning("resumed: the resource trouble cleared")
                return

    def _probe_once(self) -> str | None:
        """None when the output and journal folders have room and take a small synced write;
        else what is wrong."""
        folders = {self.out}
        if self.journal is not None:
            folders.add(self.journal.spool_dir)
        for folder in sorted(folders):
            why = probe_folder(folder)
            if why is not None:
                return why
        return self.outbox.over_bound() if self.outbox is not None else None

    def _until_resumed(self) -> bool:
        """Wait while held; False when the service stops first."""
        while self.held_reason:
            if self.stop_event.wait(0.05):
                return False
        return True

    def _next_batch(self) -> list[Finished] | None:
        """The finished slices of one commit: the first, and whatever follows within
        COMMIT_WAIT_S (at most GROUP_MAX); None once the service closes. A short wait: what
        finishes while a commit runs forms the next one, so batches grow with the load, and a
        lone slice is held back only that long."""
        first = self._done_q.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + COMMIT_WAIT_S
        while len(batch) < GROUP_MAX:
            try:
                got = self._done_q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got is None:
                self._done_q.put(None)
                break
            batch.append(got)
        return batch

    def _commit(self, batch: list[Finished]) -> None:
        from hxsched.runtime.service.workers import sync_dirs

        assert self.journal is not None
        ok = [f for f in batch if f.error is None and f.resource is None]
        ok = [f for f in ok if f.item_id in self._works]
        sync_dirs([p for f in ok for p in f.files.values()])  # the renames, once per folder
        sends = [e for f in ok for e in outbox_entries(f.item_id, f.files)] if self.outbox else []
        self.journal.complete_many([(f.item_id, f.files) for f in ok], outbox=sends)
        if sends and self.outbox is not None:
            self.outbox.wake()
            over = self.outbox.over_bound()
            if over is not None:  # too much waits for the PACS: hold like a full disk
                self._hold(over)
        for f in batch:
            self._add_cpu(f.cpu)
            work = self._works.get(f.item_id)
            if work is None:
                continue
            if f.resource is not None:  # the machine's trouble: accepted again, held
                self.journal.release([f.item_id])
                self._claimed -= 1  # it will be claimed again (``stop_after`` counts it once)
                self._hold(f.resource)
            elif f.error is not None:
                self._quarantine(work.item, Reason(f.error[0]), f.error[1])
            else:
                self.m_stage.labels(stage="write").observe(time.monotonic() - work.t_out)
                self._record_done(work.item, f.png, f.findings, work.t_accept)
            self._release(work)

    def _add_cpu(self, cpu: dict[str, float]) -> None:
        for stage, sec in cpu.items():
            self.host_cpu[stage] = self.host_cpu.get(stage, 0.0) + sec
            child = self._cpu_children.get(stage)
            if child is None:  # a metric's labelled child looked up once per stage
                child = self._cpu_children[stage] = self.m_cpu.labels(stage=stage)
            child.inc(sec)
        if "read" in cpu:
            self.host_slices += 1

    def _record_done(self, item: Item, png: bytes | None, findings: int, t_accept: float) -> None:
        now = time.time()
        self.m_e2e.observe(max(0.0, now - t_accept))
        self.m_out.inc()
        self._finished += 1
        self._seq += 1
        if png is not None:
            self.latest_png = png
        self.latest = {"seq": self._seq, "name": item.id, "findings": findings}
        self._fps_window.append(time.monotonic())
        self._fps_window = self._fps_window[-200:]
        if self._seq % 20 == 0 and self.executor is not None:
            meaning = BUSY_MEANING[self.backend_name].split(":")[0]
            for acc, frac in self.executor.summary().busy.items():
                self.m_busy.labels(accelerator=acc, meaning=meaning).set(frac)
        _event("slice done", item=item.id, detections=findings)

    def host_cpu_ms(self) -> dict[str, float]:
        """Host path CPU milliseconds per slice, per stage (all workers together)."""
        n = max(1, self.host_slices)
        return {k: round(v * 1000.0 / n, 3) for k, v in sorted(self.host_cpu.items())}

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
        if self.held_reason:
            return False, f"held: {self.held_reason}; resumes by itself once it clears"
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
            "accelerators_note": BUSY_MEANING[self.backend_name],
            "host": {
                "workers": getattr(self, "workers", 0),
                "cpu_ms_per_slice": self.host_cpu_ms(),
            },
            "alarms": list(self.alarms),
            "latest": dict(self.latest),
            "numbers": self.executor.backend.source() if self.executor else "",
            "outbox": dataclasses.asdict(self.outbox.status()) if self.outbox else None,
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
        self._done_q.put(None)
        if self._committer is not None:
            self._committer.join(timeout=10.0)
        if self.hosts is not None:
            self.hosts.close()
        if self.http is not None:
            self.http.stop()
        if self.outbox is not None:
            self.outbox.stop()
        if self.journal is not None:
            self.final_counts = self.journal.counts()
            self.journal.close()
            self.journal = None

    def install_signal_handlers(self) -> None:
        def handler(signum, frame) -> None:
            _event("signal received: draining", signal=signal.Signals(signum).name)
            self.stop_event.set()

        # SIGHUP (a closed terminal, a supervisor's "reload") and SIGUSR1 drain too: no reload
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, handler)


DRAIN_WAIT_S = 0.005  # how long the pipeline waits for the next slice with frames in flight
COMMIT_WAIT_S = 0.003  # how long a completion commit waits for more finished slices
SLOTS_PER_WORKER = 4  # hand-over slots per host worker beyond the executor's (``_start_hosts``)
OUTBOX_BOUND_FACTOR = 10  # queued results past this many times ``queue``: hold (sinks.pacs)
PROBE_S = 1.0  # while held, how often the trouble is probed (doubling to PROBE_MAX_S when
PROBE_MAX_S = 16.0  # it comes back right after a resume)
RESERVE_BYTES = 8 << 20  # free space a folder needs before the service resumes


def probe_folder(folder: Path) -> str | None:
    """None when ``folder`` has RESERVE_BYTES free and takes a small write, fsync and unlink;
    else what is wrong (one line, no file names)."""
    try:
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < RESERVE_BYTES:
            return "no space left on the device (under the reserve)"
        path = folder / f".hxsched-probe-{os.getpid()}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"\0" * 512)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(path)
    except OSError as exc:
        return resource_trouble(exc) or f"{type(exc).__name__}: {exc.strerror}"
    return None


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


def _workers(cli: int | None, pipeline: int | None) -> int:
    """Host worker processes: the CLI's, else the pipeline's, else one per core."""
    if cli is not None:
        return cli
    if pipeline is not None:
        return pipeline
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
