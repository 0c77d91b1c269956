"""The intake journal: durable accept, dedupe, quarantine, crash recovery, concurrency."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.service.journal import (
    ACCEPTED,
    DONE,
    PROCESSING,
    QUARANTINED,
    Journal,
    SpoolError,
    content_id,
)


def _slice(i: int) -> bytes:
    return f"DICM slice {i:04d} ".encode() * 64


@pytest.fixture
def journal(tmp_path):
    with Journal(tmp_path / "j") as j:
        yield j


def test_layout_and_pragmas(tmp_path):
    root = tmp_path / "j"
    with Journal(root):
        pass
    assert (root / "spool").is_dir() and (root / "quarantine").is_dir()
    db = sqlite3.connect(root / "journal.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_accept_spools_before_journaling(journal, tmp_path):
    src = tmp_path / "IM0001.dcm"
    src.write_bytes(_slice(1))
    item = journal.accept(src, "IM0001.dcm", "scp:CT1")
    assert item.id == content_id(_slice(1)) and len(item.id) == 24
    assert item.state == ACCEPTED and not item.duplicate
    assert item.path == journal.spool_dir / f"{item.id}.dcm"
    assert item.path.read_bytes() == _slice(1)
    assert not [p for p in journal.spool_dir.iterdir() if p.name.startswith(".tmp")]
    assert journal.pending() == 1


def test_accept_moves_a_temp_file_of_the_spool_and_copies_anything_else(journal, tmp_path):
    mine = journal.spool_dir / ".tmp-scp-abc.dcm"  # what the SCP received into
    mine.write_bytes(_slice(1))
    item = journal.accept(mine, "scp.dcm", "scp", move=True)
    assert item.id == content_id(_slice(1)) and item.path.read_bytes() == _slice(1)
    assert not mine.exists()  # renamed into place, not copied
    assert not [p for p in journal.spool_dir.iterdir() if p.name.startswith(".tmp")]
    outside = tmp_path / ".tmp-scp-x.dcm"  # not in spool/: copied, the caller keeps it
    outside.write_bytes(_slice(2))
    named = journal.spool_dir / "kept.dcm"  # in spool/ but not a temp file: copied
    named.write_bytes(_slice(3))
    for src in (outside, named):
        got = journal.accept(src, "scp.dcm", "scp", move=True)
        assert src.exists() and got.path.read_bytes() == src.read_bytes()
    again = journal.spool_dir / ".tmp-scp-dup.dcm"  # a duplicate: its temp file is removed
    again.write_bytes(_slice(1))
    dup = journal.accept(again, "scp.dcm", "scp", move=True)
    assert dup.duplicate and dup.id == item.id and not again.exists()
    assert item.path.read_bytes() == _slice(1) and journal.pending() == 3


def test_duplicates_are_accepted_once(journal):
    first = journal.accept(_slice(1), "a.dcm", "folder")
    again = journal.accept(_slice(1), "renamed.dcm", "scp:CT1")
    assert again.duplicate and again.id == first.id and again.name == "a.dcm"
    journal.complete(first.id, {"mri": "/out/a.png"})
    after_done = journal.accept(_slice(1), "a.dcm", "folder")
    assert after_done.duplicate and after_done.state == DONE
    c = journal.counts()
    assert (c[DONE], c[ACCEPTED], c["duplicates"]) == (1, 0, 2)
    assert list(journal.spool_dir.iterdir()) == []


def test_claim_oldest_first_and_complete(journal):
    ids = [journal.accept(_slice(i), f"{i}.dcm", "s").id for i in range(5)]
    claimed = journal.claim(3)
    assert [it.id for it in claimed] == ids[:3]
    assert all(it.state == PROCESSING and it.attempts == 0 for it in claimed)  # no attempt yet
    assert journal.claim(0) == []
    done = journal.complete(ids[0], {"mri": Path("/out/0.png")})
    assert done.state == DONE and done.outputs == {"mri": "/out/0.png"}
    assert not done.path.exists()
    assert journal.complete(ids[0], {"mri": "/elsewhere"}).outputs == {"mri": "/out/0.png"}
    c = journal.counts()
    assert (c[ACCEPTED], c[PROCESSING], c[DONE]) == (2, 2, 1)
    assert journal.pending() == 4
    with pytest.raises(HxschedError, match="no journaled item"):
        journal.complete("nope")


def test_a_claim_is_not_synced_and_every_other_commit_still_is(journal):
    """A claim is what a crash may lose (recover puts processing items back): its commit is
    not fsynced; the connection is back to synchronous=FULL for every commit after it."""
    ids = [journal.accept(_slice(i), f"{i}.dcm", "s").id for i in range(3)]
    seen = []
    journal._db.set_trace_callback(seen.append)
    claimed = journal.claim(2)
    journal._db.set_trace_callback(None)
    assert "PRAGMA synchronous=NORMAL" in seen and seen[-1] == "PRAGMA synchronous=FULL"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert claimed == [journal.get(i) for i in ids[:2]]  # the items as stored, processing
    assert [it.state for it in claimed] == [PROCESSING, PROCESSING]


def test_quarantine_moves_file_with_reason(journal):
    item = journal.accept(_slice(1), "Doe^John_IM7.dcm", "folder")
    journal.claim(1)
    q = journal.quarantine(item.id, "bad_pixels", "PixelData shape (3, 4)\nnot 2-D")
    assert q.state == QUARANTINED and q.path == journal.quarantine_dir / f"{item.id}.dcm"
    assert q.path.read_bytes() == _slice(1) and not item.path.exists()
    reason = (journal.quarantine_dir / f"{item.id}.reason.txt").read_text()
    assert "reason: bad_pixels" in reason
    assert "message: PixelData shape (3, 4) not 2-D" in reason
    assert "file: Doe^John_IM7.dcm" in reason and "time: " in reason
    assert journal.counts()[QUARANTINED] == 1 and journal.pending() == 0
    with pytest.raises(HxschedError):
        journal.complete(item.id)


def test_quarantine_file_before_acceptance(journal, tmp_path):
    big = tmp_path / "huge.dcm"
    big.write_bytes(b"x" * 5000)
    q = journal.quarantine_file(big, "huge.dcm", "oversize", "5000 > 4096 bytes", max_bytes=1024)
    assert q.state == QUARANTINED and q.id.startswith("q") and q.size == 1024
    assert q.path.read_bytes() == b"x" * 1024 and big.exists()
    none = journal.quarantine_file(None, "junk.txt", "not_dicom", "no DICM preamble")
    assert not none.path.exists()
    assert "reason: not_dicom" in (journal.quarantine_dir / f"{none.id}.reason.txt").read_text()
    assert journal.counts()[QUARANTINED] == 2
    assert list(journal.spool_dir.iterdir()) == []


def test_drops_are_counted(journal):
    journal.record_drop("queue_full")
    journal.record_drop("queue_full")
    journal.record_drop("stale")
    assert journal.counts()["dropped"] == 3
    assert journal.drops() == {"queue_full": 2, "stale": 1}


def test_spool_failure_raises_spool_error(journal, tmp_path):
    with pytest.raises(SpoolError, match="cannot spool"):
        journal.accept(tmp_path / "missing.dcm", "missing.dcm", "folder")
    assert isinstance(SpoolError("x"), HxschedError)
    assert journal.counts()[ACCEPTED] == 0
    assert list(journal.spool_dir.iterdir()) == []


def test_recover_requeues_and_cleans_orphans(tmp_path):
    root = tmp_path / "j"
    with Journal(root) as j:
        a, b, c, d = (j.accept(_slice(i), f"{i}.dcm", "s") for i in range(4))
        j.claim(2)  # a, b processing
        j.complete(c.id)
    # Simulated crashes: a spooled file without a row, a temp file, a done item's leftover.
    (root / "spool" / "0123456789abcdef01234567.dcm").write_bytes(b"never acknowledged")
    (root / "spool" / ".tmp-half").write_bytes(b"partial")
    (root / "spool" / f"{c.id}.dcm").write_bytes(_slice(2))
    with Journal(root) as j:
        assert j.recover() == 2
        counts = j.counts()
        assert (counts[ACCEPTED], counts[PROCESSING], counts[DONE]) == (3, 0, 1)
        assert sorted(p.name for p in j.spool_dir.iterdir()) == sorted(
            f"{x.id}.dcm" for x in (a, b, d)
        )
        assert [it.id for it in j.claim(10)] == [a.id, b.id, d.id]
        assert j.get(a.id).attempts == 0  # an interrupted claim is not the slice's fault
        assert j.recovered.requeued == 2 and j.recovered.quarantined == ()


def test_recover_finishes_interrupted_quarantine_and_missing_spool(tmp_path):
    root = tmp_path / "j"
    with Journal(root) as j:
        a = j.accept(_slice(1), "a.dcm", "s")
        b = j.accept(_slice(2), "b.dcm", "s")
        # Crash after the quarantine commit but before the file move.
        j._db.execute(
            "UPDATE items SET state = ?, reason_code = 'x', reason = 'y' WHERE id = ?",
            (QUARANTINED, a.id),
        )
    b.path.unlink()
    with Journal(root) as j:
        assert j.recover() == 0
        assert (j.quarantine_dir / f"{a.id}.dcm").read_bytes() == _slice(1)
        assert (j.quarantine_dir / f"{a.id}.reason.txt").exists()
        assert j.get(b.id).reason_code == "spool_missing"
        assert list(j.spool_dir.iterdir()) == []
        assert j.pending() == 0


def test_concurrent_accept_from_four_threads(journal):
    errors: list[BaseException] = []

    def push(t: int) -> None:
        try:
            for i in range(25):
                journal.accept(_slice(t * 25 + i), f"{t}-{i}.dcm", f"t{t}")
                journal.accept(_slice(i), f"shared-{i}.dcm", f"t{t}")  # same content in all
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    c = journal.counts()
    assert c[ACCEPTED] == 100  # 100 distinct; the 25 "shared" slices equal those of thread 0
    assert c["duplicates"] == 100
    assert len(list(journal.spool_dir.iterdir())) == 100


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hxsched.runtime.service.journal import Journal

    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    j = Journal(root)
    for i in range(50):
        j.accept(f"DICM slice {i:04d} ".encode() * 64, f"IM{i:04d}.dcm", "scp:CT1")
    print("accepted", flush=True)
    while items := j.claim(1):
        item = items[0]
        time.sleep(0.01)
        dest = out / f"{item.id}.mri"
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(item.path.read_bytes()[::-1])
        tmp.replace(dest)
        time.sleep(0.01)
        j.complete(item.id, {"mri": str(dest)})
        print("done", item.id, flush=True)
    """
)


def test_sigkill_mid_stream_loses_nothing(tmp_path):
    root, out = tmp_path / "j", tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(root), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    done_before = []
    # kill after exactly 15 completions, however fast this machine is; the timer only ends a hang
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.startswith("done"):
                done_before.append(line.split()[1])
            if len(done_before) >= 15:
                break
    finally:
        watchdog.cancel()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(done_before) == 15

    with Journal(root) as j:
        j.recover()
        assert j.counts()[PROCESSING] == 0
        finished_now = []
        while items := j.claim(4):
            for item in items:
                dest = out / f"{item.id}.mri"
                dest.write_bytes(item.path.read_bytes()[::-1])
                j.complete(item.id, {"mri": str(dest)})
                finished_now.append(item.id)
        c = j.counts()
        assert (c[DONE], c[ACCEPTED], c[PROCESSING], c[QUARANTINED]) == (50, 0, 0, 0)
        assert not set(finished_now) & set(done_before)
        assert len(finished_now) + len(done_before) == 50
        rows = j._db.execute("SELECT id, COUNT(*) FROM items GROUP BY id").fetchall()
        assert len(rows) == 50 and all(n == 1 for _, n in rows)
        expected = {content_id(_slice(i)): _slice(i)[::-1] for i in range(50)}
        assert {p.stem: p.read_bytes() for p in out.glob("*.mri")} == expected
        for item_id in expected:
            assert j.get(item_id).outputs == {"mri": str(out / f"{item_id}.mri")}
        assert list(j.spool_dir.iterdir()) == []


def test_an_item_that_keeps_crashing_the_service_while_decoding_is_quarantined(tmp_path, caplog):
    """Inline decoding (``workers: 0``): a crash while the item's decoding marker is set is
    charged to it; at MAX_ATTEMPTS it is quarantined, logged by id and reported by recover."""
    from hxsched.runtime.service.journal import MAX_ATTEMPTS

    j = Journal(tmp_path / "j")
    item = j.accept(b"poison", "p.dcm", "folder")
    other = j.accept(b"good", "g.dcm", "folder")
    dying = []
    for _ in range(MAX_ATTEMPTS):
        j.recover()  # a restart after a crash
        assert j.get(item.id).state == ACCEPTED
        assert [i.id for i in j.claim(2)] == [item.id, other.id]
        dying.append(j.decoding(item.id))  # kept: the process dies inside the block
        dying[-1].__enter__()
    with caplog.at_level("ERROR", logger="hxsched.service"):
        j.recover()
    assert j.get(item.id).state == "quarantined"
    assert j.get(item.id).reason_code == "crashed-repeatedly"
    assert j.recovered.quarantined == ((item.id, "crashed-repeatedly"),)
    assert j.get(other.id).state == ACCEPTED and j.get(other.id).attempts == 0  # not charged
    assert [r.fields["item"] for r in caplog.records] == [item.id]
    assert not any(j.marks_dir.iterdir())
    j.close()


def test_external_kills_of_the_service_charge_nothing(tmp_path):
    """Finding 2: a kill -9 while items are claimed (no decoding marker) quarantines nothing,
    however often it happens and even with attempts already at the limit."""
    from hxsched.runtime.service.journal import MAX_ATTEMPTS

    j = Journal(tmp_path / "j")
    items = [j.accept(_slice(i), f"{i}.dcm", "folder") for i in range(4)]
    j._db.execute("UPDATE items SET attempts = ?", (MAX_ATTEMPTS,))
    for _ in range(2 * MAX_ATTEMPTS):
        j.claim(4)  # processing when the service is killed
        assert j.recover() == 4
        assert j.recovered.quarantined == ()
    assert j.counts()[ACCEPTED] == 4 and j.counts()[QUARANTINED] == 0
    with j.decoding(items[0].id):  # a decode that ends leaves no marker behind
        pass
    assert not any(j.marks_dir.iterdir())
    j.close()


def test_release_puts_processing_items_back_without_an_attempt(journal):
    items = [journal.accept(_slice(i), f"{i}.dcm", "scp") for i in range(3)]
    journal.claim(3)
    journal.complete(items[2].id, {})
    assert journal.release([items[0].id, items[2].id]) == 1  # a done item stays done
    assert journal.get(items[0].id).state == ACCEPTED and journal.get(items[0].id).attempts == 0
    assert journal.get(items[1].id).state == PROCESSING
    assert journal.get(items[2].id).state == DONE
    assert journal.release([]) == 0
    assert [i.id for i in journal.claim(5)] == [items[0].id]


class _FullDisk:
    """A connection whose writes fail as SQLite's do when the disk is full."""

    def __init__(self, db, fail_on=("COMMIT",), message="database or disk is full"):
        self.db, self.fail_on, self.message = db, fail_on, message

    def execute(self, sql, *args):
        if any(sql.startswith(w) for w in self.fail_on):
            raise sqlite3.OperationalError(self.message)
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)

    def __setattr__(self, name, value):
        if name in ("db", "fail_on", "message"):
            super().__setattr__(name, value)
        else:
            setattr(self.db, name, value)


def test_a_full_disk_is_a_resource_error_and_the_journal_recovers(journal):
    """Finding 4: journal writes on a full disk raise ResourceError (one line), and a failed
    COMMIT does not leave the transaction open (the next write works once space is back)."""
    from hxsched.errors import ResourceError

    item = journal.accept(_slice(1), "1.dcm", "scp")
    real = journal._db
    journal._db = _FullDisk(real)
    for op in (lambda: journal.claim(1), journal.recover, lambda: journal.release([item.id])):
        with pytest.raises(ResourceError) as got:
            op()
        assert "database or disk is full" in str(got.value) and "\n" not in str(got.value)
        assert str(got.value).startswith(str(journal.root))
    journal._db = real
    assert [i.id for i in journal.claim(1)] == [item.id]  # no transaction left open
    journal._db = _FullDisk(real, fail_on=("UPDATE",), message="disk I/O error")
    with pytest.raises(ResourceError, match="disk I/O error"):
        journal.complete(item.id, {})
    journal._db = _FullDisk(real, fail_on=("UPDATE",), message="no such table: x")
    with pytest.raises(sqlite3.OperationalError):  # not resource trouble: a bug, raised as is
        journal.complete(item.id, {})
    journal._db = real


def test_resource_trouble_names_the_condition_only():
    import errno

    from hxsched.runtime.service.journal import resource_trouble

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
        why = resource_trouble(OSError(code, os.strerror(code), "/in/SMITH^JOHN.dcm"))
        assert why is not None and errno.errorcode[code] in why and "SMITH" not in why
    assert resource_trouble(OSError(errno.ENOENT, "gone")) is None
    assert resource_trouble(ValueError("database or disk is full")) is None
    assert resource_trouble(sqlite3.OperationalError("unable to open database file"))


def test_opening_the_journal_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    """Finding 4: a restart on a full disk (the journal opens, its first write fails) gives one
    clear line and a non-zero exit, no traceback; so does a journal that cannot be opened."""
    import yaml

    from hxsched.cli import main

    with Journal(tmp_path / "out" / "journal") as j:  # the journal of an earlier run
        j.accept(_slice(1), "1.dcm", "scp")
        j.claim(1)  # processing when it stopped
    real = sqlite3.connect
    writes = ("BEGIN", "INSERT", "UPDATE", "DELETE")
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _FullDisk(real(*a, **k), writes))
    pfile = tmp_path / "p.yaml"
    models = [{"name": "g", "role": "synth", "zoo": "pix2pix_unet256"}]
    pfile.write_text(
        yaml.safe_dump(
            {"schema": "hxsched.pipeline/1", "name": "t", "backend": "sim", "models": models}
        )
    )
    argv = ["serve", str(pfile), "--output", str(tmp_path / "out"), "--no-http", "-q"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "journal" in lines[0] and "database or disk is full" in lines[0]

    def unopenable(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", unopenable)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open the journal" in err and "Traceback" not in err


def test_accept_many_is_one_commit_with_duplicates_counted(journal, tmp_path):
    files = []
    for i in range(5):
        p = tmp_path / f"f{i}.dcm"
        p.write_bytes(_slice(i))
        files.append((p, p.name, "folder"))
    files.append((_slice(2), "again.dcm", "scp"))  # the same content twice in one batch
    got = journal.accept_many(files)
    assert [g.duplicate for g in got] == [False] * 5 + [True]
    assert got[5].id == got[2].id
    assert journal.counts()[ACCEPTED] == 5 and journal.counts()["duplicates"] == 1
    assert all(g.path.exists() for g in got)
    assert not [p for p in journal.spool_dir.iterdir() if p.name.startswith(".tmp-")]
    again = journal.accept_many([(_slice(0), "x.dcm", "scp")])
    assert again[0].duplicate and journal.counts()["duplicates"] == 2


def test_concurrent_accepts_share_commits(journal, monkeypatch):
    commits = []
    real = journal._commit_group
    monkeypatch.setattr(journal, "_commit_group", lambda b: (commits.append(len(b)), real(b)))
    barrier = threading.Barrier(8)

    def push(k: int) -> None:
        barrier.wait()
        for i in range(10):
            journal.accept(_slice(100 * k + i), f"{k}-{i}.dcm", "scp")

    threads = [threading.Thread(target=push, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert journal.counts()[ACCEPTED] == 80 and sum(commits) == 80
    assert len(commits) < 80  # group commit: several slices per commit (fsync)


def test_complete_many_marks_done_and_removes_spool(journal):
    items = [journal.accept(_slice(i), f"{i}.dcm", "scp") for i in range(4)]
    journal.claim(4)
    journal.complete(items[0].id, {"a": "1"})
    journal.complete_many([(it.id, {"dicom": f"/o/{it.id}"}) for it in items])
    assert journal.counts()[DONE] == 4
    assert journal.get(items[0].id).outputs == {"a": "1"}  # done stays as it was
    assert journal.get(items[1].id).outputs == {"dicom": f"/o/{items[1].id}"}
    assert not any(it.path.exists() for it in items)
    journal.quarantine(journal.accept(_slice(9), "9.dcm", "scp").id, "x", "y")
    q = journal.counts()[QUARANTINED]
    with pytest.raises(HxschedError, match="quarantined"):
        journal.complete_many([(journal.get(content_id(_slice(9))).id, {})])
    assert q == 1
