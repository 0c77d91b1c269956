"""Model roles: the registry, each role's pre-/post-processing and sinks, and a service that
knows no particular model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom

from hxsched.runtime.service.dicom_io import synthetic_phantom
from hxsched.runtime.service.imaging import LetterboxInfo, Window
from hxsched.runtime.service.pipeline import Sinks, pipeline_from_dict
from hxsched.runtime.service.roles import Role, SliceContext, role_handler, roles_with

SERVICE = Path(__file__).resolve().parents[3] / "runtime" / "service" / "service.py"


def _models():
    d = {
        "schema": "hxsched.pipeline/1",
        "name": "t",
        "models": [
            {"name": "g", "role": "synth", "zoo": "pix2pix_unet256", "series_description": "S"},
            {"name": "d", "role": "detect", "zoo": "yolov8n", "size": 64},
        ],
    }
    return pipeline_from_dict(d).models


def _ctx(tmp_path, sinks=None, backend="ort", index=0, instance="g#0"):
    sl = synthetic_phantom(0, size=96)
    return SliceContext("item1", sl, tmp_path, sinks or Sinks(), backend, instance, index)


def test_every_role_is_registered_with_its_settings():
    assert {r: role_handler(r).role for r in Role} == {r: r for r in Role}
    assert role_handler("synth").settings["window"] == Window.BRAIN
    assert role_handler(Role.DETECT).settings["conf"] == 0.25
    assert roles_with("conf") == [Role.DETECT] and roles_with("channels") == [Role.SYNTH]
    assert set(roles_with("window")) == set(Role)


def test_synth_prepares_in_minus_one_to_one_and_writes_secondary_capture(tmp_path):
    synth, _ = _models()
    h = role_handler(synth.role)
    win = np.linspace(0, 1, 96 * 96, dtype=np.float32).reshape(96, 96)
    prepared = h.prepare(win, synth)
    assert prepared.array.shape == (1, 3, 256, 256) and prepared.info is None
    assert prepared.array.min() >= -1.0 and prepared.array.max() <= 1.0
    ctx = _ctx(tmp_path, backend="sim", index=1)
    result = h.finish(h.passthrough(prepared.array), prepared.info, synth, ctx)
    assert result.image.shape == (96, 96) and result.image.dtype == np.uint8
    (path,) = result.files.values()
    assert list(result.files) == ["dicom:g#0"] and path.endswith("g_0/item1.dcm")
    back = pydicom.dcmread(path)
    assert back.SeriesNumber == 1002
    assert back.SeriesDescription.startswith("S [sim backend: CT passed through")


def test_synth_without_the_dicom_sink_writes_nothing(tmp_path):
    synth, _ = _models()
    h = role_handler(synth.role)
    out = np.zeros((1, 3, 256, 256), np.float32)
    result = h.finish(out, None, synth, _ctx(tmp_path, sinks=Sinks(dicom=False)))
    assert result.files == {} and result.image is not None
    assert not any(tmp_path.iterdir())


def test_detect_letterboxes_and_writes_labelled_json(tmp_path):
    _, det = _models()
    h = role_handler(det.role)
    prepared = h.prepare(np.zeros((96, 48), np.float32), det)
    assert prepared.array.shape == (1, 3, 64, 64)
    assert isinstance(prepared.info, LetterboxInfo) and prepared.info.src_w == 48
    out = np.zeros((1, 84, 8400), np.float32)
    out[0, :4, 0] = [32, 32, 10, 10]
    out[0, 4 + 7, 0] = 0.9
    ctx = _ctx(tmp_path, instance="d#0")
    result = h.finish(out, prepared.info, det, ctx)
    assert [d.class_id for d in result.detections] == [7] and result.image is None
    doc = json.loads(Path(result.files["detections:d#0"]).read_text())
    assert doc["note"] == "screening aid from synthetic weights; not for diagnosis"
    assert (doc["model"], doc["instance"], doc["item"]) == ("d", "d#0", "item1")
    assert h.finish(h.passthrough(prepared.array), prepared.info, det, ctx).detections == []


def test_the_generic_service_knows_no_model():
    text = SERVICE.read_text()
    for word in (
        "\\bsynth\\b",
        "\\bdetect\\b",
        "pix2pix",
        "yolo",
        "letterbox",
        "secondary_capture",
    ):
        assert not re.search(word, text, re.IGNORECASE), word


def test_detections_json_text_is_what_json_writes():
    """The detections JSON is built directly, the same text as ``json.dumps(doc, indent=1)``
    (non-finite numbers and non-ASCII text included)."""
    import math

    from hxsched.runtime.service.imaging import Detection, LetterboxInfo, detections_to_json
    from hxsched.runtime.service.roles.detect import dumps_indent1

    info = LetterboxInfo(1.25, 0.0, 80.0, 512, 384)
    rng = np.random.default_rng(3)
    odd = [0.0, 512.0, 1e-7, 123456789.123, math.nan, math.inf, -0.0]
    for n in (0, 1, 3, 100):
        found = [
            Detection(
                tuple(
                    float(rng.choice(odd)) if k % 9 == 0 else float(rng.uniform(0, 512))
                    for _ in range(4)
                ),
                float(rng.random()),
                int(rng.integers(0, 80)),
            )
            for k in range(n)
        ]
        head = detections_to_json([], info)
        head.update({"item": 'ab\u00e9"c', "model": "m", "instance": "m#0", "note": "n"})
        doc = {**head, "detections": [d.to_dict() for d in found]}
        assert dumps_indent1(head, found) == json.dumps(doc, indent=1)
