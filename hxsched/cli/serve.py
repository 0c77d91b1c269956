"""``hxsched serve``: the streaming CT -> MRI + stroke service on a pipeline."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hxsched.cli._common import add_json, add_quiet
from hxsched.errors import HxschedError

log = logging.getLogger("hxsched.service")

HELP = "serve a pipeline: DICOM/PNG/TIFF slices in (folder, C-STORE SCP), synthetic MRI out"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help=HELP,
        description=HELP + ". Every accepted slice is durably spooled and journaled (SQLite) "
        "before it is acknowledged; after a crash the restarted service finishes it; bad "
        "slices are quarantined with a reason; sources are held back when the queue is full. "
        "HTTP on --host: /health/live, /health/ready, /metrics (Prometheus), / (status page). "
        "SIGTERM drains in-flight work and exits 0. Logs are JSON lines without patient data.",
    )
    p.add_argument("pipeline", help="pipeline YAML, e.g. pipelines/ct2mri_stroke.yaml")
    p.add_argument("--backend", choices=("ort", "trt", "sim"), help="override the pipeline's")
    p.add_argument("--input", type=Path, help="folder to watch (overrides the folder source)")
    p.add_argument(
        "--output",
        type=Path,
        default=Path("hxsched-out"),
        help="outputs, journal, quarantine (default hxsched-out)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address for HTTP and SCP (127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="HTTP port (0: any free; default 8080)")
    p.add_argument("--no-http", action="store_true", help="no HTTP server")
    p.add_argument("--scp-port", type=_port, help="C-STORE SCP port (overrides the pipeline's)")
    p.add_argument("--phantom", type=int, help="also feed this many synthetic phantom slices")
    p.add_argument("--stop-after", type=int, help="exit after this many slices are finished")
    p.add_argument("--inflight", type=int, help="frames in flight (default: what the plan needs)")
    p.add_argument(
        "--workers",
        type=_count,
        help="host worker processes (read, window, decode, write; default: the pipeline's, "
        "else one per core; 0: none, all in the service's process)",
    )
    p.add_argument(
        "--replay",
        action="store_true",
        help="sim: replay outputs recorded once on ONNX Runtime (cached by model hash), so "
        "detection decoding and NMS see real detections; labelled replayed in every output",
    )
    p.add_argument("--real-time", action="store_true", help="sim: real sleeps")
    p.add_argument("--time-scale", type=float, default=1.0, help="sim: stretch all times")
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (default INFO)",
    )
    p.add_argument("--summary", type=Path, help="write a JSON summary here on exit")
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a worker count (0..256)")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535)")
    return value


def run(args: argparse.Namespace) -> int:
    from hxsched.runtime.service.pipeline import load_pipeline
    from hxsched.runtime.service.service import Service, ServiceOptions, setup_logging

    setup_logging(args.log_level.upper())  # progress is logged too (JSON lines on stderr)
    pipe = load_pipeline(args.pipeline)
    opts = ServiceOptions(
        output=args.output,
        backend=args.backend,
        input_dir=args.input,
        host=args.host,
        http_port=None if args.no_http else args.port,
        scp_port=args.scp_port,
        phantom=args.phantom,
        stop_after=args.stop_after,
        inflight=args.inflight,
        workers=args.workers,
        replay=args.replay,
        backend_opts={"real_time": args.real_time, "time_scale": args.time_scale},
    )
    svc = Service(pipe, opts)
    svc.install_signal_handlers()
    try:
        svc.start()
        if svc.http is not None:
            fields = {"status_page": f"{svc.http.url}/", "metrics": f"{svc.http.url}/metrics"}
            log.info("status page", extra={"fields": fields})
        while not svc.wait(0.5):
            pass
    finally:
        svc.stop()
    summary = {
        "pipeline": pipe.name,
        "backend": svc.backend_name,
        "counts": svc.counts(),
        "error": svc.error,
    }
    if args.summary:
        try:
            args.summary.write_text(json.dumps(summary, indent=1) + "\n")
        except OSError as exc:
            raise HxschedError(
                f"cannot write the summary: {exc.strerror}", path=args.summary
            ) from None
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(json.dumps(summary), file=sys.stderr)
    return 1 if svc.error else 0
