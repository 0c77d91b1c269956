"""imaging: CT windows, letterbox, YOLOv8 decode + NMS in source pixels, Pix2Pix in/out,
previews."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hxsched.runtime.service.imaging import (
    WINDOWS,
    Detection,
    LetterboxInfo,
    decode_yolov8,
    detections_to_json,
    letterbox,
    nms,
    pix2pix_output_to_uint8,
    preview_png,
    to_pix2pix_input,
    to_yolo_input,
    window_hu,
)


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(WINDOWS))
def test_window_presets(preset):
    c, w = WINDOWS[preset]
    hu = np.array([c - w, c - w / 2, c, c + w / 2, c + w], np.float32)
    out = window_hu(hu, preset=preset)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_window_brain_default_and_clipping():
    out = window_hu(np.array([-1000.0, 0.0, 40.0, 80.0, 3000.0]))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_window_explicit_center_width_override_preset():
    out = window_hu(np.array([0.0, 100.0, 200.0]), center=100.0, width=200.0, preset="bone")
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0], atol=1e-6)


def test_window_unknown_preset():
    with pytest.raises(KeyError):
        window_hu(np.zeros(3), preset="lung")


# ---------------------------------------------------------------------------------------------
# Letterbox
# ---------------------------------------------------------------------------------------------
def test_letterbox_wide_image():
    img = np.ones((256, 512), np.float32)  # 512 wide, 256 high
    out, info = letterbox(img, 640)
    assert out.shape == (640, 640) and out.dtype == np.float32
    assert info == LetterboxInfo(1.25, 0.0, 160.0, 512, 256)
    pad = 114 / 255
    np.testing.assert_allclose(out[:160], pad)
    np.testing.assert_allclose(out[480:], pad)
    np.testing.assert_allclose(out[160:480], 1.0)


def test_letterbox_tall_image():
    out, info = letterbox(np.zeros((640, 320), np.float32), 640)
    assert info.scale == 1.0 and info.pad_y == 0.0 and info.pad_x == 160.0
    assert (info.src_w, info.src_h) == (320, 640)


def test_to_yolo_input():
    x, info = to_yolo_input(np.zeros((256, 512), np.float32), 640)
    assert x.shape == (1, 3, 640, 640) and x.dtype == np.float32
    assert info.scale == 1.25


# ---------------------------------------------------------------------------------------------
# YOLOv8 decode
# ---------------------------------------------------------------------------------------------
def _yolo_out(rows):
    out = np.zeros((1, 84, 8400), np.float32)
    for j, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, j] = (cx, cy, w, h)
        out[0, 4 + cls, j] = score
    return out


def test_decode_yolov8_source_pixels_and_nms():
    _, info = letterbox(np.zeros((256, 512), np.float32), 640)  # scale 1.25, pad_y 160
    # source box (100, 50)-(200, 150) -> letterboxed (125, 222.5)-(250, 347.5)
    rows = [
        (187.5, 285.0, 125.0, 125.0, 0, 0.9),  # the box
        (192.5, 290.0, 125.0, 125.0, 0, 0.6),  # same class, overlapping, lower: suppressed
        (192.5, 290.0, 125.0, 125.0, 3, 0.5),  # another class: kept
        (400.0, 300.0, 50.0, 50.0, 1, 0.1),  # under conf
    ]
    found = decode_yolov8(_yolo_out(rows), info, conf=0.25, iou=0.45)
    assert [d.class_id for d in found] == [0, 3]
    assert [round(d.score, 3) for d in found] == [0.9, 0.5]
    np.testing.assert_allclose(found[0].box_xyxy, (100.0, 50.0, 200.0, 150.0), atol=1e-3)
    np.testing.assert_allclose(found[1].box_xyxy, (104.0, 54.0, 204.0, 154.0), atol=1e-3)
    js = detections_to_json(found, info)
    assert js["image_size"] == [512, 256]
    assert js["detections"][0] == {
        "box_xyxy": [100.0, 50.0, 200.0, 150.0],
        "score": 0.9,
        "class_id": 0,
    }


def test_decode_yolov8_class_filter_max_det_and_clip():
    _, info = letterbox(np.zeros((256, 512), np.float32), 640)
    rows = [
        (187.5, 285.0, 125.0, 125.0, 0, 0.9),
        (500.0, 300.0, 40.0, 40.0, 2, 0.8),
        (5.0, 165.0, 40.0, 40.0, 5, 0.7),  # sticks out of the image: clipped
    ]
    out = _yolo_out(rows)
    assert [d.class_id for d in decode_yolov8(out, info, classes=[2])] == [2]
    assert len(decode_yolov8(out, info, max_det=2)) == 2
    edge = [d for d in decode_yolov8(out, info) if d.class_id == 5][0]
    x1, y1, x2, y2 = edge.box_xyxy
    assert x1 == 0.0 and y1 == 0.0 and 0 < x2 <= 512 and 0 < y2 <= 256
    assert decode_yolov8(np.zeros((1, 84, 10), np.float32), info) == []
    with pytest.raises(ValueError):
        decode_yolov8(np.zeros((1, 4, 10), np.float32), info)


def test_nms_keeps_best_first():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.7], np.float32), 0.45) == [1, 2]


# ---------------------------------------------------------------------------------------------
# Pix2Pix in/out, previews
# ---------------------------------------------------------------------------------------------
def test_to_pix2pix_input():
    w01 = np.linspace(0, 1, 512 * 512, dtype=np.float32).reshape(512, 512)
    x = to_pix2pix_input(w01)
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.min() < -0.9 and x.max() > 0.9
    np.testing.assert_array_equal(x[0, 0], x[0, 2])
    assert to_pix2pix_input(np.zeros((100, 80), np.float32), channels=1, size=128).shape == (
        1,
        1,
        128,
        128,
    )
    np.testing.assert_allclose(to_pix2pix_input(np.zeros((64, 64), np.float32)), -1.0)


def test_pix2pix_output_to_uint8():
    out = np.full((1, 3, 256, 256), -1.0, np.float32)
    out[..., 128:] = 1.0
    img = pix2pix_output_to_uint8(out)
    assert img.dtype == np.uint8 and img.shape == (256, 256)
    assert img[0, 0] == 0 and img[0, 255] == 255
    big = pix2pix_output_to_uint8(out, size=(128, 512))
    assert big.shape == (128, 512)
    assert big[0, 0] == 0 and big[0, -1] == 255
    clipped = pix2pix_output_to_uint8(np.array([[[[-3.0, 0.0, 3.0]]]], np.float32))
    assert clipped.tolist() == [[0, 127, 255]]


def test_preview_png():
    ct = np.linspace(0, 1, 200 * 300, dtype=np.float32).reshape(200, 300)
    mri = np.full((256, 256), 128, np.uint8)
    det = [Detection((10.0, 20.0, 60.0, 80.0), 0.87, 0)]
    png = preview_png(ct, mri, det)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    assert img.shape == (400, 1200, 3)  # under 256 pixels: enlarged x2 to stay legible
    assert tuple(img[100, 20]) == (0, 0, 255)  # the box, drawn in red on the CT half


def _label_pixels(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b, g, r = (img[..., k].astype(int) for k in range(3))
    return np.nonzero((g > 100) & (r > 100) & (b < 80))  # yellow


@pytest.mark.parametrize("side", [128, 512])
def test_preview_label_is_whole_on_the_mri_half(side):
    png = preview_png(np.zeros((side, side), np.float32), np.zeros((side, side), np.uint8), [])
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    assert min(h, w // 2) >= 256
    ys, xs = _label_pixels(img)
    assert len(xs) > 50
    assert xs.min() >= w // 2  # only on the MRI half ...
    assert xs.max() < w - 2  # ... and not cut off at its right edge
    assert ys.max() < h // 4


def test_pix2pix_output_nan_is_black():
    out = np.array([[[[np.nan, np.inf, -np.inf, 0.0]]]], np.float32)
    assert pix2pix_output_to_uint8(out).tolist() == [[0, 255, 0, 127]]


def _random_yolo(rng, n: int, classes: int = 5, levels=(0.1, 0.3, 0.5, 0.9)) -> np.ndarray:
    out = np.zeros((1, 84, n), np.float32)
    out[0, :2] = rng.uniform(0, 640, (2, n))
    out[0, 2:4] = rng.uniform(1, 300, (2, n))
    out[0, 4 : 4 + classes] = rng.choice(levels, (classes, n))  # many ties, within and across
    return out


@pytest.mark.parametrize("small", [None, 0, 10**6])
def test_decode_yolov8_equals_the_plain_decode_and_nms(small, monkeypatch):
    """The fast decode (threshold on the best score first, class layout once, IoU blocks, or
    one IoU matrix for few candidates: both forced in turn) keeps the same boxes in the same
    order as argmax + NMS per class on every anchor, ties and NaN boxes included, and on a
    saturated detector (every anchor at score 1.0)."""
    from hxsched.runtime.service import imaging
    from hxsched.runtime.service.imaging import decode_yolov8_reference

    if small is not None:
        monkeypatch.setattr(imaging, "_SMALL_NMS", small)

    _, info = letterbox(np.zeros((512, 512), np.float32), 640)
    rng = np.random.default_rng(7)
    cases = []
    for k in range(60):
        out = _random_yolo(rng, int(rng.integers(1, 400)))
        if k % 4 == 0:
            out[0, 2:4, : k % 7] = np.nan
        kw = {"max_det": int(rng.integers(1, 60)), "iou": float(rng.choice([0.1, 0.45, 0.9]))}
        if k % 5 == 0:
            kw["classes"] = [0, 2]
        if k % 6 == 1:
            kw["max_nms"] = int(rng.integers(1, 50))  # the pre-NMS cap, ties at its edge
        cases.append((out, kw))
    cases.append((_random_yolo(rng, 8400, classes=3, levels=(1.0,)), {}))  # saturated
    cases.append((_random_yolo(rng, 8400, classes=3, levels=(1.0,)), {"max_nms": 500}))
    cases.append((_random_yolo(rng, 8400, classes=80, levels=(0.0, 0.2, 0.26)), {"max_det": 300}))
    for out, kw in cases:
        fast, plain = decode_yolov8(out, info, **kw), decode_yolov8_reference(out, info, **kw)
        assert repr(fast) == repr(plain), kw  # repr: NaN boxes compare equal as text


def test_decode_yolov8_caps_boxes_into_nms_at_max_nms():
    """Ultralytics' max_nms: only the best ``max_nms`` candidates reach NMS."""
    _, info = letterbox(np.zeros((512, 512), np.float32), 640)
    rows = [(100.0 + 60 * j, 100.0, 40.0, 40.0, 0, 0.3 + 0.1 * j) for j in range(5)]
    found = decode_yolov8(_yolo_out(rows), info, max_nms=2)
    assert [round(d.score, 2) for d in found] == [0.7, 0.6]


def test_pix2pix_output_to_uint8_whole_equals_strips():
    """The whole-array path (finite outputs) gives exactly the strip path's bytes, which are
    those of nan_to_num + mean + scale + clip + cast on the whole array."""
    from hxsched.runtime.service.imaging import _mean_to_uint8

    rng = np.random.default_rng(3)
    for c, h, w in ((3, 256, 256), (1, 64, 80), (3, 33, 7)):
        a = rng.normal(0.0, 0.7, (c, h, w)).astype(np.float32)
        strips = _mean_to_uint8(a, cells=4096, whole=0)  # forced through the strips
        plain = np.clip((a.mean(axis=0) + 1.0) * 127.5, 0, 255).astype(np.uint8)
        assert np.array_equal(_mean_to_uint8(a), plain) and np.array_equal(strips, plain)
