"""The PACS sink against a real C-STORE SCP on loopback (pynetdicom): exactly once per SOP
Instance UID, back-off while the destination is down, kill -9 of the service, refusals."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

from hxsched.runtime.service.dicom_io import (
    encode_ct_dicom,
    synthetic_phantom,
    write_secondary_capture,
)
from hxsched.runtime.service.journal import Journal, OutboxEntry
from hxsched.runtime.service.metrics import Registry
from hxsched.runtime.service.outbox import (
    BASIC_TEXT_SR,
    SECONDARY_CAPTURE,
    Outbox,
    OutboxCounters,
    Verdict,
    outbox_entries,
    verdict,
)
from hxsched.runtime.service.pipeline import PacsSink, pipeline_from_dict
from hxsched.runtime.service.service import Service, ServiceOptions
from hxsched.runtime.service.sr import Findings, encode_findings_sr

pytest.importorskip("pynetdicom")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=30.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


class Destination:
    """A C-STORE SCP standing in for the PACS: what it stored, in arrival order."""

    def __init__(self, port=0, sop_classes=(SECONDARY_CAPTURE, BASIC_TEXT_SR), status=None):
        self.port, self.sop_classes, self.status = port, sop_classes, status
        self.stored: list[str] = []  # SOP Instance UIDs, each time one was stored
        self.datasets: dict[str, pydicom.Dataset] = {}
        self.delay_s = 0.0
        self.server = None
        self.lock = threading.Lock()

    def start(self) -> Destination:
        from pynetdicom import AE, evt

        ae = AE(ae_title="PACS")
        for uid in self.sop_classes:
            ae.add_supported_context(uid)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        self.port = self.server.server_address[1]
        return self

    def stop(self) -> None:
        if self.server is not None:  # as a PACS going down: its open associations go too
            for assoc in self.server.active_associations:
                assoc.abort()
            self.server.shutdown()
            self.server = None

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        uid = str(ds.SOPInstanceUID)
        time.sleep(self.delay_s)
        code = self.status(uid, ds) if self.status else 0x0000
        if verdict(code) == Verdict.SENT:
            with self.lock:
                self.stored.append(uid)
                self.datasets[uid] = ds
        return code

    def counts(self) -> Counter:
        with self.lock:
            return Counter(self.stored)


def sink(port: int, **kw) -> PacsSink:
    opts = {"timeout_s": 3.0, "retry_initial_s": 0.1, "retry_max_s": 0.4, **kw}
    return PacsSink(host="127.0.0.1", port=port, ae_title="PACS", **opts)


def counters() -> OutboxCounters:
    r = Registry()
    return OutboxCounters(r.counter("s", "s"), r.counter("r", "r"), r.counter("f", "f"))


def done_slices(journal: Journal, folder: Path, n: int) -> dict[str, dict[str, str]]:
    """n done slices, each with a Secondary Capture and a findings SR queued to send."""
    folder.mkdir(parents=True, exist_ok=True)
    done = {}
    for k in range(n):
        sl = synthetic_phantom(k, size=64)
        item = journal.accept(encode_ct_dicom(sl), f"s{k}.dcm", "test")
        sc = write_secondary_capture(np.full((64, 64), k, np.uint8), sl, folder / f"{item.id}.dcm")
        sr = folder / f"{item.id}.sr.dcm"
        sr.write_bytes(
            encode_findings_sr(sl, Findings((), "det", "zoo d seed 0", "det#0", 1, 0.25))
        )
        done[item.id] = {"dicom:gen#0": str(sc), "sr:det#0": str(sr), "preview": "x.png"}
    entries = [e for i, f in done.items() for e in outbox_entries(i, f)]
    journal.complete_many(list(done.items()), outbox=entries)
    return done


def uids_of(done: dict[str, dict[str, str]]) -> set[str]:
    return {
        str(pydicom.dcmread(p).SOPInstanceUID) for f in done.values() for p in list(f.values())[:2]
    }


def test_verdicts():
    assert [verdict(c) for c in (0x0000, 0xB000, 0xB007, 0x0001)] == [Verdict.SENT] * 4
    assert [verdict(c) for c in (0xA700, 0xA7FF, 0x0213)] == [Verdict.RETRY] * 3
    assert [verdict(c) for c in (0xC000, 0xC211, 0xA900, 0x0122, 0x0124)] == [Verdict.FAILED] * 5


def test_sends_are_queued_in_the_completing_commit_and_once(tmp_path):
    with Journal(tmp_path / "j") as j:
        done = done_slices(j, tmp_path / "files", 3)
        assert j.outbox_counts() == {"queued": 6, "sent": 0, "failed": 0}
        entries = [e for i, f in done.items() for e in outbox_entries(i, f)]
        j.complete_many(list(done.items()), outbox=entries)  # again: nothing queued twice
        assert j.outbox_queued() == 6
        bad = j.accept(b"other content", "q.dcm", "test")
        j.quarantine(bad.id, "unreadable", "test")
        late = j.accept(b"late content", "l.dcm", "test")
        with pytest.raises(Exception, match="quarantined"):  # one transaction: all or nothing
            j.complete_many(
                [(late.id, {}), (bad.id, {})], outbox=[OutboxEntry(late.id, "dicom:a", "x")]
            )
        assert j.outbox_queued() == 6 and j.get(late.id).state == "accepted"
        j.complete_many([(late.id, {})])  # without an outbox: as before
        assert j.get(late.id).state == "done" and j.outbox_queued() == 6


def test_refused_objects_are_counted_and_do_not_block_the_rest(tmp_path):
    """The destination takes no SR (its presentation context is rejected), refuses one image
    for good (0xC001) and is busy once for each other image (0xA700: retried)."""
    tries: Counter = Counter()
    first: list[str] = []

    def status(uid, ds):
        tries[uid] += 1
        if not first:
            first.append(uid)
        if uid == first[0]:
            return 0xC001
        return 0xA700 if tries[uid] == 1 else 0x0000

    dest = Destination(sop_classes=(SECONDARY_CAPTURE,), status=status).start()
    with Journal(tmp_path / "j") as j:
        done_slices(j, tmp_path / "files", 4)
        c = counters()
        box = Outbox(j, sink(dest.port), c, bound=100)
        box.start()
        try:
            assert wait_for(lambda: j.outbox_queued() == 0, 20), j.outbox_counts()
        finally:
            box.stop()
            dest.stop()
        assert j.outbox_counts() == {"queued": 0, "sent": 3, "failed": 5}
        assert c.failed._value.get() == 5 and c.sent._value.get() == 3
        assert c.retries._value.get() >= 3
        assert set(dest.counts().values()) == {1} and len(dest.counts()) == 3
        assert first[0] not in dest.counts()


def test_destination_stopped_mid_run_then_back_loses_nothing(tmp_path):
    port = free_port()
    dest = Destination(port=port)
    dest.delay_s = 0.05
    dest.start()
    with Journal(tmp_path / "j") as j:
        done = done_slices(j, tmp_path / "files", 8)
        c = counters()
        box = Outbox(j, sink(port, timeout_s=1.0), c, bound=100)
        box.start()
        try:
            assert wait_for(lambda: len(dest.stored) >= 3, 20)
            dest.stop()
            first_half = dest.counts()
            assert wait_for(lambda: box.reason != "", 10)
            time.sleep(1.2)  # down for a while: back-off 0.1, 0.2, 0.4, 0.4 ...
            assert box.status().reachable is False and "connect" in box.status().reason
            assert j.outbox_queued() > 0
            tries = j._db.execute("SELECT MAX(attempts) FROM outbox").fetchone()[0]
            assert 2 <= tries <= 8, tries  # retried, but backing off (not a busy loop)
            dest = Destination(port=port).start()
            assert wait_for(lambda: j.outbox_queued() == 0, 20), j.outbox_counts()
        finally:
            box.stop()
            dest.stop()
        assert box.status().reachable and box.status().sent == 16
        assert set(dest.counts()) | set(first_half) == uids_of(done)  # nothing lost
        assert c.retries._value.get() > 0


def test_queue_over_its_bound_is_reported(tmp_path):
    got: list[str] = []
    with Journal(tmp_path / "j") as j:
        done_slices(j, tmp_path / "files", 2)
        box = Outbox(j, sink(free_port()), counters(), bound=3, on_over=got.append)
        box.start()
        try:
            assert wait_for(lambda: bool(got), 10)
        finally:
            box.stop()
        assert "4 results wait" in got[0] and "bound of 3" in got[0]


# -- the service --------------------------------------------------------------------------------
def pipeline_dict(plan, inbox: Path, port: int, queue: int = 8) -> dict:
    models = []
    for inst in plan.instances:
        role = "detect" if "yolo" in inst.model else "synth"
        models.append({"name": inst.model, "role": role, "path": inst.model_path})
    pacs = {"host": "127.0.0.1", "port": port, "ae_title": "PACS", "timeout_s": 3.0}
    pacs |= {"retry_initial_s": 0.1, "retry_max_s": 0.4}
    return {
        "schema": "hxsched.pipeline/1",
        "name": "test",
        "backend": "sim",
        "plan": plan.path,
        "queue": queue,
        "models": models,
        "sources": [{"kind": "folder", "path": str(inbox), "stable_s": 0.0}],
        "sinks": {"pacs": pacs, "previews": False},
    }


def phantoms(inbox: Path, n: int) -> list[pydicom.Dataset]:
    inbox.mkdir(exist_ok=True)
    out = []
    for k in range(n):
        data = encode_ct_dicom(synthetic_phantom(k, size=128))
        (inbox / f"s{k:03d}.dcm").write_bytes(data)
        out.append(synthetic_phantom(k, size=128).meta)
    return out


def test_service_sends_every_result_once_and_stays_ready_while_the_pacs_is_down(
    gan_yolo_plan, tmp_path
):
    n, port = 5, free_port()
    sources = phantoms(tmp_path / "inbox", n)
    pipe = pipeline_from_dict(pipeline_dict(gan_yolo_plan, tmp_path / "inbox", port))
    svc = Service(pipe, ServiceOptions(output=tmp_path / "out", http_port=0, workers=0))
    svc.start()
    dest = Destination(port=port)
    try:
        assert wait_for(lambda: svc.counts().get("done", 0) == n, 60)
        assert wait_for(lambda: svc.outbox.status().retries > 0, 10)
        assert svc.ready() == (True, "ready")  # queued durably: still ready
        status = json.loads(urllib.request.urlopen(svc.http.url + "/status.json").read())
        assert status["outbox"]["queued"] == 2 * n and not status["outbox"]["reachable"]
        assert "queued durably" in status["outbox"]["note"]
        dest.start()
        assert wait_for(lambda: svc.outbox.status().sent == 2 * n, 20), svc.outbox.status()
        metrics = urllib.request.urlopen(svc.http.url + "/metrics").read().decode()
    finally:
        svc.stop()
        dest.stop()
    assert f"hxsched_outbox_sent_total {2 * n}.0" in metrics
    assert "hxsched_outbox_queued 0.0" in metrics and "hxsched_outbox_failed_total 0.0" in metrics
    assert set(dest.counts().values()) == {1} and len(dest.counts()) == 2 * n  # exactly once
    by_class = Counter(str(ds.SOPClassUID) for ds in dest.datasets.values())
    assert by_class == {SECONDARY_CAPTURE: n, BASIC_TEXT_SR: n}
    src_uids = {m["SOPInstanceUID"] for m in sources}
    for ds in dest.datasets.values():
        if ds.SOPClassUID == BASIC_TEXT_SR:  # the findings, referencing their source instance
            ref = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
            assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in src_uids
            assert ds.StudyInstanceUID == sources[0]["StudyInstanceUID"]
            texts = [i.TextValue for i in ds.ContentSequence if "TextValue" in i]
            assert any("sha256:" in t for t in texts) and any(
                "Machine-generated" in t for t in texts
            )
        else:
            assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in src_uids


def test_service_holds_when_the_queue_passes_its_bound_and_resumes(gan_yolo_plan, tmp_path):
    n, port = 8, free_port()
    phantoms(tmp_path / "inbox", n)
    # queue 1: the bound is 10 results; 6 slices make 12 (a Secondary Capture and an SR each)
    pipe = pipeline_from_dict(pipeline_dict(gan_yolo_plan, tmp_path / "inbox", port, queue=1))
    svc = Service(pipe, ServiceOptions(output=tmp_path / "out", http_port=None, workers=0))
    svc.start()
    dest = Destination(port=port)
    try:
        assert wait_for(lambda: not svc.ready()[0], 60)
        ready, why = svc.ready()
        assert "results wait to be sent to the PACS" in why and "bound of 10" in why
        assert svc.counts().get("done", 0) < n  # held: the sources wait
        dest.start()
        assert wait_for(lambda: svc.counts().get("done", 0) == n and svc.ready()[0], 30)
        assert wait_for(lambda: svc.outbox.status().sent == 2 * n, 20), svc.outbox.status()
    finally:
        svc.stop()
        dest.stop()
    assert len(dest.counts()) == 2 * n and svc.m_holds._value.get() >= 1


def _outbox(out: Path) -> dict:
    db = out / "journal" / "journal.sqlite3"
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return dict(con.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
        finally:
            con.close()
    except sqlite3.Error:
        return {}


def test_kill_9_with_queued_and_in_flight_sends_then_restart_delivers_all(gan_yolo_plan, tmp_path):
    n, port = 6, free_port()
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    phantoms(inbox, n)
    pfile = tmp_path / "p.yaml"
    pfile.write_text(yaml.safe_dump(pipeline_dict(gan_yolo_plan, inbox, port)))
    cmd = [sys.executable, "-m", "hxsched", "serve", str(pfile), "--output", str(out)]
    cmd += ["--no-http", "--workers", "0", "-q"]
    dest = Destination(port=port)
    dest.delay_s = 0.3  # slow: the kill lands while a C-STORE is in flight
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _outbox(out).get("queued", 0) >= 4, 60)  # PACS down: queued
        dest.start()
        assert wait_for(lambda: len(dest.stored) >= 2, 30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    before = _outbox(out)
    assert before.get("queued", 0) > 0, before  # killed with sends still queued
    dest.delay_s = 0.0
    second = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: _outbox(out).get("sent", 0) == 2 * n, 60), _outbox(out)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
        dest.stop()
    assert second.returncode == 0, err.decode()[-500:]
    assert _outbox(out) == {"sent": 2 * n}
    got = dest.counts()
    assert len(got) == 2 * n  # every result, each SOP Instance UID once or re-sent as itself
    expected = {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.glob("*/*/*.dcm")}
    assert set(got) == expected and len(expected) == 2 * n
    assert "PHANTOM" not in err.decode()  # no patient names in the logs
