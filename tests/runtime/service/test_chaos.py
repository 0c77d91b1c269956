"""The kill -9 campaign (issue 13): SIGKILL at random moments over 250 good slices arriving by
folder and C-STORE, a restart after each; every slice ends done exactly once, none quarantined,
no partial outputs, no temp files. Kills: HXSCHED_CHAOS_KILLS (default 12; the full campaign is
``HXSCHED_CHAOS_KILLS=50 python -m pytest -q -s tests/runtime/service/test_chaos.py``)."""

from __future__ import annotations

import collections
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import fuzzgen as F  # noqa: E402

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("HXSCHED_CHAOS_KILLS", "12"))
FOLDER_SLICES, SCP_SLICES = 170, 80
SIZE = 256  # the slices' side: big enough to take a while to read and write
TIME_SCALE = "10"  # sim with real sleeps, stretched: slices stay a while in inference
FINISH_S = 240.0


class ScpFeeder(threading.Thread):
    """Pushes slices to whichever service is up, as a PACS does: a slice not answered Success
    (refused, aborted by the kill, nobody listening) is sent again later."""

    def __init__(self, svc: F.LiveService, files: list[Path], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.svc, self.todo, self.stop = svc, list(files), stop
        self.acked: set[Path] = set()
        self.sends = 0
        self.allowed = 0  # how many of the files may have been sent by now

    def run(self) -> None:
        from pynetdicom import AE, _config
        from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

        _config.STORE_SEND_CHUNKED_DATASET = True
        ae = AE(ae_title="CHAOSSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
        while self.todo and not self.stop.is_set():
            port = self.svc.scp_port
            if port is None or not self.svc.alive():
                time.sleep(0.05)
                continue
            assoc = ae.associate("127.0.0.1", port, ae_title="HXSCHED")
            while assoc.is_established and self.todo and not self.stop.is_set():
                if len(self.acked) >= self.allowed:
                    time.sleep(0.05)
                    continue
                path = self.todo[0]
                self.sends += 1
                try:
                    status = assoc.send_c_store(path)
                except Exception:  # noqa: BLE001 - killed mid-send: send it again later
                    break
                if getattr(status, "Status", None) == 0:
                    self.acked.add(self.todo.pop(0))
                else:
                    break
                time.sleep(random.uniform(0.0, 0.08))
            if assoc.is_established:
                assoc.release()
            time.sleep(0.1)


class FolderFeeder(threading.Thread):
    """Drops the slices into the inbox as they are allowed, whether or not the service is up
    (the inbox waits for it)."""

    def __init__(self, inbox: Path, slices: list[tuple[str, bytes]], stop: threading.Event):
        super().__init__(daemon=True)
        self.inbox, self.slices, self.stop = inbox, slices, stop
        self.allowed = 0
        self.dropped = 0

    def run(self) -> None:
        while self.dropped < len(self.slices) and not self.stop.is_set():
            if self.dropped >= self.allowed:
                time.sleep(0.05)
                continue
            name, data = self.slices[self.dropped]
            (self.inbox / name).write_bytes(data)
            self.dropped += 1
            time.sleep(random.uniform(0.0, 0.1))


def _in_flight(out: Path, timeout_s: float) -> bool:
    """Wait (at most timeout_s) until a slice is being processed."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if any(r["state"] == "processing" for r in F.journal_rows(out)):
            return True
        time.sleep(0.02)
    return False


def _release(out: Path, feeder: FolderFeeder, pusher: ScpFeeder, runs_left: int) -> None:
    """Let in enough new slices that this run has work (the rest, spread over the runs left,
    and a few more), however fast the machine is."""
    total = FOLDER_SLICES + SCP_SLICES
    done = sum(1 for r in F.journal_rows(out) if r["state"] == "done")
    allowed = min(total, done + -(-(total - done) // runs_left) + 8)
    feeder.allowed = max(feeder.allowed, -(-allowed * FOLDER_SLICES // total))
    pusher.allowed = max(pusher.allowed, -(-allowed * SCP_SLICES // total))


def _stage(out: Path) -> str:
    rows = F.journal_rows(out)
    states = collections.Counter(r["state"] for r in rows)
    tmp = len(F.temp_files(out))
    return f"processing={states.get('processing', 0)} done={states.get('done', 0)} tmp={tmp}"


def test_kill9_campaign_every_slice_exactly_once(gan_yolo_plan, tmp_path) -> None:
    t_start = time.monotonic()
    inbox, out, scu = tmp_path / "inbox", tmp_path / "out", tmp_path / "scu"
    for d in (inbox, scu):
        d.mkdir()
    folder = {"kind": "folder", "path": str(inbox), "stable_s": 0.5}
    scp = {"kind": "scp", "port": 0, "ae_title": "HXSCHED"}
    d = F.pipeline_dict(gan_yolo_plan, [folder, scp], workers=2, queue=32)
    d["sinks"] = {"preview_every_s": 0.0}  # every slice has its full output set
    pfile = tmp_path / "pipeline.yaml"
    pfile.write_text(yaml.safe_dump(d))
    slices = [(f"c{k:04d}.dcm", F.good_ct(k, 10, size=SIZE)) for k in range(FOLDER_SLICES)]
    files = []
    for k in range(SCP_SLICES):
        path = scu / f"s{k:04d}.dcm"
        path.write_bytes(F.good_ct(k, 11, size=SIZE))
        files.append(path)
    keys = {(10, k) for k in range(FOLDER_SLICES)} | {(11, k) for k in range(SCP_SLICES)}
    svc = F.LiveService(pfile, out, "--real-time", "--time-scale", TIME_SCALE)
    stop = threading.Event()
    feeder = FolderFeeder(inbox, slices, stop)
    pusher = ScpFeeder(svc, files, stop)
    rng = random.Random(13)
    stages: list[str] = []
    crashes: list[str] = []
    feeder.start()
    pusher.start()
    t_kills = time.monotonic()
    try:
        for i in range(KILLS):
            _release(out, feeder, pusher, KILLS - i)
            before_ready = rng.random() < 0.2  # some kills land during start and recovery
            if before_ready:
                svc.spawn()
                time.sleep(rng.uniform(0.3, 2.5))
            else:  # a random moment while slices are being read, inferred, written, committed
                svc.start()
                _in_flight(out, 5.0)
                time.sleep(rng.uniform(0.0, 1.0))
            if not svc.alive():
                crashes.append(f"exited by itself ({svc.proc.returncode})")
                continue
            stages.append(("starting " if before_ready else "") + _stage(out))
            svc.kill9()
        kill_s = time.monotonic() - t_kills
        feeder.allowed, pusher.allowed = FOLDER_SLICES, SCP_SLICES
        svc.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < FINISH_S and svc.alive():
            rows = F.journal_rows(out)
            done = sum(1 for r in rows if r["state"] == "done")
            if done >= len(keys) and not pusher.todo and not any(inbox.iterdir()):
                break
            time.sleep(0.5)
        finish_s = time.monotonic() - t0
        rc = svc.term()
    finally:
        stop.set()
        if svc.alive():
            svc.kill9()
    print(
        f"\nchaos: {time.monotonic() - t_start:.1f} s in all; {KILLS} kills in {kill_s:.1f} s, "
        f"finished {finish_s:.1f} s later; {pusher.sends} C-STOREs for {SCP_SLICES}; "
        f"at the kills: {stages}"
    )
    _check(out, inbox, keys, rc, crashes, pusher, stages)


def _check(out: Path, inbox: Path, keys: set, rc: int, crashes: list[str], pusher, stages) -> None:
    assert not crashes, crashes
    assert rc == 0, rc
    assert not pusher.todo, f"{len(pusher.todo)} C-STOREs never answered Success"
    assert not any(inbox.iterdir()), sorted(p.name for p in inbox.iterdir())[:10]
    rows = F.journal_rows(out)
    states = collections.Counter(r["state"] for r in rows)
    quarantined = [(r["name"], r["reason_code"], r["reason"]) for r in rows if r["state"] != "done"]
    assert not quarantined, f"{states}: {quarantined[:10]}"
    sc, det = F.outputs(out)
    studies = collections.Counter(F.study_of(s) for v in sc.values() for s in v)
    missing = sorted(k for k in keys if studies.get(k, 0) == 0)
    twice = sorted((k for k, n in studies.items() if n > 1), key=str)
    assert not missing, f"{len(missing)} slices without outputs: {missing[:10]}"
    assert not twice, f"{len(twice)} slices with two output sets: {twice[:10]}"
    assert set(studies) == keys
    done = {r["id"] for r in rows}
    assert set(sc) == done == set(det), "partial output sets: " + str(
        sorted((set(sc) | set(det)) ^ done)[:10]
    )
    for r in rows:  # every output the journal lists exists
        listed: dict[str, Any] = json.loads(r["outputs"] or "{}")
        gone = [p for p in listed.values() if not Path(p).exists()]
        assert not gone, (r["id"], gone)
    previews = {p.name.split(".", 1)[0] for p in (out / "previews").glob("*.png")}
    assert previews <= done, sorted(previews - done)[:10]
    assert not F.temp_files(out), F.temp_files(out)[:10]
    spool = out / "journal" / "spool"
    assert not spool.exists() or not any(spool.iterdir()), sorted(spool.iterdir())[:10]
    after_ready = [s for s in stages if not s.startswith("starting")]
    busy = sum(1 for s in after_ready if "processing=0" not in s)
    assert busy >= 0.6 * len(after_ready), f"too few kills found slices in flight: {stages}"
