"""Metrics: PSNR/SSIM against scikit-image, mAP50 against pycocotools (both dev-only), and the
detection agreement on hand-made boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hxsched.runtime.validate.metrics import (
    Box,
    cosine,
    detection_agreement,
    error_stats,
    map50,
    mse,
    psnr,
    ssim,
)


@pytest.mark.parametrize("shape", [(64, 64), (37, 50), (256, 200)])
def test_psnr_and_ssim_match_scikit_image(shape):
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(sum(shape))
    a = rng.uniform(-1, 1, shape)
    for noise in (0.01, 0.2):
        b = np.clip(a + rng.normal(0, noise, shape), -1, 1)
        want_ssim = metrics.structural_similarity(
            a, b, data_range=2.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert abs(ssim(a, b, 2.0) - want_ssim) <= 1e-6
        want_psnr = metrics.peak_signal_noise_ratio(a, b, data_range=2.0)
        assert abs(psnr(a, b, 2.0) - want_psnr) <= 1e-6


def test_identical_images_and_simple_values():
    a = np.linspace(0, 1, 400).reshape(20, 20)
    assert ssim(a, a, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(psnr(a, a, 1.0))
    assert mse(a, a + 0.1) == pytest.approx(0.01)
    assert psnr(a, a + 0.1, 1.0) == pytest.approx(20.0)
    assert cosine(a, 2 * a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        ssim(a, a[:10], 1.0)


def test_error_stats():
    ref = np.array([1.0, 2.0, 4.0, 0.0])
    s = error_stats(ref, ref + np.array([0.0, 0.5, -1.0, 0.0]))
    assert s.max_abs == 1.0
    assert s.max_rel == pytest.approx(0.25)
    assert s.median_abs == pytest.approx(0.25)
    assert s.mse == pytest.approx((0.25 + 1.0) / 4)
    assert 0.9 < s.cosine < 1.0


def _random_boxes(rng, n, classes=3, jitter=None, base=None):
    if base is not None:
        out = []
        for b in base:
            d = rng.normal(0, jitter, 4)
            x1, y1, x2, y2 = (v + e for v, e in zip(b.xyxy, d, strict=True))
            out.append(
                Box(
                    (x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)),
                    float(rng.uniform(0.3, 1)),
                    b.class_id,
                )
            )
        return out
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(10, 60, (n, 2))
    return [
        Box((*xy[k], *(xy[k] + wh[k])), float(rng.uniform(0.3, 1)), int(rng.integers(0, classes)))
        for k in range(n)
    ]


def test_map50_matches_pycocotools():
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(7)
    ref, dep = [], []
    for _ in range(6):
        gts = _random_boxes(rng, int(rng.integers(0, 8)))
        dts = _random_boxes(rng, 0, jitter=6.0, base=gts)[: max(0, len(gts) - 1)]
        dts += _random_boxes(rng, int(rng.integers(0, 3)))  # false positives
        ref.append(gts)
        dep.append(dts)
    gt = COCO()
    anns, dets, k = [], [], 0
    for i, (gts, dts) in enumerate(zip(ref, dep, strict=True)):
        for b in gts:
            x1, y1, x2, y2 = b.xyxy
            k += 1
            anns.append(
                {
                    "id": k,
                    "image_id": i,
                    "category_id": b.class_id,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for b in dts:
            x1, y1, x2, y2 = b.xyxy
            dets.append(
                {
                    "image_id": i,
                    "category_id": b.class_id,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": b.score,
                }
            )
    gt.dataset = {
        "images": [{"id": i} for i in range(len(ref))],
        "annotations": anns,
        "categories": [{"id": c} for c in range(3)],
    }
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.params.maxDets = [100]
    ev.evaluate()
    ev.accumulate()
    p = ev.eval["precision"][0, :, :, 0, 0]
    want = float(np.mean([p[:, c].mean() for c in range(p.shape[1]) if (p[:, c] > -1).all()]))
    assert map50(ref, dep) == pytest.approx(want, abs=1e-9)


def test_detection_agreement_by_hand():
    a = Box((0, 0, 10, 10), 0.9, 0)
    b = Box((50, 50, 60, 60), 0.8, 1)
    moved = Box((1, 1, 11, 11), 0.7, 0)  # IoU 81/119 = 0.68 >= 0.5
    far = Box((30, 30, 40, 40), 0.6, 0)
    got = detection_agreement([[a, b], [], [a]], [[moved], [far], [a]])
    assert got.decision_agreement == pytest.approx(2 / 3)  # slice 2: finding where FP32 has none
    assert (got.precision, got.recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert got.f1 == pytest.approx(2 / 3)
    assert 0 < got.map50 < 1
    same = detection_agreement([[a, b], []], [[a, b], []])
    assert (same.decision_agreement, same.f1, same.map50) == (1.0, 1.0, 1.0)
    assert detection_agreement([[]], [[]]).map50 == 1.0
