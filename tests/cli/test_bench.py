"""hxsched bench: trtexec-style figures, baselines measured in the same run, a documented JSON."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from json_schema_check import SCHEMA, schema_errors

from hxsched.cli import main
from hxsched.cli.bench import overlap_length, union_length
from hxsched.scheduler.planning.plan import save_plan

TRTEXEC_FIELDS = {"startEnqMs", "endEnqMs", "startComputeMs", "endComputeMs", "latencyMs"}


def test_the_checker_refuses_what_the_schema_refuses():
    schema = json.loads(SCHEMA.read_text())
    assert schema_errors({"schema": "hxsched.bench/1"}, schema)
    bad = {"schema": "x", "plan": 1, "runs": [], "backend": "gpu"}
    errs = schema_errors(bad, schema)
    assert any("schema" in e for e in errs) and any("fewer than 1" in e for e in errs)


def test_spans_union_and_overlap():
    assert union_length([(0, 2), (1, 3), (5, 6)]) == 4
    per = {"gpu": [(0, 4)], "dla0": [(1, 2), (3, 6)], "dla1": [(3.5, 3.7)]}
    assert overlap_length(per) == pytest.approx(1 + 1)


def test_bench_sim_against_baselines(small_plan, tmp_path, capsys):
    """The plan and its three baselines in one run on sim: each measured at its prediction, the
    JSON valid against the documented schema, per-frame times with trtexec's names, plots."""
    path = save_plan(small_plan, tmp_path / "p.yaml")
    times, plots = tmp_path / "times.json", tmp_path / "plots"
    args = ["bench", str(path), "--backend", "sim", "--against", "baselines", "--duration", "0.5"]
    args += ["--export-times", str(times), "--plots", str(plots), "--json", "-q"]
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert schema_errors(d, json.loads(SCHEMA.read_text())) == []
    assert [r["name"] for r in d["runs"]] == ["plan", "gpu-only", "naive", "trt-default"]
    for r in d["runs"]:
        assert abs(r["fps_over_predicted"] - 1) <= 0.03, r["name"]
        assert abs(r["latency_p50_over_predicted"] - 1) <= 0.03, r["name"]
        assert r["frames"] >= 10 and r["warmup_frames"] >= 1
    plan = d["runs"][0]
    assert plan["predicted"]["fps"] == small_plan.predicted.fps
    assert plan["latency_ms"]["p50"] == pytest.approx(small_plan.predicted.latency_ms, rel=1e-3)
    assert d["beaten_by"] == []  # the plan is faster than every baseline, measured
    frames = json.loads(times.read_text())
    assert len(frames) == plan["frames"] and set(frames[0]) >= TRTEXEC_FIELDS
    assert all(f["endComputeMs"] >= f["startComputeMs"] >= f["releaseMs"] for f in frames)
    # sim makes no host<->device copies: no split (absent, not zero), and a note says why
    assert all("split" not in r for r in d["runs"])
    assert all("split" not in s for s in plan["segments"].values())
    assert any("no enqueue/copy/compute split on sim" in n for n in plan["notes"])
    assert not {"h2dMs", "d2hMs", "startH2dMs", "endToEndMs"} & set(frames[0])
    names = {Path(p).name for p in d["plots"]}
    assert {"bench-bars.svg", "bench-cdf.svg"} <= names
    assert all((plots / n).stat().st_size > 0 for n in names)


def test_bench_human_says_first_when_a_baseline_wins(small_plan, tmp_path, capsys):
    """A plan slowed (on sim, --slow is not a bench option: its segment times scaled) below
    the GPU-only baseline is reported first thing."""
    import dataclasses

    slow = dataclasses.replace(
        small_plan,
        instances=tuple(
            dataclasses.replace(
                i,
                segments=tuple(dataclasses.replace(s, busy_ms=s.busy_ms * 3) for s in i.segments),
            )
            for i in small_plan.instances
        ),
    )
    path = save_plan(slow, tmp_path / "slow.yaml")
    args = ["bench", str(path), "--backend", "sim", "--against", "baselines", "--duration", "0.2"]
    assert main([*args, "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MEASURED: gpu-only")


def test_bench_refuses_bad_options(small_plan, tmp_path, capsys):
    path = save_plan(small_plan, tmp_path / "p.yaml")
    assert main(["bench", str(path), "--backend", "sim", "--iterations", "1", "-q"]) == 1
    assert "--iterations" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_ort_on_real_ultralytics_exports(data_dir, tmp_path, capsys):
    """Two real Ultralytics YOLOv8n exports (8.3.40 and 8.4.190, weights zeroed): planned for
    orin-agx, then the plan and its baselines measured on ONNX Runtime in one run."""
    pytest.importorskip("onnxruntime")
    models = []
    for v in ("8.3.40", "8.4.190"):
        out = tmp_path / f"yolov8n_{v}.onnx"
        with gzip.open(data_dir / "exports" / f"yolov8n_ultralytics_{v}_zeroed.onnx.gz") as f:
            out.write_bytes(f.read())
        models.append(str(out))
    plan = tmp_path / "plan.yaml"
    assert main(["plan", *models, "--device", "orin-agx", "-o", str(plan), "-q"]) == 0
    capsys.readouterr()
    args = ["bench", str(plan), "--backend", "ort", "--against", "baselines", "--threads", "1"]
    args += ["--warmup", "0", "--duration", "0", "--iterations", "2", "--plots", str(tmp_path)]
    assert main([*args, "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert schema_errors(d, json.loads(SCHEMA.read_text())) == []
    assert [r["name"] for r in d["runs"]] == ["plan", "gpu-only", "naive", "trt-default"]
    for r in d["runs"]:
        assert r["throughput_fps"] > 0 and r["predicted"]["fps"] > 0
        assert "fps_over_predicted" not in r  # orin-agx figures are not this CPU's
        assert any("compare the runs" in n for n in r["notes"])


def test_a_measured_cpu_profile_plans_and_benches_for_device_cpu(data_dir, tmp_path, capsys):
    """profile --backend ort -> plan --device cpu (cpu the only accelerator; naive the only
    baseline that applies) -> bench on ort, which measures the plan's own device."""
    pytest.importorskip("onnxruntime")
    model = str(data_dir / "torch" / "torch_unet_tiny.onnx")
    prof, plan = tmp_path / "cpu.yaml", tmp_path / "plan.yaml"
    assert main(["profile", model, "--backend", "ort", "--runs", "3", "-o", str(prof), "-q"]) == 0
    assert main(["plan", model, "--profile", str(prof), "--device", "cpu", "-o", str(plan)]) == 0
    capsys.readouterr()
    args = ["bench", str(plan), "--backend", "ort", "--against", "baselines", "--duration", "0.2"]
    assert main([*args, "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert schema_errors(d, json.loads(SCHEMA.read_text())) == []
    assert [r["name"] for r in d["runs"]] == ["plan", "naive"]
    assert set(d["runs"][0]["busy"]) == {"cpu"} and d["runs"][0]["fps_over_predicted"] > 0
    assert "split" not in d["runs"][0]  # ort: no device copies to time, and it says so
    assert any("no enqueue/copy/compute split on ort" in n for n in d["runs"][0]["notes"])
    # real inputs: the recorded torch input, then a file of the wrong shape (one line, exit 1)
    io = data_dir / "torch" / "torch_unet_tiny_io.npz"
    base = ["bench", str(plan), "--backend", "ort", "--duration", "0.1", "-q"]
    assert main([*base, "--data", str(io)]) == 0
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((2, 4, 32, 31), np.float32))
    capsys.readouterr()
    assert main([*base, "--data", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.npz" in err and "expects shape [1, 4, 32, 32]" in err


def _tiny_role_models(tmp_path):
    """A synth model (1x3x64x64 -> the same, Tanh) and a detect model (1x3x64x64 -> 1x6x64),
    small enough for a CPU test, shaped so that the roles' pre-processing feeds them."""
    import numpy as np
    import onnx
    from onnx import helper
    from onnx_builders import make_model, w

    synth = make_model(
        [
            helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Tanh", ["c"], ["out"]),
        ],
        {"images": [1, 3, 64, 64]},
        {"out": [1, 3, 64, 64]},
        {"w": w(3, 3, 3, 3)},
    )
    detect = make_model(
        [
            helper.make_node("Conv", ["images", "w"], ["c"], strides=[8, 8]),
            helper.make_node("Reshape", ["c", "shape"], ["out"]),
        ],
        {"images": [1, 3, 64, 64]},
        {"out": [1, 6, 64]},
        {"w": w(6, 3, 8, 8), "shape": np.array([1, 6, 64], np.int64)},
    )
    paths = []
    for name, m in (("synth", synth), ("detect", detect)):
        p = tmp_path / f"{name}.onnx"
        onnx.save_model(m, str(p))
        paths.append(str(p))
    return paths


def test_bench_feeds_a_dicom_folder_through_the_pre_processing_and_saves_outputs(tmp_path, capsys):
    """A DICOM CT folder: each slice windowed and resized (synth) or letterboxed (detect) by the
    service's own pre-processing, run through the plan on ONNX Runtime; the saved outputs are
    what each whole model gives for that prepared input."""
    pytest.importorskip("pydicom")
    import shutil

    import numpy as np
    from pydicom.data import get_testdata_file

    from hxsched.runtime.build import plan_instance_specs
    from hxsched.runtime.reference import OrtModel
    from hxsched.runtime.validate.validate import (
        collect_samples,
        infer_role,
        pipeline_model,
        prepare,
    )
    from hxsched.scheduler.planning.plan import load_plan

    series = tmp_path / "series"
    series.mkdir()
    for k in range(2):
        shutil.copy(get_testdata_file("CT_small.dcm"), series / f"slice{k}.dcm")
    plan = tmp_path / "plan.yaml"
    assert main(["plan", *_tiny_role_models(tmp_path), "-o", str(plan), "-q"]) == 0
    capsys.readouterr()
    out = tmp_path / "outs"
    args = ["bench", str(plan), "--backend", "ort", "--duration", "0.1", "--warmup", "0"]
    args += ["--data", str(series), "--save-outputs", str(out), "--json", "-q"]
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert schema_errors(d, json.loads(SCHEMA.read_text())) == []
    assert d["saved_outputs"] == str(out) and "pre-processing" in d["data"]
    index = json.loads((out / "index.json").read_text())
    assert sorted(index) == ["0000-slice0", "0001-slice1"]
    samples = collect_samples([str(series)])
    for inst in plan_instance_specs(load_plan(plan)):
        model = pipeline_model(inst, infer_role(inst.graph))
        ref = OrtModel(inst.graph)
        try:
            for k, name in enumerate(sorted(index)):
                x = prepare(samples[k], inst, model.role, model)[0]
                assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0  # not random normals
                want = ref.run({inst.graph.inputs[0]: x})["out"]
                got = np.load(out / name / f"{inst.name.replace('#', '_')}.out.npy")
                assert got.shape == want.shape and np.max(np.abs(got - want)) <= 1e-5
        finally:
            ref.close()
    # sim computes no outputs: refused in one line
    assert main(["bench", str(plan), "--backend", "sim", "--save-outputs", str(out)]) == 1
    assert "needs a backend that computes" in capsys.readouterr().err
