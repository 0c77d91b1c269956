"""Profile schema: round trip and validation errors that name the file, key and expectation."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import yaml

from hxsched.errors import HxschedError, SchemaError
from hxsched.scheduler.cost.contention import ContentionModel
from hxsched.scheduler.profile.schema import (
    SCHEMA,
    GroupProfile,
    header_text,
    load_profile,
    profile_from_dict,
    read_header,
    save_profile,
)
from hxsched.scheduler.types import AcceleratorKind, Precision, ProvenanceKind

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
        (
            lambda d: d.update(schema="hxsched.profile/9"),
            "schema: expected one of hxsched.profile/1, got 'hxsched.profile/9'",
        ),
        (
            lambda d: d.update(colour="red"),
            "colour: unknown key; expected one of: schema, device, precision, model, provenance, "
            "groups, transitions, whole_model_ms, contention, notes",
        ),
        (
            lambda d: d["groups"][0].update(time_ms={"gpu": -0.1}),
            "groups[0].time_ms.gpu: expected a number ≥ 0, got -0.1",
        ),
        (
            lambda d: d["groups"][0].update(time_ms={"tpu": 1.0}),
            "groups[0].time_ms: expected one of gpu, dla, cpu, got 'tpu'",
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
        (lambda d: d.pop("precision"), "precision: missing (required)"),
        (
            lambda d: d.update(contention={"peak_gbs": 100, "knee": 2, "max_slowdown": 1.5}),
            "contention.knee",
        ),
        (lambda d: d["model"].update(folded=[0]), "model.folded: expected node indices from 1"),
        (lambda d: d["model"].update(folded=[3, 4]), "none right after another, got 4"),
        (lambda d: d["model"].update(nodes=5, folded=[5]), "from 1 below 5, none right after"),
    ],
)
def test_validation_errors(change, message):
    with pytest.raises(HxschedError) as err:
        profile_from_dict(mutate(change), "bad.yaml")
    assert str(err.value).startswith("bad.yaml: ")
    assert message in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(HxschedError, match=r"none\.yaml: profile not found$"):
        load_profile(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [1, 2\n")
    with pytest.raises(
        HxschedError, match=r"bad\.yaml: not readable YAML: while parsing .*, line 1, column 9"
    ):
        load_profile(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(HAND_WRITTEN))
    assert load_profile(ok).model.name == "googlenet"


def test_records_are_typed():
    prof = profile_from_dict(copy.deepcopy(HAND_WRITTEN), "googlenet.yaml")
    assert prof.precision is Precision.FP16
    assert prof.provenance["artifact"].kind is ProvenanceKind.PUBLISHED
    assert all(isinstance(k, AcceleratorKind) for g in prof.groups for k in g.time_ms)
    assert prof.contention is None
    doc = mutate(lambda d: d.update(contention={"peak_gbs": 100, "knee": 0.5, "max_slowdown": 2}))
    assert profile_from_dict(doc, "c.yaml").contention == ContentionModel(100.0, 0.5, 2.0)


def test_profiles_built_in_code_are_checked_too():
    prof = profile_from_dict(copy.deepcopy(HAND_WRITTEN), "googlenet.yaml")
    with pytest.raises(SchemaError) as err:
        replace(prof, default_source="nowhere")
    assert str(err.value) == (
        "provenance.default: expected one of the source ids (artifact), got 'nowhere'"
    )
    with pytest.raises(SchemaError) as err:
        GroupProfile(id=0, time_ms={"gpu": float("inf")})
    assert str(err.value) == "time_ms.gpu: expected a number, got inf"


def test_transitions_each_cut_once_and_sorted():
    doc = mutate(
        lambda d: d.update(
            transitions=[
                {"after": 1, "gpu_to_dla_ms": 0.1, "dla_to_gpu_ms": 0.1},
                {"after": 0, "gpu_to_dla_ms": 0.2, "dla_to_gpu_ms": 0.2},
            ]
        )
    )
    assert [t.after for t in profile_from_dict(doc, "t.yaml").transitions] == [0, 1]
    doc["transitions"][1]["after"] = 1
    with pytest.raises(SchemaError) as err:
        profile_from_dict(doc, "t.yaml")
    assert str(err.value) == "t.yaml: transitions[1].after: expected each cut once, got 1 again"


def test_header_is_read_without_the_groups(tmp_path):
    path = save_profile(
        profile_from_dict(copy.deepcopy(HAND_WRITTEN), "g.yaml"), tmp_path / "g.yaml"
    )
    head = header_text(path.read_text())
    assert head is not None and "groups" not in head and "time_ms" not in head
    got = read_header(path)
    assert (got.device, got.precision, got.model.name) == ("xavier-agx", "fp16", "googlenet")
    flow = tmp_path / "flow.yaml"
    flow.write_text("{schema: hxsched.profile/1}\n")
    assert read_header(flow) is None


def test_every_shipped_profile_header_agrees_with_the_whole_file():
    from hxsched.scheduler.profile.store import shipped_dir

    for path in sorted(shipped_dir().rglob("*.yaml")):
        whole, head = load_profile(path), read_header(path)
        assert head is not None, path
        assert (head.device, head.precision, head.model) == (
            whole.device,
            whole.precision,
            whole.model,
        )
