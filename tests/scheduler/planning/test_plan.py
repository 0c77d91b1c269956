"""Plan files: round trip, the typed records, and one-line errors for broken files."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from hxsched.cli import main
from hxsched.errors import HxschedError, SchemaError
from hxsched.scheduler.planning.plan import (
    SCHEMA,
    Plan,
    PlanSegment,
    Predicted,
    TimelineEntry,
    load_plan,
    plan_from_dict,
    save_plan,
)
from hxsched.scheduler.types import Accelerator, Objective

TOP_KEYS = [
    "schema",
    "objective",
    "device",
    "accelerators",
    "resolution_ms",
    "max_switches",
    "contention",
    "predicted",
    "solver",
    "baselines",
    "instances",
    "timeline",
    "edges",
    "warnings",
]


def test_round_trip(tmp_path, small_plan):
    path = save_plan(small_plan, tmp_path / "plan.yaml")
    again = load_plan(path)
    assert again.to_dict() == small_plan.to_dict()
    assert again == small_plan and again.path == str(path)


def test_records_are_typed_and_the_file_keeps_its_keys(tmp_path, small_plan):
    assert isinstance(small_plan.objective, Objective)
    assert all(isinstance(a, Accelerator) for a in small_plan.accelerators)
    assert isinstance(small_plan.predicted, Predicted) and small_plan.predicted.period_ms > 0
    assert small_plan.solver is not None and small_plan.solver.optimal
    assert all(isinstance(t, TimelineEntry) for t in small_plan.timeline)
    seg = small_plan.instances[0].segments[0]
    assert isinstance(seg, PlanSegment) and seg.stream == seg.accelerator
    assert small_plan.instances[0].profile.how == "shipped"
    path = save_plan(small_plan.with_path("elsewhere.yaml"), tmp_path / "plan.yaml")
    text = path.read_text()
    assert text.startswith("# hxsched plan (throughput) for orin-agx")
    doc = yaml.safe_load(text)
    assert list(doc) == TOP_KEYS and doc["schema"] == SCHEMA
    assert "path" not in doc
    assert list(doc["instances"][0]["segments"][0]) == [
        "groups",
        "first_node",
        "last_node",
        "accelerator",
        "stream",
        "ms",
        "busy_ms",
        "transition_ms",
    ]
    assert doc["predicted"]["source"].startswith("hxsched simulator")


def test_frozen(small_plan):
    with pytest.raises(AttributeError):
        small_plan.device = "xavier-agx"  # type: ignore[misc]


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(schema="x"), "schema"),
        (lambda d: d.pop("schema"), "schema: missing"),
        (lambda d: d.update(objective="energy"), "objective"),
        (lambda d: d["instances"][0]["segments"][0].update(accelerator="tpu"), "accelerator"),
        (lambda d: d["instances"][0]["segments"][0].update(groups=[1, 2]), "groups"),
        (lambda d: d["instances"][0].pop("segments"), "segments: missing"),
        (
            lambda d: d["instances"][0]["segments"][1].update(groups=[40, 50]),
            r"instances\[0\]\.segments\[1\]\.groups: expected \[first, last\] continuing at group",
        ),
        (
            lambda d: d.update(accelerators=["gpu"]),
            r"instances\[0\]\.segments\[0\]\.accelerator: expected one of the plan's accelerators",
        ),
        (
            lambda d: d["instances"][0]["segments"][0].update(stream="gpu"),
            r"segments\[0\]\.stream: expected gpu|segments\[0\]\.stream: expected dla",
        ),
        (lambda d: d["instances"][0].update(segments=[]), "at least one segment"),
        (
            lambda d: d["predicted"].update(period_ms=0),
            r"predicted\.period_ms: expected a number >",
        ),
        (lambda d: d["timeline"][0].update(segment=-1), r"timeline\[0\]\.segment"),
        (lambda d: d["contention"].update(knee=2), r"contention\.knee"),
    ],
)
def test_validation(small_plan, change, message):
    doc = copy.deepcopy(small_plan.to_dict())
    change(doc)
    with pytest.raises(SchemaError, match=message) as info:
        plan_from_dict(doc, "p.yaml")
    assert str(info.value).startswith("p.yaml: ") and "\n" not in str(info.value)


def _broken(tmp_path, small_plan, change):
    doc = copy.deepcopy(small_plan.to_dict())
    change(doc)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_wrong_typed_number_is_one_line_naming_file_and_key(tmp_path, small_plan):
    path = _broken(tmp_path, small_plan, lambda d: d["predicted"].update(period_ms="fast"))
    with pytest.raises(SchemaError) as info:
        load_plan(path)
    text = str(info.value)
    assert text == f"{path}: predicted.period_ms: expected a number, got 'fast'"
    assert info.value.key == "predicted.period_ms" and info.value.path == str(path)


def test_misspelled_key_is_named(tmp_path, small_plan):
    path = _broken(tmp_path, small_plan, lambda d: d.update(predictd=d.pop("predicted")))
    with pytest.raises(SchemaError, match=r"predictd: unknown key \(did you mean 'predicted'\?\)"):
        load_plan(path)
    seg = lambda d: d["instances"][1]["segments"][0]  # noqa: E731
    path = _broken(tmp_path, small_plan, lambda d: seg(d).update(acelerator=seg(d)["accelerator"]))
    with pytest.raises(SchemaError, match=r"instances\[1\]\.segments\[0\]\.acelerator: unknown"):
        load_plan(path)


def test_run_refuses_a_broken_plan_in_one_line(tmp_path, small_plan, capsys):
    path = _broken(tmp_path, small_plan, lambda d: d["predicted"].update(period_ms="fast"))
    assert main(["run", str(path), "--backend", "sim", "--frames", "10", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err and "predicted.period_ms" in err
    path = _broken(tmp_path, small_plan, lambda d: d.update(objectiv=d.pop("objective")))
    assert main(["run", str(path), "--backend", "sim", "--frames", "10", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "objectiv: unknown key" in err


def test_a_minimal_hand_written_plan_loads(tmp_path):
    path = tmp_path / "hand.yaml"
    path.write_text(
        "schema: hxsched.plan/1\nobjective: latency\ndevice: orin-agx\n"
        "accelerators: [gpu, dla0]\npredicted: {period_ms: 2.5}\n"
        "instances:\n- name: y#0\n  model: y\n  segments:\n"
        "  - {groups: [0, 3], accelerator: dla0}\n  - {groups: [4, 9], accelerator: gpu}\n"
    )
    plan = load_plan(path)
    assert plan.objective == Objective.LATENCY and plan.solver is None
    assert [s.accelerator for s in plan.instances[0].segments] == [
        Accelerator.DLA0,
        Accelerator.GPU,
    ]
    assert plan.instances[0].segments[1].last_group == 9


def test_not_yaml(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(["a"]))
    with pytest.raises(HxschedError, match="not a plan"):
        load_plan(bad)
    with pytest.raises(HxschedError, match="plan not found"):
        load_plan(tmp_path / "none.yaml")


def test_json_of_a_plan_is_plain_data(small_plan):
    json.dumps(small_plan.to_dict())
    assert isinstance(small_plan, Plan)
