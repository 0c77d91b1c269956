"""hxsched run / build from the command line."""

from __future__ import annotations

import json

from hxsched.cli import main
from hxsched.scheduler.planning.plan import save_plan


def test_run_sim_json(small_plan, tmp_path, capsys):
    path = save_plan(small_plan, tmp_path / "p.yaml")
    assert main(["run", str(path), "--backend", "sim", "--frames", "300", "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"fps", "latency_ms", "frames", "busy", "fallback_events"} <= set(d)
    assert d["frames"] == 300 and set(d["latency_ms"]) == {"p50", "p99"}
    assert d["comparison"]["achieved_over_plan"] >= 0.99
    assert "simulated" in d["source"]


def test_run_sim_readable_with_drift_and_replan(small_plan, tmp_path, capsys):
    path = save_plan(small_plan, tmp_path / "p.yaml")
    seg = f"{small_plan.instances[1].name}/s0"
    code = main(
        [
            "run",
            str(path),
            "--backend",
            "sim",
            "--frames",
            "300",
            "--slow",
            f"{seg}=1.7@50",
            "--replan",
        ]
    )
    out = capsys.readouterr()
    assert code == 0
    assert "fallback/drift events: 1" in out.out and "runtime-drift" in out.out
    assert "replan:" in out.out and (tmp_path / "p-replanned.yaml").exists()
    assert "FALLBACK/DRIFT" in out.err


def test_run_errors_are_one_line(tmp_path, small_plan, capsys):
    assert main(["run", str(tmp_path / "none.yaml")]) == 1
    assert "file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: hxsched.plan/1\nobjective: [\n")
    assert main(["run", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "not readable YAML" in err and "Traceback" not in err
    path = save_plan(small_plan, tmp_path / "p.yaml")
    assert main(["run", str(path), "--backend", "ort"]) == 1  # no model files in this plan
    assert "only --backend sim" in capsys.readouterr().err
    assert main(["run", str(path), "--backend", "ort", "--slow", "x=2"]) == 1
    assert main(["run", str(path), "--backend", "trt", "--nsys"]) == 0
    assert capsys.readouterr().out.startswith("nsys profile")


def test_build_writes_segments_and_verifies(gan_yolo_plan, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["build", gan_yolo_plan.path, "-o", str(out), "--verify", "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (out / "manifest.json").exists()
    assert len(d["segments"]) == sum(len(i.segments) for i in gan_yolo_plan.instances)
    assert all(v <= 1e-4 for o in d["verify"].values() for v in o.values())
    assert main(["build", gan_yolo_plan.path, "--backend", "trt", "-o", str(out)]) == 1
    assert "needs TensorRT and pycuda" in capsys.readouterr().err


def test_run_sim_delivers_the_plan_and_every_depth_runs_as_asked(small_plan, tmp_path, capsys):
    path = save_plan(small_plan, tmp_path / "p.yaml")
    args = ["run", str(path), "--backend", "sim", "--frames", "200", "--json", "-q"]
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert abs(d["comparison"]["achieved_over_plan"] - 1) <= 0.03
    assert abs(d["comparison"]["latency_p50_over_plan"] - 1) <= 0.03
    assert main([*args, "--inflight", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["inflight"] == 1
    assert any("below the" in n and "caps the rate" in n for n in d["notes"])
    assert d["comparison"]["achieved_over_plan"] < 0.97


def test_replan_works_for_a_plan_estimated_on_the_fly(data_dir, tmp_path, capsys):
    """A real Ultralytics export (8.4.190, weights zeroed) that matches no shipped profile:
    plan (estimated on the fly, no profile file), run on sim with a drifted segment, re-plan —
    from the same estimate, made again from the model the plan names."""
    import gzip

    model = tmp_path / "yolov8n_8.4.190.onnx"
    gz = data_dir / "exports" / "yolov8n_ultralytics_8.4.190_zeroed.onnx.gz"
    with gzip.open(gz) as f:
        model.write_bytes(f.read())
    plan = tmp_path / "plan.yaml"
    assert main(["plan", str(model), "--device", "orin-agx", "-o", str(plan), "--json", "-q"]) == 0
    capsys.readouterr()
    seg = "yolov8n_8.4.190#0/s0"
    args = ["run", str(plan), "--backend", "sim", "--frames", "200", "--slow", f"{seg}=1.8@20"]
    assert main([*args, "--replan", "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["frames"] == 200 and d["replan"]["done"], d["replan"]
    assert (tmp_path / "plan-replanned.yaml").exists()


def test_a_refused_replan_keeps_the_run_report(small_plan, tmp_path, capsys):
    """The shipped-profile plan saved without its profile paths or models: the re-plan is
    refused with the reason, and the run's figures are still printed."""
    import dataclasses

    bare = dataclasses.replace(
        small_plan,
        instances=tuple(
            dataclasses.replace(i, profile=dataclasses.replace(i.profile, path=None))
            for i in small_plan.instances
        ),
    )
    path = save_plan(bare, tmp_path / "bare.yaml")
    seg = f"{small_plan.instances[1].name}/s0"
    args = ["run", str(path), "--backend", "sim", "--frames", "200", "--slow", f"{seg}=1.8@20"]
    assert main([*args, "--replan", "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["frames"] == 200 and d["replan"]["done"] is False
    assert "names no profile file" in d["replan"]["why"]
