"""The whole scale-out loop on this machine: dcmtk storescu -> an Orthanc router (the generated
configuration and Lua script) -> 1 or 2 ``hxsched serve --backend sim`` nodes -> an Orthanc PACS.

    python benchmarks/bench_cluster.py --slices 200 --studies 8 --out bench_cluster.json

Slices are bench_service.py's (pydicom's CT_small.dcm, re-identified, 512 x 512), spread over
``--studies`` studies (a study stays on one node, so one study cannot use two nodes). Timed from
storescu's start until every node has finished every slice and its PACS queue is empty (each
result confirmed by the PACS). Needs Orthanc and dcmtk (Debian: orthanc, dcmtk). Every process
shares this machine's cores, so two nodes here show the router's overhead, not two Jetsons.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_service import (  # noqa: E402
    MODELS,
    SERVE,
    dcmtk_storescu,
    free_port,
    make_plan,
    make_slices,
)

from hxsched.runtime.cluster.orthanc import (  # noqa: E402
    Cluster,
    Modality,
    RouterSettings,
    parse_pacs,
    study_node,
    write_cluster,
)

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
# DCMTK >= 3.6.2 (storescu; Debian's Orthanc links it) leaves Nagle's algorithm on unless
# TCP_NODELAY=1 is in the environment (DCMTK config/docs/envvars.txt): ~90 ms per C-STORE here
ENV = {**os.environ, "TCP_NODELAY": "1"}
STORESCU = dcmtk_storescu()  # DCMTK's (a virtual environment's pynetdicom has a script of the name)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return bytes(r.read())


def wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def start(argv: list[str], log: Path, url: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=ENV)
    wait(lambda: proc.poll() is None and get(url) is not None, 600, log.name)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def orthanc(folder: Path, config: dict) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orthanc.json").write_text(json.dumps(config))
    url = f"http://127.0.0.1:{config['HttpPort']}/system"
    return start([ORTHANC, str(folder / "orthanc.json")], folder / "orthanc.log", url)


def node(work: Path, name: str, plan: Path, pacs_port: int) -> tuple[Modality, int, list]:
    aet, scp, http = f"NODE{name.upper()}", free_port(), free_port()
    pipe = {
        "schema": "hxsched.pipeline/1",
        "name": f"node-{name}",
        "backend": "sim",
        "plan": str(plan),
        "queue": 256,
        "models": MODELS,
        "sources": [{"kind": "scp", "port": scp, "ae_title": aet}],
        "sinks": {
            "pacs": {"host": "127.0.0.1", "port": pacs_port, "ae_title": "PACS"}
            | {"calling_ae_title": aet}
        },
    }
    folder = work / name
    folder.mkdir(parents=True)
    (folder / "pipeline.json").write_text(json.dumps(pipe))
    argv = [sys.executable, "-c", SERVE, "serve", str(folder / "pipeline.json")]
    argv += ["--output", str(folder / "out"), "--port", str(http), "--log-level", "WARNING"]
    proc = start(argv, folder / "serve.log", f"http://127.0.0.1:{http}/health/ready")
    return Modality(name, "127.0.0.1", scp, aet), http, [proc]


def metric(http: int, name: str) -> float:
    text = get(f"http://127.0.0.1:{http}/metrics").decode()
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def studies(files: list[Path], n_studies: int, names: tuple[str, ...]) -> None:
    """Give the slices ``n_studies`` studies, as many per node as the script's hash allows."""
    import pydicom
    from pydicom.uid import generate_uid

    uids: list[str] = []
    k = 0
    while len(uids) < n_studies:  # alternate nodes: the hash sends each study to one
        uid = generate_uid(entropy_srcs=["bench-study", str(k)])
        k += 1
        if study_node(uid, names) == names[len(uids) % len(names)]:
            uids.append(uid)
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = uids[i * n_studies // len(files)]
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["bench-series", ds.StudyInstanceUID])
        ds.save_as(path)


def one_run(work: Path, plan: Path, n_nodes: int, files: list[Path], n_studies: int) -> dict:
    pacs_port = free_port()
    pacs_cfg: dict[str, object] = {
        "Name": "pacs",
        "DicomAet": "PACS",
        "DicomPort": pacs_port,
        "HttpPort": free_port(),
        "StorageDirectory": str(work / "pacs" / "storage"),
        "IndexDirectory": str(work / "pacs" / "index"),
        "OverwriteInstances": False,
    }
    procs = [orthanc(work / "pacs", pacs_cfg)]
    try:
        nodes = [node(work, n, plan, pacs_port) for n in "ab"[:n_nodes]]
        procs += [p for _, _, ps in nodes for p in ps]
        names = tuple(m.name for m, _, _ in nodes)
        settings = RouterSettings(dicom_port=free_port(), http_port=free_port())
        pacs = parse_pacs(f"127.0.0.1:{pacs_port}")
        conf, _ = write_cluster(Cluster(tuple(m for m, _, _ in nodes), pacs, settings), work / "r")
        procs.append(orthanc(work / "r", json.loads(conf.read_text())))
        studies(files, n_studies, names)
        t0 = time.monotonic()
        argv = [STORESCU or "storescu", "-aet", "SCANNER", "-aec", settings.aet, "127.0.0.1"]
        subprocess.run([*argv, str(settings.dicom_port), *map(str, files)], check=True, env=ENV)
        t_sent = time.monotonic() - t0

        def finished() -> bool:
            done = sum(metric(h, "hxsched_frames_out_total") for _, h, _ in nodes)
            queued = sum(metric(h, "hxsched_outbox_queued") for _, h, _ in nodes)
            return done >= len(files) and queued == 0

        wait(finished, 1800, "every result in the PACS")
        elapsed = time.monotonic() - t0
        stats = json.loads(get(f"http://127.0.0.1:{pacs_cfg['HttpPort']}/statistics"))
        per_node = {m.name: metric(h, "hxsched_frames_out_total") for m, h, _ in nodes}
        return {
            "nodes": n_nodes,
            "slices": len(files),
            "seconds": round(elapsed, 2),
            "slices_per_s": round(len(files) / elapsed, 2),
            "storescu_to_router_s": round(t_sent, 2),
            "slices_per_node": per_node,
            "pacs_instances": stats["CountInstances"],
        }
    finally:
        for p in reversed(procs):
            stop(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if not (os.path.exists(ORTHANC) and STORESCU):
        raise SystemExit(
            "needs Orthanc and dcmtk's storescu (Debian: apt-get install orthanc dcmtk)"
        )
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
        root = Path(tmp)
        plan, _ = make_plan(root)
        runs = []
        for n in (1, 2):
            files = make_slices(root / f"slices{n}", args.slices)
            runs.append(one_run(root / f"n{n}", plan, n, files, args.studies))
            print(json.dumps(runs[-1]), flush=True)
    load = os.getloadavg()
    result = {
        "runs": runs,
        "ratio_2_to_1": round(runs[1]["slices_per_s"] / runs[0]["slices_per_s"], 2),
        "loadavg": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
    }
    print(
        f"whole loop: 1 node {runs[0]['slices_per_s']} slices/s, 2 nodes "
        f"{runs[1]['slices_per_s']} slices/s (x{result['ratio_2_to_1']}), {args.slices} slices "
        f"in {args.studies} studies; load average {load[0]:.2f} on {os.cpu_count()} cores"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
