"""Baselines on the shipped profiles."""

from __future__ import annotations

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
