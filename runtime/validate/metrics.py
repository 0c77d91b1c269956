"""Accuracy metrics against an FP32 reference: PSNR, SSIM, MSE, cosine, error statistics, and
detection agreement (decisions, box precision/recall/F1 at IoU >= 0.5, COCO-style mAP50)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Relative error divides by |reference| + this, as Polygraphy's comparator does for zeros.
REL_EPS = 2.2e-16


@dataclass(frozen=True)
class ErrorStats:
    """Element-wise differences of a tensor against its FP32 reference."""

    max_abs: float
    median_abs: float
    p99_abs: float
    max_rel: float
    median_rel: float
    p99_rel: float
    cosine: float
    mse: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def mse(ref: np.ndarray, test: np.ndarray) -> float:
    d = np.asarray(ref, np.float64) - np.asarray(test, np.float64)
    return float(np.mean(d * d))


def psnr(ref: np.ndarray, test: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB with an explicit data range (inf when identical)."""
    err = mse(ref, test)
    return math.inf if err == 0 else float(10.0 * np.log10(data_range**2 / err))


def cosine(ref: np.ndarray, test: np.ndarray) -> float:
    a = np.asarray(ref, np.float64).ravel()
    b = np.asarray(test, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def error_stats(ref: np.ndarray, test: np.ndarray) -> ErrorStats:
    r = np.asarray(ref, np.float64).ravel()
    t = np.asarray(test, np.float64).ravel()
    if r.size == 0:
        return ErrorStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    ab = np.abs(t - r)
    rel = ab / (np.abs(r) + REL_EPS)
    q = np.quantile(np.stack([ab, rel]), [0.5, 0.99], axis=1)
    return ErrorStats(
        float(ab.max()),
        float(q[0, 0]),
        float(q[1, 0]),
        float(rel.max()),
        float(q[0, 1]),
        float(q[1, 1]),
        cosine(r, t),
        float(np.mean(ab * ab)),
    )


def _gaussian_filter(img: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    """Separable Gaussian filter, mode 'reflect' (edge sample repeated), as
    ``scipy.ndimage.gaussian_filter``."""
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    out = img
    for axis in range(img.ndim):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="symmetric")
        acc = np.zeros_like(out)
        for j, w in enumerate(k):
            acc += w * np.take(p, np.arange(j, j + out.shape[axis]), axis=axis)
        out = acc
    return out


def ssim(
    ref: np.ndarray,
    test: np.ndarray,
    data_range: float,
    *,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean SSIM of two 2-D images, Gaussian-window form of Wang et al., "Image quality
    assessment: from error visibility to structural similarity", IEEE TIP 2004 (population
    covariance, window truncated at 3.5 sigma; equals scikit-image's ``structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=...)``)."""
    x = np.asarray(ref, np.float64)
    y = np.asarray(test, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"SSIM needs two 2-D images of one shape, got {x.shape} and {y.shape}")
    truncate = 3.5
    f = lambda a: _gaussian_filter(a, sigma, truncate)  # noqa: E731
    ux, uy = f(x), f(y)
    vx = f(x * x) - ux * ux
    vy = f(y * y) - uy * uy
    vxy = f(x * y) - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = int(truncate * sigma + 0.5)  # the window's radius: crop where it leaves the image
    return float(s[pad:-pad, pad:-pad].mean()) if min(x.shape) > 2 * pad else float(s.mean())


# -- detections ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    xyxy: tuple[float, float, float, float]
    score: float
    class_id: int


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if tuple(a) == tuple(b):
        return 1.0  # also for degenerate (zero-area) boxes: the same box is the same decision
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _match(gts: Sequence[Box], dts: Sequence[Box], thr: float) -> list[bool]:
    """COCO's greedy matching within one image and class: detections by score, each to the
    unmatched reference box of highest IoU >= thr. True per detection (in score order)."""
    used = [False] * len(gts)
    hits = []
    for d in dts:
        best, best_iou = -1, thr
        for j, g in enumerate(gts):
            if used[j]:
                continue
            v = iou(g.xyxy, d.xyxy)
            if v >= best_iou:
                best, best_iou = j, v
        if best >= 0:
            used[best] = True
        hits.append(best >= 0)
    return hits


@dataclass(frozen=True)
class DetectionAgreement:
    slices: int
    decision_agreement: float  # slices where both say finding / no finding alike
    precision: float
    recall: float
    f1: float
    map50: float
    reference_boxes: int
    deployed_boxes: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _by_score(boxes: Sequence[Box]) -> list[Box]:
    return sorted(boxes, key=lambda b: -b.score)


def map50(reference: Sequence[Sequence[Box]], deployed: Sequence[Sequence[Box]]) -> float:
    """mAP at IoU 0.5 with the reference boxes as ground truth, 101-point interpolated precision
    as pycocotools' COCOeval (area 'all', up to 100 detections per image); classes without
    reference boxes are left out; 1.0 when neither side has a box."""
    classes = sorted({b.class_id for img in reference for b in img})
    if not classes:
        return 1.0 if not any(deployed) else 0.0
    rec_thrs = np.linspace(0.0, 1.0, 101)
    aps = []
    for c in classes:
        scores: list[float] = []
        tps: list[bool] = []
        npos = 0
        for gts, dts in zip(reference, deployed, strict=True):
            g = [b for b in gts if b.class_id == c]
            d = _by_score([b for b in dts if b.class_id == c])[:100]
            npos += len(g)
            tps.extend(_match(g, d, 0.5))
            scores.extend(b.score for b in d)
        order = np.argsort(-np.asarray(scores, float), kind="mergesort")
        tp = np.cumsum(np.asarray(tps, float)[order]) if tps else np.zeros(0)
        fp = np.cumsum(1.0 - np.asarray(tps, float)[order]) if tps else np.zeros(0)
        rc = tp / npos
        pr = tp / np.maximum(tp + fp, np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1] if pr.size else pr
        idx = np.searchsorted(rc, rec_thrs, side="left")
        q = np.array([pr[i] if i < pr.size else 0.0 for i in idx])
        aps.append(float(q.mean()))
    return float(np.mean(aps))


def detection_agreement(
    reference: Sequence[Sequence[Box]], deployed: Sequence[Sequence[Box]]
) -> DetectionAgreement:
    """Per-slice decisions (any box vs none), box-level P/R/F1 at IoU >= 0.5 (same class) and
    mAP50, with the FP32 detections as reference."""
    n = len(reference)
    agree = sum(bool(r) == bool(d) for r, d in zip(reference, deployed, strict=True))
    tp = 0
    for gts, dts in zip(reference, deployed, strict=True):
        for c in {b.class_id for b in dts}:
            g = [b for b in gts if b.class_id == c]
            tp += sum(_match(g, _by_score([b for b in dts if b.class_id == c]), 0.5))
    nref = sum(len(r) for r in reference)
    ndep = sum(len(d) for d in deployed)
    p = tp / ndep if ndep else (1.0 if not nref else 0.0)
    r = tp / nref if nref else (1.0 if not ndep else 0.0)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return DetectionAgreement(
        n, agree / n if n else 1.0, p, r, f1, map50(reference, deployed), nref, ndep
    )
