"""The C-STORE SCP as a PACS judges it: AE titles, association count and idle time, PDU and data
set sizes enforced as the bytes arrive, only the accepted SOP classes offered, and deduplication
by SOP Instance UID (folder and C-STORE) as well as by content."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from hxsched.runtime.service.filemeta import file_key, sop_instance_uid
from hxsched.runtime.service.intake import Gate
from hxsched.runtime.service.journal import ACCEPTED, DONE, STANDBY, Journal, dedupe_key
from hxsched.runtime.service.scp import PduGuard, ScpSettings, ScpSource, _printable

pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE  # noqa: E402

CT = Path(get_testdata_file("CT_small.dcm"))
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def records():
    h = _Records()
    logger = logging.getLogger("hxsched.service")
    logger.addHandler(h)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield h.lines
    logger.removeHandler(h)
    logger.setLevel(old)


@pytest.fixture
def journal(tmp_path):
    with Journal(tmp_path / "j") as j:
        yield j


@pytest.fixture
def scp(journal):
    started: list[ScpSource] = []

    def start(**settings) -> ScpSource:
        gate = Gate(journal, 64, threading.Event())
        src = ScpSource(
            journal,
            gate,
            host="127.0.0.1",
            port=0,
            ae_title="HXSCHED",
            on_accept=lambda _: None,
            settings=ScpSettings(**settings),
        )
        src.start()
        started.append(src)
        return src

    yield start
    for src in started:
        src.stop()


def _ct(**changes) -> pydicom.Dataset:
    ds = pydicom.dcmread(CT)
    for k, v in changes.items():
        setattr(ds, k, v)
    return ds


def _associate(
    port: int, calling: str = "SCU", called: str = "HXSCHED", contexts=None, syntaxes=None
):
    ae = AE(ae_title=calling)
    for uid in contexts or [pydicom.uid.CTImageStorage]:
        ae.add_requested_context(uid, syntaxes or [EXPLICIT_LE, "1.2.840.10008.1.2"])
    ae.add_requested_context("1.2.840.10008.1.1")
    return ae.associate("127.0.0.1", port, ae_title=called)


def _wait(pred, timeout: float) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False


# -- file meta parser (the folder's dedupe key) -----------------------------------------------


def test_file_meta_gives_the_sop_instance_uid_and_nothing_else(tmp_path):
    data = CT.read_bytes()
    assert sop_instance_uid(data) == str(pydicom.dcmread(CT).SOPInstanceUID)
    assert file_key(CT) == sop_instance_uid(data)
    assert sop_instance_uid(data[132:]) is None  # no preamble, no "DICM"
    assert sop_instance_uid(b"\0" * 128 + b"DICM") is None
    assert sop_instance_uid(data[:150]) is None  # cut inside the group
    assert sop_instance_uid(b"garbage" * 100) is None
    # a length that lies, a value that is no UID
    lying = b"\0" * 128 + b"DICM" + struct.pack("<HH2sL", 2, 1, b"OB", 0) + b"\xff\xff\xff\x7f"
    assert sop_instance_uid(lying) is None
    bad = b"\0" * 128 + b"DICM" + struct.pack("<HH2sH", 2, 3, b"UI", 8) + b"Jane Doe"
    assert sop_instance_uid(bad) is None
    link = tmp_path / "link.dcm"
    link.symlink_to(CT)
    assert file_key(link) is None and file_key(tmp_path / "missing.dcm") is None


# -- the journal dedupes by key ---------------------------------------------------------------


def test_the_journal_dedupes_by_key_first_wins_and_stores_only_a_hash(journal):
    uid = "1.2.826.0.1.3680043.8.498.1"
    first = journal.accept(b"slice one", "a.dcm", "folder", key=uid)
    # the first copy is still waiting: a copy with other bytes is kept in reserve (standby)
    again = journal.accept(b"slice one, a tag changed", "scp.dcm", "scp", key=uid)
    assert again.duplicate and again.id != first.id and again.state == STANDBY
    other = journal.accept_many(
        [(b"another", "b.dcm", "folder", "1.2.3"), (b"changed again", "c.dcm", "scp", uid)]
    )
    assert not other[0].duplicate and other[1].duplicate and other[1].state == STANDBY
    old_style = journal.accept_many([(b"no key", "d.dcm", "folder")])
    assert not old_style[0].duplicate
    c = journal.counts()
    assert (c[ACCEPTED], c[STANDBY], c["duplicates"]) == (3, 2, 2)
    assert journal.pending() == 3  # standby copies are not work
    assert len(list(journal.spool_dir.iterdir())) == 5
    # the first is done: its standby copies go, and a later copy is a plain duplicate
    assert [i.id for i in journal.claim(1)] == [first.id]
    journal.complete_many([(first.id, {})])
    c = journal.counts()
    assert (c[DONE], c[STANDBY], c["duplicates"]) == (1, 0, 2)
    assert len(list(journal.spool_dir.iterdir())) == 2
    late = journal.accept(b"slice one, resent later", "e.dcm", "scp", key=uid)
    assert late.duplicate and late.id == first.id and late.name == "a.dcm"
    journal.close()
    db = sqlite3.connect(journal.db_path)
    keys = {r[0] for r in db.execute("SELECT dedupe_key FROM items")}
    assert dedupe_key(uid) in keys and uid not in keys
    assert uid.encode() not in journal.db_path.read_bytes()


def test_a_quarantined_first_does_not_block_a_resend(journal):
    uid = "1.2.3.4"
    first = journal.accept(b"cut short", "a.dcm", "folder", key=uid)
    journal.quarantine(first.id, "truncated", "pixel data shorter than the header says")
    resent = journal.accept(b"complete now", "a.dcm", "folder", key=uid)
    assert not resent.duplicate and resent.id != first.id
    spare = journal.accept(b"and again", "a.dcm", "scp", key=uid)
    assert spare.duplicate and spare.state == STANDBY


def test_a_bad_first_copy_never_swallows_a_good_one_that_arrived_meanwhile(journal):
    """Both copies arrive before the first is read; the first turns out bad: the second, kept
    in reserve, is processed (and counted as received, not as a duplicate)."""
    uid = "1.2.3.5"
    bad = journal.accept(b"garbage with a borrowed UID", "x.dcm", "folder", key=uid)
    good = journal.accept(b"the real slice", "y.dcm", "scp", key=uid)
    assert good.state == STANDBY and journal.counts()["duplicates"] == 1
    assert [i.id for i in journal.claim(5)] == [bad.id]
    journal.quarantine(bad.id, "unreadable", "not DICOM")
    c = journal.counts()
    assert (c[ACCEPTED], c[STANDBY], c["duplicates"]) == (1, 0, 0)
    assert [i.id for i in journal.claim(5)] == [good.id]
    assert journal.get(good.id).path.read_bytes() == b"the real slice"
    journal.complete(good.id, {})
    assert journal.counts()[DONE] == 1


def test_an_old_journal_gains_the_key_column(tmp_path):
    root = tmp_path / "j"
    root.mkdir()
    db = sqlite3.connect(root / "journal.sqlite3")
    db.executescript(
        "CREATE TABLE items (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " name TEXT NOT NULL, source TEXT NOT NULL, ext TEXT NOT NULL, size INTEGER NOT NULL,"
        " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, accepted_at REAL NOT NULL,"
        " updated_at REAL NOT NULL, outputs TEXT, reason_code TEXT, reason TEXT);"
        "INSERT INTO items (id, name, source, ext, size, state, accepted_at, updated_at)"
        " VALUES ('old', 'x.dcm', 'folder', 'dcm', 1, 'done', 0, 0);"
    )
    db.commit()
    db.close()
    with Journal(root) as j:
        assert j.get("old") is not None
        assert not j.accept(b"new", "y.dcm", "scp", key="1.2.3").duplicate
        assert j.accept(b"newer", "z.dcm", "scp", key="1.2.3").duplicate


# -- association negotiation ------------------------------------------------------------------


def test_called_and_calling_ae_titles_are_checked(scp, records):
    src = scp(calling_ae_titles=("MODALITY1", "PACS"))
    assert _associate(src.port, calling="OTHER").is_rejected
    assert _associate(src.port, calling="PACS", called="NOTHXSCHED").is_rejected
    ok = _associate(src.port, calling="PACS")
    assert ok.is_established
    ok.release()
    assert any("calling AE title not allowed" in line for line in records)
    assert any("called AE title is not ours" in line for line in records)
    assert not any("any sender" in line for line in records)


def test_without_an_allow_list_any_sender_is_accepted_with_a_warning(scp, records):
    src = scp()
    assert any("any sender is accepted" in line for line in records)
    a = _associate(src.port, calling="WHOEVER")
    assert a.is_established
    a.release()
    assert _associate(src.port, called="WRONG").is_rejected


def test_a_rejected_peers_calling_ae_is_logged_at_most_16_printable_characters():
    assert _printable("BAD\x00\x1b[31mSENDER" + "X" * 40) == "BAD??[31mSENDERX"


def test_only_the_accepted_sop_classes_and_verification_are_offered(scp):
    src = scp()
    a = _associate(src.port, contexts=[pydicom.uid.CTImageStorage, MR_IMAGE_STORAGE])
    assert a.is_established
    accepted = {cx.abstract_syntax for cx in a.accepted_contexts}
    rejected = {cx.abstract_syntax for cx in a.rejected_contexts}
    assert accepted == {pydicom.uid.CTImageStorage, "1.2.840.10008.1.1"}
    assert rejected == {MR_IMAGE_STORAGE}
    assert a.send_c_echo().Status == 0x0000
    with pytest.raises(ValueError):  # no accepted context to send an MR image under
        mr = _ct(SOPClassUID=MR_IMAGE_STORAGE)
        a.send_c_store(mr)
    a.release()


def test_idle_associations_time_out_and_let_a_real_sender_in(scp):
    src = scp(max_associations=2, idle_timeout_s=2.0)
    raw = socket.create_connection(("127.0.0.1", src.port))  # never sends an A-ASSOCIATE-RQ
    idle = _associate(src.port)
    assert idle.is_established
    assert _associate(src.port).is_rejected  # two of two in use
    assert _wait(lambda: idle.is_aborted, 8.0)  # the SCP aborted the idle one
    raw.settimeout(5.0)
    try:
        got = raw.recv(1 << 16)
    except ConnectionResetError:
        got = b""
    assert got == b""  # closed by the SCP's ARTIM timer (PS3.8 AA-2)
    late = _associate(src.port)
    assert late.is_established
    assert late.send_c_store(_ct()).Status == 0x0000
    late.release()
    raw.close()


def test_the_default_maximum_pdu_is_131072_and_longer_ones_are_refused(scp):
    from hxsched.runtime.service.pipeline import SOURCE_SETTINGS, SourceKind

    assert ScpSettings().max_pdu == SOURCE_SETTINGS[SourceKind.SCP]["max_pdu"] == 131072
    src = scp()
    a = _associate(src.port)
    assert a.is_established and a.acceptor.maximum_length == 131072
    sent = _ct()
    assert a.send_c_store(sent).Status == 0x0000
    a.release()
    # the SCP's temporary file became the spooled slice (renamed, not copied): nothing left
    (item,) = [p for p in src.journal.spool_dir.iterdir()]
    assert not item.name.startswith(".tmp")
    assert pydicom.dcmread(item).PixelData == sent.PixelData
    g = PduGuard(max_pdu=131072, max_bytes=64 << 20)
    assert g.header(struct.pack(">BBL", 4, 0, 131072)) is None
    assert g.header(struct.pack(">BBL", 4, 0, 131073)) is not None


# -- sizes while the bytes arrive --------------------------------------------------------------


def test_the_advertised_maximum_pdu_is_enforced(scp, journal):
    src = scp(max_pdu=32768, idle_timeout_s=30.0)
    a = _associate(src.port)
    assert a.is_established and a.acceptor.maximum_length == 32768
    t0 = time.monotonic()
    # a P-DATA-TF PDU announcing 4 MiB (the SCP must not wait for, or hold, all of it)
    a.dul.socket.socket.sendall(struct.pack(">BBL", 4, 0, 4 << 20) + b"\0" * 4096)
    assert _wait(lambda: a.is_aborted, 5.0)
    assert time.monotonic() - t0 < 10.0  # aborted, not dropped by the idle timeout
    assert journal.counts()[ACCEPTED] == 0
    a2 = _associate(src.port)
    assert a2.is_established and a2.send_c_store(_ct()).Status == 0x0000
    a2.release()


_PUSH = """
import sys
from pynetdicom import AE, _config
_config.STORE_SEND_CHUNKED_DATASET = True  # reads the file as it sends: a lean sender
ae = AE(ae_title="SCU")
ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"])
a = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="HXSCHED")
status = a.send_c_store(sys.argv[2])  # no answer: the SCP aborted (or reset) the association
print("aborted" if "Status" not in status else f"answered {status.Status:04X}")
"""


def test_a_c_store_over_max_bytes_is_aborted_before_it_is_held(scp, journal, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    big = _ct(Rows=1024, Columns=1536)
    big.PixelData = np.zeros((1024, 1536), np.uint16).tobytes()  # 3 MiB
    path = tmp_path / "big.dcm"
    big.save_as(path, enforce_file_format=True)
    src = scp(max_bytes=2 << 20)
    tracemalloc.start()  # this process holds only the SCP: the sender is another one
    try:
        base = tracemalloc.get_traced_memory()[0]
        run = [sys.executable, "-c", _PUSH, str(src.port), str(path)]
        out = subprocess.run(run, capture_output=True, text=True, timeout=60).stdout
        grew = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert out.strip() == "aborted", out
    assert grew < 1 << 20, grew  # the 3 MiB data set was never in memory
    assert journal.counts()[ACCEPTED] == 0 and list(journal.spool_dir.iterdir()) == []
    assert _wait(lambda: not list((tmp_path / "tmp").iterdir()), 5.0)  # no partial temp file
    a = _associate(src.port)
    assert a.send_c_store(_ct()).Status == 0x0000
    a.release()
    assert journal.counts()[ACCEPTED] == 1


def test_the_guard_counts_data_set_fragments_not_commands():
    g = PduGuard(max_pdu=16382, max_bytes=100)

    def pdu(*pdvs: tuple[int, bytes]) -> bytes:
        body = b"".join(struct.pack(">LBB", len(d) + 2, 1, c) + d for c, d in pdvs)
        assert g.header(struct.pack(">BBL", 4, 0, len(body))) is None
        return body

    assert g.body(pdu((0b11, b"c" * 500))) is None  # a command: not counted
    assert g.body(pdu((0b00, b"d" * 60))) is None
    assert g.body(pdu((0b10, b"d" * 40))) is None  # 100 bytes: the last fragment, at the limit
    assert g.body(pdu((0b00, b"d" * 60), (0b00, b"d" * 41))) is not None  # the next one: 101
    assert g.header(struct.pack(">BBL", 4, 0, 16383)) is not None
    assert g.header(struct.pack(">BBL", 1, 0, 60000)) is None  # an A-ASSOCIATE-RQ may be long
    assert g.header(struct.pack(">BBL", 1, 0, 8 << 20)) is not None


# -- dedupe through a live SCP ------------------------------------------------------------------


def test_the_same_instance_pushed_again_with_a_tag_changed_is_a_duplicate(scp, journal, records):
    src = scp()
    a = _associate(src.port)
    ds = _ct()
    assert a.send_c_store(ds).Status == 0x0000
    assert a.send_c_store(_ct(PatientName="Changed^Name")).Status == 0x0000
    assert a.send_c_store(_ct(SOPInstanceUID=pydicom.uid.generate_uid())).Status == 0x0000
    a.release()
    c = journal.counts()
    assert (c[ACCEPTED], c["duplicates"]) == (2, 1)
    # the folder then has the same instance (its file meta names it): a duplicate as well
    assert journal.accept(CT.read_bytes(), "ct.dcm", "folder", key=file_key(CT)).duplicate
    assert not any(str(ds.PatientName) in line or "Changed" in line for line in records)


def test_one_output_set_per_instance_through_the_folder_and_the_scp(gan_yolo_plan, tmp_path):
    from hxsched.runtime.service.pipeline import pipeline_from_dict
    from hxsched.runtime.service.service import Service, ServiceOptions

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    models = [
        {"name": i.model, "role": "detect" if "yolo" in i.model else "synth", "path": i.model_path}
        for i in gan_yolo_plan.instances
    ]
    sources = [{"kind": "folder", "path": str(inbox), "stable_s": 0.2}, {"kind": "scp", "port": 0}]
    pipe = pipeline_from_dict(
        {
            "schema": "hxsched.pipeline/1",
            "name": "dedupe",
            "backend": "sim",
            "plan": gan_yolo_plan.path,
            "models": models,
            "sources": sources,
            "workers": 0,
        }
    )
    svc = Service(pipe, ServiceOptions(output=out, http_port=None, scp_port=0))
    svc.start()
    try:
        (inbox / "ct.dcm").write_bytes(CT.read_bytes())
        assert _wait(lambda: svc.counts().get("done", 0) == 1, 60.0), svc.counts()
        a = _associate(svc.scp_port)
        assert a.send_c_store(_ct()).Status == 0x0000  # the same instance, other file meta
        assert a.send_c_store(_ct(PatientName="Other^Name")).Status == 0x0000
        a.release()
        assert _wait(lambda: svc.counts().get("duplicates", 0) == 2, 10.0), svc.counts()
        time.sleep(0.3)
        c = svc.counts()
        assert c.get("done") == 1 and c.get("quarantined", 0) == 0, c
        assert len(list((out / "dicom").rglob("*.dcm"))) == 1
    finally:
        svc.stop()


def test_the_pipeline_checks_the_allow_list():
    from hxsched.codec import decode
    from hxsched.errors import SchemaError
    from hxsched.runtime.service.pipeline import Source

    ok = decode(Source, {"kind": "scp", "calling_ae_titles": ["PACS"]}, path="p.yaml")
    assert ok.calling_ae_titles == ("PACS",) and ok.max_pdu == 131072
    for bad in ([], ["PACS", "A\\B"], ["X" * 17]):
        with pytest.raises(SchemaError, match="calling_ae_titles"):
            decode(Source, {"kind": "scp", "calling_ae_titles": bad}, path="p.yaml")


def test_a_connection_flood_is_closed_at_once_beyond_the_headroom(scp):
    from hxsched.runtime.service.scp import REJECT_HEADROOM

    src = scp(max_associations=1, idle_timeout_s=3.0)
    held = [socket.create_connection(("127.0.0.1", src.port)) for _ in range(1 + REJECT_HEADROOM)]
    assert _wait(lambda: src.live() == len(held), 5.0)
    extra = socket.create_connection(("127.0.0.1", src.port))
    extra.settimeout(2.0)  # closed well before the 3 s idle timeout
    with contextlib.suppress(ConnectionResetError):
        assert extra.recv(16) == b""
    for s in [*held, extra]:
        s.close()


def test_a_c_store_of_another_sop_class_under_an_accepted_context_is_refused(journal, tmp_path):
    src = ScpSource(
        journal,
        Gate(journal, 4, threading.Event()),
        host="127.0.0.1",
        port=0,
        ae_title="HXSCHED",
        on_accept=lambda _: None,
    )
    received = journal.spool_dir / ".tmp-scp-x.dcm"
    received.write_bytes(CT.read_bytes())
    assert src.store(MR_IMAGE_STORAGE, "1.2.3", received) == 0x0122
    assert journal.counts()[ACCEPTED] == 0 and not received.exists()


# -- the association's own upper layer ----------------------------------------------------------


def test_echo_stores_release_and_an_abort_on_stop(scp, journal):
    src = scp(idle_timeout_s=30.0)
    a = _associate(src.port)
    assert a.is_established
    assert _wait(lambda: src.live() == 1, 5.0)
    assert a.send_c_echo().Status == 0x0000
    sent = [_ct(SOPInstanceUID=pydicom.uid.generate_uid()) for _ in range(5)]
    for ds in sent:
        assert a.send_c_store(ds).Status == 0x0000
    a.release()
    assert a.is_released
    assert _wait(lambda: src.live() == 0, 5.0)
    assert journal.counts()[ACCEPTED] == 5
    spooled = sorted(journal.spool_dir.iterdir())
    assert len(spooled) == 5 and not any(p.name.startswith(".tmp") for p in spooled)
    for path in spooled:  # a DICOM file: the file meta this SCP wrote, the data set as sent
        # named by its content hash, computed as it was received (not read back)
        assert path.stem == hashlib.sha256(path.read_bytes()).hexdigest()[: len(path.stem)]
        got = pydicom.dcmread(path)
        assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert got.file_meta.MediaStorageSOPInstanceUID == got.SOPInstanceUID
        assert got.file_meta.SourceApplicationEntityTitle == "SCU"
        assert got.PixelData == sent[0].PixelData
    assert {pydicom.dcmread(p).SOPInstanceUID for p in spooled} == {d.SOPInstanceUID for d in sent}
    # an association aborted by the SCP (the service stopping) while it waits for a request
    b = _associate(src.port)
    assert b.is_established and b.send_c_store(_ct()).Status == 0x0000
    src.stop()
    assert _wait(lambda: b.is_aborted, 5.0)


def test_implicit_vr_and_tiny_peer_pdus_are_answered(scp, journal):
    """The SCU's own maximum length (4096 here) bounds what the SCP sends it back."""
    src = scp()
    ae = AE(ae_title="SCU")
    ae.maximum_pdu_size = 4096
    ae.add_requested_context(pydicom.uid.CTImageStorage, ["1.2.840.10008.1.2"])
    a = ae.associate("127.0.0.1", src.port, ae_title="HXSCHED")
    assert a.is_established
    assert a.send_c_store(_ct()).Status == 0x0000
    a.release()
    (path,) = journal.spool_dir.iterdir()
    got = pydicom.dcmread(path)
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert got.PixelData == _ct().PixelData


def test_garbage_before_and_after_the_association_is_aborted_not_fatal(scp, journal, records):
    src = scp(idle_timeout_s=5.0)
    for junk in (
        b"GET / HTTP/1.1\r\n\r\n",  # not a PDU type
        struct.pack(">BBL", 4, 0, 10) + b"\0" * 10,  # P-DATA before A-ASSOCIATE-RQ
        struct.pack(">BBL", 1, 0, 20) + b"\0" * 20,  # a truncated A-ASSOCIATE-RQ
    ):
        raw = socket.create_connection(("127.0.0.1", src.port))
        raw.sendall(junk)
        raw.settimeout(5.0)
        got = raw.recv(64)
        assert got[:1] == b"\x07", got  # A-ABORT
        raw.close()
    a = _associate(src.port)
    # a P-DATA under a context never proposed, then the SCP is still there for the next sender
    a.dul.socket.socket.sendall(struct.pack(">BBL", 4, 0, 6) + struct.pack(">LBB", 2, 99, 3))
    assert _wait(lambda: a.is_aborted, 5.0)
    late = _associate(src.port)
    assert late.send_c_store(_ct()).Status == 0x0000
    late.release()
    assert journal.counts()[ACCEPTED] == 1
    assert _wait(lambda: src.live() == 0, 5.0)
    assert any("aborting the association" in line for line in records)


def test_a_slice_the_journal_cannot_take_is_answered_and_the_association_goes_on(
    scp, journal, monkeypatch, records
):
    src = scp()
    real = journal.accept
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(journal, "accept", flaky)
    a = _associate(src.port)
    assert a.send_c_store(_ct()).Status == 0xC000  # cannot understand: not spooled
    assert a.send_c_store(_ct()).Status == 0x0000  # the same association, the next push
    a.release()
    assert journal.counts()[ACCEPTED] == 1
    assert len(list(journal.spool_dir.iterdir())) == 1  # the refused one left nothing
    assert any("cannot journal a pushed slice (RuntimeError)" in line for line in records)
