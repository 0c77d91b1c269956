"""hxsched plan."""

from __future__ import annotations

import json

from hxsched.cli import main
from hxsched.scheduler.planning.plan import load_plan
from hxsched.scheduler.profile.store import shipped_dir

KEYS = {
    "objective",
    "period_ms",
    "fps",
    "latency_ms",
    "optimal",
    "gap",
    "solve_time_s",
    "lower_bound_ms",
    "baselines",
    "instances",
}


def test_plan_zoo_models_json(pix2pix_path, yolov8n_path, tmp_path, capsys):
    """The zoo's models find the shipped profiles by structural hash."""
    out = tmp_path / "plan.yaml"
    code = main(
        [
            "plan",
            str(pix2pix_path),
            str(yolov8n_path),
            "-o",
            str(out),
            "--json",
            "-q",
            "--chart",
            str(tmp_path / "g.svg"),
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= KEYS
    assert data["optimal"] and data["gap"] == 0.0
    assert set(data["baselines"]) == {"gpu-only", "naive", "trt-default"}
    assert [i["profile"] for i in data["instances"]] == ["shipped", "shipped"]
    seg = data["instances"][0]["segments"][0]
    assert {"first_node", "last_node", "accelerator", "ms"} <= set(seg)
    plan = load_plan(out)
    assert plan.objective == "throughput"
    assert data["output"] == str(out) and data["period_ms"] == plan.predicted.period_ms
    assert data["lower_bound_ms"] == plan.solver.lower_bound_ms
    assert (tmp_path / "g.svg").read_text().startswith("<svg")


def test_plan_readable_and_estimated_on_the_fly(data_dir, tmp_path, capsys):
    src = data_dir / "torch" / "torch_unet_tiny.onnx"
    assert main(["plan", "--instances", "2", str(src), "-o", str(tmp_path / "p.yaml")]) == 0
    captured = capsys.readouterr()
    assert "estimating one with the cost model" in captured.err
    assert "torch_unet_tiny#1" in captured.out and "proven optimal" in captured.out


def test_plan_group_level_profiles(tmp_path, capsys):
    pub = shipped_dir() / "published"
    assert (
        main(
            [
                "plan",
                "--profile",
                str(pub / "haxconn_googlenet_xavier.yaml"),
                "--profile",
                str(pub / "haxconn_alexnet_xavier.yaml"),
                "--device",
                "xavier-agx",
                "--accelerators",
                "gpu,dla0",
                "--objective",
                "latency",
                "--json",
                "-q",
                "-o",
                str(tmp_path / "h.yaml"),
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["period_ms"] == 2.42 and data["optimal"]


def test_bad_inputs(yolov8n_path, pix2pix_path, tmp_path, capsys):
    out = ["-o", str(tmp_path / "x.yaml")]
    assert main(["plan", str(tmp_path / "nope.onnx"), *out]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["plan", str(yolov8n_path), "--device", "pi5", *out]) == 1
    assert "unknown device" in capsys.readouterr().err
    yolo_prof = shipped_dir() / "orin-agx" / "yolov8n.yaml"
    assert main(["plan", str(pix2pix_path), "--profile", str(yolo_prof), *out]) == 1
    assert "another architecture" in capsys.readouterr().err
    assert main(["plan", str(yolov8n_path), "--pin", "yolov8n#0=dla0", *out]) == 1
    assert "no way to place" in capsys.readouterr().err
    assert main(["plan", *out]) == 1
    assert "name the models" in capsys.readouterr().err
    assert main(["plan", str(yolov8n_path), "--accelerators", "gpu,tpu", *out]) == 1
    assert main(["plan", str(yolov8n_path), "--pin", "oops", *out]) == 1
