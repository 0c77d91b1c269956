"""Service soak: stream many phantom CT slices through the service on ``sim`` and watch RSS.

    python benchmarks/bench_soak.py --slices 10000 --out soak.json

The service runs in this process (journal, sources, worker, DICOM/JSON/PNG sinks, no HTTP) with
its host worker processes; RSS (this process and its workers) is sampled from /proc every second; growth is measured after warm-up (the first 10 % of
slices) as (last - first) / first of the post-warm-up samples, and (steadier) as the median
of their last quarter over the median of their first quarter; goal < 5 %. Latency percentiles
are end to end (accepted -> outputs written), from the service's own histogram.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    """This process's RSS plus its children's (the service's host worker processes)."""
    me = os.getpid()
    kids = [int(x) for t in Path(f"/proc/{me}/task").glob("*/children") for x in _words(t)]
    return sum(_rss(pid) for pid in [me, *kids])


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _rss(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--slices", type=int, default=10000)
    ap.add_argument("--out", default="bench_soak.json")
    ap.add_argument("--work", help="folder for the service's outputs (default: a temp folder)")
    args = ap.parse_args(argv)

    from hxsched.runtime.service.pipeline import pipeline_from_dict
    from hxsched.runtime.service.service import Service, ServiceOptions
    from hxsched.scheduler.planning.plan import save_plan
    from hxsched.scheduler.planning.planner import ModelInput, make_plan
    from hxsched.scheduler.profile.schema import load_profile
    from hxsched.scheduler.profile.store import shipped_dir

    work = Path(args.work or tempfile.mkdtemp(prefix="hxsched-soak-"))
    models = [
        ModelInput(n, load_profile(shipped_dir() / "orin-agx" / f"{n}.yaml"), "shipped")
        for n in ("pix2pix_unet256_dla", "yolov8n")
    ]
    plan = make_plan(models, "orin-agx", time_limit_s=30).plan
    plan_path = save_plan(plan, work / "plan.yaml")
    pipe = pipeline_from_dict(
        {
            "schema": "hxsched.pipeline/1",
            "name": "soak",
            "backend": "sim",
            "plan": str(plan_path),
            "queue": 32,
            "models": [
                {"name": "pix2pix_unet256_dla", "role": "synth", "zoo": "pix2pix_unet256"},
                {"name": "yolov8n", "role": "detect", "zoo": "yolov8n"},
            ],
            "sources": [{"kind": "phantom", "count": args.slices}],
        },
        "<soak>",
    )
    svc = Service(pipe, ServiceOptions(output=work / "out", http_port=None, stop_after=args.slices))
    samples = []
    t0 = time.monotonic()
    svc.start()
    try:
        while not svc.wait(1.0):
            done = svc.counts().get("done", 0)
            samples.append(
                {
                    "t_s": round(time.monotonic() - t0, 1),
                    "done": done,
                    "rss_mib": round(rss_mib(), 1),
                }
            )
            print(
                f"{samples[-1]['t_s']:7.1f} s  {done:6d} done  RSS {samples[-1]['rss_mib']:.1f} MiB",
                flush=True,
            )
    finally:
        e2e = svc.m_e2e
        lat = {q: e2e.quantile(q / 100) for q in (50, 90, 99)}
        svc.stop()
    counts = svc.counts()
    warm = [s for s in samples if s["done"] >= args.slices * 0.1]
    growth = (
        (warm[-1]["rss_mib"] - warm[0]["rss_mib"]) / warm[0]["rss_mib"] if len(warm) > 1 else None
    )
    # RSS swings with what is in flight at the sampling instant; the median of the last quarter
    # of the post-warm-up samples over that of the first quarter is the steadier measure
    q = max(1, len(warm) // 4)
    first_q = statistics.median(x["rss_mib"] for x in warm[:q]) if warm else None
    last_q = statistics.median(x["rss_mib"] for x in warm[-q:]) if warm else None
    growth_q = (last_q - first_q) / first_q if warm else None
    report = {
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "backend": "sim (virtual clock): the plan's times; service I/O real",
        "slices": args.slices,
        "counts": counts,
        "seconds": round(time.monotonic() - t0, 1),
        "slices_per_s": round(counts.get("done", 0) / (time.monotonic() - t0), 1),
        "rss_mib_after_warmup": {
            "first": warm[0]["rss_mib"] if warm else None,
            "last": warm[-1]["rss_mib"] if warm else None,
            "median": statistics.median(s["rss_mib"] for s in warm) if warm else None,
        },
        "rss_growth_after_warmup": round(growth, 4) if growth is not None else None,
        "rss_growth_quartile_medians": round(growth_q, 4) if growth_q is not None else None,
        "latency_ms_end_to_end": {
            f"p{q}": round(v * 1000, 1) if v is not None else None for q, v in lat.items()
        },
        "samples": samples,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
