"""The fuzz suite (issue 13): over 1,000 generated hostile inputs through the folder and the
C-STORE SCP of a live ``hxsched serve``, good CT slices interleaved. Asserts each input's
disposition, no crash, no hang, every good slice once, no DICOM value in any log line.

``HXSCHED_FUZZ_REPORT=fuzz.json python -m pytest -q -s tests/runtime/service/test_fuzz.py``
also writes every input's class, expected and actual disposition, and the service's log."""

from __future__ import annotations

import collections
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import fuzzgen as F  # noqa: E402
from fuzzgen import Input  # noqa: E402

pytestmark = pytest.mark.slow  # one live campaign, about a minute

from hxsched.runtime.service.journal import content_id  # noqa: E402

MAX_BYTES = 2 << 20
INFLATED_LIMIT = 16 << 20
MAX_ASSOCIATIONS = 6
IDLE_TIMEOUT_S = 3.0
SETTLE_S = 60.0  # after the last input: everything finished, or it is a hang
SCU_SENDERS = 4
GOOD_FOLDER, GOOD_SCP, SLOW_WRITERS = 100, 40, 4
# PHI-like values and our UIDs: none may be in a log line or a reason text
FORBIDDEN = (*F.SENTINELS, "ZQXMODAL", "ZQXPHOTO", F.UID_MARK, "1.2.826.0.1.3680043.8.498.")
LINK_MARK = "lnkq"  # in every symlink's name: symlinks are logged by position, not by name


@dataclass
class Campaign:
    inputs: list[Input]
    outcome: dict[int, str] = field(default_factory=dict)
    reason: dict[int, str] = field(default_factory=dict)
    deaths: list[str] = field(default_factory=list)
    live_failures: list[str] = field(default_factory=list)
    settled_s: float | None = None
    left: list[str] = field(default_factory=list)
    term_rc: int | None = None
    lines: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    reason_files: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    sc: dict[str, list[str]] = field(default_factory=dict)
    det: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    idle: dict[str, Any] = field(default_factory=dict)
    outside: dict[str, bool] = field(default_factory=dict)
    temp: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


# -- the inputs ------------------------------------------------------------------------------
def folder_inputs(rng: np.random.Generator, nxt: F.Counter) -> list[Input]:
    bad = F.header_inputs("folder", 100, 6, nxt)
    bad += F.not_accepted_inputs("folder", 130, 4, nxt)
    bad += F.truncations("folder", 150, 200, rng, nxt)
    bad += F.image_inputs(160, 16, nxt)
    bad += F.garbage_inputs(30, MAX_BYTES, nxt)
    bad += F.bomb_inputs("folder", 170, 5, 2 * INFLATED_LIMIT, nxt)
    bad += F.h1_cases(200, nxt)
    for j, name in enumerate(F.ODD_NAMES):
        k = nxt()
        if j % 2:
            bad.append(Input("odd-name", "folder", name, F.good_ct(k, 4), frozenset({"done"})))
            bad[-1] = replace(bad[-1], good=True, key=(4, k))
        else:
            data = F.hostile.garbage(100 + k, seed=k)
            bad.append(Input("odd-name", "folder", name, data, frozenset({"unreadable"})))
    good = [
        Input("good", "folder", f"good-{k:04d}.dcm", F.good_ct(k, 0), frozenset({"done"}), (0, k))
        for k in range(1, GOOD_FOLDER + 1)
    ]
    good = [replace(g, good=True) for g in good]
    order = list(bad)
    random.Random(1).shuffle(order)
    for i, g in enumerate(good):  # about one good slice per six bad inputs
        order.insert(min(len(order), (i + 1) * 7), g)
    return order


def scp_inputs(rng: np.random.Generator, nxt: F.Counter) -> list[Input]:
    bad = F.truncations("scp", 300, 200, rng, nxt)
    bad = [replace(b, expect=b.expect | {F.REFUSED}) for b in bad]
    bad += F.header_inputs("scp", 400, 10, nxt)
    bad += F.not_accepted_inputs("scp", 430, 5, nxt)
    bad += F.bomb_inputs("scp", 470, 5, 2 * INFLATED_LIMIT, nxt)
    good = [
        Input("good", "scp", f"scp-good-{k:04d}.dcm", F.good_ct(k, 3), frozenset({"done"}), (3, k))
        for k in range(1, GOOD_SCP + 1)
    ]
    order = list(bad)
    random.Random(2).shuffle(order)
    for i, g in enumerate(good):
        order.insert(min(len(order), (i + 1) * 10), replace(g, good=True))
    return order


# -- feeding ---------------------------------------------------------------------------------
def _write(inbox: Path, name: str | bytes, data: bytes) -> None:
    where = os.path.join(os.fsencode(inbox), name if isinstance(name, bytes) else name.encode())
    with open(where, "wb") as f:
        f.write(data)


def feed_folder(inbox: Path, inputs: list[Input], names: dict[int, bytes]) -> None:
    for n, inp in enumerate(inputs):
        _write(inbox, names.get(n, inp.name), inp.data)
        if n % 40 == 39:
            time.sleep(0.1)


def slow_writer(path: Path, data: bytes, chunks: int = 5, pause_s: float = 0.8) -> None:
    """Writes in chunks with pauses, holding the file open (a slow network share)."""
    step = len(data) // chunks + 1
    with open(path, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(pause_s)


def make_links(inbox: Path, outside: Path, good_outside: bytes) -> list[Input]:
    outside.mkdir()
    (outside / "passwd").write_text(f"root:x:0:0:{F.SENTINELS[0]}:/root:/bin/sh\n")
    (outside / "outside-ct.dcm").write_bytes(good_outside)
    (outside / "adir").mkdir()
    links = {
        "loop-a": inbox / f"{LINK_MARK}-loop-b.dcm",
        "loop-b": inbox / f"{LINK_MARK}-loop-a.dcm",
        "self": inbox / f"{LINK_MARK}-self.dcm",
        "passwd": outside / "passwd",
        "etc-passwd": Path("/etc/passwd"),
        "outside-ct": outside / "outside-ct.dcm",
        "dangling": outside / "nothing-here.dcm",
        "outside-dir": outside / "adir",
    }
    out = []
    for name, target in links.items():
        os.symlink(target, inbox / f"{LINK_MARK}-{name}.dcm")
        out.append(Input(f"symlink-{name}", "folder", f"{LINK_MARK}-{name}.dcm", b"", _SKIP))
    (inbox / "a-directory.dcm").mkdir()
    (inbox / "a-directory.dcm" / "inside.dcm").write_bytes(b"not taken: not in the inbox")
    os.mkfifo(inbox / "a-fifo.dcm")
    out.append(Input("directory", "folder", "a-directory.dcm", b"", _SKIP))
    out.append(Input("fifo", "folder", "a-fifo.dcm", b"", _SKIP))
    return out


_SKIP = frozenset({F.SKIPPED})


class Scu:
    """A pynetdicom storage SCU that reconnects after an abort."""

    def __init__(self, port: int, ae_title: str = "FUZZSCU", called: str = "HXSCHED") -> None:
        from pydicom.uid import (
            DeflatedExplicitVRLittleEndian,
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            RLELossless,
        )
        from pynetdicom import AE
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            CTImageStorage,
            MRImageStorage,
            SecondaryCaptureImageStorage,
            SegmentationStorage,
            UltrasoundImageStorage,
        )

        self.ae = AE(ae_title=ae_title)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30
        for ts in (
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            DeflatedExplicitVRLittleEndian,
            RLELossless,
        ):
            self.ae.add_requested_context(CTImageStorage, ts)
        for sop in (
            MRImageStorage,
            UltrasoundImageStorage,
            SecondaryCaptureImageStorage,
            SegmentationStorage,
        ):
            self.ae.add_requested_context(sop, ExplicitVRLittleEndian)
        self.port, self.called = port, called
        self.assoc: Any = None

    def connect(self) -> bool:
        self.assoc = self.ae.associate("127.0.0.1", self.port, ae_title=self.called)
        return bool(self.assoc.is_established)

    def send(self, path: Path) -> str:
        """The outcome of one C-STORE: a status, or why there was none."""
        if (self.assoc is None or not self.assoc.is_established) and not self.connect():
            return F.REJECTED
        try:
            status = self.assoc.send_c_store(path)
        except ValueError:  # no accepted presentation context for this SOP class / syntax
            return F.CTX_REJECTED
        except Exception:  # noqa: BLE001 - the SCP went away mid-send
            self.assoc = None
            return F.ABORTED
        code = getattr(status, "Status", None)
        if code is None:  # no response: the association was aborted
            self.assoc = None
            return F.ABORTED
        return "success" if code == 0 or 0xB000 <= code <= 0xBFFF else F.REFUSED

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()


def feed_scp(port: int, items: list[tuple[int, Path]], got: dict[int, str]) -> None:
    scu = Scu(port)
    for n, path in items:
        got[n] = scu.send(path)
    scu.close()


def _pretend_max_pdu(assoc: Any, length: int) -> None:
    """Make the SCU believe the SCP accepts PDUs of ``length`` (it said otherwise)."""
    from pynetdicom.pdu_primitives import MaximumLengthNotification

    for item in assoc.acceptor.user_information:
        if isinstance(item, MaximumLengthNotification):
            item.maximum_length_received = length


def scp_protocol(port: int, scu_dir: Path, nxt: F.Counter) -> list[tuple[Input, str]]:
    """Wrong called AE, unknown calling AE, datasets over max_bytes."""
    out = []
    good = scu_dir / "protocol-good.dcm"
    good.write_bytes(F.good_ct(nxt(), 5))
    for i in range(8):
        scu = Scu(port, called="NOTHXSCHED")
        ok = scu.connect()
        got = scu.send(good) if ok else F.REJECTED
        scu.close()
        out.append((Input("wrong-called-ae", "scp", "-", b"", frozenset({F.REJECTED})), got))
        scu = Scu(port, ae_title=f"EVILSCU{i}")
        ok = scu.connect()
        got = scu.send(good) if ok else F.REJECTED
        scu.close()
        out.append((Input("unknown-calling-ae", "scp", "-", b"", frozenset({F.REJECTED})), got))
    for _ in range(3):  # P-DATA PDUs far longer than the Maximum Length the SCP advertised
        k = nxt()
        path = scu_dir / f"pdu-{k}.dcm"
        path.write_bytes(F.good_ct(k, 481))
        scu = Scu(port)
        got = F.REJECTED
        if scu.connect():  # the data set goes in one 4 MiB PDU
            _pretend_max_pdu(scu.assoc, 4 << 20)
            got = scu.send(path)
        scu.close()
        expect = frozenset({F.ABORTED, F.REFUSED})
        out.append((Input("scp-pdu-over-max", "scp", path.name, b"", expect, (481, k)), got))
    for _ in range(4):
        k = nxt()
        path = scu_dir / f"over-{k}.dcm"
        path.write_bytes(F.hostile_ct(480, k, size=1100))
        scu = Scu(port)
        got = scu.send(path)
        scu.close()
        expect = frozenset({F.ABORTED, F.REFUSED})
        out.append((Input("scp-over-max-bytes", "scp", path.name, b"", expect, (480, k)), got))
    return out


def idle_associations(port: int, scu_dir: Path, nxt: F.Counter) -> dict[str, Any]:
    """More idle associations than allowed: the extra ones are refused, idle ones are closed
    after idle_timeout_s, and then a real sender gets in."""
    held = [Scu(port, ae_title="IDLESCU") for _ in range(MAX_ASSOCIATIONS + 2)]
    established = [s.connect() for s in held]
    time.sleep(IDLE_TIMEOUT_S + 3.0)
    still = [bool(s.assoc is not None and s.assoc.is_established) for s in held]
    k = nxt()
    path = scu_dir / f"after-idle-{k}.dcm"
    path.write_bytes(F.good_ct(k, 6))
    t0 = time.monotonic()
    scu = Scu(port, ae_title="GOODSCU")
    got = scu.send(path)
    scu.close()
    for s in held:
        if s.assoc is not None and s.assoc.is_established:
            s.assoc.abort()
    return {
        "established": sum(established),
        "still_open_after_idle": sum(still),
        "sender": got,
        "sender_s": round(time.monotonic() - t0, 2),
        "key": (6, k),
    }


# -- the campaign ---------------------------------------------------------------------------
def _pipeline(plan: Any, inbox: Path) -> dict[str, Any]:
    folder = {"kind": "folder", "path": str(inbox), "stable_s": 1.0}
    scp = {"kind": "scp", "port": 0, "ae_title": "HXSCHED"}
    scp.update(calling_ae_titles=["FUZZSCU", "GOODSCU", "IDLESCU"])
    scp.update(max_associations=MAX_ASSOCIATIONS, idle_timeout_s=IDLE_TIMEOUT_S)
    return F.pipeline_dict(
        plan,
        [folder, scp],
        workers=2,
        queue=64,
        max_bytes=MAX_BYTES,
        limits={"max_inflated_bytes": INFLATED_LIMIT},
        sinks={"preview_every_s": 1.0},
    )


def _monitor(svc: F.LiveService, stop: threading.Event, camp: Campaign) -> None:
    n = 0
    while not stop.wait(0.2):
        if not svc.alive():
            camp.deaths.append(f"exited with {svc.proc.returncode}")
            return
        n += 1
        if n % 10 == 0:
            code, body = svc.get("/health/live")
            if code != 200:
                camp.live_failures.append(f"{code} {body[:80]}")


def _settle(svc: F.LiveService, inbox: Path, skip: set[str], camp: Campaign) -> None:
    t0 = time.monotonic()
    left: list[str] = ["the service is not running"]
    pending = 0
    while time.monotonic() - t0 < SETTLE_S and svc.alive():
        rows = F.journal_rows(svc.out)
        pending = sum(1 for r in rows if r["state"] in ("accepted", "processing"))
        left = [os.fsdecode(n) for n in os.listdir(os.fsencode(inbox))]
        left = [n for n in left if n not in skip]
        if pending == 0 and not left:
            camp.settled_s = round(time.monotonic() - t0, 1)
            return
        time.sleep(0.25)
    camp.left = left + [f"{pending} pending in the journal"]


@pytest.fixture(scope="module")
def campaign(gan_yolo_plan, tmp_path_factory) -> Campaign:
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # send the files' bytes as they are
    t_start = time.monotonic()
    tmp = tmp_path_factory.mktemp("fuzz")
    inbox, out, scu_dir = tmp / "inbox", tmp / "out", tmp / "scu"
    for d in (inbox, scu_dir):
        d.mkdir()
    pfile = tmp / "pipeline.yaml"
    pfile.write_text(yaml.safe_dump(_pipeline(gan_yolo_plan, inbox)))
    rng, nxt = np.random.default_rng(13), F.Counter()
    folder = folder_inputs(rng, nxt)
    scp = scp_inputs(rng, nxt)
    goods_at = [n for n, i in enumerate(folder) if i.cls == "good"][20:]
    byte_names = dict(zip(goods_at, F.ODD_BYTE_NAMES, strict=False))
    for i, nm in byte_names.items():  # good slices under names that are not UTF-8
        folder[i] = replace(folder[i], name=os.fsdecode(nm), cls="odd-name-bytes")
    dups = _duplicates(folder, scp)
    svc = F.LiveService(pfile, out)
    t_gen = time.monotonic()
    svc.start()
    t_ready = time.monotonic()
    links = make_links(inbox, tmp / "outside", F.good_ct(nxt(), 2))
    skip = {i.name for i in links}
    inputs = folder + scp + links
    camp = Campaign(inputs)
    stop = threading.Event()
    mon = threading.Thread(target=_monitor, args=(svc, stop, camp), daemon=True)
    mon.start()
    slow = []
    for _j in range(SLOW_WRITERS):
        k = nxt()
        data = F.good_ct(k, 1)
        inputs.append(Input("slow-writer", "folder", f"slow-{k}.dcm", data, frozenset({"done"})))
        inputs[-1] = replace(inputs[-1], good=True, key=(1, k))
        th = threading.Thread(target=slow_writer, args=(inbox / f"slow-{k}.dcm", data))
        th.start()
        slow.append(th)
    feeder = threading.Thread(target=feed_folder, args=(inbox, folder, byte_names))
    feeder.start()
    scp_got: dict[int, str] = {}
    paths = []
    for n, inp in enumerate(scp):
        p = scu_dir / f"{n:05d}.dcm"
        p.write_bytes(inp.data)
        paths.append((n, p))
    senders = [
        threading.Thread(target=feed_scp, args=(svc.scp_port, paths[j::SCU_SENDERS], scp_got))
        for j in range(SCU_SENDERS)
    ]
    for th in senders:
        th.start()
    assert svc.scp_port is not None, "the service did not say its SCP port"
    protocol = scp_protocol(svc.scp_port, scu_dir, nxt)
    for th in [feeder, *senders, *slow]:
        th.join(timeout=300)
    t_fed = time.monotonic()
    dup_got = _send_duplicates(svc, inbox, scu_dir, dups)
    camp.idle = idle_associations(svc.scp_port, scu_dir, nxt)
    t_idle = time.monotonic()
    _settle(svc, inbox, skip, camp)
    t_settled = time.monotonic()
    stop.set()
    code, _ = svc.get("/health/live")
    if code != 200:
        camp.live_failures.append(f"at the end: {code}")
    if svc.alive():
        camp.term_rc = svc.term()
    mon.join(timeout=5)
    outside = {p.read_bytes() for p in (tmp / "outside").glob("*") if p.is_file()}
    outside.add(Path("/etc/passwd").read_bytes())
    copied = [p for p in out.rglob("*") if p.is_file() and p.read_bytes() in outside]
    camp.outside = {
        "passwd intact": (tmp / "outside" / "passwd").exists(),
        "outside CT intact": (tmp / "outside" / "outside-ct.dcm").exists(),
        "no outside file copied in": not copied,
    }
    _collect(camp, svc, out, inbox, folder, scp, scp_got, protocol, dups, dup_got)
    camp.wall_s = round(time.monotonic() - t_start, 1)
    marks = [t_start, t_gen, t_ready, t_fed, t_idle, t_settled, time.monotonic()]
    names = ("generate", "start", "feed", "duplicates+idle", "settle", "stop+collect")
    camp.phases = {n: round(b - a, 1) for n, a, b in zip(names, marks[:-1], marks[1:], strict=True)}
    print("phases (s):", camp.phases)
    print(f"\nfuzz campaign: {len(camp.inputs)} inputs, {camp.wall_s} s, settled {camp.settled_s}")
    if camp.left:
        print("left:", camp.left[:12])
    report = os.environ.get("HXSCHED_FUZZ_REPORT")
    if report:  # a file for people: every input's class, expected and actual outcome
        rows = [
            {"cls": i.cls, "via": i.via, "name": i.name, "expect": sorted(i.expect)}
            | {"got": camp.outcome.get(n), "reason": camp.reason.get(n, "")}
            for n, i in enumerate(camp.inputs)
        ]
        Path(report).write_text(json.dumps({"inputs": rows, "stderr": camp.lines}, indent=0))
    return camp


def _duplicates(folder: list[Input], scp: list[Input]) -> list[tuple[str, Input]]:
    """Good slices again: same bytes (folder), a tag changed (folder, SCP), folder then SCP."""
    goods = [i for i in folder if i.cls == "good"]
    scp_goods = [i for i in scp if i.good]
    out = []
    for g in goods[:5]:
        out.append(("folder", replace(g, cls="dup-same-bytes", name="again-" + g.name)))
    for g in goods[5:10]:
        data = g.data.replace(b"hxsched synthetic phantom", b"hxsched synthetic PHANTOM")
        out.append(("folder", replace(g, cls="dup-tag-changed", name="edit-" + g.name, data=data)))
    for g in goods[10:15]:
        out.append(("scp", replace(g, cls="dup-folder-then-scp", via="scp")))
    for g in scp_goods[:5]:
        data = g.data.replace(b"hxsched synthetic phantom", b"hxsched synthetic PHANTOM")
        out.append(("scp", replace(g, cls="dup-scp-tag-changed", data=data)))
    return [(via, replace(d, good=False, expect=frozenset({F.DUPLICATE}))) for via, d in out]


def _send_duplicates(svc, inbox: Path, scu_dir: Path, dups) -> list[str]:
    got = []
    scu = Scu(svc.scp_port)
    for n, (via, d) in enumerate(dups):
        if via == "folder":
            _write(inbox, d.name, d.data)
            got.append("written")
        else:
            path = scu_dir / f"dup-{n}.dcm"
            path.write_bytes(d.data)
            got.append(scu.send(path))
    scu.close()
    return got


def _collect(camp, svc, out, inbox, folder, scp, scp_got, protocol, dups, dup_got) -> None:
    camp.lines, camp.stdout = list(svc.lines), list(svc.stdout)
    camp.rows = F.journal_rows(out)
    camp.sc, camp.det = F.outputs(out)
    camp.duplicates = F.journal_counter(out, "duplicates") if camp.rows else 0
    camp.temp = F.temp_files(out)
    qdir = out / "journal" / "quarantine"
    camp.reason_files = "".join(p.read_text("utf-8", "replace") for p in qdir.glob("*.reason.txt"))
    by_id = {r["id"]: r for r in camp.rows}
    by_name: dict[str, dict[str, Any]] = {}
    by_key: dict[tuple[int, int], dict[str, Any]] = {}
    for r in camp.rows:
        by_name.setdefault(r["name"], r)
        if r["state"] == "quarantined":
            path = qdir / f"{r['id']}.{r['ext']}"
            key = F.sop_in(path.read_bytes()[:8192]) if path.exists() else None
            if key is not None:
                by_key.setdefault(key, r)
    done_keys = collections.Counter(
        F.study_of(s) for studies in camp.sc.values() for s in studies[:1]
    )
    inbox_now = {os.fsdecode(n) for n in os.listdir(os.fsencode(inbox))}

    def of(inp: Input, acked: str | None) -> tuple[str, str]:
        if acked is not None and acked != "success":
            return acked, ""
        row = None
        if inp.via == "folder":  # symlinks, a directory, a FIFO: by name only
            row = by_name.get(inp.name)
            if inp.expect != _SKIP:
                row = by_id.get(content_id(inp.data)) or row
        if row is None and inp.key is not None:
            row = by_key.get(inp.key)
        if row is None and inp.key is not None and done_keys.get(inp.key):
            return "done", ""
        if row is None:
            return (F.SKIPPED if inp.name in inbox_now else "missing"), ""
        if row["state"] == "quarantined":
            return str(row["reason_code"]), str(row["reason"] or "")
        return str(row["state"]), ""

    base = 0
    for n, inp in enumerate(folder):
        camp.outcome[n], camp.reason[n] = of(inp, None)
    base = len(folder)
    for n, inp in enumerate(scp):
        camp.outcome[base + n], camp.reason[base + n] = of(inp, scp_got.get(n, "not sent"))
    for n in range(base + len(scp), len(camp.inputs)):  # links, dir, fifo, slow writers
        inp = camp.inputs[n]
        camp.outcome[n], camp.reason[n] = of(inp, None)
        if inp.expect == _SKIP and camp.outcome[n] == "missing":
            camp.outcome[n] = F.SKIPPED  # removed without being followed: not journaled
    for inp, got in protocol:
        camp.inputs.append(inp)
        n = len(camp.inputs) - 1
        camp.outcome[n] = got if got != "success" else "accepted"
        if inp.key is not None and (inp.key in by_key or done_keys.get(inp.key)):
            camp.outcome[n] = "spooled"
    for (_via, d), got in zip(dups, dup_got, strict=True):
        camp.inputs.append(d)
        n = len(camp.inputs) - 1
        camp.outcome[n] = F.DUPLICATE if got in ("written", "success") else got
    camp.inputs.extend(
        Input("idle-association", "scp", "-", b"", frozenset({"closed", F.REJECTED}))
        for _ in range(MAX_ASSOCIATIONS + 2)
    )
    est, still = camp.idle["established"], camp.idle["still_open_after_idle"]
    for j in range(MAX_ASSOCIATIONS + 2):
        n = len(camp.inputs) - MAX_ASSOCIATIONS - 2 + j
        camp.outcome[n] = F.REJECTED if j >= est else ("open" if j < still else "closed")


# -- the assertions ----------------------------------------------------------------------------
GOOD_CLASSES = ("good", "odd-name", "slow-writer")


def test_campaign_size(campaign: Campaign) -> None:
    bad = [i for i in campaign.inputs if not i.good]
    by_cls = collections.Counter(i.cls for i in bad)
    print("bad inputs per class:", dict(sorted(by_cls.items())))
    print("via:", collections.Counter(i.via for i in bad))
    assert len(bad) >= 1000, len(bad)
    assert len(by_cls) >= 60, sorted(by_cls)


def test_no_crash_no_hang(campaign: Campaign) -> None:
    assert not campaign.deaths, campaign.deaths
    assert not campaign.live_failures, campaign.live_failures
    assert campaign.settled_s is not None, f"not settled in {SETTLE_S} s: {campaign.left[:20]}"
    assert campaign.term_rc == 0, campaign.term_rc


def test_every_input_has_its_disposition(campaign: Campaign) -> None:
    wrong: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total: collections.Counter[str] = collections.Counter()
    for n, inp in enumerate(campaign.inputs):
        total[inp.cls] += 1
        got = campaign.outcome.get(n, "unknown")
        if got not in inp.expect:
            wrong[inp.cls][got] += 1
        elif (
            inp.tokens
            and got == "not-accepted"
            and not any(t in campaign.reason.get(n, "") for t in inp.tokens)
        ):
            wrong[inp.cls]["reason text lacks " + "/".join(inp.tokens)] += 1
    report = {
        cls: f"{sum(c.values())}/{total[cls]} wrong: {dict(c)}; expected "
        + "|".join(sorted(next(i.expect for i in campaign.inputs if i.cls == cls)))
        for cls, c in sorted(wrong.items())
    }
    print("dispositions not met:\n" + "\n".join(f"  {k}: {v}" for k, v in report.items()))
    assert not report, "\n".join(f"{k}: {v}" for k, v in report.items())


def test_every_good_slice_exactly_once(campaign: Campaign) -> None:
    goods = {i.key for i in campaign.inputs if i.good}
    goods.add(campaign.idle["key"])
    studies = collections.Counter(F.study_of(s) for sc in campaign.sc.values() for s in sc)
    missing = sorted((k for k in goods if studies.get(k, 0) == 0), key=str)
    twice = sorted((k for k in goods if studies.get(k, 0) > 1), key=str)
    extra = sorted((k for k in studies if k not in goods), key=str)
    quarantined_good = [
        r for r in campaign.rows if r["state"] == "quarantined" and r["name"].startswith("good-")
    ]
    assert not missing, f"{len(missing)} good slices without outputs: {missing[:10]}"
    assert not twice, f"{len(twice)} good slices with more than one output set: {twice[:10]}"
    assert not quarantined_good, [(r["name"], r["reason_code"]) for r in quarantined_good]
    assert not extra, f"outputs for inputs that are not good slices: {extra[:10]}"


def test_no_duplicate_or_partial_output_sets(campaign: Campaign) -> None:
    per_instance = collections.Counter(len(v) for v in campaign.sc.values())
    assert set(per_instance) <= {1}, per_instance
    assert set(campaign.sc) == set(campaign.det), sorted(set(campaign.sc) ^ set(campaign.det))[:10]
    done = {r["id"] for r in campaign.rows if r["state"] == "done"}
    assert set(campaign.sc) == done, sorted(set(campaign.sc) ^ done)[:10]
    dups = sum(1 for i in campaign.inputs if F.DUPLICATE in i.expect)
    assert campaign.duplicates == dups, (campaign.duplicates, dups)
    assert not campaign.temp, campaign.temp[:10]


def test_no_dicom_value_in_any_log_line_or_reason(campaign: Campaign) -> None:
    texts = {
        "stderr": campaign.lines,
        "stdout": campaign.stdout,
        "reason files": campaign.reason_files.splitlines(),
        "journal reasons": [str(r.get("reason") or "") for r in campaign.rows],
    }
    found: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    for where, lines in texts.items():
        for line in lines:
            low = line.lower()
            for s in FORBIDDEN:
                if s.lower() in low:
                    found[f"{where}: {s}"] += 1
                    examples.setdefault(f"{where}: {s}", line[:160])
    assert not found, (dict(found), examples)


def test_every_stderr_line_is_json(campaign: Campaign) -> None:
    bad = []
    for line in campaign.lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line[:160])
    assert not bad, f"{len(bad)} of {len(campaign.lines)} lines are not JSON: {bad[:5]}"


def test_symlinks_never_followed_and_logged_by_position(campaign: Campaign) -> None:
    assert all(campaign.outside.values()), campaign.outside
    named = [line[:160] for line in campaign.lines if LINK_MARK in line]
    assert not named, named[:5]
    links = sum(1 for i in campaign.inputs if i.cls.startswith("symlink-"))
    mentions = [line for line in campaign.lines if "symlink" in line.lower()]
    assert len(mentions) <= links, f"{len(mentions)} lines for {links} symlinks"
    for r in campaign.rows:
        assert "root:x:0:0" not in str(r.get("name")), r


def test_scp_limits_associations_and_idle_time(campaign: Campaign) -> None:
    idle = campaign.idle
    assert idle["established"] <= MAX_ASSOCIATIONS, idle
    assert idle["still_open_after_idle"] == 0, idle
    assert idle["sender"] == "success", idle
