"""Pipelines: the shipped files load; every mistake is a one-line error naming its key."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from hxsched.errors import HxschedError
from hxsched.runtime.service.pipeline import (
    SCHEMA,
    Backend,
    Role,
    Sinks,
    SourceKind,
    Window,
    load_pipeline,
    pipeline_from_dict,
    shipped_pipelines,
)
from hxsched.scheduler.types import Objective

PIPELINES = Path(__file__).resolve().parents[3] / "pipelines"


def _base() -> dict:
    return {
        "schema": SCHEMA,
        "name": "t",
        "models": [{"name": "g", "role": "synth", "zoo": "pix2pix_unet256"}],
        "sources": [{"kind": "folder", "path": "inbox"}],
        "sinks": {"dicom": True},
    }


def test_shipped_folder_is_found():
    assert shipped_pipelines().resolve() == PIPELINES.resolve()


def test_ct2mri_stroke_loads():
    p = load_pipeline(PIPELINES / "ct2mri_stroke.yaml")
    assert p.name == "ct2mri_stroke"
    assert (p.device, p.backend, p.objective, p.queue, p.plan) == (
        "orin-agx",
        "ort",
        "throughput",
        64,
        None,
    )
    assert [(m.name, m.role, m.zoo) for m in p.models] == [
        ("pix2pix", "synth", "pix2pix_unet256"),
        ("yolov8n", "detect", "yolov8n"),
    ]
    pix, yolo = p.models
    assert pix.rewrite and pix.window == "brain" and pix.size == 256
    assert yolo.window == "stroke" and yolo.size == 640 and yolo.conf == 0.25
    assert [s.kind for s in p.sources] == ["folder", "scp"]
    assert p.sources[1].port == 11112 and p.sources[1].ae_title == "HXSCHED"
    assert p.sinks == Sinks(dicom=True, detections=True, previews=True)


def test_dual_pix2pix_loads():
    p = load_pipeline(PIPELINES / "dual_pix2pix.yaml")
    assert [m.seed for m in p.models] == [0, 1]
    assert all(m.role == "synth" for m in p.models)
    assert p.sinks.detections is False
    assert p.digest() != load_pipeline(PIPELINES / "ct2mri_stroke.yaml").digest()


def test_defaults():
    p = pipeline_from_dict(
        {
            "schema": SCHEMA,
            "name": "t",
            "models": [{"name": "d", "role": "detect", "zoo": "yolov8n"}],
        }
    )
    assert p.sources == () and p.sinks == Sinks(dicom=True, detections=True, previews=True)
    m = p.models[0]
    assert (m.window, m.size, m.instances, m.conf, m.iou) == ("stroke", 640, 1, 0.25, 0.45)


def _mutate(fn):
    d = _base()
    fn(d)
    return d


def _set(path, value):
    def fn(d):
        target = d
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value

    return fn


def _both(d):
    d["models"][0]["path"] = "g.onnx"


CASES = {
    "schema": (_set(["schema"], "hxsched.pipeline/0"), "schema"),
    "missing-models": (lambda d: d.pop("models"), "models: missing"),
    "empty-models": (_set(["models"], []), "models"),
    "role": (_set(["models", 0, "role"], "segment"), "models[0].role"),
    "zoo-and-path": (_both, "'zoo' or 'path'"),
    "neither": (lambda d: d["models"][0].pop("zoo"), "'zoo' or 'path'"),
    "source-kind": (_set(["sources", 0, "kind"], "ftp"), "sources[0].kind"),
    "sink": (_set(["sinks", "email"], True), "sinks.email"),
    "instances": (_set(["models", 0, "instances"], 0), "models[0].instances"),
    "queue": (_set(["queue"], "many"), "queue"),
    "queue-bool": (_set(["queue"], True), "queue"),
    "window": (_set(["models", 0, "window"], "lung"), "models[0].window"),
    "backend": (_set(["backend"], "cuda"), "backend"),
    "objective": (_set(["objective"], "cost"), "objective"),
    "plan": (_set(["plan"], 3), "plan"),
    "dup-names": (lambda d: d["models"].append(dict(d["models"][0])), "unique"),
    "name-missing": (lambda d: d.pop("name"), "name: missing"),
    "conf-type": (_set(["models", 0, "conf"], "high"), "models[0].conf"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_errors_are_one_line_and_name_the_key(case):
    fn, key = CASES[case]
    with pytest.raises(HxschedError) as info:
        pipeline_from_dict(_mutate(fn), "p.yaml")
    text = str(info.value)
    assert "\n" not in text
    assert key in text, text
    assert text.startswith("p.yaml: ")


def test_not_a_mapping():
    with pytest.raises(HxschedError, match="mapping"):
        pipeline_from_dict(["schema"])


def test_load_errors(tmp_path):
    with pytest.raises(HxschedError, match="not found"):
        load_pipeline(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(HxschedError) as info:
        load_pipeline(bad)
    assert "\n" not in str(info.value) and "YAML" in str(info.value)


def test_non_string_model_path():
    d = _base()
    d["models"][0] = {"name": "g", "role": "synth", "path": 5}
    with pytest.raises(HxschedError):
        pipeline_from_dict(d, "p.yaml")


def test_relative_paths_resolve_against_the_file(tmp_path):
    d = _base()
    d["models"][0] = {"name": "g", "role": "synth", "path": "models/g.onnx"}
    d["models"].append({"name": "abs", "role": "detect", "path": "/abs/y.onnx"})
    d["plan"] = "plans/p.yaml"
    f = tmp_path / "sub" / "pipe.yaml"
    f.parent.mkdir()
    f.write_text(yaml.safe_dump(d))
    p = load_pipeline(f)
    assert Path(p.models[0].path) == tmp_path / "sub" / "models" / "g.onnx"
    assert p.models[1].path == "/abs/y.onnx"
    assert Path(p.plan) == tmp_path / "sub" / "plans" / "p.yaml"
    assert p.path == str(f)


def test_a_folder_source_resolves_against_the_file_not_the_working_directory(tmp_path):
    """Issue finding: the pipeline's folder paths resolved from the working directory."""
    d = _base()
    d["sources"] = [{"kind": "folder", "path": "inbox"}, {"kind": "folder", "path": "/abs/in"}]
    f = tmp_path / "sub" / "pipe.yaml"
    f.parent.mkdir()
    f.write_text(yaml.safe_dump(d))
    p = load_pipeline(f)
    assert Path(p.sources[0].path) == tmp_path / "sub" / "inbox"
    assert p.sources[1].path == "/abs/in"


def test_digest_ignores_sources_and_sinks_but_not_models():
    base = pipeline_from_dict(_base()).digest()
    assert len(base) == 16
    d = _base()
    d["sources"] = [{"kind": "scp", "port": 104}]
    d["sinks"] = {"previews": False}
    d["queue"] = 8
    d["workers"] = 3
    assert pipeline_from_dict(d).digest() == base
    for change in ({"seed": 1}, {"rewrite": True}, {"instances": 2}, {"zoo": "other"}):
        d = copy.deepcopy(_base())
        d["models"][0].update(change)
        assert pipeline_from_dict(d).digest() != base, change
    d = _base()
    d["device"] = "orin-nx"
    assert pipeline_from_dict(d).digest() != base


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d.update(queue=0), "queue"),
        (lambda d: d.update(max_bytes=-1), "max_bytes"),
        (lambda d: d["models"][0].update(size=8), "models[0].size"),
        (lambda d: d["models"][0].update(channels=2), "models[0].channels"),
        (lambda d: d["models"][0].update(conf=1.5), "models[0].conf"),
        (lambda d: d["models"][0].update(max_det=0), "models[0].max_det"),
        (lambda d: d["sources"].append({"kind": "scp", "port": 70000}), "sources[1].port"),
        (lambda d: d.update(sinks={"dicom": "no"}), "sinks.dicom"),
        (lambda d: d.update(sinks={"preview_every_s": -1}), "sinks.preview_every_s"),
        (lambda d: d.update(sinks={"preview_every_s": 7200}), "sinks.preview_every_s"),
        (lambda d: d.update(workers=-1), "workers"),
    ],
)
def test_numbers_out_of_range_are_refused(change, key):
    d = _base()
    change(d)
    with pytest.raises(HxschedError) as info:
        pipeline_from_dict(d, "p.yaml")
    assert str(info.value).startswith(f"p.yaml: {key}: expected "), str(info.value)


def test_model_cache_key_follows_the_model_file(tmp_path):
    m = tmp_path / "g.onnx"
    m.write_bytes(b"one")
    d = _base()
    d["models"][0] = {"name": "g", "role": "synth", "path": str(m)}
    first = pipeline_from_dict(d, "p.yaml").digest()
    m.write_bytes(b"two!")
    assert pipeline_from_dict(d, "p.yaml").digest() != first


# The typos: each used to start the service silently with a default in its place.
SHIPPED = (PIPELINES / "ct2mri_stroke.yaml").read_text()
TYPOS = {
    "windwo": ("    window: brain", "    windwo: brain", "models[0].windwo: unknown key"),
    "confidence": ("    conf: 0.25", "    confidence: 0.3", "models[1].confidence: unknown key"),
    "devcie": ("device: orin-agx", "devcie: xavier-agx", "devcie: unknown key"),
    "sink": ("\nsinks:", "\nsink:", "sink: unknown key"),
    "conf-on-synth": (
        "    size: 256\n",
        "    size: 256\n    conf: 0.3\n",
        "models[0].conf: not a setting of a synth model (only of detect models)",
    ),
}


def _typo_file(tmp_path: Path, case: str) -> tuple[Path, str]:
    old, new, message = TYPOS[case]
    assert SHIPPED.count(old) == 1, old
    f = tmp_path / f"{case}.yaml"
    f.write_text(SHIPPED.replace(old, new))
    return f, message


@pytest.mark.parametrize("case", sorted(TYPOS))
def test_typos_are_refused_by_the_loader(tmp_path, case):
    f, message = _typo_file(tmp_path, case)
    with pytest.raises(HxschedError) as info:
        load_pipeline(f)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{f}: {message}"), text


def test_typos_suggest_the_key_meant(tmp_path):
    for case, meant in (("windwo", "window"), ("devcie", "device"), ("sink", "sinks")):
        f, _ = _typo_file(tmp_path, case)
        with pytest.raises(HxschedError, match=f"did you mean '{meant}'"):
            load_pipeline(f)


@pytest.mark.parametrize("case", sorted(TYPOS))
def test_typos_stop_serve_with_one_line(tmp_path, case):
    import os
    import subprocess
    import sys

    f, message = _typo_file(tmp_path, case)
    run = subprocess.run(
        [sys.executable, "-m", "hxsched", "serve", str(f), "--no-http", "-q"]
        + ["--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith(f"hxsched serve: error: {f}: {message}"), run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was started


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"role": "detect", "zoo": "yolov8n", "channels": 1}, "models[0].channels: not a setting"),
        ({"role": "detect", "zoo": "yolov8n", "series_description": "x"}, "series_description"),
        ({"role": "synth", "zoo": "p", "max_det": 3}, "models[0].max_det: not a setting"),
        ({"role": "detect", "zoo": "yolov8n", "conf": 0}, "models[0].conf: expected a number >"),
        ({"role": "detect", "zoo": "yolov8n", "iou": 1.5}, "models[0].iou: expected a number ≤"),
    ],
)
def test_settings_belong_to_their_role(model, message):
    d = _base()
    d["models"] = [{"name": "m", **model}]
    with pytest.raises(HxschedError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pipeline_from_dict(d, "p.yaml")


def test_role_defaults_and_enums():
    d = _base()
    d["models"].append({"name": "d", "role": "detect", "zoo": "yolov8n", "conf": 0.5})
    synth, det = pipeline_from_dict(d, "p.yaml").models
    assert synth.role is Role.SYNTH and det.role is Role.DETECT
    assert (synth.window, synth.size, synth.channels, synth.conf) == (Window.BRAIN, 256, 3, None)
    assert (det.window, det.size, det.conf, det.iou, det.max_det) == (
        Window.STROKE,
        640,
        0.5,
        0.45,
        100,
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"kind": "folder", "port": 104}, "sources[0].port: not a setting of a folder source"),
        ({"kind": "scp", "path": "in"}, "sources[0].path: not a setting of a scp source"),
        ({"kind": "phantom", "count": -1}, "sources[0].count: expected a number ≥ 0"),
        ({"kind": "phantom", "cnt": 3}, "sources[0].cnt: unknown key"),
    ],
)
def test_source_settings_belong_to_their_kind(source, message):
    d = _base()
    d["sources"] = [source]
    with pytest.raises(HxschedError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pipeline_from_dict(d, "p.yaml")


def test_source_defaults():
    d = _base()
    d["sources"] = [{"kind": "scp"}, {"kind": "phantom"}, {"kind": "folder"}]
    scp, phantom, folder = pipeline_from_dict(d).sources
    assert (scp.kind, scp.port, scp.ae_title) == (SourceKind.SCP, 11112, "HXSCHED")
    assert (phantom.count, phantom.interval_ms) == (100, 0.0)
    assert folder.path is None


def test_unknown_device_is_refused():
    d = _base()
    d["device"] = "orin-agxx"
    with pytest.raises(HxschedError, match=r"^p.yaml: device: expected a known device"):
        pipeline_from_dict(d, "p.yaml")


def test_records_are_frozen_and_typed():
    p = load_pipeline(PIPELINES / "ct2mri_stroke.yaml")
    assert isinstance(p.models, tuple) and isinstance(p.sources, tuple)
    assert p.backend is Backend.ORT and p.objective is Objective.THROUGHPUT
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.models[0].conf = 0.9  # type: ignore[misc]


def test_host_workers_and_preview_rate_defaults():
    p = pipeline_from_dict(_base())
    assert p.workers is None and p.sinks.preview_every_s == 1.0
    d = _base()
    d["workers"], d["sinks"] = 0, {"preview_every_s": 0}
    p = pipeline_from_dict(d)
    assert p.workers == 0 and p.sinks.preview_every_s == 0.0
