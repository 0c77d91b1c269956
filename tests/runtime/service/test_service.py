"""The streaming service end to end: real DICOM through the folder and the C-STORE SCP,
quarantine, crash recovery with SIGKILL, SIGTERM drain, bounded queues under overload."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file

from hxsched.runtime.service.dicom_io import encode_ct_dicom, synthetic_phantom
from hxsched.runtime.service.pipeline import pipeline_from_dict
from hxsched.runtime.service.service import Service, ServiceOptions


def pipeline_dict(plan, sources, queue=16):
    models = []
    for inst in plan.instances:
        role = "detect" if "yolo" in inst.model else "synth"
        models.append({"name": inst.model, "role": role, "path": inst.model_path})
    return {
        "schema": "hxsched.pipeline/1",
        "name": "test",
        "backend": "sim",
        "plan": plan.path,
        "queue": queue,
        "models": models,
        "sources": sources,
    }


def wait_for(pred, timeout=60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_folder_and_scp_with_real_dicom_and_bad_inputs(gan_yolo_plan, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    d = pipeline_dict(
        gan_yolo_plan, [{"kind": "folder", "path": str(inbox)}, {"kind": "scp", "port": 0}]
    )
    d["sinks"] = {"preview_every_s": 0.0}  # a preview per slice (the default: one a second)
    pipe = pipeline_from_dict(d)
    svc = Service(pipe, ServiceOptions(output=out, http_port=0, scp_port=0))
    svc.start()
    try:
        ct = Path(get_testdata_file("CT_small.dcm"))
        (inbox / "ct.dcm").write_bytes(ct.read_bytes())
        (inbox / "garbage.dcm").write_bytes(b"not a dicom file at all" * 10)
        # another instance (same-length SOP Instance UID: the same one would be a duplicate), cut
        uid = str(pydicom.dcmread(ct).SOPInstanceUID)
        other = uid[:-1] + ("1" if uid[-1] != "1" else "2")
        (inbox / "cut.dcm").write_bytes(
            ct.read_bytes().replace(uid.encode(), other.encode())[:-3000]
        )
        cv2.imwrite(str(inbox / "tiny.png"), np.zeros((8, 8), np.uint8))
        nan = np.full((64, 64), np.nan, np.float32)
        cv2.imwrite(str(inbox / "nan.tiff"), nan)
        cv2.imwrite(
            str(inbox / "ok.png"),
            (np.random.default_rng(0).random((96, 128)) * 255).astype(np.uint8),
        )
        # a real DICOM client pushes a slice (another SOP instance of the same study)
        from pynetdicom import AE

        ds = pydicom.dcmread(ct)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", svc.scp_port, ae_title="HXSCHED")
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == 0x0000
        assert wait_for(
            lambda: svc.counts().get("done", 0) + svc.counts().get("quarantined", 0) >= 7
        )
        c = svc.counts()
        assert c["done"] == 3 and c["quarantined"] == 4, c
        text = "".join(p.read_text() for p in (out / "journal" / "quarantine").glob("*.reason.txt"))
        for code in ("unreadable", "truncated", "wrong-size", "nan"):
            assert code in text, (code, text)
        written = sorted((out / "dicom").rglob("*.dcm"))
        assert len(written) == 3
        for path in written:
            back = pydicom.dcmread(path)
            assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
            assert list(back.ImageType) == ["DERIVED", "SECONDARY"]
            assert "NOT FOR DIAGNOSTIC USE" in back.SeriesDescription
            assert back.pixel_array.ndim == 2
        src = pydicom.dcmread(ct)
        from_ct = [
            pydicom.dcmread(p)
            for p in written
            if pydicom.dcmread(p).StudyInstanceUID == src.StudyInstanceUID
        ]
        assert len(from_ct) == 2 and all(
            d.SeriesInstanceUID != src.SeriesInstanceUID for d in from_ct
        )
        assert len(list((out / "detections").glob("*.json"))) == 3
        assert len(list((out / "previews").glob("*.png"))) == 3
        url = svc.http.url
        assert urllib.request.urlopen(url + "/health/ready").status == 200
        metrics = urllib.request.urlopen(url + "/metrics").read().decode()
        assert "hxsched_frames_out_total 3" in metrics and 'reason="nan"' in metrics
        status = json.loads(urllib.request.urlopen(url + "/status.json").read())
        assert status["frames_out"] == 3 and status["quarantined"] == 4
        logs_have_no_patient = str(src.PatientName) not in json.dumps(status)
        assert logs_have_no_patient
    finally:
        svc.stop()


def _journal_counts(out: Path) -> dict:
    db = out / "journal" / "journal.sqlite3"
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=5)
    try:
        return dict(con.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    except sqlite3.Error:
        return {}
    finally:
        con.close()


def test_sigkill_midstream_then_restart_processes_every_slice_once(gan_yolo_plan, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    n = 24
    for k in range(n):
        (inbox / f"s{k:03d}.dcm").write_bytes(encode_ct_dicom(synthetic_phantom(k, size=128)))
    pfile = tmp_path / "p.yaml"
    pfile.write_text(
        yaml.safe_dump(
            pipeline_dict(gan_yolo_plan, [{"kind": "folder", "path": str(inbox)}], queue=6)
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "hxsched",
        "serve",
        str(pfile),
        "--output",
        str(out),
        "--no-http",
        "--real-time",
        "--time-scale",
        "40",
        "-q",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _journal_counts(out).get("done", 0) >= 4, 60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    mid = _journal_counts(out)
    assert mid.get("done", 0) < n  # killed mid-stream
    second = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(
            lambda: _journal_counts(out).get("done", 0) == n and not any(inbox.iterdir()), 90
        )
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err.decode()[-500:]
    assert _journal_counts(out) == {"done": n}
    assert len(list((out / "dicom").rglob("*.dcm"))) == n  # exactly once: idempotent names
    assert not any((out / "journal" / "spool").iterdir())
    lines = [json.loads(x) for x in err.decode().splitlines() if x.startswith("{")]
    assert any("draining" in x["msg"] for x in lines)
    assert "PHANTOM" not in err.decode()  # no patient names in the logs


def test_overload_keeps_the_queue_bounded_and_counts_consistent(gan_yolo_plan, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    rng = np.random.default_rng(1)
    n = 120
    for k in range(n):
        cv2.imwrite(str(inbox / f"i{k:03d}.png"), (rng.random((64, 64)) * 255).astype(np.uint8))
    (inbox / "dup.png").write_bytes((inbox / "i000.png").read_bytes())
    pipe = pipeline_from_dict(
        pipeline_dict(gan_yolo_plan, [{"kind": "folder", "path": str(inbox)}], queue=5)
    )
    svc = Service(
        pipe,
        ServiceOptions(
            output=out, http_port=None, backend_opts={"real_time": True, "time_scale": 3.0}
        ),
    )
    svc.start()
    peak = 0
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 90:
            c = svc.counts()
            peak = max(peak, svc.journal.pending())
            if c.get("done", 0) + c.get("quarantined", 0) >= n:
                break
            time.sleep(0.01)
    finally:
        svc.stop()
    c = svc.counts()
    assert peak <= 5 + 1  # the gate admits at most one over while a claim is in progress
    files_in = n + 1
    assert files_in == c["done"] + c["quarantined"] + c["dropped"] + c["duplicates"]
    assert c["duplicates"] == 1 and c["dropped"] == 0


def test_dcmtk_storescu_pushes_to_the_scp(gan_yolo_plan, tmp_path):
    """dcmtk's storescu (a real DICOM client outside Python) against the service's SCP."""
    from dcmtk_helpers import dcmtk_tool

    storescu = dcmtk_tool("storescu")
    if storescu is None:
        pytest.skip("dcmtk's storescu is not installed (apt-get install dcmtk)")
    out = tmp_path / "out"
    pipe = pipeline_from_dict(pipeline_dict(gan_yolo_plan, [{"kind": "scp", "port": 0}]))
    svc = Service(pipe, ServiceOptions(output=out, http_port=None, scp_port=0))
    svc.start()
    try:
        ct = get_testdata_file("CT_small.dcm")
        run = subprocess.run(
            [storescu, "-aec", "HXSCHED", "127.0.0.1", str(svc.scp_port), ct],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert wait_for(lambda: svc.counts().get("done", 0) == 1)
        (written,) = list((out / "dicom").rglob("*.dcm"))
        back = pydicom.dcmread(written)
        assert back.StudyInstanceUID == pydicom.dcmread(ct).StudyInstanceUID
        assert "NOT FOR DIAGNOSTIC USE" in back.ImageComments
    finally:
        svc.stop()


def test_stop_after_counts_duplicates_so_a_rerun_ends(gan_yolo_plan, tmp_path):
    pipe = pipeline_from_dict(pipeline_dict(gan_yolo_plan, [{"kind": "phantom", "count": 3}]))
    for _ in range(2):  # the second run sees only duplicates of the first
        svc = Service(pipe, ServiceOptions(output=tmp_path / "out", http_port=None, stop_after=3))
        svc.start()
        try:
            assert svc.wait(30), "the service did not stop"
        finally:
            svc.stop()
    assert svc.counts()["done"] == 3 and svc.counts()["duplicates"] == 3


def test_serve_bad_ports_are_one_line_errors(gan_yolo_plan, tmp_path, capsys):
    import socket

    from hxsched.cli import main

    pfile = tmp_path / "p.yaml"
    pfile.write_text(yaml.safe_dump(pipeline_dict(gan_yolo_plan, [{"kind": "scp", "port": 0}])))
    with pytest.raises(SystemExit) as info:
        main(["serve", str(pfile), "--port", "70000"])
    assert info.value.code == 2 and "not a port" in capsys.readouterr().err
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        code = main(
            [
                "serve",
                str(pfile),
                "--no-http",
                "--scp-port",
                str(port),
                "-q",
                "--output",
                str(tmp_path / "o"),
            ]
        )
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert code == 1 and "cannot listen for DICOM" in err and "Traceback" not in err


def test_sigkill_with_slices_in_every_stage_of_the_parallel_path(gan_yolo_plan, tmp_path):
    """Two host workers, slices waiting, being read, in the pipeline, being written and
    committed when the kill lands: after a restart every slice exists exactly once."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    n = 40
    for k in range(n):
        (inbox / f"s{k:03d}.dcm").write_bytes(encode_ct_dicom(synthetic_phantom(k, size=128)))
    d = pipeline_dict(gan_yolo_plan, [{"kind": "folder", "path": str(inbox)}], queue=16)
    d["workers"] = 2
    d["sinks"] = {"preview_every_s": 0.0}
    pfile = tmp_path / "p.yaml"
    pfile.write_text(yaml.safe_dump(d))
    cmd = [sys.executable, "-m", "hxsched", "serve", str(pfile), "--output", str(out)]
    cmd += ["--no-http", "--real-time", "--time-scale", "20", "-q"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _journal_counts(out).get("done", 0) >= 6, 90)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    mid = _journal_counts(out)
    assert mid.get("done", 0) < n and mid.get("processing", 0) >= 2, mid  # in flight at the kill
    second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(
            lambda: _journal_counts(out).get("done", 0) == n and not any(inbox.iterdir()), 120
        )
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode()[-500:]
    assert _journal_counts(out) == {"done": n}
    assert len(list((out / "dicom").rglob("*.dcm"))) == n
    assert len(list((out / "detections").glob("*.json"))) == n
    assert len(list((out / "previews").glob("*.png"))) == n
    assert not list(out.rglob("*.tmp"))  # no half-written output left behind
    assert not any((out / "journal" / "spool").iterdir())


def test_a_host_worker_that_dies_costs_only_its_slice(gan_yolo_plan, tmp_path):
    n = 30
    d = pipeline_dict(gan_yolo_plan, [{"kind": "phantom", "count": n}], queue=12)
    d["workers"] = 2
    svc = Service(
        pipeline_from_dict(d),
        ServiceOptions(
            output=tmp_path / "out",
            http_port=None,
            stop_after=n,
            backend_opts={"real_time": True, "time_scale": 20.0},
        ),
    )
    svc.start()
    try:
        assert wait_for(lambda: svc.counts().get("done", 0) >= 3, 60)
        victim = svc.hosts.pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert svc.wait(120), "the service did not finish"
        assert victim not in svc.hosts.pids()  # replaced
    finally:
        svc.stop()
    c = svc.counts()
    assert c["done"] + c["quarantined"] == n and c["quarantined"] <= 1, c
    if c["quarantined"]:
        reasons = "".join(p.read_text() for p in (tmp_path / "out").rglob("*.reason.txt"))
        assert "host worker process died" in reasons
    assert len(list((tmp_path / "out" / "dicom").rglob("*.dcm"))) == c["done"]


def test_previews_at_their_rate_and_the_host_figures_on_the_status(gan_yolo_plan, tmp_path):
    n = 12
    d = pipeline_dict(gan_yolo_plan, [{"kind": "phantom", "count": n}])
    d["workers"] = 0  # in-process host path
    d["sinks"] = {"preview_every_s": 3600.0}
    svc = Service(pipeline_from_dict(d), ServiceOptions(output=tmp_path / "out", http_port=None))
    svc.opts.stop_after = n
    svc.start()
    try:
        assert svc.wait(60)
        st = svc.status()
    finally:
        svc.stop()
    assert svc.counts()["done"] == n
    assert len(list((tmp_path / "out" / "previews").glob("*.png"))) == 1  # the first only
    assert svc.latest_png is not None  # the status page still has one
    assert st["host"]["workers"] == 0 and st["host"]["cpu_ms_per_slice"]["read"] > 0
    assert "virtual" in st["accelerators_note"]


def test_slots_come_back_once_outputs_are_written_not_once_committed(
    gan_yolo_plan, tmp_path, monkeypatch
):
    """A slice's hand-over slot is free again as soon as its outputs are written: with every
    commit held up, more slices than there are slots still go through the host path, and all
    are done once the commits go ahead."""
    n = 40
    d = pipeline_dict(gan_yolo_plan, [{"kind": "phantom", "count": n}], queue=n)
    d["workers"] = 0  # in-process host path
    svc = Service(pipeline_from_dict(d), ServiceOptions(output=tmp_path / "out", http_port=None))
    go, held = threading.Event(), []
    commit = svc._commit

    def held_commit(batch):
        held.extend(batch)
        go.wait(60)
        commit(batch)

    monkeypatch.setattr(svc, "_commit", held_commit)
    svc.start()
    try:
        assert svc.hosts is not None
        slots = svc.hosts.slots
        assert wait_for(lambda: len(held) + svc._done_q.qsize() > slots, 60)
        assert svc.counts()["done"] == 0  # nothing committed yet
        go.set()
        assert wait_for(lambda: svc.counts()["done"] == n, 60)
    finally:
        go.set()
        svc.stop()
    assert len(list((tmp_path / "out" / "dicom").rglob("*.dcm"))) == n


def test_stop_mid_stream_finishes_every_claimed_slice(gan_yolo_plan, tmp_path):
    """A drain (SIGTERM) mid-stream: slices already claimed (being read, in the pipeline,
    being written) are finished; the rest wait in the journal; nothing is left processing."""
    n = 60
    d = pipeline_dict(gan_yolo_plan, [{"kind": "phantom", "count": n}], queue=20)
    d["workers"] = 2
    svc = Service(
        pipeline_from_dict(d),
        ServiceOptions(
            output=tmp_path / "out",
            http_port=None,
            backend_opts={"real_time": True, "time_scale": 20.0},
        ),
    )
    svc.start()
    try:
        assert wait_for(lambda: svc.counts().get("done", 0) >= 3, 60)
    finally:
        svc.stop()
    c = svc.counts()
    assert c["processing"] == 0, c
    assert c["done"] == len(list((tmp_path / "out" / "dicom").rglob("*.dcm")))
    assert c["done"] + c["accepted"] + c["quarantined"] <= n


def test_sim_replays_outputs_recorded_on_onnx_runtime(gan_yolo_plan, tmp_path, monkeypatch):
    """sim with replay: the detector's recorded ONNX Runtime outputs go through YOLO decoding
    and NMS (real detections), and every output says it was replayed."""
    from hxsched.runtime.service import replay

    monkeypatch.setenv("HXSCHED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(replay, "SAMPLES", 2)
    n = 4
    d = pipeline_dict(gan_yolo_plan, [{"kind": "phantom", "count": n}])
    d["workers"] = 0
    opts = ServiceOptions(output=tmp_path / "out", http_port=None, stop_after=n, replay=True)
    svc = Service(pipeline_from_dict(d), opts)
    svc.start()
    try:
        assert svc.wait(120)
    finally:
        svc.stop()
    assert svc.counts()["done"] == n
    recorded = sorted((tmp_path / "cache" / "replay").glob("*.npy"))
    assert len(recorded) == 2 and np.load(recorded[0]).shape[0] == 2
    docs = [json.loads(p.read_text()) for p in (tmp_path / "out" / "detections").glob("*.json")]
    assert len(docs) == n and all("replayed" in doc for doc in docs)
    assert sum(len(doc["detections"]) for doc in docs) > 0  # decoding saw real scores
    for path in (tmp_path / "out" / "dicom").rglob("*.dcm"):
        back = pydicom.dcmread(path)
        assert "replayed ONNX Runtime output" in back.DerivationDescription
        assert "[sim backen" in back.SeriesDescription  # cut at 64 characters (LO)
