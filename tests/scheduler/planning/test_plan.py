"""Plan files: round trip and validation."""

from __future__ import annotations

import copy

import pytest
import yaml

from hxsched.errors import HxschedError
from hxsched.scheduler.planning.plan import load_plan, plan_from_dict, save_plan


def test_round_trip(tmp_path, small_plan):
    path = save_plan(small_plan, tmp_path / "plan.yaml")
    again = load_plan(path)
    assert again.to_dict() == small_plan.to_dict()


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(schema="x"), "schema"),
        (lambda d: d.update(objective="energy"), "objective"),
        (lambda d: d["instances"][0]["segments"][0].update(accelerator="tpu"), "accelerator"),
        (lambda d: d["instances"][0]["segments"][0].update(groups=[1, 2]), "groups"),
        (lambda d: d["instances"][0].pop("segments"), "segments: missing"),
    ],
)
def test_validation(small_plan, change, message):
    doc = copy.deepcopy(small_plan.to_dict())
    change(doc)
    with pytest.raises(HxschedError, match=message):
        plan_from_dict(doc, "p.yaml")


def test_not_yaml(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(["a"]))
    with pytest.raises(HxschedError, match="not a plan"):
        load_plan(bad)
