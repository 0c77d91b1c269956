"""Gantt charts (accelerators x time) of a plan and a baseline, as SVG or PNG.

Like Nsight Systems timelines: one row per accelerator, one colour per instance, hand-over
time hatched at the start of a segment. PNG is drawn with OpenCV (a dependency already)."""

from __future__ import annotations

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
        y = top + _TOP + len(p.rows) * _ROW + 14
        out.append(f'<text x="{_LEFT}" y="{y}">0</text>')
        out.append(f'<text x="{_W - 80}" y="{y}">{p.span_ms:.2f} ms</text>')
    out.append("</svg>")
    return "\n".join(out)


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
        y = top + _TOP + len(p.rows) * _ROW + 16
        cv2.putText(img, "0", (_LEFT, y), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{p.span_ms:.2f} ms", (_W - 90, y), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
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
