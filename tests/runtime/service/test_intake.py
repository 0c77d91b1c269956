"""The gate: admission by reservation keeps the journal within its queue bound however many
sources ask at once; resource trouble holds it; what counts as resource trouble."""

from __future__ import annotations

import errno
import sqlite3
import threading
import time

import pytest

from hxsched.errors import ResourceError
from hxsched.runtime.service.intake import Gate, resource_trouble
from hxsched.runtime.service.journal import Journal, SpoolError


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal")
    yield j
    j.close()


def test_sixteen_sources_at_once_never_exceed_the_queue_bound(journal):
    limit, threads, each = 4, 16, 6
    stop = threading.Event()
    gate = Gate(journal, limit, stop)
    peak, accepted, lock = [0], [0], threading.Lock()

    def source(t: int) -> None:
        for k in range(each):
            with gate.admit(30.0) as ok:
                assert ok
                journal.accept(f"slice {t} {k}".encode(), f"s{t}_{k}.dcm", "scp")
                with lock:
                    peak[0] = max(peak[0], journal.pending())
                    accepted[0] += 1

    def consumer() -> None:  # a slow worker: claims and finishes one at a time
        while not stop.is_set():
            for item in journal.claim(1):
                time.sleep(0.003)
                journal.complete(item.id, {})
            peak[0] = max(peak[0], journal.pending())
            time.sleep(0.001)

    worker = threading.Thread(target=consumer)
    worker.start()
    sources = [threading.Thread(target=source, args=(t,)) for t in range(threads)]
    for s in sources:
        s.start()
    for s in sources:
        s.join(60.0)
    stop.set()
    worker.join(10.0)
    assert accepted[0] == threads * each
    assert peak[0] <= limit, f"{peak[0]} pending with queue {limit}"
    assert gate.reserved == 0


def test_a_batch_reserves_at_most_the_room_left(journal):
    gate = Gate(journal, 5, threading.Event())
    journal.accept(b"one", "a.dcm", "folder")
    assert gate.acquire(0.0, n=64) == 4
    assert gate.acquire(0.05) == 0  # full: the reservations count
    gate.release(4)
    with gate.admit(0.0, n=2) as ok:
        assert ok == 2 and gate.reserved == 2
    assert gate.reserved == 0


def test_a_held_gate_admits_nothing_until_resumed(journal):
    told: list[str] = []
    gate = Gate(journal, 8, threading.Event(), on_trouble=told.append)
    with pytest.raises(SpoolError), gate.admit(1.0) as ok:
        assert ok
        raise SpoolError("cannot spool") from OSError(errno.ENOSPC, "No space left on device")
    assert gate.held_reason and told == [gate.held_reason] and "ENOSPC" in told[0]
    assert gate.reserved == 0
    t0 = time.monotonic()
    assert gate.acquire(0.2) == 0 and time.monotonic() - t0 >= 0.2
    gate.resume()
    assert gate.acquire(0.0) == 1


def test_bad_input_errors_do_not_hold(journal):
    gate = Gate(journal, 8, threading.Event())
    with pytest.raises(ValueError), gate.admit() as ok:
        assert ok
        raise ValueError("a malformed dataset")
    assert not gate.held_reason
    assert gate.acquire(0.0) == 1


def test_a_stopped_gate_refuses(journal):
    stop = threading.Event()
    gate = Gate(journal, 8, stop)
    stop.set()
    assert gate.acquire(None) == 0 and not gate.wait()


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.EROFS, "Read-only file system"),
        sqlite3.OperationalError("database or disk is full"),
        ResourceError("the journal cannot be written: ENOSPC"),
    ],
)
def test_resource_trouble_is_recognised(exc):
    assert resource_trouble(exc)
    wrapped = SpoolError("cannot spool 'x.dcm'")
    wrapped.__cause__ = exc
    assert resource_trouble(wrapped)


@pytest.mark.parametrize(
    "exc", [ValueError("bad"), OSError(errno.ENOENT, "gone"), SpoolError("permission")]
)
def test_other_errors_are_not_resource_trouble(exc):
    assert resource_trouble(exc) is None
