"""The inbox takes only complete files (slow writers, open for writing), never follows a
symlink, survives any bad entry, and leaves files in place while the disk is full."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from hxsched.runtime.service import inbox as inbox_mod
from hxsched.runtime.service.dicom_io import encode_ct_dicom, read_slice, synthetic_phantom
from hxsched.runtime.service.inbox import FolderSource, open_for_writing
from hxsched.runtime.service.intake import Gate, Intake
from hxsched.runtime.service.journal import Journal

CT = Path(get_testdata_file("CT_small.dcm")).read_bytes()


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal")
    yield j
    j.close()


class Rig:
    """A folder source on a real journal, its outcomes and skips recorded."""

    def __init__(self, tmp_path: Path, journal: Journal, stable_s: float, **kw) -> None:
        self.inbox = tmp_path / "inbox"
        self.stop = threading.Event()
        self.gate = Gate(journal, 64, self.stop)
        self.got: list[tuple[Intake, str | None]] = []
        self.skips: list[str] = []
        self.src = FolderSource(
            self.inbox,
            journal,
            self.gate,
            max_bytes=kw.pop("max_bytes", 1 << 20),
            on_accept=lambda what, reason=None: self.got.append((what, reason)),
            stable_s=stable_s,
            poll_s=0.05,
            on_skip=self.skips.append,
        )

    def __enter__(self) -> Rig:
        self.src.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.src.join(10.0)
        assert not self.src.is_alive()


def wait_for(pred, timeout=20.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _leases_work(folder: Path) -> bool:
    probe = folder / "lease-probe"
    with open(probe, "wb") as w:
        w.write(b"x")
        fd = os.open(probe, os.O_RDONLY)
        try:
            busy = open_for_writing(fd)
        finally:
            os.close(fd)
    probe.unlink()
    return busy is True


def _slow_writer(path: Path, data: bytes, chunks: int, pause_s: float) -> threading.Thread:
    def write() -> None:
        step = -(-len(data) // chunks)
        with open(path, "wb") as f:  # the descriptor stays open through the pauses
            for k in range(0, len(data), step):
                f.write(data[k : k + step])
                f.flush()
                time.sleep(pause_s)

    t = threading.Thread(target=write)
    t.start()
    return t


@pytest.mark.parametrize("leases", [True, False], ids=["lease", "stability-only"])
def test_a_slow_writer_is_taken_once_complete(tmp_path, journal, monkeypatch, leases):
    if leases:
        (tmp_path / "inbox").mkdir()
        if not _leases_work(tmp_path / "inbox"):
            pytest.skip("this file system refuses read leases (fcntl F_SETLEASE)")
        stable_s = 0.3  # shorter than the writer's pauses: the open descriptor holds it back
    else:
        monkeypatch.setattr(inbox_mod, "open_for_writing", lambda fd: None)  # EACCES, EINVAL
        stable_s = 1.6  # longer than the pauses: stability alone holds it back
    with Rig(tmp_path, journal, stable_s) as rig:
        writer = _slow_writer(rig.inbox / "slow.dcm", CT, chunks=4, pause_s=0.8)
        writer.join(30.0)
        assert wait_for(lambda: rig.got, 10.0)
        time.sleep(0.3)
    assert rig.got == [(Intake.ACCEPTED, None)]
    c = journal.counts()
    assert c["accepted"] == 1 and c["quarantined"] == 0
    (spooled,) = journal.spool_dir.iterdir()
    assert spooled.read_bytes() == CT  # all of it, not the first chunk
    assert read_slice(str(spooled), max_bytes=1 << 20).pixels.shape == (128, 128)
    assert not list(rig.inbox.iterdir())


def test_part_and_dot_files_wait_for_their_rename(tmp_path, journal):
    with Rig(tmp_path, journal, 0.0) as rig:
        rig.inbox.mkdir(exist_ok=True)
        (rig.inbox / "a.dcm.part").write_bytes(CT[:1000])
        (rig.inbox / ".b.dcm").write_bytes(CT[:1000])
        time.sleep(0.4)
        assert not rig.got
        (rig.inbox / "a.dcm.part").write_bytes(CT)
        os.rename(rig.inbox / "a.dcm.part", rig.inbox / "a.dcm")
        assert wait_for(lambda: rig.got)
    assert rig.got == [(Intake.ACCEPTED, None)] and (rig.inbox / ".b.dcm").exists()


def test_symlinks_and_odd_entries_are_skipped_never_followed(tmp_path, journal, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "passwd"
    secret.write_bytes(b"root:x:0:0:SECRET-CONTENT:/root:/bin/bash\n" * 20)
    outside_ct = outside / "ct.dcm"
    outside_ct.write_bytes(CT)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "link-passwd").symlink_to(secret)
    (inbox / "link-ct.dcm").symlink_to(outside_ct)
    (inbox / "loop-a").symlink_to(inbox / "loop-b")
    (inbox / "loop-b").symlink_to(inbox / "loop-a")
    (inbox / "self").symlink_to(inbox / "self")
    (inbox / "dangling").symlink_to(tmp_path / "nowhere")
    (inbox / "a-folder").mkdir()
    os.mkfifo(inbox / "a-fifo")  # opening it would block the scan forever
    (inbox / "good1.dcm").write_bytes(CT)
    (inbox / "good2.png").write_bytes(b"not really a png, but a regular file")
    caplog.set_level(logging.WARNING, logger="hxsched.service")
    with Rig(tmp_path, journal, 0.0) as rig:
        assert wait_for(lambda: len(rig.got) == 2)
        time.sleep(0.5)  # many more polls: each entry is counted and logged once
    assert sorted(rig.skips) == ["not-a-file"] * 2 + ["symlink"] * 6
    assert rig.src.skipped == {"symlink": 6, "not-a-file": 2}
    assert journal.counts()["accepted"] == 2 and journal.counts()["quarantined"] == 0
    assert secret.exists() and outside_ct.read_bytes() == CT
    for d in (journal.spool_dir, journal.quarantine_dir):
        for f in d.iterdir():
            assert b"SECRET-CONTENT" not in f.read_bytes()
    assert all(os.path.islink(inbox / n) for n in ("link-passwd", "loop-a", "self", "dangling"))
    names = [p.name for p in inbox.iterdir()] + ["good1", "good2", "passwd"]
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 8
    for r in caplog.records:
        text = r.getMessage() + repr(getattr(r, "fields", {}))
        assert not any(n in text for n in names), text


def test_a_file_swapped_for_a_symlink_after_the_scan_is_not_followed(tmp_path, journal):
    secret = tmp_path / "secret.dcm"
    secret.write_bytes(CT)
    rig = Rig(tmp_path, journal, 0.0)
    (rig.inbox / "x.dcm").write_bytes(b"a regular file at scan time")
    rig.src.candidates()
    assert rig.src.candidates() == ["x.dcm"]
    (rig.inbox / "x.dcm").unlink()
    (rig.inbox / "x.dcm").symlink_to(secret)
    rig.src.take_many(["x.dcm"])
    assert not rig.got and rig.skips == ["symlink"]
    assert journal.counts()["accepted"] == 0 and secret.read_bytes() == CT
    assert os.path.islink(rig.inbox / "x.dcm")


def test_a_bad_entry_never_stops_the_scan(tmp_path, journal, monkeypatch):
    rig = Rig(tmp_path, journal, 0.0)
    for k in range(3):
        (rig.inbox / f"f{k}.dcm").write_bytes(CT + bytes([k]))

    class Bad:  # an entry whose every look fails, as ELOOP or EACCES would
        name = "f1.dcm"

        def is_symlink(self):
            raise OSError(errno.ELOOP, "Too many levels of symbolic links")

    real = os.scandir

    def scandir(path):
        return _Listing([Bad() if e.name == "f1.dcm" else e for e in real(path)])

    monkeypatch.setattr(inbox_mod.os, "scandir", scandir)
    rig.src.candidates()
    assert sorted(rig.src.candidates()) == ["f0.dcm", "f2.dcm"]
    assert rig.skips == ["unreadable"]  # once, though seen twice


class _Listing:
    """What os.scandir returns: an iterator that is also a context manager."""

    def __init__(self, entries):
        self._it = iter(entries)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_oversize_is_quarantined_with_its_reason(tmp_path, journal):
    with Rig(tmp_path, journal, 0.0, max_bytes=1000) as rig:
        (rig.inbox / "big.dcm").write_bytes(CT)
        assert wait_for(lambda: rig.got)
    assert rig.got == [(Intake.QUARANTINED, "oversize")]
    assert journal.counts()["quarantined"] == 1 and not list(rig.inbox.iterdir())


def test_a_full_disk_leaves_the_files_and_they_are_taken_once_it_clears(
    tmp_path, journal, monkeypatch
):
    full = threading.Event()
    full.set()
    real = Journal._write_temp

    def write_temp(self, src):
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, src)

    monkeypatch.setattr(Journal, "_write_temp", write_temp)
    with Rig(tmp_path, journal, 0.0) as rig:
        for k in range(5):
            (rig.inbox / f"s{k}.dcm").write_bytes(encode_ct_dicom(synthetic_phantom(k)))
        assert wait_for(lambda: rig.gate.held_reason)
        assert "ENOSPC" in rig.gate.held_reason
        time.sleep(0.3)
        assert len(list(rig.inbox.iterdir())) == 5 and not rig.got
        assert not rig.src._bad and not rig.skips  # not marked bad: retried later
        full.clear()
        rig.gate.resume()  # the service's probe does this once space is back
        assert wait_for(lambda: len(rig.got) == 5)
    assert rig.got == [(Intake.ACCEPTED, None)] * 5
    assert journal.counts()["accepted"] == 5 and journal.counts()["quarantined"] == 0
    assert not list(rig.inbox.iterdir())


def test_with_the_queue_full_files_are_taken_in_groups_not_one_per_commit(tmp_path, journal):
    """The gate frees room a slice at a time while the queue is full; the folder source waits
    (at most FILL_S) for room for FILL_MIN files rather than committing each file alone."""
    rig = Rig(tmp_path, journal, stable_s=0.0)
    rig.gate.limit = 0  # full: nothing is taken
    rig.inbox.mkdir(parents=True, exist_ok=True)
    for k in range(40):
        data = encode_ct_dicom(synthetic_phantom(k, size=64))
        (rig.inbox / f"s{k:03d}.dcm").write_bytes(data)
    batches: list[int] = []
    take = rig.src.take_many

    def counted(names: list[str]) -> None:
        batches.append(len(names))
        take(names)

    rig.src.take_many = counted  # type: ignore[method-assign]
    rig.src.FILL_S = 10.0  # a slow machine still forms the group (the test times nothing)
    with rig:
        time.sleep(0.2)
        assert not batches
        for _ in range(40):  # room for one more slice at a time, as slices finish
            rig.gate.limit += 1
            time.sleep(0.01)
        assert wait_for(lambda: sum(batches) >= 40)
    assert len(journal.claim(100)) == 40
    assert min(batches[:2]) >= FolderSource.FILL_MIN, batches


def test_a_name_that_is_not_utf8_is_taken_and_stops_nothing(tmp_path, journal):
    """A scanner share can hold names in another encoding: the file is taken (its name kept
    with the odd bytes escaped) and the files beside it in the same batch are taken too."""
    rig = Rig(tmp_path, journal, 0.0)
    odd = os.fsdecode(b"slice-\xe9\xff.dcm")  # not UTF-8: held as surrogate escapes
    (rig.inbox / odd).write_bytes(encode_ct_dicom(synthetic_phantom(0, size=64)))
    for k in range(3):
        (rig.inbox / f"ok{k}.dcm").write_bytes(encode_ct_dicom(synthetic_phantom(k + 1, size=64)))
    with rig:
        assert wait_for(lambda: len(rig.got) == 4)
    assert [what for what, _ in rig.got] == [Intake.ACCEPTED] * 4
    assert not list(rig.inbox.iterdir())
    names = {i.name for i in journal.claim(10)}
    assert "slice-\\xe9\\xff.dcm" in names and len(names) == 4


def test_a_batch_that_fails_is_retaken_one_by_one(tmp_path, journal, monkeypatch):
    """One file whose journaling fails (not resource trouble) is set aside; the rest of its
    batch is taken, and the bad one is not retried in every later batch."""
    rig = Rig(tmp_path, journal, 0.0)
    for k in range(4):
        (rig.inbox / f"f{k}.dcm").write_bytes(CT + bytes([k]))
    real = journal.accept_many
    calls: list[int] = []

    def accept_many(rows):
        calls.append(len(rows))
        if any(name == "f2.dcm" for _, name, *_ in rows):
            raise RuntimeError("a bug in the journal for this one file")
        return real(rows)

    monkeypatch.setattr(journal, "accept_many", accept_many)
    with rig:
        assert wait_for(lambda: len(rig.got) == 3)
        time.sleep(0.5)  # several more polls
    assert (rig.inbox / "f2.dcm").exists() and len(list(rig.inbox.iterdir())) == 1
    assert "refused" in rig.skips
    assert len(calls) <= 6  # the batch, then one by one: no retry of f2 at every poll
