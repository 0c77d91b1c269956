"""The ``detect`` role: a YOLOv8 detector (stroke screening) on the letterboxed CT window, its
boxes decoded in source pixels and written as JSON per slice."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from hxsched.runtime.service.imaging import (
    LetterboxInfo,
    Window,
    decode_yolov8,
    detections_to_json,
    letterbox,
)
from hxsched.runtime.service.roles.base import (
    Prepared,
    Role,
    RoleHandler,
    RoleResult,
    SliceContext,
    register,
)

NOTE = "screening aid from synthetic weights; not for diagnosis"
YOLOV8_OUTPUT = (1, 84, 8400)  # 4 box coordinates + 80 COCO classes, 8400 anchors at 640x640


@register
class DetectRole(RoleHandler):
    role = Role.DETECT
    settings = {
        "window": Window.STROKE,
        "size": 640,
        "conf": 0.25,
        "iou": 0.45,
        "max_det": 100,
        "classes": (),
    }

    def prepare(self, window01: np.ndarray, model) -> Prepared:
        boxed, info = letterbox(window01, size=model.size)
        return Prepared(_to_nchw3(boxed), info)

    def prepare_into(self, window01: np.ndarray, model, out: np.ndarray) -> Any:
        boxed, info = letterbox(window01, size=model.size)
        out[0] = boxed  # broadcast to the three channels: one copy, no stacked temporary
        return info

    def input_shape(self, model) -> tuple[int, ...]:
        return (1, 3, model.size, model.size)

    def passthrough(self, prepared: np.ndarray) -> np.ndarray:
        return np.zeros(YOLOV8_OUTPUT, np.float32)  # no scores: no boxes

    def finish(self, output: np.ndarray, info: Any, model, ctx: SliceContext) -> RoleResult:
        found = decode_yolov8(output, info, conf=model.conf, iou=model.iou, max_det=model.max_det)
        result = RoleResult(detections=found)
        if ctx.sinks.detections:
            result.files[f"detections:{ctx.instance}"] = _write_json(found, info, model, ctx)
        return result


def _write_json(found: list, info: LetterboxInfo, model, ctx: SliceContext) -> str:
    doc = detections_to_json(found, info)
    doc.update(
        {
            "item": ctx.item_id,
            "model": model.name,
            "instance": ctx.instance,
            "backend": ctx.backend,
            "note": NOTE,
        }
    )
    if ctx.replayed:
        doc["replayed"] = "sim backend: a recorded ONNX Runtime output, replayed; not this slice's"
    path = ctx.out / "detections" / f"{ctx.item_id}.{ctx.instance.replace('#', '_')}.json"
    return str(ctx.write(path, (json.dumps(doc, indent=1) + "\n").encode()))


def _to_nchw3(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, np.float32)
    if a.ndim == 2:
        a = np.repeat(a[None], 3, axis=0)
    elif a.ndim == 3 and a.shape[-1] in (1, 3):
        a = a.transpose(2, 0, 1)
        if a.shape[0] == 1:
            a = np.repeat(a, 3, axis=0)
    return np.ascontiguousarray(a[None])
