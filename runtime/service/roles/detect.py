"""The ``detect`` role: a YOLOv8 detector (stroke screening) on the letterboxed CT window, its
boxes decoded in source pixels and written as JSON per slice."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from hxsched.runtime.service.imaging import (
    Detection,
    LetterboxInfo,
    Window,
    decode_yolov8,
    detections_to_json,
    letterbox,
    letterbox_into,
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
        if np.ndim(window01) != 2 or out.shape[-2:] != (model.size, model.size):
            boxed, info = letterbox(window01, size=model.size)
            out[0] = boxed  # broadcast to the three channels: one copy, no stacked temporary
            return info
        info = letterbox_into(window01, out[0, 0])  # straight into the slot's first channel
        out[0, 1:] = out[0, 0]
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
        pacs = ctx.sinks.pacs
        if pacs is not None and pacs.findings and ctx.slice.meta.get("SOPInstanceUID"):
            result.files[f"sr:{ctx.instance}"] = _write_sr(found, model, ctx)
        return result


def _write_json(found: list, info: LetterboxInfo, model, ctx: SliceContext) -> str:
    head: dict[str, Any] = {k: v for k, v in detections_to_json([], info).items()}
    head.update(
        {
            "item": ctx.item_id,
            "model": model.name,
            "instance": ctx.instance,
            "backend": ctx.backend,
            "note": NOTE,
        }
    )
    if ctx.replayed:
        head["replayed"] = "sim backend: a recorded ONNX Runtime output, replayed; not this slice's"
    path = ctx.out / "detections" / f"{ctx.item_id}.{ctx.instance.replace('#', '_')}.json"
    return str(ctx.write(path, (dumps_indent1(head, found) + "\n").encode()))


def dumps_indent1(doc: dict[str, Any], found: list[Detection]) -> str:
    """``json.dumps(doc, indent=1)`` with ``doc["detections"]`` = each of ``found`` as
    ``Detection.to_dict`` gives it: the same text, built directly (with an indent json runs its
    pure-Python encoder, milliseconds for a hundred boxes). Non-finite numbers, which json
    spells its own way, go through json."""
    parts = []
    for key, value in doc.items():
        if key == "detections":
            text = _detections_text(found)
        else:
            text = json.dumps(value, indent=1).replace("\n", "\n ")
        parts.append(f" {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}"


_DETECTION = (
    '  {{\n   "box_xyxy": [\n    {!r},\n    {!r},\n    {!r},\n    {!r}\n   ],\n'
    '   "score": {!r},\n   "class_id": {:d}\n  }}'
)


def _detections_text(found: list[Detection]) -> str:
    if not found:
        return "[]"
    out = []
    for d in found:
        x1, y1, x2, y2 = (round(float(v), 2) for v in d.box_xyxy)
        score = round(float(d.score), 4)
        if math.isfinite(x1 + y1 + x2 + y2 + score):
            out.append(_DETECTION.format(x1, y1, x2, y2, score, int(d.class_id)))
        else:  # NaN/Infinity: json's own spelling, one level deeper
            out.append("  " + json.dumps(d.to_dict(), indent=1).replace("\n", "\n  "))
    return "[\n" + ",\n".join(out) + "\n ]"


def _write_sr(found: list, model, ctx: SliceContext) -> str:
    """The findings as a Basic Text SR for the PACS sink (runtime/service/sr.py)."""
    from hxsched.runtime.service.pipeline import Backend
    from hxsched.runtime.service.sr import Findings, encode_findings_sr, weights_label

    note = f"; {NOTE}"
    if ctx.backend == Backend.SIM:
        note += "; sim backend: " + ("replayed output" if ctx.replayed else "no model ran")
    what = Findings(
        tuple(found), model.name, weights_label(model), ctx.instance, ctx.index, model.conf, note
    )
    path = ctx.out / "sr" / ctx.instance.replace("#", "_") / f"{ctx.item_id}.dcm"
    return str(ctx.write(path, encode_findings_sr(ctx.slice, what)))


def _to_nchw3(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, np.float32)
    if a.ndim == 2:
        a = np.repeat(a[None], 3, axis=0)
    elif a.ndim == 3 and a.shape[-1] in (1, 3):
        a = a.transpose(2, 0, 1)
        if a.shape[0] == 1:
            a = np.repeat(a, 3, axis=0)
    return np.ascontiguousarray(a[None])
