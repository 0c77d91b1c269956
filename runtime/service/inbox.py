"""The folder source: files dropped into an inbox are taken once complete, spooled into the
journal and removed from the inbox; oversize files are quarantined unread; symlinks are skipped."""

from __future__ import annotations

import enum
import errno
import fcntl
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hxsched.runtime.service.dicom_io import Reason
from hxsched.runtime.service.filemeta import sop_instance_uid
from hxsched.runtime.service.intake import Gate, Intake, intake_of
from hxsched.runtime.service.journal import Journal
from hxsched.runtime.service.pipeline import SourceKind

log = logging.getLogger("hxsched.service")

SUFFIXES = {".dcm", ".dicom", ".png", ".tif", ".tiff", ""}


class Skip(str, enum.Enum):
    """Why an inbox entry was skipped (the label of ``hxsched_inbox_skipped_total``)."""

    SYMLINK = "symlink"  # never followed
    NOT_A_FILE = "not-a-file"  # a directory, FIFO, socket, device
    UNREADABLE = "unreadable"  # lstat/open refused (EACCES, ELOOP, ...)
    REFUSED = "refused"  # could not be spooled (not for want of space): left in place

    def __str__(self) -> str:
        return self.value


Sig = tuple[int, int]  # (size, mtime in ns): a file is stable while this does not change
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # never a FIFO's wait


@dataclass(frozen=True)
class _Taken:
    """A complete inbox file, read through a descriptor opened without following links."""

    name: str
    st: os.stat_result
    data: bytes  # the whole file; only its first bytes when oversize
    oversize: bool = False


def open_for_writing(fd: int) -> bool | None:
    """Whether anyone has this file open for writing: Linux refuses a read lease then with
    EAGAIN (fcntl(2), "Leases"). None when it cannot be told (EACCES: we do not own the file;
    EINVAL: a file system without leases): the caller falls back to the stability interval.
    The lease is dropped at once; a writer opening meanwhile waits microseconds, and the
    lease-break signal is set to SIGURG (ignored by default) rather than SIGIO (terminates)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


class FolderSource(threading.Thread):
    """Polls a folder. A file is taken once it is complete: its size and mtime unchanged for
    ``stable_s`` and nobody has it open for writing (or it was written as ``NAME.part`` or
    ``.NAME`` and renamed: those names are never taken). Symlinks and anything not a regular
    file are skipped, counted (``on_skip``) and logged once each, by position, never by name.
    Accepted files are removed from the folder; oversize ones are quarantined unread; on
    resource trouble (disk full) the gate holds and the files stay until it clears."""

    BATCH = 64  # files per journal commit at most
    BATCH_BYTES = 64 << 20  # ... and bytes in memory at most
    FILL_MIN = 16  # with the queue full, wait for room for this many files per commit ...
    FILL_S = 0.05  # ... this long at most

    def __init__(
        self,
        folder: Path,
        journal: Journal,
        gate: Gate,
        *,
        max_bytes: int,
        on_accept: Callable[..., None],
        stable_s: float = 1.0,
        poll_s: float = 0.1,
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name="hxsched-folder", daemon=True)
        self.folder, self.journal, self.gate = folder, journal, gate
        self.max_bytes, self.on_accept, self.poll_s = max_bytes, on_accept, poll_s
        self.stable_s, self.on_skip = stable_s, on_skip
        self.skipped: dict[str, int] = {}  # why -> entries skipped
        self._seen: dict[str, tuple[Sig, float]] = {}  # name -> (signature, since when)
        self._bad: dict[str, Sig] = {}  # refused files: left in place until they change
        self._noted: dict[str, str] = {}  # skipped entries already counted and logged
        folder.mkdir(parents=True, exist_ok=True)

    # -- the scan: one bad entry never stops it ----------------------------------------------
    def scan(self) -> list[tuple[str, os.stat_result]]:
        """Regular files in the folder (lstat), each entry handled on its own."""
        try:
            it = os.scandir(self.folder)
        except OSError as exc:
            log.error("folder source: cannot list the inbox (%s)", type(exc).__name__)
            return []
        out, names = [], set()
        with it:
            for pos in range(1, 1 << 30):
                try:
                    e = next(it)
                except StopIteration:
                    break
                except OSError:  # the listing itself failed: what was read so far
                    break
                names.add(e.name)
                got = self._entry(e, pos)
                if got is not None:
                    out.append(got)
        self._noted = {n: w for n, w in self._noted.items() if n in names}
        self._bad = {n: s for n, s in self._bad.items() if n in names}
        return out

    def _entry(self, e: os.DirEntry, pos: int) -> tuple[str, os.stat_result] | None:
        name = e.name
        if name.startswith(".") or name.endswith((".tmp", ".part")):
            return None  # still being written (renamed when complete)
        try:
            if e.is_symlink():
                self._skip(name, Skip.SYMLINK, pos)
                return None
            if not e.is_file(follow_symlinks=False):
                self._skip(name, Skip.NOT_A_FILE, pos)
                return None
            return name, e.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None  # gone meanwhile (renamed away, taken by someone else)
        except OSError:
            self._skip(name, Skip.UNREADABLE, pos)
            return None

    def _skip(self, name: str, why: Skip, pos: int | None = None) -> None:
        """Count and log a skipped entry once (its name is never logged: it may carry PHI)."""
        if self._noted.get(name) == why:
            return
        self._noted[name] = why
        self.skipped[why] = self.skipped.get(why, 0) + 1
        if self.on_skip is not None:
            self.on_skip(str(why))
        fields = {"why": str(why), "position": pos}
        log.warning("folder source: skipped an inbox entry", extra={"fields": fields})

    def candidates(self) -> list[str]:
        """Names of the files unchanged for ``stable_s`` (oldest first)."""
        now_m, now_w = time.monotonic(), time.time()
        seen: dict[str, tuple[Sig, float]] = {}
        out = []
        for name, st in sorted(self.scan(), key=lambda x: (x[1].st_mtime_ns, x[0])):
            sig = (st.st_size, st.st_mtime_ns)
            if self._bad.get(name) == sig:
                continue
            prev = self._seen.get(name)
            same = prev is not None and prev[0] == sig
            since = prev[1] if prev is not None and same else now_m
            seen[name] = (sig, since)
            # unchanged since we first saw it that way for stable_s, or (two polls alike) last
            # written stable_s ago: a file that was there before the service started
            if same and (now_m - since >= self.stable_s or now_w - st.st_mtime >= self.stable_s):
                out.append(name)
        self._seen = seen  # names that vanished are forgotten
        return out

    # -- taking files -----------------------------------------------------------------------
    def run(self) -> None:
        while not self.gate.stop.is_set():
            todo = self.candidates()
            while todo and not self.gate.stop.is_set():
                want = min(self.BATCH, len(todo))
                got = self.gate.acquire(None, n=want)  # waits while held
                if not got:
                    return
                if got < min(want, self.FILL_MIN):
                    got += self._fill(min(want, self.FILL_MIN) - got, want - got)
                batch, todo = todo[:got], todo[got:]
                try:
                    self.take_many(batch)
                except Exception as exc:  # noqa: BLE001 - the source never stops
                    if not self.gate.trouble(exc):
                        log.error("folder source: a batch failed (%s)", type(exc).__name__)
                        self._one_by_one(batch)  # only the file that fails is set aside
                finally:
                    self.gate.release(got)
                if self.gate.held_reason:
                    break  # the rest stays in the inbox until the trouble clears
            self.gate.stop.wait(self.poll_s)

    def _fill(self, least: int, most: int) -> int:
        """Room for ``least`` to ``most`` more slices of this batch, waited for at most FILL_S.
        With the queue full the gate frees room a slice at a time, and a commit per slice
        costs a transaction and fsyncs each; the queue ahead keeps the pipeline busy while
        room for a bigger group builds up. Returns how many were reserved (0 on timeout)."""
        extra = 0
        deadline = time.monotonic() + self.FILL_S
        while extra < least and not self.gate.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            extra += self.gate.acquire(left, n=most - extra)
        return extra

    def take_many(self, names: list[str]) -> None:
        """Several complete files in one journal commit (group commit); oversize ones are
        quarantined one by one. Resource trouble holds the gate and leaves the files."""
        batch: list[_Taken] = []
        total = 0
        for name in names:
            t = self._open(name)
            if t is None:
                continue
            if t.oversize:
                if not self._quarantine(t):
                    return
                continue
            batch.append(t)
            total += len(t.data)
            if total >= self.BATCH_BYTES:
                break  # the rest next round
        if not batch:
            return
        rows: list[tuple[str | os.PathLike[str] | bytes, str, str, str | None]] = [
            (t.data, t.name, SourceKind.FOLDER, sop_instance_uid(t.data)) for t in batch
        ]
        got = self.journal.accept_many(rows)  # the SOP Instance UID (file meta) dedupes too
        for t, item in zip(batch, got, strict=True):
            if isinstance(item, Exception):
                if self.gate.trouble(item):
                    return  # held: these files stay where they are and are retried
                self._refused(t, item)
                continue
            self._remove(t)
            self.on_accept(intake_of(item))

    def take(self, name: str) -> None:
        self.take_many([name])

    def _one_by_one(self, names: list[str]) -> None:
        """A batch failed: its files one at a time; one that still fails is left in place and
        skipped until it changes (never retried as part of every later batch)."""
        for name in names:
            try:
                self.take_many([name])
            except Exception as exc:  # noqa: BLE001
                if self.gate.trouble(exc):
                    return
                seen = self._seen.get(name)
                if seen is not None:
                    self._bad[name] = seen[0]
                self._skip(name, Skip.REFUSED)

    def _open(self, name: str) -> _Taken | None:
        """The file if it is still the complete regular file the scan saw, else None."""
        path = self.folder / name
        try:
            fd = os.open(path, _OPEN_FLAGS)  # a symlink swapped in since the scan: ELOOP
        except FileNotFoundError:
            self._seen.pop(name, None)
            return None
        except OSError as exc:
            self._skip(name, Skip.SYMLINK if exc.errno == errno.ELOOP else Skip.UNREADABLE)
            return None
        try:
            return self._read(fd, name)
        except OSError as exc:
            if not self.gate.trouble(exc):
                self._skip(name, Skip.UNREADABLE)
            return None
        finally:
            os.close(fd)

    def _read(self, fd: int, name: str) -> _Taken | None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self._skip(name, Skip.NOT_A_FILE)
            return None
        seen = self._seen.get(name)
        if seen is None or seen[0] != (st.st_size, st.st_mtime_ns):
            return None  # changed since the scan: not complete yet
        if open_for_writing(fd):
            self._seen[name] = (seen[0], time.monotonic())  # stable only once closed
            return None
        if st.st_size > self.max_bytes:
            return _Taken(name, st, os.pread(fd, 4096, 0), oversize=True)
        data = _read_all(fd, st.st_size)
        if len(data) != st.st_size:
            return None  # it changed while read
        return _Taken(name, st, data)

    def _quarantine(self, t: _Taken) -> bool:
        """Quarantine an oversize file unread (its first bytes kept); False when held."""
        size = t.st.st_size
        try:
            self.journal.quarantine_file(
                t.data,
                t.name,
                Reason.OVERSIZE,
                f"{size} bytes is over the limit of {self.max_bytes}",
                source=SourceKind.FOLDER,
                max_bytes=4096,
            )
        except Exception as exc:  # noqa: BLE001
            if self.gate.trouble(exc):
                return False
            self._refused(t, exc)
            return True
        self._remove(t)
        self.on_accept(Intake.QUARANTINED, Reason.OVERSIZE.value)
        return True

    def _remove(self, t: _Taken) -> None:
        """Unlink the inbox copy, unless the name now holds another file."""
        self._seen.pop(t.name, None)
        path = self.folder / t.name
        try:
            now = os.lstat(path)
            if (now.st_dev, now.st_ino) == (t.st.st_dev, t.st.st_ino):
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("folder source: cannot remove a taken file (%s)", type(exc).__name__)

    def _refused(self, t: _Taken, exc: BaseException) -> None:
        log.error("folder source: cannot take a file (%s); leaving it in place", type(exc).__name__)
        self._bad[t.name] = (t.st.st_size, t.st.st_mtime_ns)
        self._skip(t.name, Skip.REFUSED)


def _read_all(fd: int, size: int) -> bytes:
    """At most ``size`` + 1 bytes (one more tells a file that grew)."""
    parts, got = [], 0
    while got <= size:
        chunk = os.pread(fd, min(1 << 20, size + 1 - got), got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)
