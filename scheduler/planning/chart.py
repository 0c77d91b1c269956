"""Gantt charts (accelerators x time) of a plan and a baseline, as SVG or PNG.

Like Nsight Systems timelines: one row per accelerator, one colour per instance, hand-over
time hatched at the start of a segment. PNG is drawn with OpenCV (a dependency already)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from hxsched._compat import require
from hxsched.errors import HxschedError
from hxsched.files import atomic_write
from hxsched.scheduler.planning.plan import TimelineEntry

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]


@dataclass(frozen=True)
class Bar:
    row: str
    start_ms: float
    end_ms: float
    label: str
    colour: int
    transition_ms: float = 0.0


@dataclass(frozen=True)
class Panel:
    title: str
    rows: tuple[str, ...]
    bars: tuple[Bar, ...]
    span_ms: float
    names: tuple[str, ...] = ()  # legend: instance names in colour order
    period_ms: float | None = None  # marked with a dashed line (a cyclic schedule's period)


def nice_ticks(span: float, target: int = 6) -> list[float]:
    """Round tick values from 0 to ``span`` (steps of 1, 2 or 5 times a power of ten)."""
    if span <= 0:
        return [0.0]
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [round(k * step, 12) for k in range(int(span / step + 1e-9) + 1)]


def panel_from_timeline(
    title: str,
    rows: Sequence[str],
    timeline: Sequence[TimelineEntry],
    names: Sequence[str],
    span_ms: float,
    wrap_ms: float | None = None,
) -> Panel:
    """Bars from a plan's timeline; with ``wrap_ms`` (one period of a cyclic schedule), a
    segment that runs past the period's end continues at its start."""
    colour = {n: k for k, n in enumerate(names)}
    bars = []
    for t in timeline:
        label = f"{t.instance} s{t.segment}"
        c = colour.get(t.instance, 0)
        row = str(t.accelerator)
        if wrap_ms and t.end_ms > wrap_ms + 1e-9:
            bars.append(Bar(row, t.start_ms, wrap_ms, label, c, t.transition_ms))
            bars.append(Bar(row, 0.0, t.end_ms - wrap_ms, label, c))
        else:
            bars.append(Bar(row, t.start_ms, t.end_ms, label, c, t.transition_ms))
    return Panel(
        title,
        tuple(str(r) for r in rows),
        tuple(bars),
        max(span_ms, max((b.end_ms for b in bars), default=0.0)),
        tuple(names),
        wrap_ms,
    )


_W, _ROW, _LEFT, _TOP, _GAP = 1000, 36, 70, 30, 30


def _layout(panels: Sequence[Panel]) -> tuple[int, list[int]]:
    tops, y = [], 10
    for p in panels:
        tops.append(y)
        y += _TOP + _ROW * len(p.rows) + _GAP
    return y + 20, tops


def to_svg(panels: Sequence[Panel]) -> str:
    height, tops = _layout(panels)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for p, top in zip(panels, tops, strict=True):
        scale = (_W - _LEFT - 20) / p.span_ms if p.span_ms > 0 else 1.0
        out.append(
            f'<text x="10" y="{top + 14}" font-size="13" font-weight="bold">{escape(p.title)}</text>'
        )
        for r, row in enumerate(p.rows):
            y = top + _TOP + r * _ROW
            out.append(f'<text x="10" y="{y + _ROW / 2 + 4}">{escape(row)}</text>')
            out.append(
                f'<line x1="{_LEFT}" y1="{y + _ROW}" x2="{_W - 20}" y2="{y + _ROW}" stroke="#ddd"/>'
            )
        for b in p.bars:
            if b.row not in p.rows:
                continue
            y = top + _TOP + p.rows.index(b.row) * _ROW + 4
            x = _LEFT + b.start_ms * scale
            w = max(1.0, (b.end_ms - b.start_ms) * scale)
            fill = PALETTE[b.colour % len(PALETTE)]
            out.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_ROW - 8}" fill="{fill}" '
                f'stroke="white"><title>{escape(b.label)} {b.start_ms:.3f}-{b.end_ms:.3f} ms'
                "</title></rect>"
            )
            if b.transition_ms > 0:
                tw = max(1.0, b.transition_ms * scale)
                out.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{tw:.1f}" height="{_ROW - 8}" '
                    'fill="black" opacity="0.35"/>'
                )
            if w > 40:
                out.append(
                    f'<text x="{x + 3:.1f}" y="{y + 17}" fill="white">{escape(b.label)}</text>'
                )
        out += _svg_decorations(p, top, scale)
    out.append("</svg>")
    return "\n".join(out)


def _svg_decorations(p: Panel, top: int, scale: float) -> list[str]:
    """Time ticks (ms), the period's dashed line and the instance legend."""
    out = []
    bottom = top + _TOP + len(p.rows) * _ROW
    for t in nice_ticks(p.span_ms):
        x = _LEFT + t * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#333"/>'
        )
        out.append(f'<text x="{x - 8:.1f}" y="{bottom + 16}">{t:g}</text>')
    out.append(f'<text x="{_W - 40}" y="{bottom + 16}">ms</text>')
    if p.period_ms:
        x = _LEFT + p.period_ms * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{top + _TOP}" x2="{x:.1f}" y2="{bottom}" stroke="#d62728" '
            'stroke-dasharray="4,3"/>'
        )
        out.append(f'<text x="{x + 3:.1f}" y="{top + _TOP - 2}" fill="#d62728">period</text>')
    for k, name in enumerate(p.names):
        x = _W - 20 - 150 * (len(p.names) - k)
        fill = PALETTE[k % len(PALETTE)]
        out.append(f'<rect x="{x}" y="{top + 4}" width="10" height="10" fill="{fill}"/>')
        out.append(f'<text x="{x + 14}" y="{top + 13}">{escape(name)}</text>')
    return out


def to_png(panels: Sequence[Panel], path: str | os.PathLike[str]) -> None:
    require("cv2", extra="opencv")
    import cv2
    import numpy as np

    height, tops = _layout(panels)
    img = np.full((height, _W, 3), 255, np.uint8)

    def bgr(hex_colour: str) -> tuple[int, int, int]:
        h = hex_colour.lstrip("#")
        return (int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16))

    font = cv2.FONT_HERSHEY_SIMPLEX
    for p, top in zip(panels, tops, strict=True):
        scale = (_W - _LEFT - 20) / p.span_ms if p.span_ms > 0 else 1.0
        cv2.putText(img, p.title, (10, top + 16), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for r, row in enumerate(p.rows):
            y = top + _TOP + r * _ROW
            cv2.putText(img, row, (10, y + _ROW // 2 + 4), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            cv2.line(img, (_LEFT, y + _ROW), (_W - 20, y + _ROW), (221, 221, 221), 1)
        for b in p.bars:
            if b.row not in p.rows:
                continue
            y = top + _TOP + p.rows.index(b.row) * _ROW + 4
            x0 = int(_LEFT + b.start_ms * scale)
            x1 = max(x0 + 1, int(_LEFT + b.end_ms * scale))
            cv2.rectangle(
                img, (x0, y), (x1, y + _ROW - 8), bgr(PALETTE[b.colour % len(PALETTE)]), -1
            )
            if b.transition_ms > 0:
                xt = max(x0 + 1, int(_LEFT + (b.start_ms + b.transition_ms) * scale))
                cv2.rectangle(img, (x0, y), (xt, y + _ROW - 8), (60, 60, 60), -1)
            if x1 - x0 > 60:
                cv2.putText(
                    img, b.label, (x0 + 3, y + 18), font, 0.4, (255, 255, 255), 1, cv2.LINE_AA
                )
        bottom = top + _TOP + len(p.rows) * _ROW
        for t in nice_ticks(p.span_ms):
            x = int(_LEFT + t * scale)
            cv2.line(img, (x, bottom), (x, bottom + 4), (50, 50, 50), 1)
            cv2.putText(img, f"{t:g}", (x - 8, bottom + 16), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, "ms", (_W - 40, bottom + 16), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        if p.period_ms:
            x = int(_LEFT + p.period_ms * scale)
            for y0 in range(top + _TOP, bottom, 7):
                cv2.line(img, (x, y0), (x, min(bottom, y0 + 4)), (40, 39, 214), 1)
            cv2.putText(img, "period", (x + 3, top + _TOP - 2), font, 0.4, (40, 39, 214), 1)
        for k, name in enumerate(p.names):
            x = _W - 20 - 150 * (len(p.names) - k)
            cv2.rectangle(img, (x, top + 4), (x + 10, top + 14), bgr(PALETTE[k % len(PALETTE)]), -1)
            cv2.putText(img, name, (x + 14, top + 13), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise HxschedError(f"cannot write the chart to {path}")


def write_chart(panels: Sequence[Panel], path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise HxschedError(f"--chart {path}: use a .svg or .png file name")
    if suffix == ".svg":
        atomic_write(out, to_svg(panels).encode("utf-8"))
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        to_png(panels, out)
    return out


# ---------------------------------------------------------------------------------------------
# Benchmark plots: measured vs predicted bars per run, and a latency CDF (SVG and PNG)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """One drawing primitive: ``rect`` (x, y, w, h), ``line``/``poly`` (points), ``text``."""

    kind: str
    points: tuple[tuple[float, float], ...]
    colour: str = "#000000"
    text: str = ""


def bar_shapes(
    title: str,
    names: Sequence[str],
    pairs: Sequence[tuple[float, float | None]],
    unit: str,
    top: float,
) -> list[Shape]:
    """Measured (solid) and predicted (light) bars per run, with a legend and value ticks."""
    h, left, width = 180.0, 60.0, 440.0
    vmax = max([m for m, _ in pairs] + [p or 0.0 for _, p in pairs] + [1e-9])
    out = [Shape("text", ((10, top + 14),), text=title)]
    base = top + 30 + h
    for k in range(5):
        v = vmax * k / 4
        y = base - h * k / 4
        out.append(Shape("line", ((left, y), (left + width, y)), "#dddddd"))
        out.append(Shape("text", ((10, y + 4),), text=f"{v:.3g}"))
    slot = width / max(1, len(names))
    for k, (name, (m, p)) in enumerate(zip(names, pairs, strict=True)):
        x = left + k * slot + slot * 0.15
        w = slot * 0.3
        out.append(Shape("rect", ((x, base - h * m / vmax), (w, h * m / vmax)), PALETTE[0]))
        if p:
            out.append(Shape("rect", ((x + w, base - h * p / vmax), (w, h * p / vmax)), "#a0cbe8"))
        out.append(Shape("text", ((x, base + 14),), text=name))
    out.append(Shape("rect", ((left + width + 10, top + 30), (10, 10)), PALETTE[0]))
    out.append(Shape("text", ((left + width + 24, top + 39),), text=f"measured {unit}"))
    out.append(Shape("rect", ((left + width + 10, top + 48), (10, 10)), "#a0cbe8"))
    out.append(Shape("text", ((left + width + 24, top + 57),), text=f"predicted {unit}"))
    return out


def cdf_shapes(title: str, series: dict[str, Sequence[float]], top: float) -> list[Shape]:
    """Empirical CDF of each run's frame latencies, ms on x, fraction on y."""
    h, left, width = 180.0, 60.0, 440.0
    values = [v for s in series.values() for v in s]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    base = top + 30 + h
    out = [Shape("text", ((10, top + 14),), text=title)]
    for k in range(5):
        y = base - h * k / 4
        out.append(Shape("line", ((left, y), (left + width, y)), "#dddddd"))
        out.append(Shape("text", ((10, y + 4),), text=f"{k / 4:.2f}"))
        x = left + width * k / 4
        out.append(Shape("text", ((x - 10, base + 14),), text=f"{lo + (hi - lo) * k / 4:.3g}"))
    out.append(Shape("text", ((left + width - 40, base + 28),), text="latency ms"))
    for c, (name, vals) in enumerate(series.items()):
        ordered = sorted(vals)
        pts = tuple(
            (left + width * (v - lo) / (hi - lo), base - h * (i + 1) / len(ordered))
            for i, v in enumerate(ordered)
        )
        colour = PALETTE[c % len(PALETTE)]
        if pts:
            out.append(Shape("poly", pts, colour))
        out.append(Shape("rect", ((left + width + 10, top + 30 + 18 * c), (10, 10)), colour))
        out.append(Shape("text", ((left + width + 24, top + 39 + 18 * c),), text=name))
    return out


def shapes_svg(shapes: Sequence[Shape], width: int, height: int) -> str:
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for s in shapes:
        if s.kind == "rect":
            (x, y), (w, h) = s.points
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{s.colour}"/>'
            )
        elif s.kind in ("line", "poly"):
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in s.points)
            out.append(
                f'<polyline points="{pts}" fill="none" stroke="{s.colour}" stroke-width="1.5"/>'
            )
        else:
            ((x, y),) = s.points
            out.append(f'<text x="{x:.1f}" y="{y:.1f}" fill="{s.colour}">{escape(s.text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def shapes_png(
    shapes: Sequence[Shape], width: int, height: int, path: str | os.PathLike[str]
) -> None:
    require("cv2", extra="opencv")
    import cv2
    import numpy as np

    img = np.full((height, width, 3), 255, np.uint8)

    def bgr(hex_colour: str) -> tuple[int, int, int]:
        h = hex_colour.lstrip("#")
        return (int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16))

    for s in shapes:
        if s.kind == "rect":
            (x, y), (w, h) = s.points
            cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), bgr(s.colour), -1)
        elif s.kind in ("line", "poly"):
            pts = np.array([[int(x), int(y)] for x, y in s.points], np.int32)
            cv2.polylines(img, [pts], False, bgr(s.colour), 1, cv2.LINE_AA)
        else:
            ((x, y),) = s.points
            cv2.putText(
                img,
                s.text,
                (int(x), int(y)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                bgr(s.colour),
                1,
                cv2.LINE_AA,
            )
    if not cv2.imwrite(str(path), img):
        raise HxschedError(f"cannot write the plot to {path}")


def write_bench_plots(
    runs: Sequence, latencies: dict[str, Sequence[float]], folder: str | os.PathLike[str]
) -> list[Path]:
    """``bench-bars`` (fps and latency p50, measured beside predicted, per run) and
    ``bench-cdf`` (latency CDF), each as SVG and PNG; PNG needs OpenCV (skipped without)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    names = [r.name for r in runs]
    bars = bar_shapes(
        "throughput (fps)", names, [(r.throughput_fps, r.predicted.fps) for r in runs], "fps", 0
    )
    bars += bar_shapes(
        "latency p50 (ms)",
        names,
        [(r.latency_ms.p50, r.predicted.latency_ms) for r in runs],
        "ms",
        250,
    )
    cdf = cdf_shapes("latency CDF", latencies, 0)
    paths = []
    for stem, shapes, height in (("bench-bars", bars, 500), ("bench-cdf", cdf, 250)):
        svg = out / f"{stem}.svg"
        atomic_write(svg, shapes_svg(shapes, 700, height).encode("utf-8"))
        paths.append(svg)
        try:
            shapes_png(shapes, 700, height, out / f"{stem}.png")
            paths.append(out / f"{stem}.png")
        except HxschedError as exc:  # OpenCV missing: the SVG stands alone
            if "opencv" not in str(exc):
                raise
    return paths
