"""Prometheus text exposition: exact format, escaping, histograms, quantiles, threads."""

from __future__ import annotations

import math
import re
import threading

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.service.metrics import (
    CONTENT_TYPE,
    Counter,
    Gauge,
    Histogram,
    Registry,
    escape_label_value,
    format_value,
)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A tiny strict parser: every line is a comment or ``name{labels} value``."""
    samples = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = _SAMPLE.match(line)
        assert m, f"bad line {line!r}"
        name, labels, value = m.groups()
        pairs = tuple((k, _unescape(v)) for k, v in _PAIR.findall(labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def _registry() -> Registry:
    reg = Registry()
    frames = reg.counter("hxsched_frames_total", "Frames by direction.", ["direction"])
    frames.labels(direction="in").inc(3)
    frames.labels("out").inc()
    reg.gauge("hxsched_queue_depth", "Items waiting.").set(2.5)
    lat = reg.histogram(
        "hxsched_stage_latency_seconds", "Stage latency.", ["stage"], buckets=(0.01, 0.1, 1)
    )
    for v in (0.005, 0.05, 0.05, 0.5, 2.0):
        lat.labels(stage="pix2pix").observe(v)
    reg.counter("hxsched_quarantined_total", 'Quarantined, by "reason".\nSee docs\\x.', ["reason"])
    reg.get("hxsched_quarantined_total").labels(reason='bad "pixels"\\ \nline2').inc(2)
    return reg


EXPECTED = """\
# HELP hxsched_frames_total Frames by direction.
# TYPE hxsched_frames_total counter
hxsched_frames_total{direction="in"} 3
hxsched_frames_total{direction="out"} 1
# HELP hxsched_queue_depth Items waiting.
# TYPE hxsched_queue_depth gauge
hxsched_queue_depth 2.5
# HELP hxsched_stage_latency_seconds Stage latency.
# TYPE hxsched_stage_latency_seconds histogram
hxsched_stage_latency_seconds_bucket{stage="pix2pix",le="0.01"} 1
hxsched_stage_latency_seconds_bucket{stage="pix2pix",le="0.1"} 3
hxsched_stage_latency_seconds_bucket{stage="pix2pix",le="1"} 4
hxsched_stage_latency_seconds_bucket{stage="pix2pix",le="+Inf"} 5
hxsched_stage_latency_seconds_sum{stage="pix2pix"} 2.605
hxsched_stage_latency_seconds_count{stage="pix2pix"} 5
# HELP hxsched_quarantined_total Quarantined, by "reason".\\nSee docs\\\\x.
# TYPE hxsched_quarantined_total counter
hxsched_quarantined_total{reason="bad \\"pixels\\"\\\\ \\nline2"} 2
"""


def test_exact_text_format():
    assert _registry().render() == EXPECTED
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_parse_back_with_tiny_parser():
    samples = parse(_registry().render())
    assert samples[("hxsched_frames_total", (("direction", "in"),))] == 3
    bucket = "hxsched_stage_latency_seconds_bucket"
    assert samples[(bucket, (("stage", "pix2pix"), ("le", "+Inf")))] == 5
    assert samples[("hxsched_quarantined_total", (("reason", 'bad "pixels"\\ \nline2'),))] == 2


def test_parse_back_with_prometheus_client():
    parser = pytest.importorskip("prometheus_client.parser")
    families = {f.name: f for f in parser.text_string_to_metric_families(_registry().render())}
    assert families["hxsched_frames"].type == "counter"
    assert (
        families["hxsched_quarantined"].documentation == 'Quarantined, by "reason".\nSee docs\\x.'
    )
    (q,) = families["hxsched_quarantined"].samples
    assert q.labels == {"reason": 'bad "pixels"\\ \nline2'} and q.value == 2
    samples = families["hxsched_stage_latency_seconds"].samples
    hist = {(s.name, s.labels.get("le")): s.value for s in samples}
    assert hist[("hxsched_stage_latency_seconds_bucket", "+Inf")] == 5
    assert hist[("hxsched_stage_latency_seconds_count", None)] == 5


def test_format_value_and_escape():
    assert [format_value(v) for v in (3, 2.5, math.inf, -math.inf, math.nan, 1e20)] == [
        "3",
        "2.5",
        "+Inf",
        "-Inf",
        "NaN",
        "1e+20",
    ]
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_quantile_interpolates_like_promql():
    h = Histogram("h_seconds", "h", buckets=(0.1, 0.2, 0.4))
    assert h.quantile(0.5) is None
    for v in [0.05] * 50 + [0.15] * 40 + [0.3] * 10:
        h.observe(v)
    assert h.quantile(0.5) == pytest.approx(0.1)
    assert h.quantile(0.25) == pytest.approx(0.05)
    assert h.quantile(0.7) == pytest.approx(0.15)
    assert h.quantile(0.99) == pytest.approx(0.2 + 0.2 * 9 / 10)
    h.observe(99.0)  # lands in +Inf: the estimate is capped at the highest finite bound
    assert h.quantile(1.0) == 0.4
    with pytest.raises(HxschedError):
        h.quantile(1.5)


def test_labelled_children_and_errors():
    reg = Registry()
    lat = reg.histogram("lat_seconds", "l", ["stage"])
    lat.labels(stage="yolo").observe(0.003)
    assert lat.labels("yolo").count == 1 and lat.labels("yolo").quantile(0.5) > 0
    assert reg.histogram("lat_seconds", "l", ["stage"]) is lat
    with pytest.raises(HxschedError, match="already registered"):
        reg.counter("lat_seconds", "x")
    with pytest.raises(HxschedError, match="use .labels"):
        lat.observe(1)
    with pytest.raises(HxschedError):
        lat.labels(other="x")
    with pytest.raises(HxschedError):
        Counter("bad-name", "x")
    with pytest.raises(HxschedError):
        Histogram("h", "x", ["le"])
    with pytest.raises(HxschedError, match="cannot decrease"):
        Counter("c_total", "x").inc(-1)
    empty = reg.counter("empty_total", "No samples yet.", ["reason"])
    assert empty.render() == "# HELP empty_total No samples yet.\n# TYPE empty_total counter\n"


def test_gauge_callback():
    g = Gauge("queue_depth", "q")
    depth = [4]
    g.set_function(lambda: depth[0])
    depth[0] = 7
    assert g.render().endswith("queue_depth 7\n")
    g.set_function(lambda: 1 / 0)
    assert g.render().endswith("queue_depth NaN\n")


def test_thread_safety():
    reg = Registry()
    c = reg.counter("n_total", "n", ["t"])
    h = reg.histogram("d_seconds", "d")

    def work(t: int) -> None:
        for i in range(2000):
            c.labels(t=str(t % 2)).inc()
            h.observe(i * 1e-4)
            if i % 500 == 0:
                reg.render()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples = parse(reg.render())
    assert samples[("n_total", (("t", "0"),))] == 8000
    assert samples[("d_seconds_count", ())] == 16000
