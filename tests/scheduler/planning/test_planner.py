"""From profiles to plans: the Done-when workloads, mismatches, the HaX-CoNN instance."""

from __future__ import annotations

import pytest

from hxsched.errors import HxschedError
from hxsched.scheduler.planning.planner import ModelInput, check_profile_matches, make_plan
from hxsched.scheduler.profile.schema import load_profile
from hxsched.scheduler.profile.store import shipped_dir


def shipped(name, device="orin-agx"):
    return load_profile(shipped_dir() / device / f"{name}.yaml")


@pytest.mark.parametrize(
    "models",
    [
        [("pix2pix_unet256_dla", 1), ("yolov8n", 1)],
        [("pix2pix_unet256_dla", 2)],
        [("pix2pix_unet256", 2)],
    ],
)
@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_paper_workloads_are_solved_to_proven_optimality(models, objective):
    inputs = [ModelInput(n, shipped(n), "shipped", count=c) for n, c in models]
    result = make_plan(inputs, "orin-agx", objective=objective)
    plan = result.plan
    s = plan.solver
    assert s.optimal and s.proof in ("unsat", "lp-bound", "contention-lp") and s.proof_detail
    if objective == "throughput":
        # the work the proof took, not this machine's speed (benchmarks/bench_plan.py times it):
        # today 7-12 SAT calls over a few thousand variables and < 30k clauses
        assert 0 < len(s.sat_calls) <= 16 and s.clauses < 60_000
    assert plan.predicted.period_ms >= s.lp_bound_ms
    best = min(b.period_ms for b in plan.baselines.values())
    assert plan.predicted.period_ms <= best + 1e-9
    # the prediction is the simulator's figure for this plan
    from hxsched.scheduler.planning.simulate import evaluate

    r = result.solve
    ev = evaluate(
        result.problem, r.selection, r.evaluation.edges if objective == "latency" else None
    )
    assert ev.period * plan.resolution_ms == pytest.approx(plan.predicted.period_ms)
    for inst in plan.instances:
        assert len(inst.segments) <= 2
        assert inst.segments[0].first_group == 0


def test_haxconn_googlenet_alexnet_instance():
    g = load_profile(shipped_dir() / "published" / "haxconn_googlenet_xavier.yaml")
    a = load_profile(shipped_dir() / "published" / "haxconn_alexnet_xavier.yaml")
    plan = make_plan(
        [ModelInput("googlenet", g, "given"), ModelInput("alexnet", a, "given")],
        "xavier-agx",
        objective="latency",
        accelerators=("gpu", "dla0"),
    ).plan
    assert plan.solver.optimal
    # our model: 2.42 ms, below the GPU-only 3.51 ms (sum of both on the GPU)
    assert plan.predicted.period_ms == pytest.approx(2.42)
    assert plan.baselines["gpu-only"].period_ms == pytest.approx(3.51)
    assert any("no hand-over costs" in w for w in plan.warnings)


def test_profile_for_another_device_or_model_is_refused(yolov8n_graph, pix2pix_graph):
    with pytest.raises(HxschedError, match="not orin-agx"):
        make_plan([ModelInput("y", shipped("yolov8n", "xavier-agx"), "given")], "orin-agx")
    with pytest.raises(HxschedError, match="another architecture"):
        check_profile_matches(pix2pix_graph, shipped("yolov8n"), "y.yaml")
    check_profile_matches(yolov8n_graph, shipped("yolov8n"), "y.yaml")


def test_pins_and_infeasibility():
    y = shipped("yolov8n")
    with pytest.raises(HxschedError, match="no way to place"):
        make_plan([ModelInput("yolov8n", y, "shipped")], "orin-agx", pins={"yolov8n#0": "dla0"})
    with pytest.raises(HxschedError, match="not an instance"):
        make_plan([ModelInput("yolov8n", y, "shipped")], "orin-agx", pins={"nope#0": "gpu"})
    p = shipped("pix2pix_unet256_dla")
    with pytest.raises(HxschedError, match="no plan satisfies"):
        make_plan(
            [ModelInput("p", p, "shipped", count=3)],
            "orin-agx",
            max_loadables=0,
            pins={"p#0": "dla0"},
        )


def test_device_without_dla_degenerates():
    from hxsched.scheduler.cost.estimate import estimate_profile
    from hxsched.scheduler.graph.onnx_io import graph_from_proto
    from hxsched.scheduler.zoo import build_zoo_model

    prof = estimate_profile(
        graph_from_proto(build_zoo_model("yolov8n", calibrate_weights=False)), "orin-nano"
    )
    plan = make_plan([ModelInput("y", prof, "estimated", count=2)], "orin-nano").plan
    assert plan.accelerators == ("gpu",)
    assert plan.solver.optimal
    assert all(s.accelerator == "gpu" for i in plan.instances for s in i.segments)


def test_result_is_typed_and_its_json_takes_the_plans_figures():
    import json

    from hxsched.scheduler.planning.baselines import BaselineRun
    from hxsched.scheduler.planning.plan import Baseline, SatCall, SolverReport

    y = shipped("yolov8n")
    result = make_plan([ModelInput("yolov8n", y, "shipped", count=2)], "orin-agx")
    plan = result.plan
    assert isinstance(result.report, SolverReport) and result.report is plan.solver
    assert all(isinstance(c, SatCall) for c in result.report.sat_calls)
    assert all(isinstance(b, Baseline) for b in plan.baselines.values())
    assert all(isinstance(b, BaselineRun) for b in result.baselines)
    assert result.best_baseline.name == result.report.best_baseline
    assert result.warnings == plan.warnings
    data = json.loads(json.dumps(result.to_json("p.yaml")))
    assert data["output"] == "p.yaml" and data["chart"] is None
    assert data["period_ms"] == plan.predicted.period_ms and data["fps"] == plan.predicted.fps
    assert data["lower_bound_ms"] == result.report.lower_bound_ms
    assert data["problem_size"]["sat_calls"] == len(result.report.sat_calls)
    assert data["baselines"]["gpu-only"]["period_ms"] == plan.baselines["gpu-only"].period_ms
    assert [i["name"] for i in data["instances"]] == ["yolov8n#0", "yolov8n#1"]
    assert data["descriptions"] == [i.describe() for i in plan.instances]
    timeline = result.baseline_timeline(result.best_baseline)
    assert {t.instance for t in timeline} == {"yolov8n#0", "yolov8n#1"}


def test_progress_goes_to_the_log(caplog):
    import logging

    y = shipped("yolov8n")
    with caplog.at_level(logging.INFO, logger="hxsched"):
        make_plan([ModelInput("yolov8n", y, "shipped")], "orin-agx")
    assert any("LP bound" in r.getMessage() for r in caplog.records)
