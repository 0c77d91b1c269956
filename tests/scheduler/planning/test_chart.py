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
