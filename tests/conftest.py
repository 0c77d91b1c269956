"""Shared fixtures: zoo models built once per session, small ONNX builders, capability skips."""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from pathlib import Path

import pytest

from hxsched.capabilities import detect

sys.path.insert(0, str(Path(__file__).parent))

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(config, items):
    caps = detect()
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA (none detected)")
    skip_jetson = pytest.mark.skip(reason="needs a Jetson with TensorRT and DLA (not one)")
    for item in items:
        if "gpu" in item.keywords and not caps.has_cuda_gpu:
            item.add_marker(skip_gpu)
        if "jetson" in item.keywords and not (caps.is_jetson and caps.trt_available):
            item.add_marker(skip_jetson)


_THIRD_PARTY = ("pydicom", "pynetdicom", "PIL")


@pytest.fixture(autouse=True)
def _restore_process_logging():
    """``hxsched serve`` run in-process sets process-wide logging (root handler, lastResort,
    excepthooks, warnings, the workers' level variable) as a one-shot process should; put it
    back after each test so one test's service does not format the next test's output."""
    root = logging.getLogger()
    names = ("hxsched", *_THIRD_PARTY)
    saved = (
        root.handlers[:],
        root.level,
        {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names},
        {n: logging.getLogger(n).propagate for n in names},
        logging.lastResort,
        sys.excepthook,
        threading.excepthook,
        warnings.showwarning,
        os.environ.get("HXSCHED_LOG_LEVEL"),
    )
    yield
    handlers, level, per_logger, propagate, last, hook, thook, show, env = saved
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, (h, lvl) in per_logger.items():
        logging.getLogger(n).handlers[:] = h
        logging.getLogger(n).setLevel(lvl)
        logging.getLogger(n).propagate = propagate[n]
    logging.lastResort = last
    sys.excepthook, threading.excepthook, warnings.showwarning = hook, thook, show
    if env is None:
        os.environ.pop("HXSCHED_LOG_LEVEL", None)
    else:
        os.environ["HXSCHED_LOG_LEVEL"] = env


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo")


def _zoo_file(zoo_dir: Path, name: str) -> Path:
    import onnx

    from hxsched.scheduler.zoo import build_zoo_model

    path = zoo_dir / f"{name}.onnx"
    if not path.exists():
        onnx.save_model(build_zoo_model(name, seed=0), str(path))
    return path


@pytest.fixture(scope="session")
def pix2pix_path(zoo_dir) -> Path:
    return _zoo_file(zoo_dir, "pix2pix_unet256")


@pytest.fixture(scope="session")
def yolov8n_path(zoo_dir) -> Path:
    return _zoo_file(zoo_dir, "yolov8n")


@pytest.fixture(scope="session")
def pix2pix_graph(pix2pix_path):
    """The zoo's Pix2Pix as a Graph (tests that mutate it must .copy() first)."""
    from hxsched.scheduler.graph.onnx_io import load_model

    return load_model(pix2pix_path)


@pytest.fixture(scope="session")
def yolov8n_graph(yolov8n_path):
    from hxsched.scheduler.graph.onnx_io import load_model

    return load_model(yolov8n_path)


@pytest.fixture(scope="session")
def small_plan():
    """A plan for the shipped Pix2Pix (rewritten) + YOLOv8n profiles."""
    from hxsched.scheduler.planning.planner import ModelInput, make_plan
    from hxsched.scheduler.profile.schema import load_profile
    from hxsched.scheduler.profile.store import shipped_dir

    models = [
        ModelInput(n, load_profile(shipped_dir() / "orin-agx" / f"{n}.yaml"), "shipped")
        for n in ("pix2pix_unet256_dla", "yolov8n")
    ]
    return make_plan(models, "orin-agx").plan


@pytest.fixture(scope="session")
def pix2pix_dla_path(zoo_dir, pix2pix_graph) -> Path:
    """The zoo's Pix2Pix after the exact DLA rewrite, saved."""
    from hxsched.scheduler.dla.rewrite import rewrite_for_dla
    from hxsched.scheduler.graph.onnx_io import save_model

    path = zoo_dir / "pix2pix_unet256_dla.onnx"
    if not path.exists():
        g = pix2pix_graph.copy()
        rewrite_for_dla(g)
        save_model(g, path)
    return path


def _plan_files(out: Path, paths, count: int = 1):
    from hxsched.scheduler.graph.onnx_io import load_model
    from hxsched.scheduler.graph.structure import structural_hash
    from hxsched.scheduler.planning.plan import save_plan
    from hxsched.scheduler.planning.planner import ModelInput, make_plan
    from hxsched.scheduler.profile.store import find_profile

    inputs = []
    for p in paths:
        g = load_model(p)
        inputs.append(
            ModelInput(
                p.stem, find_profile("orin-agx", structural_hash(g)), "shipped", g, str(p), count
            )
        )
    plan = make_plan(inputs, "orin-agx").plan
    save_plan(plan, out)
    return plan.with_path(out)


@pytest.fixture(scope="session")
def gan_yolo_plan(tmp_path_factory, pix2pix_dla_path, yolov8n_path):
    """A plan (with model paths) for the rewritten Pix2Pix + YOLOv8n on orin-agx."""
    return _plan_files(
        tmp_path_factory.mktemp("plans") / "gan_yolo.yaml", [pix2pix_dla_path, yolov8n_path]
    )


@pytest.fixture(scope="session")
def dual_gan_plan(tmp_path_factory, pix2pix_path):
    """Two instances of the original Pix2Pix."""
    return _plan_files(tmp_path_factory.mktemp("plans") / "dual.yaml", [pix2pix_path], count=2)
