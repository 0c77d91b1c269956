"""The strict TensorRT/pycuda fake for one recorded version (``fake_trt``, parametrised over the
versions the code supports) and small models with plans that use the GPU and a DLA."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeStack, install
from fakes.models import SUPPORTED_RECORDED, tiny_graph


@pytest.fixture(params=SUPPORTED_RECORDED)
def fake_trt(request, monkeypatch, tmp_path) -> FakeStack:
    """``tensorrt`` and ``pycuda`` in ``sys.modules`` replaced by the fake of one version."""
    from hxsched import capabilities

    monkeypatch.setenv("HXSCHED_CACHE_DIR", str(tmp_path / "cache"))
    stack = install(monkeypatch, request.param)
    yield stack
    capabilities.detect.cache_clear()


def _save_plan(out: Path, g, name: str) -> Path:
    from hxsched.scheduler.cost.estimate import estimate_profile
    from hxsched.scheduler.graph.onnx_io import load_model, save_model
    from hxsched.scheduler.planning.plan import save_plan
    from hxsched.scheduler.planning.planner import ModelInput, make_plan

    model = out / f"{name}.onnx"
    save_model(g, model)
    g = load_model(model)
    prof = estimate_profile(g, "orin-agx", model_name=name)
    plan = make_plan(
        [ModelInput(name, prof, "estimated on the fly", g, str(model))],
        "orin-agx",
        time_limit_s=10,
    ).plan
    return Path(save_plan(plan, out / f"{name}.plan.yaml"))


@pytest.fixture(scope="session")
def tiny_plan(tmp_path_factory) -> Path:
    """A plan for the tiny model: a dla0 segment (3 FP16 channels, kCHW16) then a GPU one."""
    return _save_plan(tmp_path_factory.mktemp("tiny"), tiny_graph(), "tiny")


@pytest.fixture(scope="session")
def deep_model(tmp_path_factory) -> Path:
    """A model with 20 DLA-capable groups (profile builds more DLA engines than a core holds)."""
    from hxsched.scheduler.graph.onnx_io import save_model

    path = tmp_path_factory.mktemp("deep") / "deep.onnx"
    save_model(tiny_graph(depth=20, size=8), path)
    return path
