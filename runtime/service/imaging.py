"""Pre- and post-processing with numpy and OpenCV: CT windows, letterbox, model inputs,
Pix2Pix de-normalisation, YOLOv8 decode + NMS in source pixels, previews."""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from hxsched._compat import require


class Window(str, enum.Enum):
    """CT window presets (center/width in Hounsfield units below)."""

    BRAIN = "brain"
    STROKE = "stroke"
    BONE = "bone"
    SOFT = "soft"

    def __str__(self) -> str:
        return self.value


WINDOWS = {
    Window.BRAIN: (40.0, 80.0),
    Window.STROKE: (40.0, 40.0),
    Window.BONE: (600.0, 2800.0),
    Window.SOFT: (50.0, 400.0),
}


def window_hu(
    hu: np.ndarray,
    center: float | None = None,
    width: float | None = None,
    *,
    preset: Window | str = Window.BRAIN,
) -> np.ndarray:
    """Hounsfield units to [0, 1] through a CT window (a preset or center/width)."""
    try:
        c, w = WINDOWS[Window(preset)]
    except ValueError:
        raise KeyError(preset) from None
    c = c if center is None else center
    w = w if width is None else width
    lo = c - w / 2.0
    out = np.subtract(np.asarray(hu, np.float32), np.float32(lo), dtype=np.float32)
    out *= np.float32(1.0 / max(w, 1e-6))  # one array, changed in place
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass(frozen=True)
class LetterboxInfo:
    scale: float
    pad_x: float
    pad_y: float
    src_w: int
    src_h: int


def letterbox(img: np.ndarray, size: int = 640, pad_value: float = 114 / 255):
    """Resize keeping the aspect ratio and pad to ``size`` x ``size`` (Ultralytics' way)."""
    require("cv2", extra="service")
    import cv2

    h, w = img.shape[:2]
    scale = min(size / h, size / w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(np.asarray(img, np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
    px, py = (size - nw) / 2.0, (size - nh) / 2.0
    left, top = int(round(px - 0.1)), int(round(py - 0.1))
    out = np.full((size, size) + resized.shape[2:], pad_value, np.float32)
    out[top : top + nh, left : left + nw] = resized
    return out, LetterboxInfo(scale, float(left), float(top), w, h)


def letterbox_into(img: np.ndarray, out: np.ndarray, pad_value: float = 114 / 255) -> LetterboxInfo:
    """``letterbox`` of a 2-D image written into ``out`` (a C-contiguous float32 square, e.g.
    one channel of a hand-over slot): resized straight into it when it fills the square (no
    temporary), else resized and copied into its padded place. The same values."""
    require("cv2", extra="service")
    import cv2

    size = out.shape[0]
    h, w = img.shape[:2]
    scale = min(size / h, size / w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    src = np.asarray(img, np.float32)
    if (nw, nh) == (size, size) and out.flags.c_contiguous and out.shape == (size, size):
        got = cv2.resize(src, (nw, nh), dst=out, interpolation=cv2.INTER_LINEAR)
        if got is not out and not np.shares_memory(got, out):  # OpenCV made its own array
            out[...] = got
        return LetterboxInfo(scale, 0.0, 0.0, w, h)
    resized = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_LINEAR)
    left = int(round((size - nw) / 2.0 - 0.1))
    top = int(round((size - nh) / 2.0 - 0.1))
    out.fill(pad_value)
    out[top : top + nh, left : left + nw] = resized
    return LetterboxInfo(scale, float(left), float(top), w, h)


def to_yolo_input(window01: np.ndarray, size: int = 640) -> tuple[np.ndarray, LetterboxInfo]:
    boxed, info = letterbox(window01, size)
    return np.ascontiguousarray(np.repeat(boxed[None, None], 3, axis=1)), info


def to_pix2pix_input(window01: np.ndarray, channels: int = 3, size: int = 256) -> np.ndarray:
    """[1, C, size, size] in [-1, 1]."""
    require("cv2", extra="service")
    import cv2

    small = cv2.resize(np.asarray(window01, np.float32), (size, size), interpolation=cv2.INTER_AREA)
    x = small * 2.0 - 1.0
    return np.ascontiguousarray(np.repeat(x[None, None], channels, axis=1).astype(np.float32))


def pix2pix_input_into(window01: np.ndarray, out: np.ndarray) -> None:
    """``to_pix2pix_input`` written into ``out`` [1, C, size, size] (float32): the same values,
    one resize and one scaling, then the channels copied."""
    require("cv2", extra="service")
    import cv2

    size = out.shape[-1]
    small = cv2.resize(np.asarray(window01, np.float32), (size, size), interpolation=cv2.INTER_AREA)
    first = out[0, 0]
    np.multiply(small, np.float32(2.0), out=first)
    first -= np.float32(1.0)
    out[0, 1:] = first


def pix2pix_output_to_uint8(out: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """tanh output [1, C, H, W] in [-1, 1] to a uint8 image (channel mean), resized to
    ``size`` = (height, width) of the source if given."""
    require("cv2", extra="service")
    import cv2

    a = np.asarray(out, np.float32)
    while a.ndim > 3:
        a = a[0]
    if a.ndim == 3 and a.size:
        img = _mean_to_uint8(a)
    else:
        a = np.nan_to_num(a, nan=-1.0, posinf=1.0, neginf=-1.0)
        img = np.clip((a + 1.0) * 127.5, 0, 255).astype(np.uint8)
    if size is not None and img.shape != tuple(size):
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return img


# a Pix2Pix output up to this size (3 x 512 x 512) is converted whole when it is all finite
# (the usual case: a host worker's heap keeps its few 1 MiB temporaries, see steady_heap)
_WHOLE_CELLS = 3 << 18


def _mean_to_uint8(a: np.ndarray, cells: int = 16384, whole: int = _WHOLE_CELLS) -> np.ndarray:
    """[C, H, W] -> uint8 [H, W]: NaN/inf replaced, channel mean, (x + 1) * 127.5 clipped;
    whole when finite, else a strip of rows at a time (each temporary a few dozen KiB, not
    one mapped per step: see _BLOCK_CELLS). Element by element the same float32 operations
    either way, those of ``nan_to_num``, ``mean(axis=0)``, ``+ 1``, ``* 127.5``, clip, cast."""
    c, h, w = a.shape
    if c * h * w <= whole and np.isfinite(a).all():  # no NaN/inf: no replacing copy
        m = np.add.reduce(a, axis=0)  # what mean(axis=0) sums, then divides by the count
        np.true_divide(m, np.intp(c), out=m, casting="unsafe")
        m += 1.0
        m *= 127.5
        np.clip(m, 0, 255, out=m)
        return m.astype(np.uint8)
    img = np.empty((h, w), np.uint8)
    step = max(1, cells // max(1, c * w))
    for r in range(0, h, step):
        part = np.nan_to_num(a[:, r : r + step], nan=-1.0, posinf=1.0, neginf=-1.0)
        m = part.mean(axis=0)
        m += 1.0
        m *= 127.5
        np.clip(m, 0, 255, out=m)
        img[r : r + step] = m  # the float -> uint8 cast of astype
    return img


PREVIEW_LABEL = "SYNTHETIC - NOT FOR DIAGNOSIS"
PREVIEW_MIN_SIDE = 256  # previews of smaller slices are enlarged so the label stays legible


@dataclass(frozen=True)
class Detection:
    box_xyxy: tuple[float, float, float, float]  # source pixels
    score: float
    class_id: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "box_xyxy": [round(v, 2) for v in self.box_xyxy],
            "score": round(self.score, 4),
            "class_id": self.class_id,
        }


# Ultralytics ultralytics/utils/nms.py (ops.py before 8.3) ``non_max_suppression``: max_nms=30000
# boxes into NMS, the best by score.
MAX_NMS = 30000


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression on xyxy boxes; indices kept, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = (xx2 - xx1).clip(0) * (yy2 - yy1).clip(0)
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return keep


def _nms_by_class(
    xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray, iou: float, max_det: int
) -> list[int]:
    """Greedy NMS per class, the classes' kept boxes merged best first, stopped once
    ``max_det`` are kept: each class is suppressed only as far as its boxes are taken. The
    same boxes in the same order as NMS per class followed by a sort on score (ties: class,
    then index)."""
    order = np.lexsort((np.arange(len(score)), -score, cls))  # by class, then best first
    bounds = np.flatnonzero(np.diff(cls[order])) + 1
    groups = [g for g in np.split(order, bounds) if g.size]
    heap = [(-float(score[g[0]]), int(cls[g[0]]), int(g[0]), k) for k, g in enumerate(groups)]
    heapq.heapify(heap)
    keep: list[int] = []
    while heap and len(keep) < max_det:
        _, _, i, k = heapq.heappop(heap)
        keep.append(i)
        rest = groups[k][1:]
        groups[k] = rest = rest[_iou(xyxy[i], xyxy[rest]) <= iou]
        if rest.size:
            j = int(rest[0])
            heapq.heappush(heap, (-float(score[j]), int(cls[j]), j, k))
    return keep


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    area = max(float(box[2] - box[0]), 0.0) * max(float(box[3] - box[1]), 0.0)
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    return inter / np.maximum(area + areas - inter, 1e-9)


def decode_yolov8(
    out: np.ndarray,
    info: LetterboxInfo,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 100,
    classes: list[int] | None = None,
    max_nms: int = MAX_NMS,
) -> list[Detection]:
    """YOLOv8's [1, 4 + nc, N] output (cx, cy, w, h in input pixels, class scores) to boxes in
    source pixels, per-class NMS, as Ultralytics' ``non_max_suppression`` bounds it: anchors
    thresholded on their best class score before any per-box work, at most ``max_nms`` (the
    best) into NMS, at most ``max_det`` out. The result is that of ``decode_yolov8_reference``
    (tested), computed with fewer passes over the anchors."""
    a = np.asarray(out, np.float32)
    if a.ndim == 3:
        a = a[0]
    if a.ndim != 2 or a.shape[0] < 5:
        raise ValueError(f"expected a [4 + classes, N] detection output, got {a.shape}")
    cls_scores = a[4:]  # class scores [classes, N]: reduced along rows
    best = cls_scores.max(axis=0)  # a fast reduction (argmax along rows is not)
    idx = np.flatnonzero(best >= conf)
    if not idx.size:
        return []
    cls = _argmax_rows(cls_scores, idx)
    if classes is not None:
        idx, cls = idx[np.isin(cls, classes)], cls[np.isin(cls, classes)]
    score = best[idx]
    top = _best_first(score, max_nms)
    if top is not None:
        idx, cls, score = idx[top], cls[top], score[top]
    xyxy = _xyxy(a[:4, idx])
    keep = _nms_by_class_fast(xyxy, score, cls, iou, max_det)
    if not keep.size:
        return []
    xs = np.clip((xyxy[keep][:, [0, 2]] - info.pad_x) / info.scale, 0, info.src_w)
    ys = np.clip((xyxy[keep][:, [1, 3]] - info.pad_y) / info.scale, 0, info.src_h)
    return [
        Detection((x[0], y[0], x[1], y[1]), sc, c)
        for x, y, sc, c in zip(
            xs.tolist(), ys.tolist(), score[keep].tolist(), cls[keep].tolist(), strict=True
        )
    ]


def _best_first(score: np.ndarray, max_nms: int) -> np.ndarray | None:
    """Positions of the ``max_nms`` best scores (ties: first anchor), in anchor order; None when
    all fit."""
    if score.size <= max_nms:
        return None
    return np.sort(np.argsort(-score, kind="stable")[:max_nms])


def _argmax_rows(scores: np.ndarray, idx: np.ndarray, step: int = 512) -> np.ndarray:
    """``scores.argmax(axis=0)[idx]`` a few hundred columns at a time: numpy copies the array
    transposed for an argmax along rows, and a copy of all 8400 anchors' 80 scores (2.7 MB)
    would be mapped and unmapped for every slice (see _BLOCK_CELLS)."""
    every = idx.size * 2 >= scores.shape[1]
    cols = np.arange(scores.shape[1]) if every else idx
    out = np.empty(cols.size, np.int64)
    for j in range(0, cols.size, step):
        part = slice(j, j + step)
        block = scores[:, j : j + step] if every else scores[:, cols[part]]
        out[part] = block.argmax(axis=0)
    return out[idx] if every else out


def _xyxy(cxcywh: np.ndarray) -> np.ndarray:
    """[4, n] centre/size rows to [n, 4] corners (float32, as the model gave them)."""
    cx, cy, w, h = cxcywh
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _nms_by_class_fast(
    xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray, iou: float, max_det: int
) -> np.ndarray:
    """``_nms_by_class`` with each class's boxes laid out once, contiguous and in order, and
    its kept boxes found a block of candidates at a time (one IoU matrix per block instead of
    one pass per kept box). Same arithmetic, same boxes, same order."""
    order = np.lexsort((np.arange(len(score)), -score, cls))  # by class, then best first
    sx = np.ascontiguousarray(xyxy[order].T)  # [4, n]: x1, y1, x2, y2 rows
    area = np.maximum(sx[2] - sx[0], 0.0) * np.maximum(sx[3] - sx[1], 0.0)
    sorted_score, sorted_cls = score[order], cls[order]
    if order.size <= _SMALL_NMS:
        return _nms_small(sx, area, sorted_score, sorted_cls, order, iou, max_det)
    bounds = np.flatnonzero(np.diff(sorted_cls)) + 1
    classes = [
        _class_keeps(sx, area, lo, hi, iou)
        for lo, hi in zip(
            np.r_[0, bounds].tolist(), np.r_[bounds, order.size].tolist(), strict=True
        )
    ]
    heap: list[tuple[float, int, int, int]] = []
    for k, gen in enumerate(classes):
        _push(heap, gen, k, sorted_score, sorted_cls, order)
    keep: list[int] = []
    while heap and len(keep) < max_det:
        _, _, i, k = heapq.heappop(heap)
        keep.append(i)
        _push(heap, classes[k], k, sorted_score, sorted_cls, order)
    return np.asarray(keep, np.int64)


_SMALL_NMS = 96  # up to this many candidates: one IoU matrix, then greedy NMS on its rows


def _nms_small(sx, area, score, cls, order, iou: float, max_det: int) -> np.ndarray:
    """``_nms_by_class_fast`` for a few candidates (a detector's usual slice): every IoU at
    once ([n, n], the same float32 operations), each class suppressed greedily in its score
    order, the kept boxes sorted by (score, class, index) as the heap merges them."""
    n = order.size
    ok = _iou_rows(sx, area, np.arange(n), slice(0, n)) <= iou
    ok |= cls[:, None] != cls[None, :]  # boxes of other classes never suppress each other
    alive = np.ones(n, bool)
    kept = []
    for p in range(n):
        if alive[p]:
            kept.append(p)
            alive &= ok[p]
    keys = [(-float(score[p]), int(cls[p]), int(order[p])) for p in kept]
    return np.asarray([k[2] for k in sorted(keys)[:max_det]], np.int64)


def _push(heap: list, gen: Iterator[int], k: int, score, cls, order) -> None:
    """The next kept box of class ``k`` onto the merge heap (ordered by score, class, index)."""
    p = next(gen, None)
    if p is not None:
        heapq.heappush(heap, (-float(score[p]), int(cls[p]), int(order[p]), k))


# IoU cells per block: its float32 temporaries stay well under glibc's mmap threshold (the
# service sets it to 256 KiB, see service.py), where each would be mapped, faulted in, unmapped
_BLOCK_CELLS = 16384


def _class_keeps(
    sx: np.ndarray, area: np.ndarray, lo: int, hi: int, iou: float, block: int = 16
) -> Iterator[int]:
    """Greedy NMS of the laid-out boxes ``lo:hi`` (one class, best first): the positions kept,
    in order, computed lazily."""
    yield lo  # the best box of a class is always kept: known before any IoU is computed
    alive = np.ones(hi - lo, bool)
    pos = 1
    if hi - lo > 1:
        alive[1:] = _iou_rows(sx, area, np.array([lo]), slice(lo + 1, hi))[0] <= iou
    while True:
        rows = max(1, min(block, _BLOCK_CELLS // max(1, hi - lo - pos)))  # small temporaries
        cand = np.flatnonzero(alive[pos:])[:rows] + pos
        if not cand.size:
            return
        first = int(cand[0])
        ok = _iou_rows(sx, area, cand + lo, slice(lo + first, hi)) <= iou
        for r, p in enumerate(cand.tolist()):
            if alive[p]:
                yield lo + p
                alive[first:] &= ok[r]
        pos = int(cand[-1]) + 1


def _iou_rows(sx: np.ndarray, area: np.ndarray, rows: np.ndarray, cols: slice) -> np.ndarray:
    """``_iou`` of each box ``rows`` with the boxes ``cols`` of the laid-out ``sx`` ([rows,
    cols]; element by element the same float32 operations)."""
    r = sx[:, rows, None]
    w = np.minimum(r[2], sx[2, cols])
    w -= np.maximum(r[0], sx[0, cols])
    h = np.minimum(r[3], sx[3, cols])
    h -= np.maximum(r[1], sx[1, cols])
    np.maximum(w, 0.0, out=w)
    np.maximum(h, 0.0, out=h)
    w *= h  # the intersection
    union = area[rows, None] + area[cols]
    union -= w
    np.maximum(union, 1e-9, out=union)
    w /= union
    return w


def decode_yolov8_reference(
    out: np.ndarray,
    info: LetterboxInfo,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 100,
    classes: list[int] | None = None,
    max_nms: int = MAX_NMS,
) -> list[Detection]:
    """``decode_yolov8`` the plain way (argmax and per-box work on every anchor): what the
    fast one is tested against."""
    a = np.asarray(out, np.float32)
    if a.ndim == 3:
        a = a[0]
    boxes, cls_scores = a[:4].T, a[4:]
    cls = cls_scores.argmax(axis=0)
    score = np.take_along_axis(cls_scores, cls[None], axis=0)[0]
    mask = score >= conf
    if classes is not None:
        mask &= np.isin(cls, classes)
    boxes, score, cls = boxes[mask], score[mask], cls[mask]
    if not len(score):
        return []
    if len(score) > max_nms:
        top = np.sort(np.argsort(-score, kind="stable")[:max_nms])
        boxes, score, cls = boxes[top], score[top], cls[top]
    xyxy = _xyxy(boxes.T)
    found = _nms_by_class(xyxy, score, cls, iou, max_det)
    if not found:
        return []
    sel = np.asarray(found)
    xs = np.clip((xyxy[sel][:, [0, 2]] - info.pad_x) / info.scale, 0, info.src_w)
    ys = np.clip((xyxy[sel][:, [1, 3]] - info.pad_y) / info.scale, 0, info.src_h)
    return [
        Detection((float(x[0]), float(y[0]), float(x[1]), float(y[1])), float(sc), int(c))
        for x, y, sc, c in zip(
            xs.tolist(), ys.tolist(), score[sel].tolist(), cls[sel].tolist(), strict=True
        )
    ]


def detections_to_json(found: list[Detection], info: LetterboxInfo) -> dict[str, Any]:
    return {
        "image_size": [info.src_w, info.src_h],
        "coordinates": "source pixels, xyxy",
        "detections": [d.to_dict() for d in found],
    }


def preview_png(ct01: np.ndarray, mri_uint8: np.ndarray, detections: list[Detection]) -> bytes:
    """CT | synthetic MRI side by side, boxes on the CT, the label on the MRI half."""
    require("cv2", extra="service")
    import cv2

    ct: np.ndarray = (np.clip(np.asarray(ct01, np.float32), 0, 1) * 255).astype(np.uint8)
    zoom = max(1, -(-PREVIEW_MIN_SIDE // max(1, min(ct.shape[:2]))))  # small slices: enlarge
    if zoom > 1:
        ct = cv2.resize(
            ct, (ct.shape[1] * zoom, ct.shape[0] * zoom), interpolation=cv2.INTER_NEAREST
        )
    mri: np.ndarray = np.asarray(mri_uint8, np.uint8)
    if mri.shape != ct.shape:
        mri = cv2.resize(mri, (ct.shape[1], ct.shape[0]))
    left = cv2.cvtColor(ct, cv2.COLOR_GRAY2BGR)
    right = cv2.cvtColor(mri, cv2.COLOR_GRAY2BGR)
    for d in detections:
        x1, y1, x2, y2 = (int(round(v * zoom)) for v in d.box_xyxy)
        cv2.rectangle(left, (x1, y1), (x2, y2), (0, 0, 255), 2)
        cv2.putText(
            left,
            f"{d.class_id}:{d.score:.2f}",
            (x1, max(10, y1 - 3)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 0, 255),
            1,
        )
    # The label must be whole: fit it to the width of the MRI half.
    font, margin = cv2.FONT_HERSHEY_SIMPLEX, 6
    (tw, th), _ = cv2.getTextSize(PREVIEW_LABEL, font, 1.0, 1)
    scale = min(1.0, (right.shape[1] - 2 * margin) / tw)
    cv2.putText(
        right,
        PREVIEW_LABEL,
        (margin, margin + int(np.ceil(th * scale))),
        font,
        scale,
        (0, 255, 255),
        1,
        cv2.LINE_AA,
    )
    ok, png = cv2.imencode(".png", np.concatenate([left, right], axis=1))
    if not ok:
        raise ValueError("PNG encoding failed")
    return png.tobytes()
