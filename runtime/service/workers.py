"""The service's parallel host path: worker processes read, window and letterbox each slice into
shared memory, then decode the models' outputs and write the slice's files, beside the executor."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from hxsched.runtime.service.dicom_io import BadInput, Reason, ScTemplates, Slice, read_slice
from hxsched.runtime.service.imaging import preview_png, window_hu
from hxsched.runtime.service.pipeline import Pipeline, PipelineModel
from hxsched.runtime.service.roles import RoleResult, SliceContext, role_handler

log = logging.getLogger("hxsched.service")


# -- what crosses the process boundary (small, picklable) -------------------------------------
@dataclass(frozen=True)
class Instance:
    """One plan instance as the host path sees it: its model and its input array."""

    name: str
    model: PipelineModel
    input_name: str
    shape: tuple[int, ...]
    index: int


@dataclass(frozen=True)
class HostConfig:
    pipe: Pipeline
    out: Path
    backend: str
    instances: tuple[Instance, ...]
    replay: dict[str, str] = field(default_factory=dict)  # instance -> recorded outputs (.npy)
    shm_name: str | None = None  # the slot pool's shared memory (None: in-process arrays)
    slots: int = 0


@dataclass(frozen=True)
class Prepared:
    item_id: str
    slot: int
    error: tuple[str, str] | None = None  # (reason code, message)
    cpu: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    item_id: str
    slot: int
    files: dict[str, str] = field(default_factory=dict)
    findings: int = 0
    png: bytes | None = None
    error: tuple[str, str] | None = None
    cpu: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    op: str  # "prepare", "finish", "redo" (prepare + finish), "drop"
    item_id: str
    slot: int
    path: str = ""
    outputs: dict[str, np.ndarray] | None = None  # ort/trt: each instance's first output
    preview: bool = False


# -- slots: per slice in flight, every instance's input array -----------------------------------
def slot_bytes(instances: tuple[Instance, ...]) -> int:
    return sum(int(np.prod(i.shape)) * 4 for i in instances)


def slot_views(buf: Any, instances: tuple[Instance, ...], slot: int) -> dict[str, np.ndarray]:
    """Each instance's float32 input array inside slot ``slot`` of ``buf`` (no copy)."""
    views, off = {}, slot * slot_bytes(instances)
    for inst in instances:
        n = int(np.prod(inst.shape))
        views[inst.name] = np.ndarray(inst.shape, np.float32, buffer=buf, offset=off)
        off += n * 4
    return views


# -- the work on one slice (in a worker process, or in-process with no workers) ----------------
@dataclass
class _Held:
    slice: Slice
    ct01: np.ndarray
    infos: dict[str, Any]


class SliceHost:
    """Prepares and finishes slices; keeps each prepared slice until it is finished."""

    def __init__(self, cfg: HostConfig, buf: Any) -> None:
        self.cfg, self.buf = cfg, buf
        self.held: dict[str, _Held] = {}
        self.templates = ScTemplates()
        self.replay = {k: np.load(v, mmap_mode="r") for k, v in cfg.replay.items()}
        self.dirs: set[str] = set()

    def run(self, job: Job) -> Prepared | Finished | None:
        if job.op == "drop":
            self.held.pop(job.item_id, None)
            return None
        if job.op == "prepare":
            return self.prepare(job)
        if job.op == "redo":
            got = self.prepare(job)
            if got.error:
                return Finished(job.item_id, job.slot, error=got.error, cpu=got.cpu)
        return self.finish(job)

    def prepare(self, job: Job) -> Prepared:
        cpu: dict[str, float] = {}
        try:
            with _Clock(cpu, "read"):
                sl = read_slice(job.path, max_bytes=self.cfg.pipe.max_bytes)
            views = slot_views(self.buf, self.cfg.instances, job.slot)
            ct01, infos = None, {}
            for inst in self.cfg.instances:
                m = inst.model
                assert m.window is not None  # every role has a default window
                with _Clock(cpu, "window"):
                    win = window_hu(sl.pixels, preset=m.window) if sl.is_hu else normalise01(sl)
                ct01 = win if ct01 is None else ct01
                with _Clock(cpu, f"prepare:{m.role}"):
                    infos[inst.name] = role_handler(m.role).prepare_into(win, m, views[inst.name])
        except BadInput as exc:
            return Prepared(job.item_id, job.slot, (exc.reason.value, exc.message), cpu)
        except Exception as exc:  # noqa: BLE001 - one bad slice never stops the service
            msg = f"{type(exc).__name__}: {exc}"
            return Prepared(job.item_id, job.slot, (Reason.PROCESSING_ERROR.value, msg), cpu)
        assert ct01 is not None  # a plan has at least one instance
        self.held[job.item_id] = _Held(sl, ct01, infos)
        return Prepared(job.item_id, job.slot, None, cpu)

    def finish(self, job: Job) -> Finished:
        held = self.held.pop(job.item_id)
        cpu: dict[str, float] = {}
        files: dict[str, str] = {}
        try:
            done = self._roles(job, held, files, cpu)
            png = None
            if job.preview:
                with _Clock(cpu, "preview"):
                    png = _preview(held.ct01, done)
                if self.cfg.pipe.sinks.previews:
                    path = self.cfg.out / "previews" / f"{job.item_id}.png"
                    files["preview"] = str(self.write(path, png))
        except Exception as exc:  # noqa: BLE001 - a slice that cannot be written is quarantined
            for p in files.values():  # no partial outputs for a PACS watcher to pick up
                Path(p).unlink(missing_ok=True)
            msg = f"{type(exc).__name__}: {exc}"
            return Finished(job.item_id, job.slot, error=(Reason.OUTPUT_ERROR.value, msg), cpu=cpu)
        findings = sum(len(r.detections) for r in done)
        return Finished(job.item_id, job.slot, files, findings, png, None, cpu)

    def _roles(self, job: Job, held: _Held, files: dict, cpu: dict) -> list[RoleResult]:
        views = slot_views(self.buf, self.cfg.instances, job.slot)
        done = []
        for inst in self.cfg.instances:
            m = inst.model
            handler = role_handler(m.role)
            out = self._output(job, inst, views)
            ctx = SliceContext(
                job.item_id,
                held.slice,
                self.cfg.out,
                self.cfg.pipe.sinks,
                self.cfg.backend,
                inst.name,
                inst.index,
                templates=self.templates,
                write=self.write,
                replayed=inst.name in self.replay,
            )
            with _Clock(cpu, f"finish:{m.role}"):
                r = handler.finish(out, held.infos[inst.name], m, ctx)
            files.update(r.files)
            done.append(r)
        return done

    def _output(self, job: Job, inst: Instance, views: dict[str, np.ndarray]) -> np.ndarray:
        if job.outputs and inst.name in job.outputs:
            return job.outputs[inst.name]
        rec = self.replay.get(inst.name)
        if rec is not None:  # sim replaying outputs recorded on ONNX Runtime
            return np.asarray(rec[int(job.item_id[:8], 16) % len(rec)])
        # sim computes nothing: the role's stand-in (labelled so in every output)
        return role_handler(inst.model.role).passthrough(views[inst.name])

    def write(self, path: Path, data: bytes) -> Path:
        """Atomic (temp file, fsync, rename); the folder's fsync is left to the group commit
        (``sync_dirs``), once per folder for a batch of slices."""
        parent = str(path.parent)
        if parent not in self.dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.dirs.add(parent)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            _write_all(fd, data)
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def sync_dirs(paths: list[str]) -> None:
    """fsync each distinct folder of ``paths`` once (the renames of a batch made durable)."""
    for d in sorted({os.path.dirname(p) for p in paths}):
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


class _Clock:
    """Adds this thread's CPU seconds in the block to ``acc[key]``."""

    def __init__(self, acc: dict[str, float], key: str) -> None:
        self.acc, self.key = acc, key

    def __enter__(self) -> None:
        self.t0 = time.thread_time()

    def __exit__(self, *exc: object) -> None:
        self.acc[self.key] = self.acc.get(self.key, 0.0) + time.thread_time() - self.t0


def normalise01(sl: Slice) -> np.ndarray:
    px = sl.pixels
    lo, hi = float(np.min(px)), float(np.max(px))
    if hi <= lo:
        return np.zeros_like(px, dtype=np.float32)
    return ((px - lo) / (hi - lo)).astype(np.float32)


def _preview(ct01: np.ndarray, done: list[RoleResult]) -> bytes:
    """CT | the first synthetic image (or the CT again), every role's boxes on the CT."""
    image = next((r.image for r in done if r.image is not None), None)
    if image is None:
        image = (np.clip(ct01, 0, 1) * 255).astype(np.uint8)
    return preview_png(ct01, image, [d for r in done for d in r.detections])


def _child(cfg: HostConfig, conn: Any) -> None:
    """A worker process: jobs in, results out, in order, until the pipe closes."""
    from hxsched.runtime.service.service import _fix_mmap_threshold

    _fix_mmap_threshold()
    shm = shared_memory.SharedMemory(name=cfg.shm_name)  # spawned: the parent's tracker
    host = SliceHost(cfg, shm.buf)
    conn.send("ready")
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            got = host.run(job)
            if got is not None:
                conn.send(got)
    finally:
        host.buf = None
        shm.close()


# -- the pool the service talks to -------------------------------------------------------------
OnResult = Callable[[Any], None]
MAX_DEATHS_PER_MIN = 5  # more host worker deaths than this in a minute: stop, do not respawn


class Hosts:
    """``workers`` processes (0: in this process) doing each slice's host work. Slot k of the
    shared memory is the hand-over of one slice in flight; a slice stays with the worker that
    prepared it. A worker that dies is replaced; only the slice it was working on is charged
    (``on_lost``), the others it held are prepared again on its replacement."""

    def __init__(
        self,
        cfg: HostConfig,
        workers: int,
        slots: int,
        on_prepared: OnResult,
        on_finished: OnResult,
        on_lost: Callable[[str, int, str], None],
    ) -> None:
        self.workers, self.slots = workers, slots
        self.on_prepared, self.on_finished, self.on_lost = on_prepared, on_finished, on_lost
        self.free: queue.Queue[int] = queue.Queue()
        for k in range(slots):
            self.free.put(k)
        size = max(1, slot_bytes(cfg.instances) * slots)
        self._shm: shared_memory.SharedMemory | None = None
        if workers:
            self._shm = shared_memory.SharedMemory(create=True, size=size)
            self.buf: Any = self._shm.buf
            cfg = HostConfig(**{**cfg.__dict__, "shm_name": self._shm.name, "slots": slots})
        else:
            self._local = np.zeros(size, np.uint8)
            self.buf = self._local
            self._inline = SliceHost(cfg, self.buf)
        self.cfg = cfg
        self._lock = threading.Lock()
        self._closing = False
        self.failed: str | None = None  # set when workers keep dying: the service stops
        self._deaths: list[float] = []
        self._owner: dict[str, tuple[int, int]] = {}  # item -> (worker, its generation)
        self._procs: list[_Proc] = []
        self._ctx = mp.get_context("spawn")  # no fork of a threaded parent (pynetdicom, HTTP)
        for w in range(workers):
            self._procs.append(self._spawn(w, 0))
        for p in self._procs:  # started (imports done, shared memory attached)
            p.ready.wait(120.0)

    # -- life ------------------------------------------------------------------------------
    def _spawn(self, w: int, gen: int) -> _Proc:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_child, args=(self.cfg, child), name=f"hxsched-host-{w}", daemon=True
        )
        proc.start()
        child.close()
        p = _Proc(w, gen, proc, parent)
        p.reader = threading.Thread(target=self._read, args=(p,), name=f"hxsched-host-{w}-rx")
        p.reader.daemon = True
        p.reader.start()
        return p

    def close(self) -> None:
        with self._lock:
            self._closing = True
        for p in self._procs:
            with contextlib.suppress(OSError):
                p.conn.send(None)
        for p in self._procs:
            p.proc.join(timeout=5.0)
            if p.proc.is_alive():
                p.proc.kill()
            p.conn.close()
        self._procs = []
        if self._shm is not None:
            self.buf = None
            try:
                self._shm.close()
                self._shm.unlink()
            except (BufferError, FileNotFoundError):
                pass
            self._shm = None

    def pids(self) -> list[int]:
        return [p.proc.pid for p in self._procs if p.proc.pid is not None]

    # -- work -------------------------------------------------------------------------------
    def inputs(self, slot: int) -> dict[str, dict[str, np.ndarray]]:
        views = slot_views(self.buf, self.cfg.instances, slot)
        return {i.name: {i.input_name: views[i.name]} for i in self.cfg.instances}

    def prepare(self, item_id: str, path: str, slot: int) -> None:
        self._send(Job("prepare", item_id, slot, path=path), new=True)

    def finish(self, item_id: str, slot: int, path: str, outputs, preview: bool) -> None:
        self._send(Job("finish", item_id, slot, path=path, outputs=outputs, preview=preview))

    def drop(self, item_id: str, slot: int) -> None:
        """Forget a prepared slice that will not be finished (its inference failed)."""
        if item_id in self._owner or not self.workers:
            self._send(Job("drop", item_id, slot))
            self._owner.pop(item_id, None)

    def _send(self, job: Job, new: bool = False) -> None:
        if not self.workers:
            got = self._inline.run(job)
            if got is not None:
                (self.on_prepared if isinstance(got, Prepared) else self.on_finished)(got)
            return
        with self._lock:
            if new:
                w = min(range(len(self._procs)), key=lambda k: len(self._procs[k].sent))
                self._owner[job.item_id] = (w, self._procs[w].gen)
            w, gen = self._owner[job.item_id]
            p = self._procs[w]
            if job.op == "finish" and gen != p.gen:  # its worker died since: prepare it again
                job = Job("redo", job.item_id, job.slot, job.path, job.outputs, job.preview)
                self._owner[job.item_id] = (w, p.gen)
            if job.op != "drop":  # no answer comes back for a drop
                p.sent.append(job)
            with contextlib.suppress(OSError):  # a dead worker: its reader resends what was sent
                p.conn.send(job)

    def _read(self, p: _Proc) -> None:
        while True:
            try:
                got = p.conn.recv()
            except (EOFError, OSError):
                break
            if got == "ready":
                p.ready.set()
                continue
            with self._lock:
                if p.sent:
                    p.sent.popleft()
                if isinstance(got, Finished):
                    self._owner.pop(got.item_id, None)
            (self.on_prepared if isinstance(got, Prepared) else self.on_finished)(got)
        if not self._closing:
            self._replace(p)

    def _replace(self, p: _Proc) -> None:
        """A worker died: charge the slice it was on, restart it, resend the rest."""
        p.proc.join(timeout=1.0)
        code = p.proc.exitcode
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < 60.0] + [now]
        with self._lock:
            if self._closing or self._procs[p.index] is not p:
                return
            pending = list(p.sent)
            if not p.ready.is_set() or len(self._deaths) > MAX_DEATHS_PER_MIN:
                self.failed = f"host worker processes keep dying (exit {code}); see the log"
                p.ready.set()  # nobody waits on a worker that will not start
                return
            fresh = self._spawn(p.index, p.gen + 1)
            self._procs[p.index] = fresh
        if pending:
            head = pending.pop(0)
            self._owner.pop(head.item_id, None)
            log.error(
                "host worker died on a slice; charging only that slice",
                extra={"fields": {"item": head.item_id, "exitcode": code}},
            )
            self.on_lost(head.item_id, head.slot, f"host worker process died (exit {code})")
        for job in pending:
            self._send(
                Job("redo", job.item_id, job.slot, job.path, job.outputs, job.preview)
                if job.op == "finish"
                else job
            )


@dataclass
class _Proc:
    index: int
    gen: int
    proc: Any
    conn: Any
    sent: deque[Job] = field(default_factory=deque)
    reader: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)
