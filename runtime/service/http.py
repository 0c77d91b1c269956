"""Health probes, Prometheus metrics, status JSON, latest preview and a live status page.

Stdlib ``http.server`` handlers on a bounded pool; fixed routes only, nothing served from disk.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import math
import queue
import selectors
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, cast
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


TIMEOUT_S = 5.0  # a request's head must arrive, and its answer leave, within this
WORKERS = 4  # threads answering requests
MAX_PENDING = 256  # connections still sending their head (each costs a socket, not a thread)
MAX_HEAD = 16 * 1024  # request line + headers
WILDCARDS = ("", "0.0.0.0", "::")


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
        timeout_s: float = TIMEOUT_S,
        workers: int = WORKERS,
        max_pending: int = MAX_PENDING,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.timeout_s, self.workers, self.max_pending = timeout_s, workers, max_pending
        self.allowed_hosts = frozenset(
            h.lower() for h in (*allowed_hosts, "localhost", host) if h not in WILDCARDS
        )
        self.live = live or (lambda: (True, "ok"))
        self._port = port
        self.registry = registry
        self.status = status
        self.ready = ready
        self.latest_png = latest_png
        self._page = STATUS_PAGE.read_bytes()
        self._server: _Server | None = None
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
        handler = type("Handler", (_Handler,), {"app": self, "timeout": self.timeout_s})
        try:
            server = _Server((self.host, self._port), handler, self)
        except OSError as exc:
            raise ResourceError(
                f"cannot serve HTTP on {self.host}:{self._port}: {exc.strerror or exc}; "
                "pick a free port (or 0 for any)"
            ) from exc
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

    def host_allowed(self, header: str | None) -> bool:
        """A ``Host`` header naming this machine: an IP literal, ``localhost``, the configured
        host or one of ``allowed_hosts`` (any port). A DNS-rebinding page sends its own name."""
        if header is None:  # HTTP/1.0 clients; every browser sends Host
            return True
        name = header.strip().lower()
        if name.startswith("["):
            name = name[1 : name.find("]")] if "]" in name else ""
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        name = name.rstrip(".")
        if name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def __enter__(self) -> StatusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class _Conn:
    sock: socket.socket
    addr: object
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class _Server(socketserver.TCPServer):
    """Reads each request's head without a thread (a slow or idle client costs a socket until
    its deadline, never a thread), then hands complete heads to a fixed pool of threads."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, app: StatusServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.app = app
        self.socket.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._waiting: dict[socket.socket, _Conn] = {}  # still sending the head
        self._ready: deque[_Conn] = deque()  # head complete, waiting for a free thread
        self._free = threading.Semaphore(app.workers)
        self._jobs: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._local = threading.local()
        self._pool = [
            threading.Thread(target=self._work, name=f"hxsched-http-{i}", daemon=True)
            for i in range(app.workers)
        ]
        for thread in self._pool:
            thread.start()

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        self._sel.register(self.socket, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in self._sel.select(poll_interval):
                    if key.fileobj is self.socket:
                        self._accept()
                    else:
                        self._read(cast("socket.socket", key.fileobj))
                self._dispatch()
                self._expire()
        finally:
            self._done.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._done.wait(5)
        for conn in [*self._waiting.values(), *self._ready]:
            self._drop(conn)
        self._ready.clear()
        for _ in self._pool:
            self._jobs.put(None)
        self._sel.close()

    def _accept(self) -> None:
        try:
            sock, addr = self.socket.accept()
        except OSError:
            return
        if len(self._waiting) + len(self._ready) >= self.app.max_pending:
            if not self._waiting:
                self.shutdown_request(sock)
                return
            self._drop(min(self._waiting.values(), key=lambda c: c.deadline))  # the oldest
        sock.setblocking(False)
        conn = _Conn(sock, addr, time.monotonic() + self.app.timeout_s)
        self._waiting[sock] = conn
        self._sel.register(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        conn = self._waiting[sock]
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.head += data
        if not data or len(conn.head) > MAX_HEAD:
            self._drop(conn)
        elif b"\r\n\r\n" in conn.head or b"\n\n" in conn.head:
            self._forget(conn)
            self._ready.append(conn)

    def _dispatch(self) -> None:
        while self._ready and self._free.acquire(blocking=False):
            self._jobs.put(self._ready.popleft())

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._waiting.values() if c.deadline < now]:
            self._drop(conn)

    def _forget(self, conn: _Conn) -> None:
        self._waiting.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)

    def _drop(self, conn: _Conn) -> None:
        self._forget(conn)
        self.shutdown_request(conn.sock)

    def _work(self) -> None:
        while (conn := self._jobs.get()) is not None:
            try:
                conn.sock.setblocking(True)
                self._local.head = bytes(conn.head)
                self.finish_request(conn.sock, conn.addr)
            except Exception:  # noqa: BLE001 - one bad connection never stops the pool
                log.debug("http: connection failed", exc_info=True)
            finally:
                self.shutdown_request(conn.sock)
                self._free.release()

    def head(self) -> bytes:
        """The head of the request this thread is answering (read by ``serve_forever``)."""
        return cast("bytes", self._local.head)


class _Handler(BaseHTTPRequestHandler):
    app: StatusServer
    server_version = "hxsched"
    sys_version = ""

    def setup(self) -> None:
        super().setup()  # the socket timeout bounds writing the answer too
        self.rfile.close()
        self.rfile = io.BytesIO(cast("_Server", self.server).head())  # one request a connection

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _send(self, code: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Connection", "close")
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
            hosts = self.headers.get_all("Host") or []
            if len(hosts) > 1 or not self.app.host_allowed(hosts[0] if hosts else None):
                self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "host not allowed"})
            elif route is None:
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
