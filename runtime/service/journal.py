"""Durable intake: a spool directory plus an SQLite journal, so nothing acknowledged is lost.

A slice is acknowledged only after its bytes are fsynced in ``spool/`` and its row is committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from hxsched.errors import HxschedError, InternalError

ACCEPTED = "accepted"
PROCESSING = "processing"
DONE = "done"
QUARANTINED = "quarantined"
STATES = (ACCEPTED, PROCESSING, DONE, QUARANTINED)

_CHUNK = 1 << 20
_ID_LEN = 24
_TMP_PREFIX = ".tmp-"

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
    reason TEXT
);
CREATE INDEX IF NOT EXISTS items_state ON items (state, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


GROUP_DELAY_S = 0.010  # a group commit waits at most this long for more slices ...
GROUP_MAX = 64  # ... or until this many are queued
MAX_ATTEMPTS = 3  # claims of one item (crashes mid-processing) before it is quarantined


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
    duplicate: bool = False
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
        try:
            for d in (self.root, self.spool_dir, self.quarantine_dir):
                d.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.db_path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
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
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

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

    def accept(self, src: str | os.PathLike[str] | bytes, name: str, source: str) -> Item:
        """Spool ``src`` durably and journal it as accepted; only then may the sender be told.

        The same content pushed again returns the existing item with ``duplicate=True``.
        Raises SpoolError when the slice cannot be stored (the sender should get a failure).
        Concurrent callers share one commit (group commit: one fsync for all of them).
        """
        with self._gc:
            self._gc_writing += 1
        try:
            tmp, item_id, size = self._spooled(src, name)
        except BaseException:
            with self._gc:
                self._gc_writing -= 1
                self._gc.notify_all()
            raise
        entry = _Pending(tmp, item_id, size, name, source)
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
        self, batch: list[tuple[str | os.PathLike[str] | bytes, str, str]]
    ) -> list[Item | SpoolError]:
        """``accept`` for several slices (src, name, source) in one commit; per slice its item,
        or the SpoolError that refused it."""
        entries: list[_Pending] = []
        out: list[Item | SpoolError | None] = []
        for src, name, source in batch:
            try:
                tmp, item_id, size = self._spooled(src, name)
            except SpoolError as exc:
                out.append(exc)
                continue
            entries.append(_Pending(tmp, item_id, size, name, source))
            out.append(None)
        self._commit_group(entries)
        it = iter(entries)
        return [x if x is not None else next(it).result_or_error() for x in out]

    def _spooled(self, src: str | os.PathLike[str] | bytes, name: str) -> tuple[Path, str, int]:
        try:
            return self._write_temp(src)
        except OSError as exc:
            msg = f"cannot spool {name!r}: {exc.strerror or exc}; check free space and permissions"
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
                        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                e.item_id,
                                e.name,
                                e.source,
                                _ext_of(e.name),
                                e.size,
                                ACCEPTED,
                                now,
                                now,
                            )
                            for e in fresh
                        ],
                    )
                    dups = sum(1 for e in batch if e.duplicate)
                    if dups:
                        self._bump(db, "duplicates", dups)
            except (OSError, sqlite3.Error) as exc:
                for e in batch:
                    if not e.duplicate:
                        e.tmp.unlink(missing_ok=True)
                        self._spool_path(e.item_id, _ext_of(e.name)).unlink(missing_ok=True)
                    e.error = SpoolError(f"cannot journal {e.name!r}: {exc}", path=self.root)
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
        """Mark the entries already journaled (or twice in the batch) duplicates; the others."""
        ids = [e.item_id for e in batch]
        known = {
            r[0]
            for r in self._db.execute(
                f"SELECT id FROM items WHERE id IN ({','.join('?' * len(ids))})", ids
            )
        }
        fresh = []
        for e in batch:
            if e.item_id in known:
                e.duplicate = True
                e.tmp.unlink(missing_ok=True)
            else:
                known.add(e.item_id)
                fresh.append(e)
        return fresh

    def claim(self, n: int = 1) -> list[Item]:
        """Move up to ``n`` accepted items (oldest first) to processing and return them."""
        if n <= 0:
            return []
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM items WHERE state = ? ORDER BY seq LIMIT ?", (ACCEPTED, n)
            ).fetchall()
            now = time.time()
            db.executemany(
                "UPDATE items SET state = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
                [(PROCESSING, now, r["id"]) for r in rows],
            )
            rows = [
                db.execute("SELECT * FROM items WHERE id = ?", (r["id"],)).fetchone() for r in rows
            ]
        return [self._item(r) for r in rows]

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
        item = self._stored(item_id)
        self._spool_path(item_id, item.ext).unlink(missing_ok=True)
        return item

    def complete_many(self, done: list[tuple[str, dict[str, str]]]) -> None:
        """``complete`` for several items in one commit (group commit), then their spooled
        bytes go. Items already done stay as they were; unknown or quarantined ones raise."""
        if not done:
            return
        ids = [i for i, _ in done]
        with self._tx() as db:
            rows = {
                r["id"]: r
                for r in db.execute(
                    f"SELECT id, state, ext FROM items WHERE id IN ({','.join('?' * len(ids))})",
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
        for item_id in ids:
            self._spool_path(item_id, rows[item_id]["ext"]).unlink(missing_ok=True)

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
            raise SpoolError(f"cannot quarantine {name!r}: {exc}", path=self.root) from exc
        return self._stored(item_id)

    # -- policy and bookkeeping -------------------------------------------------------------

    def record_drop(self, reason: str) -> None:
        """Count an item dropped by policy (e.g. queue full, stale) under ``reason``."""
        with self._tx() as db:
            self._bump(db, "dropped")
            self._bump(db, f"dropped:{_one_line(reason)}")

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

    def drops(self) -> dict[str, int]:
        """Dropped items per reason."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, value FROM counters WHERE name LIKE 'dropped:%'"
            ).fetchall()
        return {r["name"].split(":", 1)[1]: r["value"] for r in rows}

    def pending(self) -> int:
        """Items accepted but not yet done or quarantined."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM items WHERE state IN (?, ?)", (ACCEPTED, PROCESSING)
            ).fetchone()
        return n

    # -- recovery ---------------------------------------------------------------------------

    def recover(self) -> int:
        """Finish what a crash interrupted; return how many processing items were requeued.

        - processing items go back to accepted (outputs must be idempotent: they are redone);
        - spool files without a row are deleted: the row commit is the acknowledgement, so such
          a file was never acknowledged and the sender has had a failure (and will resend);
        - spool files of done items are deleted; those of quarantined items are moved;
        - accepted items whose spool file vanished are quarantined as ``spool_missing``.
        Call it once at start, before any worker claims items.
        """
        with self._lock:
            looping = self._db.execute(
                "SELECT id FROM items WHERE state = ? AND attempts >= ?",
                (PROCESSING, MAX_ATTEMPTS),
            ).fetchall()
        for row in looping:  # it took the service down MAX_ATTEMPTS times: set it aside
            self.quarantine(
                row["id"], "crashed-repeatedly", f"processing was interrupted {MAX_ATTEMPTS} times"
            )
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
                self.quarantine(item.id, "spool_missing", "spooled file vanished before processing")
        _fsync_dir(self.spool_dir)
        return requeued
