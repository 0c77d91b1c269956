"""Service metrics on prometheus_client: exact text, escaping, histograms, quantiles, threads."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import threading

import prometheus_client
import prometheus_client.parser
import pytest
from prometheus_client import generate_latest
from prometheus_client.exposition import choose_encoder

from hxsched.runtime.service.metrics import Registry

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
hxsched_frames_total{direction="in"} 3.0
hxsched_frames_total{direction="out"} 1.0
# HELP hxsched_queue_depth Items waiting.
# TYPE hxsched_queue_depth gauge
hxsched_queue_depth 2.5
# HELP hxsched_stage_latency_seconds Stage latency.
# TYPE hxsched_stage_latency_seconds histogram
hxsched_stage_latency_seconds_bucket{le="0.01",stage="pix2pix"} 1.0
hxsched_stage_latency_seconds_bucket{le="0.1",stage="pix2pix"} 3.0
hxsched_stage_latency_seconds_bucket{le="1.0",stage="pix2pix"} 4.0
hxsched_stage_latency_seconds_bucket{le="+Inf",stage="pix2pix"} 5.0
hxsched_stage_latency_seconds_count{stage="pix2pix"} 5.0
hxsched_stage_latency_seconds_sum{stage="pix2pix"} 2.605
# HELP hxsched_quarantined_total Quarantined, by "reason".\\nSee docs\\\\x.
# TYPE hxsched_quarantined_total counter
hxsched_quarantined_total{reason="bad \\"pixels\\"\\\\ \\nline2"} 2.0
"""


def text(reg: Registry) -> str:
    return generate_latest(reg).decode()


def test_exact_text_format():
    encode, content_type = choose_encoder("")  # what /metrics sends a plain scraper
    assert encode(_registry()).decode() == EXPECTED
    assert content_type.startswith("text/plain; version=0.0.4")


def test_parse_back_with_tiny_parser():
    samples = parse(text(_registry()))
    assert samples[("hxsched_frames_total", (("direction", "in"),))] == 3
    bucket = "hxsched_stage_latency_seconds_bucket"
    assert samples[(bucket, (("le", "+Inf"), ("stage", "pix2pix")))] == 5
    assert samples[("hxsched_quarantined_total", (("reason", 'bad "pixels"\\ \nline2'),))] == 2


def test_parse_back_with_prometheus_client():
    parser = prometheus_client.parser
    families = {f.name: f for f in parser.text_string_to_metric_families(text(_registry()))}
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


def test_special_values_and_label_escaping():
    reg = Registry()
    g = reg.gauge("v", "v", ["k"])
    for i, value in enumerate((3, 2.5, math.inf, -math.inf, math.nan, 1e20)):
        g.labels(str(i)).set(value)
    g.labels('a\\b"c\nd').set(0)
    assert text(reg).splitlines()[2:] == [
        'v{k="0"} 3.0',
        'v{k="1"} 2.5',
        'v{k="2"} +Inf',
        'v{k="3"} -Inf',
        'v{k="4"} NaN',
        'v{k="5"} 1e+20',
        'v{k="a\\\\b\\"c\\nd"} 0.0',
    ]


def test_quantile_interpolates_like_promql():
    h = Registry().histogram("h_seconds", "h", buckets=(0.1, 0.2, 0.4))
    assert h.quantile(0.5) is None
    for v in [0.05] * 50 + [0.15] * 40 + [0.3] * 10:
        h.observe(v)
    assert h.quantile(0.5) == pytest.approx(0.1)
    assert h.quantile(0.25) == pytest.approx(0.05)
    assert h.quantile(0.7) == pytest.approx(0.15)
    assert h.quantile(0.99) == pytest.approx(0.2 + 0.2 * 9 / 10)
    assert h.quantile(0.0) == 0.0
    h.observe(99.0)  # lands in +Inf: the estimate is capped at the highest finite bound
    assert h.quantile(1.0) == 0.4
    with pytest.raises(ValueError, match=r"quantile must be in \[0, 1\]"):
        h.quantile(1.5)


def test_labelled_children_and_errors():
    reg = Registry()
    lat = reg.histogram("lat_seconds", "l", ["stage"])
    lat.labels(stage="yolo").observe(0.003)
    assert reg.get_sample_value("lat_seconds_count", {"stage": "yolo"}) == 1
    assert lat.labels("yolo").quantile(0.5) > 0
    assert reg.histogram("lat_seconds", "l", ["stage"]) is lat
    assert reg.get("lat_seconds") is lat and reg.get("nope") is None
    with pytest.raises(ValueError, match="already registered as a histogram"):
        reg.counter("lat_seconds", "x")
    with pytest.raises(ValueError, match="already registered"):
        reg.histogram("lat_seconds", "l", ["other"])
    with pytest.raises(ValueError, match="missing label values"):
        lat.observe(1)
    with pytest.raises(ValueError, match="missing label values"):
        lat.quantile(0.5)
    with pytest.raises(ValueError, match="Incorrect label names"):
        lat.labels(other="x")
    with pytest.raises(ValueError, match="invalid metric name"):
        reg.counter("bad-name", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        reg.counter("ok_total", "x", ["__reserved"])
    with pytest.raises(ValueError, match="Reserved label"):
        reg.histogram("h", "x", ["le"])
    with pytest.raises(ValueError, match="non-negative"):
        reg.counter("c_total", "x").inc(-1)
    empty = Registry()
    empty.counter("empty_total", "No samples yet.", ["reason"])
    assert text(empty) == "# HELP empty_total No samples yet.\n# TYPE empty_total counter\n"


def test_registries_are_separate_and_not_the_global_one():
    a, b = Registry(), Registry()
    a.counter("hxsched_frames_in_total", "in").inc(2)
    b.counter("hxsched_frames_in_total", "in").inc(5)  # a second service: no collision
    assert a.get_sample_value("hxsched_frames_in_total") == 2
    assert b.get_sample_value("hxsched_frames_in_total") == 5
    assert prometheus_client.REGISTRY.get_sample_value("hxsched_frames_in_total") is None
    assert "_created" not in text(a)


def test_gauge_callback():
    reg = Registry()
    g = reg.gauge("queue_depth", "q")
    depth = [4]
    g.set_function(lambda: depth[0])
    depth[0] = 7
    assert text(reg).endswith("\nqueue_depth 7.0\n")
    g.set_function(lambda: 1 / 0)
    assert text(reg).endswith("\nqueue_depth NaN\n")
    child = reg.gauge("depth", "d", ["queue"]).labels(queue="journal")
    child.set_function(lambda: 3)
    assert reg.get_sample_value("depth", {"queue": "journal"}) == 3


def test_thread_safety():
    reg = Registry()
    c = reg.counter("n_total", "n", ["t"])
    h = reg.histogram("d_seconds", "d")

    def work(t: int) -> None:
        for i in range(2000):
            c.labels(t=str(t % 2)).inc()
            h.observe(i * 1e-4)
            if i % 500 == 0:
                generate_latest(reg)
                h.quantile(0.5)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples = parse(text(reg))
    assert samples[("n_total", (("t", "0"),))] == 8000
    assert samples[("d_seconds_count", ())] == 16000


def test_missing_prometheus_client_is_one_line():
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from hxsched.errors import MissingDependencyError\n"
        "try:\n"
        "    import hxsched.runtime.service.metrics\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.count("\n") == 1 and "pip install 'hxsched[service]'" in out.stdout
