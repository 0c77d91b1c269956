"""The service's parallel host path: worker processes read, window and letterbox each slice into
shared memory, then decode the models' outputs and write the slice's files, beside the executor."""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import queue
import runpy
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from hxsched.runtime.service.dicom_io import BadInput, Reason, ScTemplates, Slice, read_slice
from hxsched.runtime.service.imaging import preview_png, window_hu
from hxsched.runtime.service.journal import DONE, Journal, resource_trouble
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
    # the machine's trouble writing the outputs (disk full, I/O error): not the slice's fault;
    # it goes back to accepted (``Journal.release``) and is redone once the trouble clears
    resource: str | None = None


@dataclass(frozen=True)
class Job:
    op: str  # "prepare", "finish", "redo" (prepare + finish), "drop"
    item_id: str
    slot: int
    path: str = ""
    outputs: dict[str, np.ndarray] | None = None  # ort/trt: each instance's first output
    preview: bool = False
    seq: int = 0  # unique per job sent to a worker: what it is on (``Hosts.busy``)

    def again(self, seq: int) -> Job:
        """This job for a replacement worker: a finish becomes a redo (prepare + finish)."""
        op = "redo" if self.op == "finish" else self.op
        return Job(op, self.item_id, self.slot, self.path, self.outputs, self.preview, seq)


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


class SlotViews:
    """``slot_views`` of each slot, made once (they are the same arrays for every slice)."""

    def __init__(self, buf: Any, instances: tuple[Instance, ...]) -> None:
        self.buf, self.instances = buf, instances
        self._made: dict[int, dict[str, np.ndarray]] = {}

    def __getitem__(self, slot: int) -> dict[str, np.ndarray]:
        got = self._made.get(slot)
        if got is None:
            got = self._made[slot] = slot_views(self.buf, self.instances, slot)
        return got

    def clear(self) -> None:
        self._made.clear()
        self.buf = None


# -- the work on one slice (in a worker process, or in-process with no workers) ----------------
_MEMORY = (
    Reason.DECODE_LIMIT.value,
    "the slice needed more memory than a host worker may use (limits.worker_memory_mib)",
)


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
        self.views = SlotViews(buf, cfg.instances)

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
                pipe = self.cfg.pipe
                sl = read_slice(
                    job.path, max_bytes=pipe.max_bytes, limits=pipe.limits, accept=pipe.accept
                )
            views = self.views[job.slot]
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
        except MemoryError:
            return Prepared(job.item_id, job.slot, _MEMORY, cpu)
        except Exception as exc:  # noqa: BLE001 - one bad slice never stops the service
            msg = withheld(exc, "preparing the slice")
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
            return self._failed(job, exc, cpu)
        findings = sum(len(r.detections) for r in done)
        return Finished(job.item_id, job.slot, files, findings, png, None, cpu)

    def _failed(self, job: Job, exc: Exception, cpu: dict[str, float]) -> Finished:
        """Out of memory: decode-limit; disk full or I/O error: resource trouble (the slice
        is redone later); anything else: quarantined output-error."""
        if isinstance(exc, MemoryError):
            return Finished(job.item_id, job.slot, error=_MEMORY, cpu=cpu)
        why = resource_trouble(exc)
        if why is not None:
            return Finished(job.item_id, job.slot, cpu=cpu, resource=f"cannot write outputs: {why}")
        msg = withheld(exc, "writing the outputs")
        return Finished(job.item_id, job.slot, error=(Reason.OUTPUT_ERROR.value, msg), cpu=cpu)

    def _roles(self, job: Job, held: _Held, files: dict, cpu: dict) -> list[RoleResult]:
        views = self.views[job.slot]
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


def withheld(exc: BaseException, doing: str) -> str:
    """A reason for an unexpected error that quotes nothing from the file: the exception's type
    and where it was raised (a library's message may contain DICOM values)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else ""
    return f"{type(exc).__name__}{where} while {doing} (its message is withheld: it may quote the file)"


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


def _child(cfg: HostConfig, conn: Any, index: int = 0) -> None:
    """A worker process: jobs in, results out, in order, until the pipe closes. It notes the
    job it is on in ``busy`` (shared memory, no message): what its parent charges if it dies."""
    from hxsched.runtime.service.logsafe import setup_worker_logging

    setup_worker_logging()  # the service's JSON lines (logsafe), at its level
    steady_heap()
    sequential_cv2()
    warm_imports()
    _run_test_hook()
    limit_memory(cfg.pipe.limits.worker_memory_mib)
    shm = shared_memory.SharedMemory(name=cfg.shm_name)  # spawned: the parent's tracker
    host = SliceHost(cfg, shm.buf)
    busy = busy_view(shm.buf, cfg.instances, cfg.slots, index + 1)[index:]
    conn.send("ready")
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            busy[0] = job.seq
            got = host.run(job)
            if got is not None:
                conn.send(got)
            busy[0] = 0
    finally:
        del busy
        host.buf = None
        host.views.clear()  # no view of the shared memory may outlive it
        shm.close()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
WORKER_MMAP_THRESHOLD = 16 << 20  # glibc mallopt(3) M_MMAP_THRESHOLD in a host worker ...
WORKER_TRIM_THRESHOLD = 64 << 20  # ... and M_TRIM_THRESHOLD


def steady_heap() -> None:
    """A host worker's arrays (0.25-5 MB, the same sizes for every slice) from a heap that
    keeps what it freed: glibc otherwise maps each one afresh and unmaps it when freed, and
    every page of every array is faulted in and zeroed again for each slice (about 3 ms of
    CPU per slice here). Fixed thresholds (mallopt(3): setting one disables glibc's dynamic
    threshold, whose rise made the service's heap fragment, see ``_fix_mmap_threshold``): a
    worker's heap settles at its per-slice working set and stays there."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD)
    except (OSError, AttributeError):
        pass


def sequential_cv2() -> None:
    """OpenCV in a host worker on one thread (cv::setNumThreads(0): "OpenCV will disable
    threading optimizations and run all its functions sequentially", OpenCV core utility
    docs): the workers are the parallelism, and OpenCV's pool threads otherwise spin in
    sched_yield between the resizes of each slice (about 10 % of a worker's CPU here)."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(0)


# what the host path imports on its first slice (pydicom's reader, writer and pixel handlers:
# ~0.6 s of CPU): imported before the worker says it is ready, not while a slice waits
WARM_MODULES = (
    "pydicom",
    "pydicom.filereader",
    "pydicom.filewriter",
    "pydicom.filebase",
    "pydicom.dataset",
    "pydicom.sequence",
    "pydicom.uid",
    "hxsched.runtime.service.sr",
)


def warm_imports() -> None:
    """Import what every slice needs now (a missing module is reported by the slice)."""
    import importlib

    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def limit_memory(mib: int) -> None:
    """Cap this process's data segment (RLIMIT_DATA: heap and private writable mappings, see
    getrlimit(2)) at ``mib`` MiB (0: no cap), so a decompression bomb raises MemoryError or kills
    this worker, not the service. Not RLIMIT_AS: that counts the slot pool's shared memory, every
    thread's stack and glibc's reserved malloc arenas, which grow with the core count."""
    if mib <= 0:
        return
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    want = mib << 20
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (want, hard))


TEST_HOOK_ENV = "HXSCHED_WORKER_TEST_HOOK"  # tests only: "FILE.py:function", run at start


def _run_test_hook() -> None:
    hook = os.environ.get(TEST_HOOK_ENV)
    if hook:
        file, _, name = hook.rpartition(":")
        runpy.run_path(file)[name]()


def busy_view(buf: Any, instances: tuple[Instance, ...], slots: int, workers: int) -> np.ndarray:
    """One int64 per worker after the slots: the ``seq`` of the job it is on (0: idle)."""
    off = -(-slot_bytes(instances) * slots // 8) * 8
    return np.ndarray((workers,), np.int64, buffer=buf, offset=off)


def busy_bytes(instances: tuple[Instance, ...], slots: int, workers: int) -> int:
    return -(-slot_bytes(instances) * slots // 8) * 8 + 8 * workers


# -- outputs of an interrupted attempt ---------------------------------------------------------
# The roles name every output after the item id (roles/detect.py, roles/synth.py, previews):
# FOLDER/ID.png, FOLDER/ID.INSTANCE.json, FOLDER/INSTANCE/ID.dcm; temp files are ".NAME.*.tmp".
OUTPUT_DIRS = ("dicom", "detections", "previews", "sr")  # sr: findings (runtime/service/sr.py)


def _output_files(out: Path) -> Iterator[Path]:
    """Every file in the output folders (and their subfolders, one level down)."""
    for name in OUTPUT_DIRS:
        top = out / name
        if not top.is_dir():
            continue
        for entry in top.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                yield from (p for p in entry.iterdir() if not p.is_dir())
            else:
                yield entry


def _item_of(path: Path) -> str:
    """The item id an output (or its temp file) is named after."""
    return path.name.lstrip(".").split(".", 1)[0]


def remove_outputs(out: Path, item_id: str) -> int:
    """Delete one item's outputs and temp files (a charged slice leaves nothing behind)."""
    gone = 0
    for path in _output_files(out):
        if _item_of(path) == item_id:
            path.unlink(missing_ok=True)
            gone += 1
    return gone


def remove_partial_outputs(out: Path, journal: Journal) -> int:
    """At start, after ``journal.recover()``: delete every output temp file, and the outputs of
    items not done (an interrupted attempt's; a redo writes them again exactly once). One scan
    of the output folders; files named after no journaled item are left alone."""
    keep: dict[str, list[Path]] = {}
    gone = 0
    for path in _output_files(out):
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
            gone += 1
        else:
            keep.setdefault(_item_of(path), []).append(path)
    for item_id, state in journal.states(keep).items():
        if state != DONE:
            for path in keep[item_id]:
                path.unlink(missing_ok=True)
                gone += 1
    return gone


# -- the pool the service talks to -------------------------------------------------------------
OnResult = Callable[[Any], None]
OnLost = Callable[[str, int, Reason, str], None]  # item, slot, reason, message
Guard = Callable[[str], contextlib.AbstractContextManager[None]]
MAX_DEATHS_PER_MIN = 5  # more host worker deaths than this in a minute: stop, do not respawn
DIED = "host worker process died"  # the start of every charged slice's message


class Hosts:
    """``workers`` processes (0: in this process) doing each slice's host work. Slot k of the
    shared memory is the hand-over of one slice in flight; a slice stays with the worker that
    prepared it. A worker that dies is replaced; only the job it was running when it died is
    charged (``on_lost``; nothing when it was idle), the others it held are redone on its
    replacement. A job running past ``limits.decode_timeout_s`` has its worker killed.

    ``guard`` (in-process only, e.g. ``Journal.decoding``) wraps each decode: a crash of the
    service while it runs is charged to that slice on restart."""

    def __init__(
        self,
        cfg: HostConfig,
        workers: int,
        slots: int,
        on_prepared: OnResult,
        on_finished: OnResult,
        on_lost: OnLost,
        guard: Guard | None = None,
    ) -> None:
        self.workers, self.slots = workers, slots
        self.on_prepared, self.on_finished, self.on_lost = on_prepared, on_finished, on_lost
        self.guard = guard
        # free hand-over slots, the last given back first: slices keep reusing the same few
        # slots, whose pages the workers have mapped and in cache; the spare ones stay untouched
        self.free: queue.Queue[int] = queue.LifoQueue()
        for k in range(slots):
            self.free.put(k)
        self._shm: shared_memory.SharedMemory | None = None
        if workers:
            size = busy_bytes(cfg.instances, slots, workers)
            self._shm = shared_memory.SharedMemory(create=True, size=size)
            self.buf: Any = self._shm.buf
            cfg = HostConfig(**{**cfg.__dict__, "shm_name": self._shm.name, "slots": slots})
            self.busy = busy_view(self.buf, cfg.instances, slots, workers)
            self.busy[:] = 0
        else:
            self._local = np.zeros(max(1, slot_bytes(cfg.instances) * slots), np.uint8)
            self.buf = self._local
            self._inline = SliceHost(cfg, self.buf)
        self.cfg = cfg
        self._views = SlotViews(self.buf, cfg.instances)
        self._lock = threading.Lock()
        self._closing = False
        self.failed: str | None = None  # set when workers keep dying: the service stops
        self._deaths: list[float] = []
        self._owner: dict[str, tuple[int, int]] = {}  # item -> (worker, its generation)
        self._seq = itertools.count(1)
        self._procs: list[_Proc] = []
        self._ctx = mp.get_context("spawn")  # no fork of a threaded parent (pynetdicom, HTTP)
        for w in range(workers):
            self._procs.append(self._spawn(w, 0))
        for p in self._procs:  # started (imports done, shared memory attached)
            p.ready.wait(120.0)
        if workers:
            self._watchdog = threading.Thread(target=self._watch, name="hxsched-host-watchdog")
            self._watchdog.daemon = True
            self._watchdog.start()

    # -- life ------------------------------------------------------------------------------
    def _spawn(self, w: int, gen: int) -> _Proc:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_child, args=(self.cfg, child, w), name=f"hxsched-host-{w}", daemon=True
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
        if self.workers:
            self._watchdog.join(timeout=2.0)  # it reads ``busy``, which goes below
        for p in self._procs:
            with contextlib.suppress(OSError):
                p.conn.send(None)
        for p in self._procs:
            p.proc.join(timeout=5.0)
            if p.proc.is_alive():
                p.proc.kill()
            p.conn.close()
        self._procs = []
        self._views.clear()
        if self._shm is not None:
            self.buf = None
            del self.busy
            try:
                self._shm.close()
                self._shm.unlink()
            except (BufferError, FileNotFoundError):
                pass
            self._shm = None

    def pids(self) -> list[int]:
        return [p.proc.pid for p in self._procs if p.proc.pid is not None]

    def _watch(self) -> None:
        """Kill a worker whose current job runs past ``limits.decode_timeout_s``."""
        limit = self.cfg.pipe.limits.decode_timeout_s
        tick = min(0.25, limit / 4)
        while not self._closing:
            time.sleep(tick)
            now = time.monotonic()
            for p in list(self._procs):
                seq = int(self.busy[p.index])
                if seq != p.watch_seq:
                    p.watch_seq, p.watch_t = seq, now
                elif seq and now - p.watch_t > limit and not p.killed_for:
                    p.killed_for = seq
                    with contextlib.suppress(OSError):
                        os.kill(p.proc.pid, signal.SIGKILL)

    # -- work -------------------------------------------------------------------------------
    def inputs(self, slot: int) -> dict[str, dict[str, np.ndarray]]:
        views = self._views[slot]
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
            self._run_inline(job)
            return
        with self._lock:
            if new:
                w = min(range(len(self._procs)), key=lambda k: len(self._procs[k].sent))
                self._owner[job.item_id] = (w, self._procs[w].gen)
            w, gen = self._owner[job.item_id]
            p = self._procs[w]
            job = job.again(next(self._seq)) if gen != p.gen else _numbered(job, self._seq)
            self._owner[job.item_id] = (w, p.gen)  # its worker died since: prepared again
            if job.op != "drop":  # no answer comes back for a drop
                p.sent.append(job)
            with contextlib.suppress(OSError):  # a dead worker: its reader resends what was sent
                p.conn.send(job)

    def _run_inline(self, job: Job) -> None:
        if self.guard is not None and job.op in ("prepare", "redo"):
            with self.guard(job.item_id):
                got = self._inline.run(job)
        else:
            got = self._inline.run(job)
        if got is not None:
            (self.on_prepared if isinstance(got, Prepared) else self.on_finished)(got)

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
        """A worker died: charge the job it was running (none if idle), restart it, resend the
        rest. Every answer it sent has been read (the pipe is drained before EOF), so the jobs
        still in ``sent`` are the unanswered ones."""
        p.proc.join(timeout=1.0)
        code = p.proc.exitcode
        with self._lock:
            if self._closing or self._procs[p.index] is not p:
                return
            pending = list(p.sent)
            seq, self.busy[p.index] = int(self.busy[p.index]), 0
            guilty = next((j for j in pending if seq and j.seq == seq), None)
            reason, message = _blame(guilty, code, 0 < p.killed_for == seq, self.cfg)
            if reason != Reason.DECODE_LIMIT:  # a limit doing its job is no failing worker
                now = time.monotonic()
                self._deaths = [t for t in self._deaths if now - t < 60.0] + [now]
            if not p.ready.is_set() or len(self._deaths) > MAX_DEATHS_PER_MIN:
                self.failed = f"host worker processes keep dying (exit {code}); see the log"
                p.ready.set()  # nobody waits on a worker that will not start
                return
            fresh = self._spawn(p.index, p.gen + 1)
            self._procs[p.index] = fresh
        if guilty is not None:
            pending.remove(guilty)
            self._owner.pop(guilty.item_id, None)
            remove_outputs(self.cfg.out, guilty.item_id)
            fields = {"item": guilty.item_id, "exitcode": code, "reason": reason.value}
            log.error(
                "host worker died on a slice; charging only that slice", extra={"fields": fields}
            )
            self.on_lost(guilty.item_id, guilty.slot, reason, message)
        else:
            log.warning("host worker died while idle", extra={"fields": {"exitcode": code}})
        for job in pending:
            self._send(job)


def _numbered(job: Job, seq: Iterator[int]) -> Job:
    if job.op == "drop":
        return job
    return Job(job.op, job.item_id, job.slot, job.path, job.outputs, job.preview, next(seq))


def _blame(
    job: Job | None, code: int | None, timed_out: bool, cfg: HostConfig
) -> tuple[Reason, str]:
    """The reason and message charged to the job a worker died on."""
    if job is None:
        return Reason.PROCESSING_ERROR, ""
    if timed_out:
        limit = cfg.pipe.limits.decode_timeout_s
        return (
            Reason.DECODE_LIMIT,
            f"{DIED}: killed after {limit:g} s on this slice (limits.decode_timeout_s)",
        )
    if code == -signal.SIGKILL and job.op in ("prepare", "redo"):
        msg = f"{DIED} (killed: SIGKILL) while decoding this slice (limits.worker_memory_mib?)"
        return Reason.DECODE_LIMIT, msg
    return Reason.PROCESSING_ERROR, f"{DIED} (exit {code})"


@dataclass
class _Proc:
    index: int
    gen: int
    proc: Any
    conn: Any
    sent: deque[Job] = field(default_factory=deque)
    reader: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    watch_seq: int = 0  # the watchdog's last look at what it runs, and since when
    watch_t: float = 0.0
    killed_for: int = 0  # the job the watchdog killed it for
