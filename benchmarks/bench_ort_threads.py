"""ONNX Runtime intra-op threads on this CPU: one worker, and one session per worker at once.

    python benchmarks/bench_ort_threads.py            # real YOLOv8n export + torch tiny UNet
    python benchmarks/bench_ort_threads.py --runs 5   # fewer runs

For each model: the whole model's median time (graph optimisations off, as ``hxsched profile
--backend ort`` runs it) with 1, half and all cores as intra-op threads, the candidates
interleaved so that all see the same load; then W = cores sessions running at once (W executor
workers) with 1 thread each and with all cores each. Prints medians, ratios to 1 thread and
the load average before and after (the machine may be shared), and writes JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from hxsched.runtime.ort_profile import _session, candidate_threads
from hxsched.runtime.reference import random_inputs
from hxsched.scheduler.graph.onnx_io import load_model, to_model_proto

DATA = Path(__file__).parents[1] / "tests" / "data"


def models() -> dict[str, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="hxsched-threads-"))
    yolo = tmp / "yolov8n.onnx"
    with gzip.open(DATA / "exports" / "yolov8n_ultralytics_8.4.190_zeroed.onnx.gz") as f:
        yolo.write_bytes(f.read())
    return {
        "yolov8n (Ultralytics 8.4.190)": yolo,
        "torch_unet_tiny": DATA / "torch" / "torch_unet_tiny.onnx",
    }


def one_worker(model: bytes, feeds: dict, runs: int) -> dict[int, float]:
    sessions = {t: _session(model, t, None) for t in candidate_threads()}
    times: dict[int, list[float]] = {t: [] for t in sessions}
    for s in sessions.values():
        s.run(None, feeds)
    for _ in range(runs):
        for t, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[t].append((time.perf_counter() - t0) * 1e3)
    return {t: statistics.median(v) for t, v in times.items()}


def workers_at_once(model: bytes, feeds: dict, runs: int, threads: int, workers: int) -> float:
    """Median per-run time when ``workers`` sessions run side by side (ms)."""
    sessions = [_session(model, threads, None) for _ in range(workers)]
    times: list[float] = []
    lock = threading.Lock()

    def work(s) -> None:
        s.run(None, feeds)
        for _ in range(runs):
            t0 = time.perf_counter()
            s.run(None, feeds)
            with lock:
                times.append((time.perf_counter() - t0) * 1e3)

    pool = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", default="bench_ort_threads.json")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    report: dict = {"cores": cores, "load_before": os.getloadavg(), "models": {}}
    for name, path in models().items():
        graph = load_model(path)
        model = to_model_proto(graph).SerializeToString()
        feeds = random_inputs(graph, seed=0)
        solo = one_worker(model, feeds, args.runs)
        row = {"one_worker_ms": {str(t): round(ms, 3) for t, ms in solo.items()}}
        if cores > 1:
            one = workers_at_once(model, feeds, args.runs, 1, cores)
            full = workers_at_once(model, feeds, args.runs, cores, cores)
            row[f"{cores}_workers_ms"] = {"1": round(one, 3), str(cores): round(full, 3)}
        report["models"][name] = row
        ratios = ", ".join(f"{t} threads {ms / solo[1]:.2f}x" for t, ms in solo.items())
        line = f"{name}: one worker {', '.join(f'{t}: {ms:.2f} ms' for t, ms in solo.items())} ({ratios} of 1 thread)"
        if cores > 1:
            line += f"; {cores} workers at once: 1 thread {one:.2f} ms, {cores} threads {full:.2f} ms ({full / one:.2f}x)"
        print(line, flush=True)
    report["load_after"] = os.getloadavg()
    print(
        f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}"
    )
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
