"""A user's own exports all the way: profile -> plan -> run --replan, BatchNorm folded or not."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import onnx

from hxsched.cli import main
from hxsched.scheduler.planning.plan import load_plan

sys.path.insert(0, str(Path(__file__).parents[1] / "scheduler" / "graph"))
from test_structure import _block  # noqa: E402


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_profile_plan_run_replan_on_a_real_export_with_no_shipped_profile(
    data_dir, tmp_path, capsys
):
    """Ultralytics 8.4.190's YOLOv8n (weights zeroed) matches no shipped profile: measured on
    ONNX Runtime, planned for --device cpu from that profile, run on sim with a drifted
    segment, and re-planned from the measured profile."""
    model = tmp_path / "yolov8n_8.4.190.onnx"
    with gzip.open(data_dir / "exports" / "yolov8n_ultralytics_8.4.190_zeroed.onnx.gz") as f:
        model.write_bytes(f.read())
    prof, plan = tmp_path / "y.cpu.yaml", tmp_path / "plan.yaml"
    args = ["profile", str(model), "--backend", "ort", "--runs", "2", "--warmup", "1"]
    assert main([*args, "--max-groups", "8", "-o", str(prof), "--json", "-q"]) == 0
    assert _json(capsys)["profile"]["device"] == "cpu"
    args = ["plan", str(model), "--profile", str(prof), "--device", "cpu", "-o", str(plan)]
    assert main([*args, "--json", "-q"]) == 0
    assert [i["profile"] for i in _json(capsys)["instances"]] == ["given"]
    seg = f"{load_plan(plan).instances[0].name}/s0"
    args = ["run", str(plan), "--backend", "sim", "--frames", "200", "--slow", f"{seg}=1.8@20"]
    assert main([*args, "--replan", "--json", "-q"]) == 0
    d = _json(capsys)
    assert d["frames"] == 200 and d["replan"]["done"], d["replan"]
    replanned = tmp_path / "plan-replanned.yaml"
    assert load_plan(replanned).instances[0].profile.path == str(prof)
    new = load_plan(replanned)
    assert new.predicted.period_ms > load_plan(plan).predicted.period_ms


def test_a_profile_of_the_unfolded_export_plans_builds_and_runs_the_folded_one(tmp_path, capsys):
    """Measured on a torch-like export with its BatchNorm kept (and node names of its own),
    the profile plans, builds and runs the same block exported with the BatchNorm folded."""
    kept, folded = tmp_path / "kept.onnx", tmp_path / "folded.onnx"
    from hxsched.scheduler.graph.onnx_io import to_model_proto

    onnx.save_model(to_model_proto(_block(fold=False)), str(kept))
    g = _block(fold=True)
    for i, node in enumerate(g.nodes):
        node.name = f"exported_{i}"
    g.reindex()
    onnx.save_model(to_model_proto(g), str(folded))
    prof, plan = tmp_path / "kept.cpu.yaml", tmp_path / "plan.yaml"
    args = ["profile", str(kept), "--backend", "ort", "--runs", "2", "--warmup", "1"]
    assert main([*args, "-o", str(prof), "-q"]) == 0
    capsys.readouterr()
    args = ["plan", str(folded), "--profile", str(prof), "--device", "cpu", "-o", str(plan)]
    assert main([*args, "--json", "-q"]) == 0
    segs = _json(capsys)["instances"][0]["segments"]
    assert segs[0]["first_node"] == "exported_0" and segs[-1]["last_node"] == "exported_4"
    out = tmp_path / "b"
    assert main(["build", str(plan), "-o", str(out), "--verify", "--json", "-q"]) == 0
    assert all(v <= 1e-4 for o in _json(capsys)["verify"].values() for v in o.values())
    seg = f"{load_plan(plan).instances[0].name}/s0"
    args = ["run", str(plan), "--backend", "sim", "--frames", "100", "--slow", f"{seg}=2@10"]
    assert main([*args, "--replan", "--json", "-q"]) == 0
    assert _json(capsys)["replan"]["done"]
    new = load_plan(tmp_path / "plan-replanned.yaml")
    assert new.instances[0].segments[0].first_node == "exported_0"


def test_torch_pix2pix_default_export_plans_with_the_shipped_profile(data_dir, tmp_path, capsys):
    """torch 2.13's default export of Pix2Pix (BatchNorm folded into its Convs) finds the
    shipped profile made on the zoo model (BatchNorm kept) and runs as planned."""
    from onnx_builders import from_structure_record

    model = tmp_path / "pix2pix_default.onnx"
    rec = data_dir / "exports" / "pix2pix_unet256_torch_2.13_default.structure.json"
    onnx.save_model(from_structure_record(rec), str(model))
    plan = tmp_path / "plan.yaml"
    assert main(["plan", str(model), "--device", "orin-agx", "-o", str(plan), "--json", "-q"]) == 0
    d = _json(capsys)
    assert [i["profile"] for i in d["instances"]] == ["shipped"]
    assert main(["run", str(plan), "--backend", "sim", "--frames", "100", "--json", "-q"]) == 0
    assert abs(_json(capsys)["comparison"]["achieved_over_plan"] - 1) <= 0.03
    from hxsched.runtime.build import plan_instance_specs

    (spec,) = plan_instance_specs(load_plan(plan))
    assert sum(s.last_node - s.first_node + 1 for s in spec.segments) == 46


def test_a_plan_keeps_its_shapes_for_build_and_run(data_dir, tmp_path, capsys):
    """A dynamic-batch torch export planned with --shape: the plan records the shapes, and
    build, run and bench load the model with them without being told again."""
    src = data_dir / "torch" / "torch_dynamic_batch.onnx"
    plan = tmp_path / "plan.yaml"
    args = ["plan", str(src), "--shape", "input=2x4x16x16", "-o", str(plan), "-q"]
    assert main(args) == 0
    capsys.readouterr()
    assert load_plan(plan).instances[0].shapes == {"input": (2, 4, 16, 16)}
    out = tmp_path / "b"
    assert main(["build", str(plan), "-o", str(out), "--verify", "--json", "-q"]) == 0
    assert all(v <= 1e-4 for o in _json(capsys)["verify"].values() for v in o.values())
    assert main(["run", str(plan), "--backend", "ort", "--frames", "3", "--json", "-q"]) == 0
    assert _json(capsys)["frames"] == 3
    # told other shapes, it loads those (and the plan no longer fits the model)
    args = ["build", str(plan), "-o", str(out), "--shape", "input=1x4x16x16"]
    assert main(args) == 1
    assert "structural hash differs" in capsys.readouterr().err
