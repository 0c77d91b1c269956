"""The validation report a person reads: per instance a few slices as FP32 | deployed |
difference heat map (detections drawn), and the metrics table, as PNG files and one HTML page."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from hxsched._compat import require
from hxsched.files import atomic_write
from hxsched.runtime.validate.metrics import Box
from hxsched.runtime.validate.validate import InstanceResult, Validation, _image

PANEL = 256  # pixels per panel side


def _gray(img01: np.ndarray) -> np.ndarray:
    import cv2

    u8 = (np.clip(img01, 0.0, 1.0) * 255).astype(np.uint8)
    u8 = cv2.resize(u8, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR)


def _heat(diff: np.ndarray) -> tuple[np.ndarray, float]:
    import cv2

    top = float(diff.max()) if diff.size else 0.0
    u8 = (
        (np.clip(diff / top, 0, 1) * 255).astype(np.uint8)
        if top > 0
        else np.zeros_like(diff, np.uint8)
    )
    big = cv2.resize(u8, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
    return cv2.applyColorMap(big, cv2.COLORMAP_INFERNO), top


def _label(img: np.ndarray, text: str) -> None:
    import cv2

    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 255, 255), 1, cv2.LINE_AA)


def _draw(
    img: np.ndarray, boxes: list[Box], src: tuple[int, int], color: tuple[int, int, int]
) -> None:
    import cv2

    sx, sy = PANEL / max(src[1], 1), PANEL / max(src[0], 1)
    for b in boxes[:30]:
        x1, y1, x2, y2 = b.xyxy
        cv2.rectangle(img, (int(x1 * sx), int(y1 * sy)), (int(x2 * sx), int(y2 * sy)), color, 1)


def _panels(res: InstanceResult, k: int, deployed: str = "emulated") -> np.ndarray:
    out = res.reference[k][next(iter(res.reference[k]))]
    dep = res.deployed[k][next(iter(res.deployed[k]))]
    if res.role == "synth":
        a, b = _image(out), _image(dep)
        left, mid = _gray((a + 1) / 2), _gray((b + 1) / 2)
        right, top = _heat(np.abs(a - b))
    else:
        win = res.windows[k]
        base = win if win is not None else np.zeros((PANEL, PANEL), np.float32)
        left, mid = _gray(base), _gray(base)
        ref_boxes, dep_boxes = res.boxes[k]
        _draw(left, ref_boxes, base.shape[:2], (0, 255, 0))
        _draw(mid, dep_boxes, base.shape[:2], (0, 0, 255))
        scores = np.abs(out[0, 4:].max(axis=0) - dep[0, 4:].max(axis=0))
        side = int(np.sqrt(min(scores.size, 6400)))  # the stride-8 level of YOLOv8's anchors
        right, top = _heat(scores[: side * side].reshape(side, side))
    _label(left, "FP32")
    _label(mid, f"deployed ({deployed})")
    _label(right, f"|diff| max {top:.3g}")
    return np.concatenate([left, mid, right], axis=1)


def _table(rows: list[list[str]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def write_report(v: Validation, out: Path, *, slices: int = 3) -> Path:
    """PNG per instance and slice, and ``index.html`` with every metric; returns the page."""
    require("cv2", extra="opencv")
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    deployed = "emulated" if v.backend == "ort" else "TensorRT"
    parts = [
        "<!doctype html><meta charset='utf-8'><title>hxsched validate</title>",
        "<style>body{font-family:sans-serif} td,th{border:1px solid #ccc;padding:2px 6px}"
        " table{border-collapse:collapse;margin:6px 0}</style>",
        f"<h1>hxsched validate: {html.escape(v.plan)} ({html.escape(v.precision)})</h1>",
        f"<p><b>{html.escape(v.note)}.</b> {html.escape(v.calibration)}</p>",
        f"<p>{v.slices} input(s); result: {'PASS' if v.passed else 'FAIL'}</p>",
    ]
    for res in v.instances:
        parts.append(
            f"<h2>{html.escape(res.instance)} ({res.role}): {'pass' if res.passed else 'FAIL'}</h2>"
        )
        parts.append(
            _table(
                [
                    [c.what, f"{c.value:.6g}", f"{c.limit:g}", "pass" if c.passed else "FAIL"]
                    for c in res.checks
                ],
                ["check", "value", "limit", ""],
            )
        )
        parts.append(
            _table(
                [
                    [
                        b.segment,
                        b.accelerator,
                        b.mode,
                        b.tensor,
                        f"{b.stats.cosine:.6f}",
                        f"{b.stats.max_abs:.3g}",
                        f"{b.stats.median_abs:.3g}",
                        f"{b.stats.p99_abs:.3g}",
                        f"{b.stats.p99_rel:.3g}",
                    ]
                    for b in res.boundaries
                ],
                [
                    "segment",
                    "on",
                    deployed,
                    "tensor",
                    "cosine",
                    "max |d|",
                    "median |d|",
                    "p99 |d|",
                    "p99 rel",
                ],
            )
        )
        if res.drift_segment:
            parts.append(
                f"<p>error grows most in {html.escape(res.drift_segment)} (cosine loss beyond its inputs')</p>"
            )
        for k in range(min(slices, len(res.reference))):
            name = f"{res.instance.replace('#', '_')}_{k}.png"
            ok, png = cv2.imencode(".png", _panels(res, k, deployed))
            if ok:
                atomic_write(out / name, png.tobytes())
                parts.append(f"<p><img src='{name}' alt='{html.escape(name)}'></p>")
    page = out / "index.html"
    atomic_write(page, "\n".join(parts).encode())
    return page
