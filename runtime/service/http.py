"""Health probes, Prometheus metrics, status JSON, latest preview and a live status page.

Stdlib ``ThreadingHTTPServer`` in a daemon thread; fixed routes only, nothing served from disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from hxsched.errors import ResourceError
from hxsched.runtime.service.metrics import exposition

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

STATUS_PAGE = Path(__file__).parent / "static" / "status.html"

_PAGE_CSP = (
    "default-src 'none'; connect-src 'self'; img-src 'self'; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


def json_safe(value: object) -> object:
    """``value`` with NaN/inf floats replaced by None, so browsers can parse the JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class StatusServer:
    """The service's HTTP face: ``/health/live``, ``/health/ready``, ``/metrics``,
    ``/status.json``, ``/latest.png`` and the status page at ``/``.

    ``status()`` returns a dict; the page shows these keys when present (all optional):
    ``state`` (str), ``fps``, ``frames_in``, ``frames_out``, ``quarantined``, ``dropped``,
    ``duplicates``, ``pending``, ``uptime_s`` (numbers), ``latency_ms`` ({"p50", "p99"}),
    ``queues`` ({name: depth}), ``accelerators`` ({name: busy fraction 0..1}),
    ``accelerators_note`` (what busy means on this backend), ``host`` (workers, CPU ms/slice),
    ``alarms`` ([{"level": "warning"|"error", "message": str}], e.g. DLA->GPU fallback),
    ``latest`` ({"seq": int, "name": str, "findings": int}; the page reloads the image when
    ``seq`` changes). ``ready()`` returns (ready, reason); ``latest_png()`` the preview or None.
    ``registry`` is any prometheus_client registry (the service's ``metrics.Registry``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        registry: CollectorRegistry,
        status: Callable[[], dict],
        ready: Callable[[], tuple[bool, str]],
        latest_png: Callable[[], bytes | None],
        live: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        self.host = host
        self.live = live or (lambda: (True, "ok"))
        self._port = port
        self.registry = registry
        self.status = status
        self.ready = ready
        self.latest_png = latest_png
        self._page = STATUS_PAGE.read_bytes()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one after ``start()`` when 0 was asked for)."""
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        """The base URL, ending in ``/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> StatusServer:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            server = ThreadingHTTPServer((self.host, self._port), handler)
        except OSError as exc:
            raise ResourceError(
                f"cannot serve HTTP on {self.host}:{self._port}: {exc.strerror or exc}; "
                "pick a free port (or 0 for any)"
            ) from exc
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="hxsched-http"
        )
        self._thread.daemon = True
        self._thread.start()
        log.info("status page at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StatusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    app: StatusServer
    server_version = "hxsched"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _send(self, code: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: object) -> None:
        body = json.dumps(json_safe(obj), default=str, allow_nan=False).encode()
        self._send(code, body, "application/json")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        route = _ROUTES.get(path)
        try:
            if route is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("error serving %s", path)
            with contextlib.suppress(OSError):
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    do_HEAD = do_GET

    def _live(self) -> None:
        ok, reason = self.app.live()
        code = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(code, (reason + "\n").encode(), "text/plain; charset=utf-8")

    def _ready(self) -> None:
        ok, reason = self.app.ready()
        code = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._json(code, {"ready": bool(ok), "reason": reason})

    def _metrics(self) -> None:
        body, content_type = exposition(self.app.registry, self.headers.get("Accept", ""))
        self._send(HTTPStatus.OK, body, content_type)

    def _status(self) -> None:
        self._json(HTTPStatus.OK, self.app.status())

    def _latest(self) -> None:
        png = self.app.latest_png()
        if png is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "no image yet"})
        else:
            self._send(HTTPStatus.OK, png, "image/png")

    def _page(self) -> None:
        self._send(
            HTTPStatus.OK,
            self.app._page,
            "text/html; charset=utf-8",
            {"Content-Security-Policy": _PAGE_CSP},
        )


_ROUTES: dict[str, Callable[[_Handler], None]] = {
    "/": _Handler._page,
    "/index.html": _Handler._page,
    "/health/live": _Handler._live,
    "/health/ready": _Handler._ready,
    "/metrics": _Handler._metrics,
    "/status.json": _Handler._status,
    "/latest.png": _Handler._latest,
}
