"""Baselines on the shipped profiles."""

from __future__ import annotations

import pytest

from hxsched.scheduler.planning.baselines import all_baselines, trt_default
from hxsched.scheduler.planning.problem import Instance, build_problem
from hxsched.scheduler.profile.schema import load_profile
from hxsched.scheduler.profile.store import shipped_dir


def test_baselines_for_pix2pix_and_yolo():
    p1 = load_profile(shipped_dir() / "orin-agx" / "pix2pix_unet256.yaml")
    p2 = load_profile(shipped_dir() / "orin-agx" / "yolov8n.yaml")
    p = build_problem([Instance("p#0", "p", p1), Instance("y#0", "y", p2)], ("gpu", "dla0", "dla1"))
    bases = {b.name: b for b in all_baselines(p)}
    assert set(bases) == {"gpu-only", "naive", "trt-default"}
    gpu = bases["gpu-only"].evaluation
    assert gpu.busy["dla0"] == gpu.busy["dla1"] == 0
    # neither model can run whole on the DLA: the naive assignment is the GPU-only plan
    assert bases["naive"].evaluation.period == gpu.period
    trt = bases["trt-default"]
    # the original Pix2Pix alternates GPU/DLA at every ConvTranspose: 9 DLA loadables
    assert sum(c.loadables("dla0") for c in trt.selection[:1]) == 9
    assert trt.evaluation.busy["dla1"] == 0


def test_trt_default_respects_the_loadable_limit():
    p1 = load_profile(shipped_dir() / "orin-agx" / "pix2pix_unet256.yaml")
    insts = [Instance(f"p#{i}", "p", p1) for i in range(3)]
    p = build_problem(insts, ("gpu", "dla0", "dla1"), max_loadables=16)
    trt = trt_default(p)
    assert sum(c.loadables("dla0") for c in trt.selection) == 16


def _trt_segments(profile_name):
    from hxsched.scheduler.types import Accelerator

    prof = load_profile(shipped_dir() / "orin-agx" / f"{profile_name}.yaml")
    prob = build_problem([Instance("m#0", "m", prof)], ("gpu", "dla0", "dla1"))
    cfg = trt_default(prob).selection[0]
    spans = [
        (s.accelerator, prof.groups[s.first].first, prof.groups[s.last].last) for s in cfg.segments
    ]
    dla = sorted((a, b) for acc, a, b in spans if acc == Accelerator.DLA0)
    gpu = sorted((a, b) for acc, a, b in spans if acc == Accelerator.GPU)
    return dla, gpu


@pytest.fixture(scope="module")
def zoo_graphs(pix2pix_graph, yolov8n_graph, tmp_path_factory):
    import onnx

    from hxsched.scheduler.dla.rewrite import rewrite_for_dla
    from hxsched.scheduler.graph.onnx_io import load_model
    from hxsched.scheduler.zoo import build_zoo_model

    dla = pix2pix_graph.copy()
    rewrite_for_dla(dla)
    path = tmp_path_factory.mktemp("zoo8s") / "yolov8s.onnx"
    onnx.save_model(build_zoo_model("yolov8s", calibrate_weights=False), str(path))
    return {
        "pix2pix_unet256": pix2pix_graph,
        "pix2pix_unet256_dla": dla,
        "yolov8n": yolov8n_graph,
        "yolov8s": load_model(path),
    }


@pytest.mark.parametrize("name", ["pix2pix_unet256", "pix2pix_unet256_dla", "yolov8n", "yolov8s"])
def test_trt_default_is_the_placement_check_reports(zoo_graphs, name):
    """Same DLA loadables and GPU islands (first and last node of each) as ``hxsched check``."""
    from hxsched.scheduler.dla.check import check_graph

    placement = check_graph(zoo_graphs[name]).placement
    dla, gpu = _trt_segments(name)
    assert dla == sorted((i.first, i.last) for i in placement.dla_loadables)
    assert gpu == sorted((i.first, i.last) for i in placement.gpu_islands)


def test_trt_default_runs_each_engine_one_frame_after_another():
    """One engine per model: alone, its period and latency are its chain (segments in turn)."""
    prof = load_profile(shipped_dir() / "orin-agx" / "pix2pix_unet256.yaml")
    for objective in ("throughput", "latency"):
        prob = build_problem(
            [Instance("p#0", "p", prof)], ("gpu", "dla0", "dla1"), objective=objective
        )
        trt = trt_default(prob)
        chain = sum(
            s.busy_at(trt.evaluation.levels.get(s.accelerator, 0))
            for s in trt.selection[0].segments
        )
        assert trt.evaluation.period == trt.evaluation.latency == chain


def _figures(problem):
    return {
        b.name: (b.evaluation.period, b.evaluation.latency, dict(b.evaluation.busy))
        for b in all_baselines(problem)
    }


@pytest.mark.parametrize("objective", ["throughput", "latency"])
@pytest.mark.parametrize(
    "pair",
    [
        ("pix2pix_unet256_dla", "yolov8n"),
        ("pix2pix_unet256", "yolov8n"),
        ("yolov8s", "pix2pix_unet256"),
    ],
)
def test_model_order_changes_no_baseline_figure(pair, objective):
    insts = [
        Instance(f"{n}#0", n, load_profile(shipped_dir() / "orin-agx" / f"{n}.yaml")) for n in pair
    ]
    accs = ("gpu", "dla0", "dla1")
    one = build_problem(insts, accs, objective=objective)
    two = build_problem(insts[::-1], accs, objective=objective)
    assert _figures(one) == _figures(two)


def test_model_order_changes_no_figure_of_the_plan():
    from hxsched.scheduler.planning.planner import ModelInput, make_plan

    def figures(names):
        plan = make_plan(
            [
                ModelInput(n, load_profile(shipped_dir() / "orin-agx" / f"{n}.yaml"), "shipped")
                for n in names
            ],
            "orin-agx",
            time_limit_s=30,
        ).plan
        return plan.predicted.period_ms, plan.predicted.latency_ms, plan.baselines

    names = ["pix2pix_unet256", "yolov8n"]
    assert figures(names) == figures(names[::-1])
