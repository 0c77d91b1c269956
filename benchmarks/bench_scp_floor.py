"""The floor of a C-STORE receive in one Python process: a bare pynetdicom SCP (data sets
streamed to temporary files, as the service receives them; the handler answers Success at
once: no journal, no imaging) fed by dcmtk's ``storescu`` with 16 KiB and 128 KiB PDUs.

    python benchmarks/bench_scp_floor.py --slices 300 --repeats 3

Printed: this process's CPU ms per slice (the SCP's threads are all it runs while a push is
under way) per PDU size, medians of interleaved repeats, the per-PDU cost between the two, and
the slices/s one such process could take if it did nothing else (1000 / ms). What the service's
own SCP costs on top is in ``bench_service.py`` (main-process CPU ms per C-STORE slice).
Needs dcmtk (``apt-get install dcmtk``) and pynetdicom.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import dcmtk_storescu, free_port, make_slices  # noqa: E402

PDU_SIZES = (16384, 131072)  # storescu's --max-send-pdu range tops out at 131072


def push_cpu_ms(exe: str, port: int, files: list[Path], pdu: int) -> tuple[float, float]:
    """(this process's CPU ms per slice, slices/s) for one storescu push of ``files``."""
    env = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK keeps Nagle's algorithm on otherwise
    argv = [exe, "--max-send-pdu", str(pdu), "-aec", "FLOOR", "127.0.0.1", str(port)]
    c0, t0 = time.process_time(), time.monotonic()
    subprocess.run(argv + [str(f) for f in files], env=env, check=True, capture_output=True)
    cpu, wall = time.process_time() - c0, time.monotonic() - t0
    return cpu * 1000 / len(files), len(files) / wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench_scp_floor.json")
    args = ap.parse_args(argv)
    exe = dcmtk_storescu()
    if exe is None:
        raise SystemExit("needs dcmtk's storescu (apt-get install dcmtk)")
    from pynetdicom import AE, AllStoragePresentationContexts, _config, evt

    _config.STORE_RECV_CHUNKED_DATASET = True  # to a temporary file, as the service receives
    work = Path(tempfile.mkdtemp(prefix="hxsched-scp-floor-"))
    files = make_slices(work / "slices", args.slices)
    ae = AE("FLOOR")
    ae.maximum_pdu_size = max(PDU_SIZES)
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0x0000)]
    )
    runs: dict[int, list[tuple[float, float]]] = {p: [] for p in PDU_SIZES}
    try:
        for _ in range(args.repeats):
            for pdu in PDU_SIZES:  # interleaved: drift in the machine hits both alike
                runs[pdu].append(push_cpu_ms(exe, port, files, pdu))
    finally:
        server.shutdown()
    size = files[0].stat().st_size
    report: dict[str, object] = {"slices": args.slices, "slice_bytes": size, "pdu": {}}
    med = {}
    for pdu, got in runs.items():
        med[pdu] = statistics.median(c for c, _ in got)
        pdus = -(-size // (pdu - 12)) + 1  # data set PDUs (PDV headers) and the command's
        report["pdu"][str(pdu)] = {  # type: ignore[index]
            "cpu_ms_per_slice_median": round(med[pdu], 2),
            "cpu_ms_per_slice_runs": [round(c, 2) for c, _ in got],
            "slices_per_s_runs": [round(r, 1) for _, r in got],
            "pdus_per_slice": pdus,
            "one_process_ceiling_slices_per_s": round(1000 / med[pdu], 1),
        }
    small, large = PDU_SIZES
    n_small = report["pdu"][str(small)]["pdus_per_slice"]  # type: ignore[index]
    n_large = report["pdu"][str(large)]["pdus_per_slice"]  # type: ignore[index]
    report["ratio_16k_over_128k"] = round(med[small] / med[large], 3)
    report["cpu_ms_per_pdu"] = round((med[small] - med[large]) / (n_small - n_large), 3)
    report["load_average"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
