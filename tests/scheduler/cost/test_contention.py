"""The piecewise contention model and its fit."""

from __future__ import annotations

import pytest

from hxsched.errors import HxschedError
from hxsched.scheduler.cost.contention import (
    DEFAULT_CONTENTION,
    ContentionModel,
    CoRun,
    fit_contention,
)


def test_piecewise_shape():
    m = ContentionModel(200.0, 0.5, 2.0)
    assert m.slowdown(50e9, 0) == 1.0  # alone
    assert m.slowdown(40e9, 50e9) == 1.0  # below the knee
    mid = m.slowdown(100e9, 50e9)
    sat = m.slowdown(100e9, 150e9)
    assert 1.0 < mid < sat <= 2.0
    assert m.slowdown(10e9, 150e9) < sat  # a compute-bound group suffers less


def test_fit_recovers_parameters():
    truth = ContentionModel(204.8, 0.4, 1.8)
    samples = [
        CoRun(o * 1e9, x * 1e9, truth.slowdown(o * 1e9, x * 1e9))
        for o in (20, 60, 100, 140)
        for x in (10, 50, 90, 130)
    ]
    model, rmse = fit_contention(samples, 204.8)
    assert rmse < 0.01
    assert model.knee == pytest.approx(0.4, abs=0.02) and model.max_slowdown == pytest.approx(
        1.8, abs=0.04
    )


def test_defaults_reproduce_published_co_runs_roughly():
    m = DEFAULT_CONTENTION["orin-agx"]
    # Published: a heavy GPU conv beside two busy DLAs slowed 1.77x; DLA models beside GPU work
    # 1.17-1.28x. Assumed demands: 150 GB/s for the GPU conv, 40 GB/s per DLA workload.
    gpu = m.slowdown(150e9, 100e9)
    dla = m.slowdown(40e9, 150e9)
    assert gpu == pytest.approx(1.77, abs=0.1)
    assert 1.1 < dla < 1.35


def test_validation():
    with pytest.raises(HxschedError):
        ContentionModel.from_dict({"peak_gbs": 100, "knee": 1.5, "max_slowdown": 2})
    with pytest.raises(HxschedError):
        fit_contention([], 100.0)


def test_validation_messages_name_the_key():
    with pytest.raises(HxschedError) as err:
        ContentionModel.from_dict({"peak_gbs": 100, "knee": 1.5, "max_slowdown": 2}, "c.yaml")
    assert str(err.value) == "c.yaml: contention.knee: expected a fraction in (0, 1), got 1.5"
    with pytest.raises(HxschedError) as err:
        ContentionModel.from_dict({"peak_gbs": 100, "knee": 0.5, "max_slowdown": 0.5})
    assert str(err.value) == "contention.max_slowdown: expected a number ≥ 1, got 0.5"
    with pytest.raises(HxschedError) as err:
        ContentionModel.from_dict({"peak_gbs": 0, "knee": 0.5, "max_slowdown": 2})
    assert str(err.value) == "contention.peak_gbs: expected a number > 0, got 0.0"
    with pytest.raises(HxschedError) as err:
        ContentionModel.from_dict({"peak_gbs": 100, "knee": 0.5})
    assert str(err.value) == "contention.max_slowdown: missing (required)"
