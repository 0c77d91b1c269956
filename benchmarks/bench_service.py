"""The service fed from outside its process, as a scanner feeds it: a folder drop of N real DICOM
files and C-STORE over several concurrent associations (dcmtk ``storescu`` processes when
installed, else pynetdicom), into ``hxsched serve --backend sim``.

    python benchmarks/bench_service.py --slices 5000 --out bench_service.json

Slices are pydicom's bundled CT test file (CT_small.dcm, real headers) re-identified per slice
(new SOP Instance UID, instance number, position) with its pixels resized to 512 x 512. All sinks
are on (DICOM Secondary Capture, detections JSON, previews at their default rate); sim replays
outputs recorded on ONNX Runtime (``--replay``). Printed, side by side: slices/s sustained (first
to last slice done) per source and per worker count, end-to-end latency p50/p99 at a steady
offered rate (accept -> outputs committed, from the journal), host CPU ms per slice per stage,
RSS (service + workers), the ratio to the plan's FPS, lost and duplicated slices counted from the
outputs. Other processes on the machine lower these figures: the load average is printed too.
The disk is part of the host path (every slice is spooled and its outputs written, durably):
printed are this disk's sustained write rate (256 MiB written and fsynced before the runs), the
KiB the service writes per slice (/proc/PID/io) and the rate the disk alone would allow; the
paced run starts after a ``sync``, so it does not inherit the previous burst's writeback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

MODELS = [
    {"name": "pix2pix_unet256_dla", "role": "synth", "zoo": "pix2pix_unet256"},
    {"name": "yolov8n", "role": "detect", "zoo": "yolov8n"},
]


# ``hxsched serve`` alone (its own process; no other command's parser is built)
SERVE = """
import argparse, sys
from hxsched.cli import serve
ap = argparse.ArgumentParser(prog="hxsched")
serve.register(ap.add_subparsers())
args = ap.parse_args()
sys.exit(args.func(args))
"""


def make_slices(folder: Path, n: int, first: int = 0) -> list[Path]:
    """``n`` re-identified 512 x 512 CT slices of one series (real header of CT_small.dcm)."""
    import cv2
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))  # a path (str) for a name
    px = ds.pixel_array.astype(np.float32)
    ds.Rows = ds.Columns = 512
    ds.PixelSpacing = [float(v) * px.shape[0] / 512 for v in ds.PixelSpacing]
    series = generate_uid(entropy_srcs=["bench-series"])
    ds.SeriesInstanceUID = series
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    rng = np.random.default_rng(first)
    for k in range(first, first + n):
        noisy = px + rng.normal(0, 3, px.shape).astype(np.float32)  # distinct content per slice
        ds.PixelData = cv2.resize(noisy, (512, 512)).astype("<i2").tobytes()
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench-sop", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        path = folder / f"s{k:06d}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """``hxsched serve`` in its own process, with its HTTP status."""

    def __init__(
        self, work: Path, plan: Path, workers: int, replay: bool, max_pdu: int | None = None
    ) -> None:
        self.work = work
        self.inbox, self.out = work / "inbox", work / "out"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.http, self.scp = free_port(), free_port()
        scp: dict[str, object] = {"kind": "scp", "port": self.scp}
        if max_pdu:  # the SCP's advertised Maximum Length (the pipeline's default otherwise)
            scp["max_pdu"] = max_pdu
        pipe = {
            "schema": "hxsched.pipeline/1",
            "name": "bench",
            "backend": "sim",
            "plan": str(plan),
            "queue": 256,
            "workers": workers,
            "models": MODELS,
            "sources": [
                {"kind": "folder", "path": str(self.inbox)},
                scp,
            ],
        }
        import yaml

        pfile = work / "pipeline.yaml"
        pfile.write_text(yaml.safe_dump(pipe))
        cmd = [sys.executable, "-c", SERVE, "serve", str(pfile), "--output", str(self.out)]
        cmd += ["--port", str(self.http), "--log-level", "WARNING"] + (
            ["--replay"] if replay else []
        )
        with open(work / "serve.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 600:
            try:
                if self.status()["state"] == "ready":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited: {(work / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        raise SystemExit("serve did not become ready")

    def status(self) -> dict:
        url = f"http://127.0.0.1:{self.http}/status.json"
        return json.loads(urllib.request.urlopen(url, timeout=5).read())

    def done(self) -> int:
        return self.status()["frames_out"]

    def cpu_s(self) -> float:
        """CPU seconds of the service and its worker processes."""
        return sum(_proc_cpu(pid) for pid in self.pids())

    def main_cpu_s(self) -> float:
        """CPU seconds of the service's own process (intake, journal, executor, commits, HTTP)."""
        return _proc_cpu(self.proc.pid)

    def rss_mib(self) -> float:
        return sum(_proc_rss(pid) for pid in self.pids())

    def written_bytes(self) -> int:
        """Bytes the service and its workers caused to be written to storage (/proc/PID/io)."""
        return sum(_proc_written(pid) for pid in self.pids())

    def pids(self) -> list[int]:
        tasks = Path(f"/proc/{self.proc.pid}/task").glob("*/children")
        extra = [int(x) for t in tasks for x in _words(t)]
        return [self.proc.pid, *extra]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _proc_written(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def dirty_mib() -> float:
    """The page cache's dirty data not yet written back (/proc/meminfo Dirty)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("Dirty:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0


def settle_disk() -> dict:
    """Write back what earlier phases left dirty (``sync``), so a steady-rate run starts from a
    quiet disk rather than inside the previous burst's writeback: what it left, how long."""
    before, t0 = dirty_mib(), time.monotonic()
    os.sync()
    return {"dirty_mib_before": round(before, 1), "sync_s": round(time.monotonic() - t0, 2)}


def disk_write_mib_s(folder: Path, mib: int = 256) -> float:
    """This disk's sustained write rate: ``mib`` MiB written in 1 MiB blocks, then fsynced."""
    folder.mkdir(parents=True, exist_ok=True)
    path, block = folder / "disk-probe.bin", os.urandom(1 << 20)
    os.sync()
    t0 = time.monotonic()
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    rate = mib / (time.monotonic() - t0)
    path.unlink()
    return round(rate, 1)


def _proc_rss(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def wait_done(
    svc: Served, n: int, timeout: float
) -> tuple[float, float, list[tuple[float, int, float]]]:
    """Until ``n`` slices are done: (first done time, last done time, samples (t, done, rss))."""
    t_first = None
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        d = svc.done()
        now = time.monotonic()
        samples.append((now, d, svc.rss_mib()))
        if d > 0 and t_first is None:
            t_first = now
        if d >= n:
            return t_first or now, now, samples
        time.sleep(0.25)
    raise SystemExit(f"timed out with {svc.done()} of {n} done")


def journal_latency(out: Path, since: float = 0.0) -> list[float]:
    con = sqlite3.connect(out / "journal" / "journal.sqlite3")
    try:
        rows = con.execute(
            "SELECT updated_at - accepted_at FROM items WHERE state = 'done' AND accepted_at >= ?",
            (since,),
        ).fetchall()
    finally:
        con.close()
    return sorted(r[0] for r in rows)


def detections_per_slice(out: Path) -> dict:
    """Boxes per slice in the detections JSON (what YOLO decoding + NMS had to produce)."""
    counts = sorted(
        len(json.loads(p.read_text())["detections"]) for p in (out / "detections").glob("*.json")
    )
    if not counts:
        return {}
    return {"mean": round(sum(counts) / len(counts), 2), "max": counts[-1], "slices": len(counts)}


def count_outputs(out: Path, expected: int) -> dict:
    dicom = len(list((out / "dicom").rglob("*.dcm")))
    dets = len(list((out / "detections").glob("*.json")))
    con = sqlite3.connect(out / "journal" / "journal.sqlite3")
    try:
        states = dict(con.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        dups = con.execute("SELECT value FROM counters WHERE name = 'duplicates'").fetchone()
    finally:
        con.close()
    done = states.get("done", 0)
    return {
        "expected": expected,
        "done": done,
        "dicom_files": dicom,
        "detections_files": dets,
        "lost": expected - done,
        "duplicated": max(0, dicom - done) + (dups[0] if dups else 0),
        "quarantined": states.get("quarantined", 0),
    }


def folder_run(svc: Served, files: list[Path]) -> dict:
    """Drop every file at once (written beside the inbox, renamed in, as scanners do)."""
    cpu0, main0, w0 = svc.cpu_s(), svc.main_cpu_s(), svc.written_bytes()
    for p in files:
        os.replace(p, svc.inbox / p.name)
    t_first, t_last, samples = wait_done(svc, len(files), 3600)
    cpu, main = svc.cpu_s() - cpu0, svc.main_cpu_s() - main0
    written = svc.written_bytes() - w0
    rate = (len(files) - 1) / max(t_last - t_first, 1e-9)
    return {
        "slices_per_s": round(rate, 1),
        "cpu_ms_per_slice": round(cpu * 1000 / len(files), 2),
        "main_process_cpu_ms_per_slice": round(main * 1000 / len(files), 2),
        "workers_cpu_ms_per_slice": round((cpu - main) * 1000 / len(files), 2),
        "disk_written_kib_per_slice": round(written / 1024 / len(files), 1),
        "samples": samples,
    }


def scp_push(port: int, files: list[Path], associations: int, rate: float | None = None) -> float:
    """Push ``files`` over ``associations`` concurrent associations (at ``rate`` slices/s in
    all when given); the seconds it took. The files are sent as they are on disk, not decoded
    and re-encoded (pynetdicom's STORE_SEND_CHUNKED_DATASET): the sender shares this machine's
    cores with the service, where a scanner's would not."""
    import pydicom
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    errors: list[str] = []
    t0 = time.monotonic()

    def push(part: list, offset: int) -> None:
        ae = AE(ae_title="BENCHSCU")
        ae.add_requested_context(first.SOPClassUID, first.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="HXSCHED")
        if not assoc.is_established:
            errors.append("association refused")
            return
        for k, path in enumerate(part):
            if rate:
                due = t0 + (offset + k * associations) / rate
                time.sleep(max(0.0, due - time.monotonic()))
            st = assoc.send_c_store(path)  # the file as it is (no decode)
            if getattr(st, "Status", None) != 0:
                errors.append(f"status {getattr(st, 'Status', None)}")
        assoc.release()

    threads = [
        threading.Thread(target=push, args=(files[a::associations], a)) for a in range(associations)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"C-STORE failures: {errors[:3]} ({len(errors)})")
    return time.monotonic() - t0


def dcmtk_storescu() -> str | None:
    """DCMTK's ``storescu`` on PATH, skipping pynetdicom's Python script of the same name (a
    virtual environment with pynetdicom puts one first)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        exe = Path(folder) / "storescu"
        if exe.is_file() and os.access(exe, os.X_OK):
            with exe.open("rb") as f:
                if f.read(2) != b"#!":
                    return str(exe)
    return None


def storescu_push(port: int, files: list[Path], associations: int) -> float:
    """Push ``files`` with dcmtk's ``storescu`` (a C client, as scanners and PACS are; it costs
    the shared cores far less than a Python sender), one process and association per part, all
    at once; the seconds it took."""
    exe = dcmtk_storescu()
    assert exe is not None
    # DCMTK >= 3.6.2 leaves Nagle's algorithm on unless TCP_NODELAY=1 is in its environment
    env = {**os.environ, "TCP_NODELAY": "1"}
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [exe, "-aet", "BENCHSCU", "-aec", "HXSCHED", "127.0.0.1", str(port)]
            + [str(f) for f in files[a::associations]],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in range(associations)
    ]
    failed = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"storescu exit {proc.returncode}: {err.strip()[-200:]}")
    if failed:
        raise SystemExit(f"C-STORE failures: {failed[:2]}")
    return time.monotonic() - t0


def make_plan(work: Path) -> tuple[Path, float]:
    from hxsched.scheduler.planning.plan import save_plan
    from hxsched.scheduler.planning.planner import ModelInput
    from hxsched.scheduler.planning.planner import make_plan as plan
    from hxsched.scheduler.profile.schema import load_profile
    from hxsched.scheduler.profile.store import shipped_dir

    models = [
        ModelInput(
            m["name"], load_profile(shipped_dir() / "orin-agx" / f"{m['name']}.yaml"), "shipped"
        )
        for m in MODELS
    ]
    p = plan(models, "orin-agx", time_limit_s=30).plan
    return save_plan(p, work / "plan.yaml"), float(
        p.predicted.fps or 1000.0 / p.predicted.period_ms
    )


def one_config(work: Path, plan: Path, workers: int, n: int, scp_n: int, args) -> dict:
    svc = Served(work, plan, workers, not args.no_replay, args.max_pdu)
    try:
        staged = make_slices(work / "staged", n)
        rss0 = svc.rss_mib()
        folder = folder_run(svc, staged)
        res: dict = {
            "workers": workers,
            "folder": {k: v for k, v in folder.items() if k != "samples"},
        }
        res["folder"]["outputs"] = count_outputs(svc.out, n)
        res["folder"]["detections_per_slice"] = detections_per_slice(svc.out)
        samples = folder["samples"]
        warm = [s for s in samples if s[1] >= n * 0.1]
        if len(warm) > 3:
            q = max(1, len(warm) // 4)
            a = statistics.median(s[2] for s in warm[:q])
            b = statistics.median(s[2] for s in warm[-q:])
            res["rss_mib"] = {
                "start": round(rss0, 1),
                "after_warmup": round(a, 1),
                "end": round(b, 1),
                "growth_after_warmup": round((b - a) / a, 4),
            }
        if scp_n:
            files = make_slices(work / "scp", scp_n, first=n)
            done0 = svc.done()
            cpu0, main0, w0 = svc.cpu_s(), svc.main_cpu_s(), svc.written_bytes()
            t0 = time.monotonic()
            # the senders' CPU: storescu processes (waited children) or this process's threads
            kids0, self0 = _children_cpu_s(), time.process_time()
            if args.sender == "storescu":
                push_s = storescu_push(svc.scp, files, args.associations)
            else:
                push_s = scp_push(svc.scp, files, args.associations)
            sender_s = _children_cpu_s() - kids0 + time.process_time() - self0
            _, t_last, _ = wait_done(svc, done0 + scp_n, 3600)
            cpu, main = svc.cpu_s() - cpu0, svc.main_cpu_s() - main0
            res["scp"] = {
                "sender": args.sender,
                "associations": args.associations,
                "slices_per_s": round(scp_n / (t_last - t0), 1),
                "push_s": round(push_s, 1),
                "sender_cpu_ms_per_slice": round(sender_s * 1000 / scp_n, 2),
                "cpu_ms_per_slice": round(cpu * 1000 / scp_n, 2),
                "main_process_cpu_ms_per_slice": round(main * 1000 / scp_n, 2),
                "workers_cpu_ms_per_slice": round((cpu - main) * 1000 / scp_n, 2),
                "disk_written_kib_per_slice": round((svc.written_bytes() - w0) / 1024 / scp_n, 1),
                "outputs": count_outputs(svc.out, n + scp_n),
            }
        if args.latency_slices:
            files = make_slices(work / "lat", args.latency_slices, first=n + scp_n)
            done0 = svc.done()
            settled = settle_disk()
            since, sender_cpu = time.time(), time.process_time()
            scp_push(svc.scp, files, args.associations, rate=args.rate)
            sender_cpu = time.process_time() - sender_cpu
            wait_done(svc, done0 + len(files), 600)
            lat = journal_latency(svc.out, since)
            res["latency_ms_at_rate"] = {
                "offered_slices_per_s": args.rate,
                "disk_settled_first": settled,
                "dirty_mib_at_end": round(dirty_mib(), 1),
                "slices": len(lat),
                "p50": round(1000 * lat[len(lat) // 2], 1),
                "p99": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1),
                "sender_cpu_ms_per_slice": round(sender_cpu * 1000 / len(files), 2),
            }
        st = svc.status()
        res["host_cpu_ms_per_slice"] = st.get("host", {}).get("cpu_ms_per_slice")
        res["accelerators_note"] = st.get("accelerators_note")
        res["rss_mib_end"] = round(svc.rss_mib(), 1)
    finally:
        svc.stop()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--slices", type=int, default=5000, help="folder drop per worker count")
    ap.add_argument("--scp-slices", type=int, default=1000)
    ap.add_argument("--associations", type=int, default=4)
    ap.add_argument("--rate", type=float, default=100.0, help="offered slices/s for the latency")
    ap.add_argument("--latency-slices", type=int, default=1000)
    ap.add_argument("--workers", default="1,2", help="worker counts to compare")
    ap.add_argument(
        "--sender",
        choices=("storescu", "pynetdicom"),
        default="storescu" if dcmtk_storescu() else "pynetdicom",
        help="the C-STORE client for the throughput run (default: dcmtk's storescu when "
        "installed); the paced latency run always sends with pynetdicom",
    )
    ap.add_argument("--no-replay", action="store_true", help="sim passthrough instead of replay")
    ap.add_argument("--max-pdu", type=int, help="the SCP's max PDU (default: the pipeline's)")
    ap.add_argument("--out", default="bench_service.json")
    ap.add_argument("--work", help="folder for the runs (default: a temp folder)")
    args = ap.parse_args(argv)
    root = Path(args.work or tempfile.mkdtemp(prefix="hxsched-bench-service-"))
    plan, plan_fps = make_plan(root)
    disk = disk_write_mib_s(root)
    print(json.dumps({"disk_write_mib_per_s": disk}), flush=True)
    runs = []
    for w in [int(x) for x in args.workers.split(",")]:
        res = one_config(root / f"w{w}", plan, w, args.slices, args.scp_slices, args)
        runs.append(res)
        print(json.dumps(res), flush=True)
    report = {
        "load_average": os.getloadavg(),
        "cores": os.cpu_count(),
        "plan_fps": round(plan_fps, 1),
        "disk_write_mib_per_s": disk,
        "runs": runs,
    }
    for r in runs:
        for src in ("folder", "scp"):
            if src in r:
                r[src]["ratio_to_plan"] = round(r[src]["slices_per_s"] / plan_fps, 3)
                # the rate this disk could sustain for what the service writes per slice
                kib = r[src]["disk_written_kib_per_slice"]
                if kib > 0:
                    r[src]["disk_bound_slices_per_s"] = round(disk * 1024 / kib, 1)
    if len(runs) > 1:
        report["scaling_folder"] = round(
            runs[-1]["folder"]["slices_per_s"] / runs[0]["folder"]["slices_per_s"], 2
        )
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
