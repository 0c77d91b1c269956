"""Durable intake: a spool directory plus an SQLite journal, so nothing acknowledged is lost.

A slice is acknowledged only after its bytes are fsynced in ``spool/`` and its row is committed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar, cast

from hxsched.errors import HxschedError, InternalError, ResourceError

log = logging.getLogger("hxsched.service")

ACCEPTED = "accepted"
PROCESSING = "processing"
DONE = "done"
QUARANTINED = "quarantined"
# a copy of an instance (same SOP Instance UID, other bytes) that arrived while the first copy
# was still waiting or in flight: kept, not processed; dropped once the first is done, promoted
# to accepted if the first is quarantined (so a bad first copy never swallows a good one)
STANDBY = "standby"
STATES = (ACCEPTED, PROCESSING, DONE, QUARANTINED, STANDBY)

_CHUNK = 1 << 20
_ID_LEN = 24
TMP_PREFIX = _TMP_PREFIX = ".tmp-"  # temp files in the spool folder (removed on recovery)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    ext TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    accepted_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    outputs TEXT,
    reason_code TEXT,
    reason TEXT,
    dedupe_key TEXT
);
CREATE INDEX IF NOT EXISTS items_state ON items (state, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    key TEXT NOT NULL,
    path TEXT NOT NULL,
    sop_key TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL,
    last_status TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (item_id, key)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_try_at);
"""

# the outbound queue to the PACS (runtime/service/outbox.py): one row per file to send
OUT_QUEUED = "queued"
OUT_SENT = "sent"
OUT_FAILED = "failed"  # permanently: the destination refused it for good


@dataclass(frozen=True)
class OutboxEntry:
    """A file to send once its slice is done: the item, its output key, the file's path."""

    item_id: str
    key: str
    path: str


@dataclass(frozen=True)
class OutboxRow:
    """One queued file of the outbound queue."""

    id: int
    item_id: str
    key: str
    path: str
    attempts: int
    next_try_at: float
    last_status: str | None


_OUTBOX_COLUMNS = ("id", "item_id", "key", "path", "attempts", "next_try_at", "last_status")


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a journal written by an older version up to this schema (columns added since)."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(items)")}
    if "dedupe_key" not in columns:
        db.execute("ALTER TABLE items ADD COLUMN dedupe_key TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS items_key ON items (dedupe_key)")


def dedupe_key(key: str) -> str:
    """What the journal stores of a sender's identity for some content (the SOP Instance UID):
    its SHA-256, never the value itself."""
    return hashlib.sha256(key.strip(" \x00").encode("ascii", "replace")).hexdigest()


def _hashed(key: str | None) -> str | None:
    return dedupe_key(key) if key and key.strip(" \x00") else None


GROUP_DELAY_S = 0.010  # a group commit waits at most this long for more slices ...
GROUP_MAX = 64  # ... or until this many are queued
# times the service process died while decoding one item in-process (``workers: 0``; see
# ``Journal.decoding``) before it is quarantined; a claim alone never counts (an external kill
# of the service is not the slice's fault)
MAX_ATTEMPTS = 3
CRASHED_REPEATEDLY = "crashed-repeatedly"  # dicom_io.Reason.CRASHED_REPEATEDLY
SPOOL_MISSING = "spool_missing"  # dicom_io.Reason.SPOOL_MISSING

# The machine's trouble, not the input's: a full disk or quota, an I/O error, a read-only file
# system (errno names from POSIX <errno.h>), and SQLite's messages for the same conditions
# (SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN: https://www.sqlite.org/rescode.html).
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
_SQLITE_RESOURCE = ("database or disk is full", "disk I/O error", "unable to open database file")


def resource_trouble(exc: BaseException) -> str | None:
    """One line naming the machine's trouble when ``exc`` is a full disk, an I/O error or a
    read-only file system (never a file name or anything read from a file); else None."""
    if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        return f"{errno.errorcode[exc.errno]} ({os.strerror(exc.errno)})"
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return next((f"SQLite: {t}" for t in _SQLITE_RESOURCE if t.lower() in text), None)
    return None


_F = TypeVar("_F", bound=Callable[..., Any])


def _resources(fn: _F) -> _F:
    """A journal method whose resource trouble raises ResourceError (one line, no traceback)."""

    @functools.wraps(fn)
    def wrapped(self: Journal, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except (OSError, sqlite3.Error) as exc:
            why = resource_trouble(exc)
            if why is None:
                raise
            msg = f"the journal cannot be written: {why}; it resumes once this clears"
            raise ResourceError(msg, path=self.root) from None

    return cast(_F, wrapped)


@dataclass(frozen=True)
class Recovery:
    """What ``Journal.recover`` did: items requeued, and those it quarantined (id, reason)."""

    requeued: int = 0
    quarantined: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Spooled:
    """What the writer of a spool temp file knows once it fsynced it: its SHA-256 (hex) and
    size, the journal's content id without reading it back."""

    sha256: str
    size: int


class SpoolError(HxschedError):
    """A slice could not be stored durably (disk full, permissions); it was not accepted."""


@dataclass(frozen=True)
class Item:
    """One journaled slice. ``path`` is where its bytes are now (spool or quarantine)."""

    id: str
    name: str
    source: str
    ext: str
    size: int
    state: str
    path: Path
    attempts: int = 0
    accepted_at: float = 0.0
    outputs: dict = field(default_factory=dict)
    reason_code: str | None = None
    reason: str | None = None
    duplicate: bool = False


@dataclass
class _Pending:
    """A spooled slice waiting for its group's commit."""

    tmp: Path
    item_id: str
    size: int
    name: str
    source: str
    key: str | None = None  # dedupe_key() of the sender's identity (SOP Instance UID)
    duplicate: bool = False
    standby: bool = False  # a duplicate by key of an item not yet done: kept in reserve
    done: bool = False
    item: Item | None = None
    error: SpoolError | None = None

    def result(self) -> Item:
        if self.error is not None:
            raise self.error
        if self.item is None:
            raise InternalError(f"journal group commit left {self.item_id!r} without a row")
        return self.item

    def result_or_error(self) -> Item | SpoolError:
        return self.error if self.error is not None else self.result()


def content_id(data: bytes) -> str:
    """The item id of some content: the first 24 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:_ID_LEN]


def stored_name(name: str) -> str:
    """A file name as the journal keeps it: valid UTF-8. A name that is not (a folder's bytes
    Python holds as surrogate escapes) has those bytes written as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _ext_of(name: str) -> str:
    suffix = Path(name).suffix.lower().lstrip(".")
    return suffix if re.fullmatch(r"[a-z0-9]{1,8}", suffix) else "bin"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The service's intake journal under ``root`` (``spool/``, ``quarantine/``, the database).

    Thread-safe: one connection guarded by a lock. Crash-safe: the database is the truth and
    file moves follow a commit, so ``recover()`` can always finish what a crash interrupted.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.spool_dir = self.root / "spool"
        self.quarantine_dir = self.root / "quarantine"
        self.db_path = self.root / "journal.sqlite3"
        self.marks_dir = self.root / "decoding"  # in-process decoding under way (``decoding``)
        self.recovered = Recovery()  # set by recover()
        try:
            for d in (self.root, self.spool_dir, self.quarantine_dir, self.marks_dir):
                d.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.db_path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            _migrate(self._db)
        except (OSError, sqlite3.Error) as exc:
            why = resource_trouble(exc)
            if why is not None:
                msg = f"cannot open the journal: {why}; free space or fix the disk and start again"
                raise ResourceError(msg, path=self.root) from None
            raise HxschedError(
                f"cannot open the journal: {exc}; check that the directory is writable",
                path=self.root,
            ) from exc
        self._lock = threading.RLock()
        self._gc = threading.Condition(threading.Lock())  # group commit of accepts
        self._gc_queue: list[_Pending] = []
        self._gc_writing = 0  # callers still spooling (a leader waits for them, briefly)
        self._gc_leader = False

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # a failed COMMIT (disk full) leaves the transaction open: end it, or every
                # later BEGIN fails; the original error is the one to report
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise

    def _spool_path(self, item_id: str, ext: str) -> Path:
        return self.spool_dir / f"{item_id}.{ext}"

    def _quarantine_path(self, item_id: str, ext: str) -> Path:
        return self.quarantine_dir / f"{item_id}.{ext}"

    def _item(self, row: sqlite3.Row, duplicate: bool = False) -> Item:
        where = self._quarantine_path if row["state"] == QUARANTINED else self._spool_path
        return Item(
            id=row["id"],
            name=row["name"],
            source=row["source"],
            ext=row["ext"],
            size=row["size"],
            state=row["state"],
            path=where(row["id"], row["ext"]),
            attempts=row["attempts"],
            accepted_at=row["accepted_at"],
            outputs=json.loads(row["outputs"]) if row["outputs"] else {},
            reason_code=row["reason_code"],
            reason=row["reason"],
            duplicate=duplicate,
        )

    def _bump(self, db: sqlite3.Connection, counter: str, by: int = 1) -> None:
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (counter, by),
        )

    @_resources
    def get(self, item_id: str) -> Item | None:
        """The item with this id, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return self._item(row) if row else None

    def _stored(self, item_id: str) -> Item:
        """The item this journal has just written (its row must exist)."""
        item = self.get(item_id)
        if item is None:
            raise InternalError(f"journal row {item_id!r} vanished right after it was written")
        return item

    # -- intake -----------------------------------------------------------------------------

    def _write_temp(self, src: str | os.PathLike[str] | bytes) -> tuple[Path, str, int]:
        """Copy the content into a fsynced temp file in spool/; return (temp, id, size)."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.spool_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(src, (bytes, bytearray, memoryview)):
                    data = bytes(src)
                    digest.update(data)
                    out.write(data)
                    size = len(data)
                else:
                    with open(src, "rb") as inp:
                        while chunk := inp.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, digest.hexdigest()[:_ID_LEN], size

    def _movable(self, src: str | os.PathLike[str] | bytes) -> bool:
        """Whether ``src`` is one of our temporary files in spool/ (renaming keeps it there)."""
        if isinstance(src, (bytes, bytearray, memoryview)):
            return False
        path = Path(os.fsdecode(src))
        here = os.path.abspath(path.parent) == os.path.abspath(self.spool_dir)
        return here and path.name.startswith(_TMP_PREFIX)

    def _adopt(self, path: Path, hashed: Spooled | None = None) -> tuple[Path, str, int]:
        """Hash and fsync a complete temp file in spool/ in place; return (it, id, size). With
        ``hashed``, its writer already hashed and fsynced it as it wrote (the C-STORE SCP)."""
        if hashed is not None:
            return path, hashed.sha256[:_ID_LEN], hashed.size
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as inp:
            while chunk := inp.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
            os.fsync(inp.fileno())  # the data another descriptor wrote (fsync(2): the file's)
        return path, digest.hexdigest()[:_ID_LEN], size

    def accept(
        self,
        src: str | os.PathLike[str] | bytes,
        name: str,
        source: str,
        key: str | None = None,
        *,
        move: bool = False,
        hashed: Spooled | None = None,
    ) -> Item:
        """Spool ``src`` durably and journal it as accepted; only then may the sender be told.
        With ``move``, a ``src`` that is a complete ``.tmp-`` file in spool/ (what the C-STORE
        SCP received into) is given up by the caller: hashed and fsynced in place and renamed,
        not copied (another ``src`` is copied); ``hashed``, when its writer hashed and fsynced
        it while writing, spares reading it again.

        The same content pushed again, or other content under the same ``key`` (the sender's
        identity for it: the SOP Instance UID) while the first is not quarantined, returns the
        first item with ``duplicate=True``; the journal stores only a hash of the key.
        Raises SpoolError when the slice cannot be stored (the sender should get a failure).
        Concurrent callers share one commit (group commit: one fsync for all of them).
        """
        with self._gc:
            self._gc_writing += 1
        try:
            tmp, item_id, size = self._spooled(src, name, move, hashed)
        except BaseException:
            with self._gc:
                self._gc_writing -= 1
                self._gc.notify_all()
            raise
        entry = _Pending(tmp, item_id, size, stored_name(name), source, _hashed(key))
        with self._gc:
            self._gc_writing -= 1
            self._gc_queue.append(entry)
            self._gc.notify_all()
            while not entry.done and self._gc_leader:
                self._gc.wait()
            if not entry.done:
                self._lead_group()
        return entry.result()

    def accept_many(
        self,
        batch: list[tuple[str | os.PathLike[str] | bytes, str, str]]
        | list[tuple[str | os.PathLike[str] | bytes, str, str, str | None]],
    ) -> list[Item | SpoolError]:
        """``accept`` for several slices (src, name, source[, key]) in one commit; per slice its
        item, or the SpoolError that refused it."""
        entries: list[_Pending] = []
        out: list[Item | SpoolError | None] = []
        for src, name, source, *rest in batch:
            key = _hashed(rest[0] if rest else None)
            try:
                tmp, item_id, size = self._spooled(src, name)
            except SpoolError as exc:
                out.append(exc)
                continue
            entries.append(_Pending(tmp, item_id, size, stored_name(name), source, key))
            out.append(None)
        self._commit_group(entries)
        it = iter(entries)
        return [x if x is not None else next(it).result_or_error() for x in out]

    def _spooled(
        self,
        src: str | os.PathLike[str] | bytes,
        name: str,
        move: bool = False,
        hashed: Spooled | None = None,
    ) -> tuple[Path, str, int]:
        try:
            if move and self._movable(src):
                return self._adopt(Path(os.fsdecode(src)), hashed)
            return self._write_temp(src)
        except OSError as exc:
            msg = f"cannot spool a slice: {exc.strerror or exc}; check free space and permissions"
            raise SpoolError(msg, path=self.spool_dir) from exc

    def _lead_group(self) -> None:
        """Called with ``_gc`` held: wait (at most GROUP_DELAY_S, while others are still
        spooling) for company, then commit everything queued in one transaction."""
        self._gc_leader = True
        deadline = time.monotonic() + GROUP_DELAY_S
        while self._gc_writing and len(self._gc_queue) < GROUP_MAX:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._gc.wait(left)
        batch, self._gc_queue = self._gc_queue, []
        self._gc.release()
        try:
            self._commit_group(batch)
        finally:
            self._gc.acquire()
            self._gc_leader = False
            self._gc.notify_all()

    def _commit_group(self, batch: list[_Pending]) -> None:
        """Rename the spooled files, fsync the folder once, insert every row in one commit."""
        if not batch:
            return
        with self._lock:
            try:
                fresh = self._dedupe(batch)
                for e in fresh:
                    os.replace(e.tmp, self._spool_path(e.item_id, _ext_of(e.name)))
                _fsync_dir(self.spool_dir)
                now = time.time()
                with self._tx() as db:
                    db.executemany(
                        "INSERT INTO items (id, name, source, ext, size, state, accepted_at,"
                        " updated_at, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                e.item_id,
                                e.name,
                                e.source,
                                _ext_of(e.name),
                                e.size,
                                STANDBY if e.standby else ACCEPTED,
                                now,
                                now,
                                e.key,
                            )
                            for e in fresh
                        ],
                    )
                    dups = sum(1 for e in batch if e.duplicate)
                    if dups:
                        self._bump(db, "duplicates", dups)
            except (OSError, sqlite3.Error, ValueError) as exc:  # ValueError: e.g. UnicodeError
                for e in batch:
                    if not e.duplicate:
                        e.tmp.unlink(missing_ok=True)
                        self._spool_path(e.item_id, _ext_of(e.name)).unlink(missing_ok=True)
                    e.error = SpoolError(f"cannot journal a slice: {exc}", path=self.root)
            else:
                rows = {
                    r["id"]: r
                    for r in self._db.execute(
                        f"SELECT * FROM items WHERE id IN ({','.join('?' * len(batch))})",
                        [e.item_id for e in batch],
                    )
                }
                for e in batch:
                    e.item = self._item(rows[e.item_id], duplicate=e.duplicate)
        for e in batch:
            e.done = True

    def _dedupe(self, batch: list[_Pending]) -> list[_Pending]:
        """Mark duplicates the entries whose content is journaled already, or whose key is that
        of a done item (or either twice in the batch: the first wins); a duplicate then names
        the first item. An entry whose key is that of an item still waiting or in flight is a
        standby copy (STANDBY). Return the entries to insert (the new and the standby ones)."""
        ids = [e.item_id for e in batch]
        known = {
            r[0]
            for r in self._db.execute(
                f"SELECT id FROM items WHERE id IN ({','.join('?' * len(ids))})", ids
            )
        }
        keys = list({e.key for e in batch if e.key is not None})
        first: dict[str, str] = {}  # key -> the item that has it
        settled: dict[str, bool] = {}  # key -> its item is done
        if keys:
            rows = self._db.execute(
                f"SELECT dedupe_key, id, state FROM items WHERE dedupe_key IN"
                f" ({','.join('?' * len(keys))}) AND state IN (?, ?, ?) ORDER BY seq",
                [*keys, ACCEPTED, PROCESSING, DONE],
            )
            for key, item_id, state in rows:
                if state == DONE or key not in first:
                    first[key] = item_id
                    settled[key] = state == DONE
        fresh = []
        for e in batch:
            same = e.item_id if e.item_id in known else None
            if same is None and e.key is not None and settled.get(e.key):
                same = first[e.key]
            if same is not None:
                e.duplicate, e.item_id = True, same
                e.tmp.unlink(missing_ok=True)
                continue
            known.add(e.item_id)
            if e.key is not None and e.key in first:
                e.duplicate = e.standby = True  # the sender's copy is kept until the first ends
            elif e.key is not None:
                first[e.key], settled[e.key] = e.item_id, False
            fresh.append(e)
        return fresh

    @_resources
    def claim(self, n: int = 1) -> list[Item]:
        """Move up to ``n`` accepted items (oldest first) to processing and return them. A claim
        is no attempt: only a crash while the item was being decoded counts (``decoding``)."""
        if n <= 0:
            return []
        with self._unsynced(), self._tx() as db:
            rows = db.execute(
                "SELECT * FROM items WHERE state = ? ORDER BY seq LIMIT ?", (ACCEPTED, n)
            ).fetchall()
            now = time.time()
            db.executemany(
                "UPDATE items SET state = ?, updated_at = ? WHERE id = ?",
                [(PROCESSING, now, r["id"]) for r in rows],
            )
        # the rows as updated: only the state changed (and the time, which Item does not hold)
        return [replace(self._item(r), state=PROCESSING) for r in rows]

    @contextlib.contextmanager
    def _unsynced(self) -> Iterator[None]:
        """The block's commits are not fsynced (SQLite WAL with ``synchronous=NORMAL``: still
        atomic and consistent; the next synced commit makes them durable with it). Only for
        what a crash may lose: a claim (``recover`` puts processing items back to accepted)."""
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                yield
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    @_resources
    def release(self, item_ids: Iterable[str]) -> int:
        """Move processing items back to accepted, counting no attempt (the machine's trouble,
        e.g. a full disk, stopped them, not their content); return how many moved."""
        ids = list(item_ids)
        if not ids:
            return 0
        with self._tx() as db:
            return db.execute(
                f"UPDATE items SET state = ?, updated_at = ? WHERE state = ?"
                f" AND id IN ({','.join('?' * len(ids))})",
                [ACCEPTED, time.time(), PROCESSING, *ids],
            ).rowcount

    @_resources
    def states(self, item_ids: Iterable[str]) -> dict[str, str]:
        """The state of each of these items that is journaled."""
        ids, out = list(item_ids), {}
        with self._lock:
            for k in range(0, len(ids), 500):
                part = ids[k : k + 500]
                q = f"SELECT id, state FROM items WHERE id IN ({','.join('?' * len(part))})"
                out.update({r[0]: r[1] for r in self._db.execute(q, part)})
        return out

    @contextlib.contextmanager
    def decoding(self, item_id: str) -> Iterator[None]:
        """Marks ``item_id`` as being decoded in this process while the block runs: a marker
        file (no fsync: it must outlive the process, not the machine). ``recover`` charges an
        attempt to an item whose marker a crash left behind. Best effort on a full disk."""
        mark = self.marks_dir / item_id
        try:
            os.close(os.open(mark, os.O_CREAT | os.O_WRONLY, 0o644))
            marked = True
        except OSError:
            marked = False
        try:
            yield
        finally:
            if marked:
                with contextlib.suppress(OSError):
                    mark.unlink()

    @_resources
    def complete(self, item_id: str, outputs: dict[str, str] | None = None) -> Item:
        """Mark an item done with its output paths and delete its spooled bytes (idempotent)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise HxschedError(f"no journaled item {item_id!r}", path=self.db_path)
            state = row["state"]
            if state == QUARANTINED:
                raise HxschedError(f"item {item_id} is quarantined; it cannot be completed")
            if state != DONE:
                stored = json.dumps({k: str(v) for k, v in (outputs or {}).items()})
                db.execute(
                    "UPDATE items SET state = ?, outputs = ?, updated_at = ? WHERE id = ?",
                    (DONE, stored, time.time(), item_id),
                )
            spares = self._drop_standbys(db, [row["dedupe_key"]])
        item = self._stored(item_id)
        self._spool_path(item_id, item.ext).unlink(missing_ok=True)
        self._unlink_spooled(spares)
        return item

    def _drop_standbys(self, db: sqlite3.Connection, keys: list[str | None]) -> list[sqlite3.Row]:
        """Delete the standby copies of these keys (their first copy is done); return their
        rows, whose spooled files the caller removes after the commit."""
        wanted = [k for k in keys if k]
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        rows = db.execute(
            f"SELECT id, ext FROM items WHERE state = ? AND dedupe_key IN ({marks})",
            [STANDBY, *wanted],
        ).fetchall()
        if rows:
            db.execute(
                f"DELETE FROM items WHERE state = ? AND dedupe_key IN ({marks})",
                [STANDBY, *wanted],
            )
        return rows

    def _promote_standby(self, db: sqlite3.Connection, key: str | None) -> bool:
        """The first copy of ``key`` was quarantined: its oldest standby copy is accepted."""
        if not key:
            return False
        row = db.execute(
            "SELECT id FROM items WHERE state = ? AND dedupe_key = ? ORDER BY seq LIMIT 1",
            (STANDBY, key),
        ).fetchone()
        if row is None:
            return False
        db.execute(
            "UPDATE items SET state = ?, updated_at = ? WHERE id = ?",
            (ACCEPTED, time.time(), row["id"]),
        )
        self._bump(db, "duplicates", -1)  # it was counted a duplicate when it arrived
        self._bump(db, "standby_promoted")
        return True

    def _unlink_spooled(self, rows: list[sqlite3.Row]) -> None:
        for r in rows:
            self._spool_path(r["id"], r["ext"]).unlink(missing_ok=True)

    @_resources
    def complete_many(
        self, done: list[tuple[str, dict[str, str]]], outbox: Iterable[OutboxEntry] = ()
    ) -> None:
        """``complete`` for several items in one commit (group commit), then their spooled
        bytes go. Items already done stay as they were; unknown or quarantined ones raise.
        ``outbox``: files to send (the PACS sink), queued in the same commit, so a done slice
        always has its sends queued; a file already queued for its item and key is not again."""
        if not done:
            return
        outbox = list(outbox)
        ids = [i for i, _ in done]
        with self._tx() as db:
            rows = {
                r["id"]: r
                for r in db.execute(
                    f"SELECT id, state, ext, dedupe_key FROM items"
                    f" WHERE id IN ({','.join('?' * len(ids))})",
                    ids,
                )
            }
            for item_id in ids:
                row = rows.get(item_id)
                if row is None:
                    raise HxschedError(f"no journaled item {item_id!r}", path=self.db_path)
                if row["state"] == QUARANTINED:
                    raise HxschedError(f"item {item_id} is quarantined; it cannot be completed")
            now = time.time()
            db.executemany(
                "UPDATE items SET state = ?, outputs = ?, updated_at = ? WHERE id = ? AND state != ?",
                [
                    (DONE, json.dumps({k: str(v) for k, v in (out or {}).items()}), now, i, DONE)
                    for i, out in done
                ],
            )
            spares = self._drop_standbys(db, [r["dedupe_key"] for r in rows.values()])
            if outbox:
                self._enqueue(db, outbox, now)
        for item_id in ids:
            self._spool_path(item_id, rows[item_id]["ext"]).unlink(missing_ok=True)
        self._unlink_spooled(spares)

    # -- the outbound queue (the PACS sink: runtime/service/outbox.py) ------------------------

    def _enqueue(self, db: sqlite3.Connection, entries: list[OutboxEntry], now: float) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO outbox (item_id, key, path, state, next_try_at, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(e.item_id, e.key, e.path, OUT_QUEUED, now, now, now) for e in entries],
        )

    @_resources
    def outbox_due(self, now: float, limit: int = 32) -> list[OutboxRow]:
        """Queued files whose next try is due, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM outbox WHERE state = ? AND next_try_at <= ? ORDER BY id LIMIT ?",
                (OUT_QUEUED, now, limit),
            ).fetchall()
        return [OutboxRow(*(r[k] for k in _OUTBOX_COLUMNS)) for r in rows]

    @_resources
    def outbox_next_due(self) -> float | None:
        """When the earliest queued file is due (None: nothing queued)."""
        with self._lock:
            (t,) = self._db.execute(
                "SELECT MIN(next_try_at) FROM outbox WHERE state = ?", (OUT_QUEUED,)
            ).fetchone()
        return t

    @_resources
    def outbox_sent(self, row_id: int, status: str, sop_key: str | None = None) -> None:
        """A file the destination has (``sop_key``: dedupe_key() of its SOP Instance UID)."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_status = ?,"
                " sop_key = ?, updated_at = ? WHERE id = ?",
                (OUT_SENT, status, sop_key, time.time(), row_id),
            )

    @_resources
    def outbox_retry(self, row_ids: list[int], next_try_at: float, status: str) -> None:
        """Files to try again at ``next_try_at`` (the destination was down or busy)."""
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, next_try_at = ?, last_status = ?,"
                " updated_at = ? WHERE id = ? AND state = ?",
                [(next_try_at, status, time.time(), i, OUT_QUEUED) for i in row_ids],
            )

    @_resources
    def outbox_failed(self, row_id: int, status: str) -> None:
        """A file the destination refused for good: kept as failed, never sent again."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_status = ?,"
                " updated_at = ? WHERE id = ?",
                (OUT_FAILED, _one_line(status), time.time(), row_id),
            )

    @_resources
    def outbox_counts(self) -> dict[str, int]:
        """Files per outbound state (queued, sent, failed)."""
        out = dict.fromkeys((OUT_QUEUED, OUT_SENT, OUT_FAILED), 0)
        with self._lock:
            for state, n in self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
                out[state] = n
        return out

    @_resources
    def outbox_queued(self) -> int:
        """Files waiting to be sent."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE state = ?", (OUT_QUEUED,)
            ).fetchone()
        return n

    @_resources
    def quarantine(self, item_id: str, reason_code: str, message: str) -> Item:
        """Move an accepted/processing item to quarantine/ with a reason file (no identifiers)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise HxschedError(f"no journaled item {item_id!r}", path=self.db_path)
            if row["state"] == DONE:
                raise HxschedError(f"item {item_id} is already done; it cannot be quarantined")
            db.execute(
                "UPDATE items SET state = ?, reason_code = ?, reason = ?, updated_at = ?"
                " WHERE id = ?",
                (QUARANTINED, _one_line(reason_code), _one_line(message), time.time(), item_id),
            )
            if row["state"] != QUARANTINED:
                self._promote_standby(db, row["dedupe_key"])
        item = self._stored(item_id)
        self._finish_quarantine(item)
        return item

    def _finish_quarantine(self, item: Item) -> None:
        """Write the reason file, then move the spooled bytes (if still there) to quarantine/."""
        self._write_reason(item.id, item.name, item.reason_code or "", item.reason or "")
        spooled = self._spool_path(item.id, item.ext)
        if spooled.exists():
            os.replace(spooled, item.path)
            _fsync_dir(self.quarantine_dir)
            _fsync_dir(self.spool_dir)

    def _write_reason(self, item_id: str, name: str, reason_code: str, message: str) -> Path:
        # Only the file name and the reason: never anything read from inside the file.
        when = datetime.fromtimestamp(time.time(), timezone.utc).isoformat(timespec="seconds")
        text = (
            f"id: {item_id}\nfile: {_one_line(name)}\nreason: {_one_line(reason_code)}\n"
            f"message: {_one_line(message)}\ntime: {when}\n"
        )
        path = self.quarantine_dir / f"{item_id}.reason.txt"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def quarantine_file(
        self,
        src: str | os.PathLike[str] | bytes | None,
        name: str,
        reason_code: str,
        message: str,
        *,
        source: str = "",
        max_bytes: int | None = None,
    ) -> Item:
        """Quarantine something rejected before acceptance (e.g. oversize) without spooling it.

        Copies at most ``max_bytes`` of ``src`` (all when None, nothing when ``src`` is None);
        the caller still owns ``src``. The item gets a fresh id ``q<hex>``, not a content hash.
        """
        item_id = "q" + uuid.uuid4().hex[: _ID_LEN - 1]
        name = stored_name(name)
        ext = _ext_of(name)
        dest = self._quarantine_path(item_id, ext)
        size = 0
        try:
            if src is not None and max_bytes != 0:
                limit = max_bytes if max_bytes is not None else -1
                with open(dest, "wb") as out:
                    if isinstance(src, (bytes, bytearray, memoryview)):
                        data = bytes(src) if limit < 0 else bytes(src[:limit])
                        out.write(data)
                        size = len(data)
                    else:
                        with open(src, "rb") as inp:
                            while limit < 0 or size < limit:
                                want = _CHUNK if limit < 0 else min(_CHUNK, limit - size)
                                chunk = inp.read(want)
                                if not chunk:
                                    break
                                out.write(chunk)
                                size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            self._write_reason(item_id, name, reason_code, message)
            _fsync_dir(self.quarantine_dir)
            now = time.time()
            with self._tx() as db:
                db.execute(
                    "INSERT INTO items (id, name, source, ext, size, state, accepted_at,"
                    " updated_at, reason_code, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item_id,
                        name,
                        source,
                        ext,
                        size,
                        QUARANTINED,
                        now,
                        now,
                        _one_line(reason_code),
                        _one_line(message),
                    ),
                )
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot quarantine a slice: {exc}", path=self.root) from exc
        return self._stored(item_id)

    # -- policy and bookkeeping -------------------------------------------------------------

    @_resources
    def record_drop(self, reason: str) -> None:
        """Count an item dropped by policy (e.g. queue full, stale) under ``reason``."""
        with self._tx() as db:
            self._bump(db, "dropped")
            self._bump(db, f"dropped:{_one_line(reason)}")

    @_resources
    def counts(self) -> dict[str, int]:
        """Items per state plus the duplicates and dropped counters."""
        out = dict.fromkeys(STATES, 0)
        with self._lock:
            for state, n in self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state"):
                out[state] = n
            counters = {r["name"]: r["value"] for r in self._db.execute("SELECT * FROM counters")}
        out["duplicates"] = counters.get("duplicates", 0)
        out["dropped"] = counters.get("dropped", 0)
        return out

    @_resources
    def drops(self) -> dict[str, int]:
        """Dropped items per reason."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, value FROM counters WHERE name LIKE 'dropped:%'"
            ).fetchall()
        return {r["name"].split(":", 1)[1]: r["value"] for r in rows}

    @_resources
    def pending(self) -> int:
        """Items accepted but not yet done or quarantined."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM items WHERE state IN (?, ?)", (ACCEPTED, PROCESSING)
            ).fetchone()
        return n

    # -- recovery ---------------------------------------------------------------------------

    @_resources
    def recover(self) -> int:
        """Finish what a crash interrupted; return how many processing items were requeued
        (``self.recovered`` has that and the items quarantined, with their reasons).

        - an item whose in-process decoding marker a crash left behind is charged an attempt;
          at MAX_ATTEMPTS it is quarantined ``crashed-repeatedly`` (logged by its id);
        - processing items go back to accepted (outputs must be idempotent: they are redone);
        - spool files without a row are deleted: the row commit is the acknowledgement, so such
          a file was never acknowledged and the sender has had a failure (and will resend);
        - spool files of done items are deleted; those of quarantined items are moved;
        - accepted items whose spool file vanished are quarantined as ``spool_missing``.
        Call it once at start, before any worker claims items.
        """
        quarantined = self._charge_crashes()
        with self._tx() as db:
            requeued = db.execute(
                "UPDATE items SET state = ?, updated_at = ? WHERE state = ?",
                (ACCEPTED, time.time(), PROCESSING),
            ).rowcount
        for path in list(self.spool_dir.iterdir()):
            if path.name.startswith(_TMP_PREFIX):
                path.unlink(missing_ok=True)
                continue
            item = self.get(path.name.split(".", 1)[0])
            if item is None or item.state == DONE:
                path.unlink(missing_ok=True)
            elif item.state == QUARANTINED:
                self._finish_quarantine(item)
        for path in self.quarantine_dir.glob("*.tmp"):
            path.unlink(missing_ok=True)
        with self._lock:
            rows = self._db.execute("SELECT * FROM items WHERE state = ?", (ACCEPTED,)).fetchall()
        for item in map(self._item, rows):
            if not item.path.exists():
                self.quarantine(item.id, SPOOL_MISSING, "spooled file vanished before processing")
                quarantined.append((item.id, SPOOL_MISSING))
        _fsync_dir(self.spool_dir)
        self.recovered = Recovery(requeued, tuple(quarantined))
        return requeued

    def _charge_crashes(self) -> list[tuple[str, str]]:
        """An attempt for each item whose decoding marker is left (the process died while
        decoding it in-process); quarantine those at MAX_ATTEMPTS. Removes every marker."""
        out: list[tuple[str, str]] = []
        for mark in list(self.marks_dir.iterdir()):
            item = self.get(mark.name)
            if item is not None and item.state == PROCESSING:
                with self._tx() as db:
                    db.execute("UPDATE items SET attempts = attempts + 1 WHERE id = ?", (item.id,))
                if item.attempts + 1 >= MAX_ATTEMPTS:
                    msg = f"the service died while decoding it {item.attempts + 1} times"
                    self.quarantine(item.id, CRASHED_REPEATEDLY, msg)
                    out.append((item.id, CRASHED_REPEATEDLY))
                    log.error(
                        "slice quarantined: the service died while decoding it repeatedly",
                        extra={"fields": {"item": item.id, "reason": CRASHED_REPEATEDLY}},
                    )
            mark.unlink(missing_ok=True)
        return out
