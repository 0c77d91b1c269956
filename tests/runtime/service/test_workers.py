"""Host worker processes: memory and time limits, blame only the slice a worker died on, redo
the rest, outputs of interrupted attempts removed, resource trouble is not bad input."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path

from hxsched.runtime.service.dicom_io import Reason, encode_ct_dicom, synthetic_phantom
from hxsched.runtime.service.journal import Journal
from hxsched.runtime.service.pipeline import pipeline_from_dict
from hxsched.runtime.service.roles import role_handler
from hxsched.runtime.service.workers import (
    TEST_HOOK_ENV,
    Finished,
    HostConfig,
    Hosts,
    Instance,
    Prepared,
    remove_partial_outputs,
)

HOOK = """
import os, time
import numpy as np
from hxsched.runtime.service import workers

def hook():
    real_read, real_write = workers.read_slice, workers.SliceHost.write

    def read_slice(path, **kw):
        name = os.path.basename(path)
        if name.startswith("bomb"):  # 4 GiB, never touched: harmless without a limit
            np.empty(4 << 30, np.uint8)
        if name.startswith("slow"):
            time.sleep(60)
        return real_read(path, **kw)

    def write(self, path, data):
        got = real_write(self, path, data)
        if path.name.startswith("dead"):  # killed here: one output in place, the slice unfinished
            time.sleep(60)
        return got

    workers.read_slice, workers.SliceHost.write = read_slice, write
"""


class Seen:
    """What the pool reported; ``auto_finish``: each prepared slice is finished at once."""

    def __init__(self) -> None:
        self.got: list = []
        self.cond = threading.Condition()
        self.hosts: Hosts | None = None
        self.auto_finish = True

    def prepared(self, p: Prepared) -> None:
        self._add(p)
        if self.auto_finish and p.error is None and self.hosts is not None:
            self.hosts.finish(p.item_id, p.slot, "", None, False)

    def finished(self, f: Finished) -> None:
        self._add(f)

    def lost(self, item_id: str, slot: int, reason: Reason, message: str) -> None:
        self._add(("lost", item_id, reason, message))

    def _add(self, x) -> None:
        with self.cond:
            self.got.append(x)
            self.cond.notify_all()

    def wait(self, pred, timeout: float = 30.0):
        with self.cond:
            assert self.cond.wait_for(lambda: any(pred(x) for x in self.got), timeout), self.got
            return next(x for x in self.got if pred(x))


def _pool(tmp_path, monkeypatch, workers=1, **limits) -> tuple[Hosts, Seen, Path]:
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    monkeypatch.setenv(TEST_HOOK_ENV, f"{hook}:hook")
    d = {
        "schema": "hxsched.pipeline/1",
        "name": "t",
        "backend": "sim",
        "models": [{"name": "g", "role": "synth", "zoo": "pix2pix_unet256"}],
        "limits": limits,
    }
    pipe = pipeline_from_dict(d)
    m = pipe.models[0]
    inst = Instance("g#0", m, "input", role_handler(m.role).input_shape(m), 0)
    out = tmp_path / "out"
    seen = Seen()
    hosts = Hosts(
        HostConfig(pipe, out, "sim", (inst,)), workers, 4, seen.prepared, seen.finished, seen.lost
    )
    seen.hosts = hosts
    return hosts, seen, out


def _slice(tmp_path: Path, name: str, k: int = 0) -> str:
    path = tmp_path / name
    path.write_bytes(encode_ct_dicom(synthetic_phantom(k, size=64)))
    return str(path)


def _id(prefix: str, k: int) -> str:
    return f"{prefix}{k:0{24 - len(prefix)}x}"


def _done(item_id: str):
    return lambda x: isinstance(x, Finished) and x.item_id == item_id


def _new_pid(hosts: Hosts, old: int, timeout: float = 60.0) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pids = hosts.pids()
        if pids and pids[0] != old:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError("the worker was not replaced")


def test_a_worker_has_a_memory_limit_and_out_of_memory_is_decode_limit(tmp_path, monkeypatch):
    hosts, seen, _ = _pool(tmp_path, monkeypatch, worker_memory_mib=512)
    try:
        (pid,) = hosts.pids()
        limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
        assert any(x.startswith("Max data size") and str(512 << 20) in x for x in limits)
        bomb = _id("b", 1)
        hosts.prepare(bomb, _slice(tmp_path, "bomb.dcm"), 0)
        got = seen.wait(lambda x: isinstance(x, Prepared) and x.item_id == bomb)
        assert got.error is not None and got.error[0] == Reason.DECODE_LIMIT.value
        assert "worker_memory_mib" in got.error[1]
        hosts.prepare(_id("a", 2), _slice(tmp_path, "good.dcm"), 1)
        assert seen.wait(_done(_id("a", 2))).error is None
        assert hosts.pids() == [pid]  # the MemoryError was the slice's, the worker survives
    finally:
        hosts.close()


def test_a_slice_past_the_decode_timeout_kills_its_worker_and_only_it_is_charged(
    tmp_path, monkeypatch
):
    hosts, seen, _ = _pool(tmp_path, monkeypatch, decode_timeout_s=1.0)
    try:
        (pid,) = hosts.pids()
        slow, after = _id("c", 1), _id("a", 2)
        hosts.prepare(slow, _slice(tmp_path, "slow.dcm"), 0)
        hosts.prepare(after, _slice(tmp_path, "good.dcm"), 1)  # queued behind it: redone
        lost = seen.wait(lambda x: isinstance(x, tuple), timeout=30)
        assert lost[:3] == ("lost", slow, Reason.DECODE_LIMIT)
        assert "decode_timeout_s" in lost[3]
        assert seen.wait(_done(after), timeout=60).error is None
        assert _new_pid(hosts, pid) != pid
        assert [x for x in seen.got if isinstance(x, tuple)] == [lost]
        assert hosts.failed is None
    finally:
        hosts.close()


def test_a_worker_killed_while_idle_charges_nothing_and_what_it_held_is_redone(
    tmp_path, monkeypatch
):
    hosts, seen, out = _pool(tmp_path, monkeypatch)
    try:
        (pid,) = hosts.pids()
        first, held = _id("a", 1), _id("a", 2)
        hosts.prepare(first, _slice(tmp_path, "1.dcm", 1), 0)
        seen.wait(_done(first))
        seen.auto_finish = False
        hosts.prepare(held, _slice(tmp_path, "2.dcm", 2), 1)
        seen.wait(lambda x: isinstance(x, Prepared) and x.item_id == held)
        time.sleep(0.2)  # idle: its last answer is sent
        os.kill(pid, signal.SIGKILL)
        _new_pid(hosts, pid)
        hosts.finish(held, 1, str(tmp_path / "2.dcm"), None, False)  # the prepared slice: redo
        assert seen.wait(_done(held), timeout=60).error is None
        assert not [x for x in seen.got if isinstance(x, tuple)]  # nothing charged
        assert len(list((out / "dicom").rglob("*.dcm"))) == 2
    finally:
        hosts.close()


def test_a_worker_killed_on_a_slice_charges_only_it_and_removes_its_outputs(tmp_path, monkeypatch):
    """The flaky end-to-end case: the worker had renamed a Secondary Capture into place when it
    died; the charged slice leaves nothing behind, the slice queued behind it is redone."""
    hosts, seen, out = _pool(tmp_path, monkeypatch)
    try:
        (pid,) = hosts.pids()
        dead, after = _id("dead", 1), _id("a", 2)
        hosts.prepare(dead, _slice(tmp_path, "1.dcm", 1), 0)
        sc = out / "dicom" / "g_0" / f"{dead}.dcm"
        t0 = time.monotonic()
        while not sc.exists() and time.monotonic() - t0 < 30:
            time.sleep(0.02)
        assert sc.exists()
        hosts.prepare(after, _slice(tmp_path, "2.dcm", 2), 1)
        time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        lost = seen.wait(lambda x: isinstance(x, tuple))
        assert lost[:3] == ("lost", dead, Reason.PROCESSING_ERROR)
        assert lost[3].startswith("host worker process died")
        assert seen.wait(_done(after), timeout=60).error is None
        assert not sc.exists() and not list(out.rglob(f"*{dead}*"))
        assert [p.name for p in out.rglob("*.dcm")] == [f"{after}.dcm"]
    finally:
        hosts.close()


def test_a_full_disk_on_output_is_resource_trouble_not_bad_input(tmp_path, monkeypatch):
    """Finding 4: ENOSPC writing a slice's outputs is reported as resource trouble (the slice
    is released, not quarantined output-error) and leaves no file behind."""
    hosts, seen, out = _pool(tmp_path, monkeypatch, workers=0)
    from hxsched.runtime.service import workers as w

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(w.os, "write", full)
    try:
        item = _id("a", 1)
        hosts.prepare(item, _slice(tmp_path, "1.dcm"), 0)
        got = seen.wait(_done(item))
        assert got.error is None and got.resource is not None and "ENOSPC" in got.resource
        assert not [p for p in out.rglob("*") if p.is_file()]
    finally:
        hosts.close()


def test_inline_decoding_is_guarded_by_a_marker(tmp_path, monkeypatch):
    """``workers: 0``: each decode runs inside the journal's marker (a crash then is charged)."""
    journal = Journal(tmp_path / "j")
    d = {
        "schema": "hxsched.pipeline/1",
        "name": "t",
        "models": [{"name": "g", "role": "synth", "zoo": "pix2pix_unet256"}],
    }
    pipe = pipeline_from_dict(d)
    m = pipe.models[0]
    inst = Instance("g#0", m, "input", role_handler(m.role).input_shape(m), 0)
    seen = Seen()
    seen.auto_finish = False
    marks: list[list[str]] = []
    from hxsched.runtime.service import workers as w

    real = w.read_slice
    monkeypatch.setattr(
        w,
        "read_slice",
        lambda p, **kw: (marks.append(os.listdir(journal.marks_dir)), real(p, **kw))[1],
    )
    cfg = HostConfig(pipe, tmp_path / "out", "sim", (inst,))
    hosts = Hosts(cfg, 0, 2, seen.prepared, seen.finished, seen.lost, journal.decoding)
    item = _id("a", 1)
    hosts.prepare(item, _slice(tmp_path, "1.dcm"), 0)
    assert seen.wait(lambda x: isinstance(x, Prepared)).error is None
    assert marks == [[item]] and os.listdir(journal.marks_dir) == []
    hosts.close()
    journal.close()


def test_recovery_removes_partial_outputs_and_temp_files(tmp_path):
    """Finding 2: after a kill, the outputs an interrupted attempt renamed into place (its item
    not done) and every output temp file go; done items' outputs and foreign files stay."""
    out = tmp_path / "out"
    j = Journal(out / "journal")
    done, redo, bad = (j.accept(f"slice {k}".encode(), f"{k}.dcm", "s") for k in range(3))
    j.claim(3)
    j.complete(done.id, {})
    j.quarantine(bad.id, "unreadable", "x")
    files = {
        "keep": [f"dicom/g_0/{done.id}.dcm", f"detections/{done.id}.d_0.json", "previews/x.png"],
        "gone": [
            f"dicom/g_0/{redo.id}.dcm",
            f"detections/{redo.id}.d_0.json",
            f"previews/{bad.id}.png",
            f"dicom/g_0/.{redo.id}.dcm.k2j3h.tmp",
            f"previews/.{done.id}.png.abc.tmp",
        ],
    }
    for rel in files["keep"] + files["gone"]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"x")
    assert j.recover() == 1
    assert remove_partial_outputs(out, j) == len(files["gone"])
    assert all((out / rel).exists() for rel in files["keep"])
    assert not any((out / rel).exists() for rel in files["gone"])
    j.close()


def test_the_watchdog_leaves_a_normal_worker_alone(tmp_path, monkeypatch):
    hosts, seen, _ = _pool(tmp_path, monkeypatch, decode_timeout_s=2.0)
    try:
        (pid,) = hosts.pids()
        for k in range(3):
            hosts.prepare(_id("a", k), _slice(tmp_path, f"{k}.dcm", k), k)
        for k in range(3):
            assert seen.wait(_done(_id("a", k))).error is None
        time.sleep(2.5)  # idle past the timeout: not killed
        assert hosts.pids() == [pid] and not [x for x in seen.got if isinstance(x, tuple)]
    finally:
        hosts.close()
