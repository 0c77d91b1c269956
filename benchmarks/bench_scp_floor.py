"""The floor of a C-STORE receive in one Python process, two receivers side by side: a bare
pynetdicom SCP (data sets streamed to temporary files; the handler answers Success at once) and
the service's own SCP (``runtime/service/scp.py`` on its upper layer ``dul.py``, the data set
streamed to a spool file, answered Success at once: ``store`` overridden, so no journal and no
imaging in either), fed by dcmtk's ``storescu`` with 16 KiB and 128 KiB PDUs.

    python benchmarks/bench_scp_floor.py --slices 300 --repeats 3

Printed per receiver and PDU size: this process's CPU ms per slice (the SCP's threads are all
it runs while a push is under way), medians of interleaved repeats, the per-PDU cost between
the two sizes, the slices/s one such process could take if it did nothing else (1000 / ms),
and the ratio pynetdicom / hxsched. What the whole service costs per C-STORE slice is in
``bench_service.py``. Needs dcmtk (``apt-get install dcmtk``) and pynetdicom.
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
RECEIVERS = ("pynetdicom", "hxsched")


def hxsched_receiver(spool: Path):
    """The service's SCP answering Success once a data set is in its spool file (removed)."""
    import threading

    from hxsched.runtime.service.intake import STATUS_SUCCESS, Gate
    from hxsched.runtime.service.journal import Journal
    from hxsched.runtime.service.scp import ScpSettings, ScpSource

    class Floor(ScpSource):
        def store(self, sop_class: str, sop_instance: str, received: Path | None) -> int:
            if received is not None:
                received.unlink()
            return STATUS_SUCCESS

    journal = Journal(spool)
    src = Floor(
        journal,
        Gate(journal, 64, threading.Event()),
        host="127.0.0.1",
        port=0,
        ae_title="FLOOR",
        on_accept=lambda _: None,
        settings=ScpSettings(max_pdu=max(PDU_SIZES)),
    )
    src.start()
    return src, journal


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
    assert server is not None  # block=False returns the server
    ours, journal = hxsched_receiver(work / "spool")
    ports = {"pynetdicom": port, "hxsched": ours.port}
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {
        (r, p): [] for r in RECEIVERS for p in PDU_SIZES
    }
    try:
        for _ in range(args.repeats):
            for pdu in PDU_SIZES:  # interleaved: drift in the machine hits all alike
                for r in RECEIVERS:
                    runs[r, pdu].append(push_cpu_ms(exe, ports[r], files, pdu))
    finally:
        server.shutdown()
        ours.stop()
        journal.close()
    size = files[0].stat().st_size
    report: dict[str, object] = {"slices": args.slices, "slice_bytes": size}
    med: dict[tuple[str, int], float] = {}
    small, large = PDU_SIZES
    n_pdus = {p: -(-size // (p - 12)) + 1 for p in PDU_SIZES}  # data set PDUs and the command's
    for r in RECEIVERS:
        per: dict[str, object] = {}
        for pdu in PDU_SIZES:
            got = runs[r, pdu]
            med[r, pdu] = statistics.median(c for c, _ in got)
            per[str(pdu)] = {
                "cpu_ms_per_slice_median": round(med[r, pdu], 2),
                "cpu_ms_per_slice_runs": [round(c, 2) for c, _ in got],
                "slices_per_s_runs": [round(x, 1) for _, x in got],
                "pdus_per_slice": n_pdus[pdu],
                "one_process_ceiling_slices_per_s": round(1000 / med[r, pdu], 1),
            }
        per["ratio_16k_over_128k"] = round(med[r, small] / med[r, large], 3)
        per["cpu_ms_per_pdu"] = round(
            (med[r, small] - med[r, large]) / (n_pdus[small] - n_pdus[large]), 3
        )
        report[r] = per
    report["ratio_pynetdicom_over_hxsched"] = {
        str(p): round(med["pynetdicom", p] / med["hxsched", p], 2) for p in PDU_SIZES
    }
    report["load_average"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
