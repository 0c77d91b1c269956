"""Gantt charts."""

from __future__ import annotations

import pytest

from hxsched.errors import HxschedError
from hxsched.scheduler.planning.chart import panel_from_timeline, to_svg, write_chart


def test_svg_and_png(tmp_path, small_plan):
    names = [i.name for i in small_plan.instances]
    panel = panel_from_timeline(
        "plan",
        small_plan.accelerators,
        small_plan.timeline,
        names,
        small_plan.predicted.period_ms,
        small_plan.predicted.period_ms,
    )
    svg = to_svg([panel])
    assert svg.startswith("<svg") and "yolov8n#0" in svg
    assert max(b.end_ms for b in panel.bars) <= small_plan.predicted.period_ms + 1e-9
    png = write_chart([panel, panel], tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(HxschedError):
        write_chart([panel], tmp_path / "c.pdf")


def test_gantt_has_a_legend_the_period_and_readable_ticks(small_plan):
    from hxsched.scheduler.planning.chart import nice_ticks

    names = [i.name for i in small_plan.instances]
    period = small_plan.predicted.period_ms
    panel = panel_from_timeline(
        "p", small_plan.accelerators, small_plan.timeline, names, period, period
    )
    svg = to_svg([panel])
    assert all(f">{n}</text>" in svg for n in names)  # the legend
    assert "period</text>" in svg and "stroke-dasharray" in svg
    ticks = nice_ticks(period)
    assert len(ticks) >= 4 and ticks[0] == 0 and ticks[-1] <= period
    assert nice_ticks(2.78) == [0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_bench_plots_svg_and_png(tmp_path):
    from types import SimpleNamespace

    from hxsched.scheduler.planning.chart import write_bench_plots

    runs = [
        SimpleNamespace(
            name=n,
            throughput_fps=f,
            predicted=SimpleNamespace(fps=f * 1.1, latency_ms=3.0),
            latency_ms=SimpleNamespace(p50=3.2),
        )
        for n, f in (("plan", 300.0), ("gpu-only", 250.0))
    ]
    paths = write_bench_plots(runs, {"plan": [3.0, 3.2, 3.4], "gpu-only": [3.9]}, tmp_path)
    names = {p.name for p in paths}
    assert {"bench-bars.svg", "bench-cdf.svg", "bench-bars.png", "bench-cdf.png"} == names
    bars = (tmp_path / "bench-bars.svg").read_text()
    assert "measured fps" in bars and "predicted fps" in bars and "gpu-only" in bars
    assert (tmp_path / "bench-bars.png").read_bytes()[:4] == b"\x89PNG"
