"""The status server: health probes, metrics, status JSON, preview, page in headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib

import pytest
from prometheus_client import generate_latest

from hxsched.errors import HxschedError, ResourceError
from hxsched.runtime.service.http import StatusServer, json_safe
from hxsched.runtime.service.metrics import Registry

FAKE_STATUS = {
    "state": "running",
    "fps": 12.3,
    "frames_in": 1234,
    "frames_out": 1200,
    "pending": 3,
    "quarantined": 2,
    "dropped": 1,
    "uptime_s": 3725,
    "latency_ms": {"p50": 41.2, "p99": 88.0},
    "queues": {"ingest": 3, "pix2pix": 1, "yolo": 0},
    "accelerators": {"GPU": 0.62, "DLA0": 0.41, "DLA1": 0.0},
    "alarms": [{"level": "warning", "message": "yolov8n: 3 layers fell back DLA0 -> GPU"}],
    "latest": {"seq": 7, "name": "IM0007.dcm", "findings": 1},
}


def make_png(width: int, height: int) -> bytes:
    """A small RGB PNG: a grey ramp on the left half (CT), black on the right (MRI)."""
    row = bytes(v for x in range(width) for v in [255 * x // width if x < width // 2 else 0] * 3)
    raw = b"".join(b"\0" + row for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class Fake:
    def __init__(self) -> None:
        self.ready = (True, "ok")
        self.png: bytes | None = None
        self.status = dict(FAKE_STATUS)


@pytest.fixture
def served():
    fake = Fake()
    registry = Registry()
    registry.counter("hxsched_frames_total", "Frames.", ["direction"]).labels("in").inc(5)
    server = StatusServer(
        registry=registry,
        status=lambda: fake.status,
        ready=lambda: fake.ready,
        latest_png=lambda: fake.png,
    ).start()
    yield server, fake
    server.stop()


def get(
    server: StatusServer, path: str, method: str = "GET", headers: dict | None = None
) -> tuple[int, dict, bytes]:
    """A raw request (no client-side path normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_live_and_ready(served):
    server, fake = served
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/"
    with urllib.request.urlopen(server.url + "health/live", timeout=5) as r:
        assert r.status == 200 and r.read() == b"ok\n"
    with urllib.request.urlopen(server.url + "health/ready", timeout=5) as r:
        assert json.loads(r.read()) == {"ready": True, "reason": "ok"}
    fake.ready = (False, "engines not loaded")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "health/ready", timeout=5)
    assert err.value.code == 503
    assert json.loads(err.value.read()) == {"ready": False, "reason": "engines not loaded"}


def test_metrics_route(served):
    server, _ = served
    code, headers, body = get(server, "/metrics")
    assert code == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'hxsched_frames_total{direction="in"} 5.0\n' in body.decode()
    assert body == generate_latest(server.registry)


def test_metrics_route_negotiates_openmetrics(served):
    server, _ = served
    accept = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    code, headers, body = get(server, "/metrics", headers={"Accept": accept})
    assert code == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert 'hxsched_frames_total{direction="in"} 5.0\n' in text and text.endswith("# EOF\n")


def test_status_json_is_strict_json(served):
    server, fake = served
    fake.status = {**FAKE_STATUS, "fps": float("nan"), "latency_ms": {"p50": float("inf")}}
    code, headers, body = get(server, "/status.json?x=1")
    assert code == 200 and headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    data = json.loads(body)
    assert data["fps"] is None and data["latency_ms"] == {"p50": None}
    assert data["queues"] == FAKE_STATUS["queues"]
    assert json_safe((1.0, float("-inf"))) == [1.0, None]


def test_latest_png(served):
    server, fake = served
    assert get(server, "/latest.png")[0] == 404
    fake.png = make_png(8, 4)
    code, headers, body = get(server, "/latest.png?t=123")
    assert (code, headers["content-type"], body) == (200, "image/png", fake.png)


def test_page_is_self_contained(served):
    server, _ = served
    code, headers, body = get(server, "/")
    page = body.decode()
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "not for diagnostic use" in page.lower()
    assert "/status.json" in page and "/latest.png?t=" in page
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page), "no external resources"
    assert get(server, "/index.html")[2] == body


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/health",
        "/static/status.html",
        "/../../../../etc/passwd",
        "/static/../http.py",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "//etc/passwd",
        "/status.json/../metrics",
    ],
)
def test_unknown_and_traversal_paths_404(served, path):
    server, _ = served
    code, _, body = get(server, path)
    assert code == 404 and b"root:" not in body and b"import" not in body


def test_head_errors_and_quiet_log(served, capfd):
    server, fake = served
    code, headers, body = get(server, "/health/live", method="HEAD")
    assert code == 200 and body == b"" and headers["content-length"] == "3"

    def broken() -> dict:
        raise RuntimeError("boom")

    fake_status = server.status
    server.status = broken
    assert get(server, "/status.json")[0] == 500
    server.status = fake_status
    assert get(server, "/status.json")[0] == 200  # still serving
    for _ in range(5):
        get(server, "/metrics")
    assert "GET /metrics" not in capfd.readouterr().err


def test_stop_releases_port_and_bad_port_errors(served):
    server, _ = served
    busy = StatusServer(
        port=server.port,
        registry=Registry(),
        status=dict,
        ready=lambda: (True, ""),
        latest_png=lambda: None,
    )
    with pytest.raises(ResourceError, match="cannot serve HTTP") as err:
        busy.start()
    assert isinstance(err.value, HxschedError) and "\n" not in str(err.value)
    port = server.port
    server.stop()
    server.stop()  # idempotent
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    with pytest.raises(OSError):
        conn.request("GET", "/health/live")
    conn.close()


def _server(**kwargs) -> StatusServer:
    return StatusServer(
        registry=Registry(),
        status=dict,
        ready=lambda: (True, "ok"),
        latest_png=lambda: None,
        **kwargs,
    ).start()


def _raw(server: StatusServer, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_slowloris_costs_sockets_not_threads():
    # issue 13 #11: 60 slowloris connections made 72 threads and no timeout dropped them
    before = threading.active_count()
    server = _server(timeout_s=60.0, workers=4)  # the slow ones are not dropped meanwhile
    try:
        assert threading.active_count() <= before + 5  # the serve loop and its 4 workers
        slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(60)]
        for sock in slow:
            sock.sendall(b"GET /status.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
        time.sleep(0.3)
        assert threading.active_count() <= before + 5
        start = time.monotonic()
        assert get(server, "/health/live")[0] == 200
        assert time.monotonic() - start < 30.0  # answered, not queued behind the 60 s deadline
        assert threading.active_count() <= before + 5
        for sock in slow:
            sock.close()
    finally:
        server.stop()


def test_idle_and_trickling_connections_are_dropped():
    server = _server(timeout_s=0.5)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
            start = time.monotonic()
            assert idle.recv(100) == b""  # closed by the server, nothing sent
            assert time.monotonic() - start > 0.4  # not before its deadline (recv: 5 s at most)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as trickle:
            start = time.monotonic()
            closed = False
            for _ in range(40):  # a header byte every 0.1 s: active, yet past the deadline
                try:
                    trickle.sendall(b"G")
                    time.sleep(0.1)
                    closed = trickle.recv(1, socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    continue
                except OSError:  # reset by the server
                    closed = True
                if closed:
                    break
            assert closed and time.monotonic() - start > 0.4  # trickled bytes do not extend it
    finally:
        server.stop()


def test_excess_connections_evict_the_oldest_waiting():
    server = _server(timeout_s=30.0, max_pending=8)
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        time.sleep(0.2)
        assert get(server, "/health/live")[0] == 200
        idle[0].settimeout(2)
        assert idle[0].recv(10) == b""  # evicted to make room
        for sock in idle:
            sock.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("host", "code"),
    [
        ("evil.example", 421),
        ("evil.example:{port}", 421),
        ("127.0.0.1.evil.example:{port}", 421),
        ("localhost.evil.example", 421),
        ("", 421),
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LOCALHOST.:{port}", 200),
        ("[::1]:{port}", 200),
        ("192.168.1.20:8080", 200),  # an IP literal cannot be rebound; any port (forwarding)
        ("scanner-pc.example:80", 200),  # allowed_hosts
    ],
)
def test_host_header_is_checked(host, code):
    # issue 13 #11: any Host was served, so a DNS-rebinding page could read the preview
    server = _server(allowed_hosts=("scanner-pc.example",))
    try:
        got, _, body = get(server, "/status.json", headers={"Host": host.format(port=server.port)})
        assert got == code
        if code == 421:
            assert json.loads(body) == {"error": "host not allowed"}
    finally:
        server.stop()


def test_two_host_headers_and_no_host_header():
    server = _server()
    try:
        two = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n"
        assert _raw(server, two).startswith(b"HTTP/1.0 421 ")
        assert _raw(server, b"GET /health/live HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\nok\n")
    finally:
        server.stop()


def _chromium() -> str | None:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.slow
def test_status_page_in_headless_chromium(served, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("headless browser check needs chromium (apt-get install chromium)")
    server, fake = served
    fake.png = make_png(512, 256)
    base = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=3000",
        "--window-size=1200,800",
    ]
    shot = tmp_path / "status.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", server.url],
        capture_output=True,
        timeout=30,
        check=False,
    )
    data = shot.read_bytes() if shot.exists() else b""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "chromium wrote no PNG screenshot"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 800) and len(data) > 10_000

    dom = subprocess.run(
        [*base, "--dump-dom", server.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    assert re.search(r'id="fps"[^>]*>12\.3<', dom), "fps from /status.json not rendered"
    assert re.search(r'id="frames_in"[^>]*>1,234<', dom)
    assert "yolov8n: 3 layers fell back DLA0 -&gt; GPU" in dom
    assert "NOT FOR DIAGNOSTIC USE" in dom
    assert re.search(r'id="latest"[^>]*src="[^"]*/latest\.png\?t=7"', dom.replace("&amp;", "&"))
