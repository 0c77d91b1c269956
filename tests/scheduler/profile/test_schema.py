"""Profile schema: round trip and validation errors that name the file, key and expectation."""

from __future__ import annotations

import copy

import pytest
import yaml

from hxsched.errors import HxschedError
from hxsched.scheduler.profile.schema import SCHEMA, load_profile, profile_from_dict, save_profile

HAND_WRITTEN = {
    "schema": SCHEMA,
    "device": "xavier-agx",
    "precision": "fp16",
    "model": {"name": "googlenet"},
    "provenance": {
        "default": "artifact",
        "sources": {"artifact": {"kind": "published", "tool": "HaX-CoNN z3_solver_multi_dnn.py"}},
    },
    "groups": [
        {"id": 0, "time_ms": {"gpu": 0.35, "dla": 0.75}},
        {"id": 1, "time_ms": {"gpu": 0.15, "dla": 0.34}},
        {"id": 2, "dla": False, "time_ms": {"gpu": 0.2}},
    ],
    "transitions": [{"after": 0, "gpu_to_dla_ms": 0.05, "dla_to_gpu_ms": 0.05}],
}


def test_round_trip(tmp_path, pix2pix_graph):
    from hxsched.scheduler.cost.estimate import estimate_profile

    prof = estimate_profile(pix2pix_graph, "orin-agx", model_name="p2p")
    path = save_profile(prof, tmp_path / "p.yaml")
    again = load_profile(path)
    assert again.to_dict() == prof.to_dict()
    assert path.read_text().startswith("# hxsched profile: p2p on orin-agx (fp16)")


def test_group_level_form_without_onnx():
    prof = profile_from_dict(copy.deepcopy(HAND_WRITTEN), "googlenet.yaml")
    assert [g.label for g in prof.groups] == ["g00", "g01", "g02"]
    assert prof.group_total_ms("gpu") == pytest.approx(0.7)
    assert prof.group_total_ms("dla") is None
    assert prof.kinds_of_numbers() == {"published": 5}


def mutate(fn):
    doc = copy.deepcopy(HAND_WRITTEN)
    fn(doc)
    return doc


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(schema="hxsched.profile/9"), "schema: expected hxsched.profile/1"),
        (lambda d: d.update(colour="red"), "profile.colour: unknown key"),
        (
            lambda d: d["groups"][0].update(time_ms={"gpu": -0.1}),
            "groups[0].time_ms.gpu: expected a number >= 0",
        ),
        (
            lambda d: d["groups"][0].update(time_ms={"tpu": 1.0}),
            "groups[0].time_ms.tpu: expected one of gpu, dla, cpu",
        ),
        (lambda d: d.update(device="jetson-thor"), "device: expected one of"),
        (
            lambda d: d["groups"][2]["time_ms"].update(dla=0.4),
            "cannot run on the DLA (dla: false) but has a DLA time",
        ),
        (lambda d: d["groups"][1].update(id=5), "groups[1].id: expected 1"),
        (
            lambda d: d["groups"][0].update(time_ms={"dla": 0.2}),
            "groups[0].time_ms.gpu: expected a GPU time",
        ),
        (lambda d: d.update(groups=[]), "groups: expected a non-empty list"),
        (
            lambda d: d["provenance"].update(default="nope"),
            "provenance.default: expected one of the source ids",
        ),
        (
            lambda d: d["provenance"]["sources"]["artifact"].update(kind="guessed"),
            "kind: expected one of measured",
        ),
        (
            lambda d: d["transitions"][0].update(after=2),
            "transitions[0].after: expected a group id below 2",
        ),
        (
            lambda d: d["transitions"][0].update(gpu_to_dla_ms="fast"),
            "transitions[0].gpu_to_dla_ms: expected a number",
        ),
        (
            lambda d: d["groups"][0].update(sources={"time_ms.gpu": "elsewhere"}),
            "groups[0].sources.time_ms.gpu",
        ),
        (lambda d: d.update(device="orin-nano"), "device orin-nano has no DLA"),
        (lambda d: d.pop("precision"), "profile.precision: missing"),
        (
            lambda d: d.update(contention={"peak_gbs": 100, "knee": 2, "max_slowdown": 1.5}),
            "contention.knee",
        ),
    ],
)
def test_validation_errors(change, message):
    with pytest.raises(HxschedError) as err:
        profile_from_dict(mutate(change), "bad.yaml")
    assert str(err.value).startswith("bad.yaml: ")
    assert message in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(HxschedError, match="no such file"):
        load_profile(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [1, 2\n")
    with pytest.raises(HxschedError, match="not valid YAML at line"):
        load_profile(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(HAND_WRITTEN))
    assert load_profile(ok).model.name == "googlenet"
