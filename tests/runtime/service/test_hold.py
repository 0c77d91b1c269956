"""A full disk is not bad input: the service holds (readiness false with the reason, sources
held back, nothing claimed), probes, and resumes by itself; every slice is done exactly once."""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from hxsched.runtime.service.dicom_io import encode_ct_dicom, synthetic_phantom
from hxsched.runtime.service.intake import Intake
from hxsched.runtime.service.journal import Journal
from hxsched.runtime.service.pipeline import pipeline_from_dict
from hxsched.runtime.service.service import Service, ServiceOptions, probe_folder


def _service(plan, tmp_path: Path, queue: int = 16, **extra) -> tuple[Service, Path]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    models = [
        {"name": i.model, "role": "detect" if "yolo" in i.model else "synth", "path": i.model_path}
        for i in plan.instances
    ]
    d = {
        "schema": "hxsched.pipeline/1",
        "name": "test",
        "backend": "sim",
        "plan": plan.path,
        "queue": queue,
        "models": models,
        "sources": [{"kind": "folder", "path": str(inbox), "stable_s": 0.0}],
        **extra,
    }
    opts = ServiceOptions(output=tmp_path / "out", http_port=None, workers=0)
    return Service(pipeline_from_dict(d), opts), inbox


def _drop(inbox: Path, n: int) -> None:
    for k in range(n):
        (inbox / f"s{k:02d}.dcm").write_bytes(encode_ct_dicom(synthetic_phantom(k)))


def wait_for(pred, timeout=60.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _held(svc: Service) -> bool:
    ok, why = svc.ready()
    return not ok and why.startswith("held: ") and "ENOSPC" in why


def _done_once(svc: Service, out: Path, n: int) -> None:
    c = svc.counts()
    assert c["done"] == n and c["quarantined"] == 0 and c["accepted"] + c["processing"] == 0, c
    assert len(list((out / "dicom").rglob("*.dcm"))) == n
    assert len(list((out / "detections").glob("*.json"))) == n
    assert not [p for p in out.rglob("*.tmp") if "journal" not in p.parts]
    assert not list(out.rglob(".hxsched-probe-*"))


def test_output_writes_on_a_full_disk_hold_then_resume(gan_yolo_plan, tmp_path, monkeypatch):
    full = threading.Event()
    full.set()
    real_write = os.write

    def write(fd, data):  # the host path's output writes (and the probe's test write)
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    svc, inbox = _service(gan_yolo_plan, tmp_path)
    n = 6
    svc.start()
    try:
        _drop(inbox, n)
        assert wait_for(lambda: _held(svc), 30), svc.ready()
        time.sleep(1.5)  # the probe's write fails too: still held, nothing quarantined
        assert _held(svc) and svc.counts()["quarantined"] == 0
        assert svc.counts()["done"] == 0
        full.clear()
        assert wait_for(lambda: svc.counts()["done"] == n, 60), svc.counts()
        assert svc.ready() == (True, "ready")
    finally:
        svc.stop()
    _done_once(svc, tmp_path / "out", n)


def test_spooling_on_a_full_disk_holds_and_leaves_the_inbox(gan_yolo_plan, tmp_path, monkeypatch):
    full = threading.Event()
    full.set()
    real = Journal._write_temp

    def write_temp(self, src):
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, src)

    monkeypatch.setattr(Journal, "_write_temp", write_temp)
    svc, inbox = _service(gan_yolo_plan, tmp_path)
    n = 5
    svc.start()
    try:
        _drop(inbox, n)
        assert wait_for(lambda: _held(svc), 30), svc.ready()
        assert len(list(inbox.iterdir())) == n  # left in place, not set aside as bad
        assert svc.gate is not None and svc.gate.acquire(0.1) == 0  # sources held back
        time.sleep(0.5)
        full.clear()
        assert wait_for(lambda: svc.counts()["done"] == n, 60), svc.counts()
        assert wait_for(lambda: svc.ready()[0], 30), svc.ready()
    finally:
        svc.stop()
    assert not list(inbox.iterdir())
    _done_once(svc, tmp_path / "out", n)


def test_the_probe_sees_a_full_folder(tmp_path, monkeypatch):
    assert probe_folder(tmp_path) is None

    class Full:
        f_bavail, f_frsize = 3, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    assert "no space" in (probe_folder(tmp_path) or "")
    assert not list(tmp_path.iterdir())


def _crash_three_times(root: Path) -> str:
    """A journal whose one slice was being decoded in-process when the service died, three
    times running (the marker ``Journal.decoding`` leaves behind)."""
    item_id = ""
    for k in range(3):
        j = Journal(root)
        if k == 0:
            item_id = j.accept(encode_ct_dicom(synthetic_phantom(99)), "x.dcm", "folder").id
        else:
            j.recover()
        assert [i.id for i in j.claim(1)] == [item_id]
        (j.marks_dir / item_id).touch()
        j.close()
    return item_id


def test_intake_and_recovery_quarantines_are_counted_by_reason(gan_yolo_plan, tmp_path, caplog):
    out = tmp_path / "out"
    item_id = _crash_three_times(out / "journal")
    svc, inbox = _service(gan_yolo_plan, tmp_path, max_bytes=100_000)
    (inbox / "big.dcm").write_bytes(bytes(200_000))
    (inbox / "link.dcm").symlink_to(tmp_path / "elsewhere.dcm")
    caplog.set_level(logging.INFO, logger="hxsched.service")
    svc.start()
    try:
        assert wait_for(lambda: svc.counts()["quarantined"] == 2, 30), svc.counts()
        svc._accepted(Intake.QUARANTINED, "decode-limit")  # as the SCP reports its refusals
    finally:
        svc.stop()
    value = svc.registry.get_sample_value
    assert value("hxsched_quarantined_total", {"reason": "crashed-repeatedly"}) == 1
    assert value("hxsched_quarantined_total", {"reason": "oversize"}) == 1
    assert value("hxsched_quarantined_total", {"reason": "decode-limit"}) == 1
    assert value("hxsched_inbox_skipped_total", {"why": "symlink"}) == 1
    events = [r for r in caplog.records if getattr(r, "fields", {}).get("item") == item_id]
    assert any(r.fields.get("reason") == "crashed-repeatedly" for r in events)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM])
def test_hangup_and_usr1_drain_like_sigterm(gan_yolo_plan, tmp_path, sig):
    svc, _ = _service(gan_yolo_plan, tmp_path)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, sig)}
    try:
        svc.install_signal_handlers()
        assert not svc.stop_event.is_set()
        os.kill(os.getpid(), sig)
        assert svc.stop_event.wait(5.0)  # the handler asked for a drain; the process lives
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
