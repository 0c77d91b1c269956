"""``hxsched validate``: the zoo's Pix2Pix (rewritten) + YOLOv8n plan and a plan of real torch /
Ultralytics exports in FP16 and INT8 on phantom CT slices; one-line errors for bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from hxsched.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")
pytest.importorskip("pydicom")

LOOSE = ["--min-f1", "0", "--min-map50", "0", "--min-agreement", "0", "--min-cosine", "0",
         "--min-psnr", "0", "--min-ssim", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> Path:
    from hxsched.runtime.service.dicom_io import encode_ct_dicom, synthetic_phantom

    d = tmp_path_factory.mktemp("slices")
    for i in (0, 1):  # slice 0 has a "bleed"
        (d / f"ct{i}.dcm").write_bytes(encode_ct_dicom(synthetic_phantom(i, 256)))
    return d


def _validate(capsys, *argv: str) -> tuple[int, dict]:
    rc = main(["validate", *argv, "--json", "-q"])
    return rc, json.loads(capsys.readouterr().out)


def _plan(out: Path, models: list[Path]) -> Path:
    from hxsched.scheduler.cost.estimate import estimate_profile
    from hxsched.scheduler.graph.onnx_io import load_model
    from hxsched.scheduler.planning.plan import save_plan
    from hxsched.scheduler.planning.planner import ModelInput, make_plan

    inputs = []
    for m in models:
        g = load_model(m)
        inputs.append(
            ModelInput(
                m.stem, estimate_profile(g, "orin-agx", model_name=m.stem), "estimated", g, str(m)
            )
        )
    plan = make_plan(inputs, "orin-agx", time_limit_s=10).plan
    return Path(save_plan(plan, out))


@pytest.fixture(scope="module")
def exports_plan(tmp_path_factory, data_dir) -> Path:
    d = tmp_path_factory.mktemp("exports")
    yolo = d / "yolov8n_ultralytics.onnx"
    yolo.write_bytes(
        gzip.decompress(
            (data_dir / "exports" / "yolov8n_ultralytics_8.4.190_zeroed.onnx.gz").read_bytes()
        )
    )
    unet = d / "torch_unet_tiny.onnx"
    unet.write_bytes((data_dir / "torch" / "torch_unet_tiny.onnx").read_bytes())
    return _plan(d / "plan.yaml", [unet, yolo])


def _show(what: str, doc: dict, capsys) -> None:
    with capsys.disabled():
        for r in doc["instances"]:
            out = next(iter(r["outputs"].values()))
            print(what, r["instance"], r["image"] or r["detection"], "cosine", out["cosine"])


def _check_everything_printed(doc: dict) -> None:
    assert "final check is on the device" in doc["note"]
    roles = {r["role"]: r for r in doc["instances"]}
    synth, det = roles["synth"], roles["detect"]
    for key in ("psnr_mean", "psnr_min", "ssim_mean", "ssim_min", "mse"):
        assert isinstance(synth["image"][key], float)
    for key in ("decision_agreement", "precision", "recall", "f1", "map50"):
        assert 0.0 <= det["detection"][key] <= 1.0
    for r in doc["instances"]:
        assert all(
            "cosine" in s and "p99_abs" in s and "median_rel" in s for s in r["outputs"].values()
        )
        assert len(r["boundaries"]) >= len(r["segments"]) >= 1
        assert {b["segment"] for b in r["boundaries"]} == {s["name"] for s in r["segments"]}


def test_zoo_plan_fp16_and_int8(gan_yolo_plan, slices, capsys, tmp_path):
    rc, fp16 = _validate(
        capsys, gan_yolo_plan.path, "--data", str(slices), "--report", str(tmp_path / "r"), *LOOSE
    )
    assert rc == 0 and fp16["passed"] and fp16["precision"] == "fp16"
    _check_everything_printed(fp16)
    synth = next(r for r in fp16["instances"] if r["role"] == "synth")
    assert synth["image"]["psnr_min"] > 50 and synth["image"]["ssim_min"] > 0.999
    assert all(s["mode"] == "fp16" and s["boundaries"] > 0 for s in synth["segments"])
    _show("fp16", fp16, capsys)
    rc, int8 = _validate(
        capsys,
        gan_yolo_plan.path,
        "--data",
        str(slices / "ct0.dcm"),
        "--precision",
        "int8",
        "--calibration-stride",
        "32",
        *LOOSE,
    )
    assert rc == 0
    _check_everything_printed(int8)
    s8 = next(r for r in int8["instances"] if r["role"] == "synth")
    assert s8["image"]["psnr_min"] < synth["image"]["psnr_min"]  # INT8 loses more than FP16
    assert all(s["quantized"] > 0 for s in s8["segments"])
    assert "entropy calibration" in int8["calibration"]
    _show("int8", int8, capsys)
    report = Path(fp16["report"]["html"])
    page = report.read_text()
    assert "final check is on the device" in page and "PSNR" in page and ".png" in page
    assert len(list(report.parent.glob("*.png"))) == 2 * 2
    from hxsched.runtime.validate.polygraphy import load_inputs, load_outputs

    files = fp16["report"]["polygraphy"]
    for f in files.values():
        assert (
            len(load_inputs(Path(f["inputs"]))) == 2
            and len(load_outputs(Path(f["fp32_outputs"]))) == 2
        )


@pytest.fixture(scope="module")
def tensors(tmp_path_factory) -> Path:
    """Saved inputs for the 4-channel torch U-Net, which no CT slice fits."""
    t = tmp_path_factory.mktemp("tensors")
    rng = np.random.default_rng(0)
    for k in range(2):
        np.save(t / f"unet_{k}.npy", rng.standard_normal((1, 4, 32, 32)).astype(np.float32))
    return t


def test_strict_tolerances_fail_with_status_1(exports_plan, slices, tensors, capsys):
    rc = main(
        [
            "validate",
            str(exports_plan),
            "--data",
            str(slices / "ct0.dcm"),
            str(tensors),
            "--min-psnr",
            "200",
            "-q",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL PSNR" in out and "final check is on the device" in out


def test_real_exports_plan(exports_plan, slices, tensors, capsys):
    t = tensors
    for precision in ("fp16", "int8"):
        rc, doc = _validate(
            capsys,
            str(exports_plan),
            "--data",
            str(slices / "ct0.dcm"),
            str(t),
            "--precision",
            precision,
            "--calibration-stride",
            "32",
            *LOOSE,
        )
        assert rc == 0
        _check_everything_printed(doc)
        _show(precision, doc, capsys)
        det = next(r for r in doc["instances"] if r["role"] == "detect")
        # the export's weights are zeroed: its output does not depend on the input, and FP16
        # and INT8 storage of constants keep the same boxes
        assert det["detection"]["decision_agreement"] == 1.0


def _one_line_error(capsys, *argv: str) -> str:
    rc = main(["validate", *argv, "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_input_is_one_line(gan_yolo_plan, exports_plan, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no slices" in _one_line_error(capsys, gan_yolo_plan.path, "--data", str(empty))
    np.save(tmp_path / "odd.npy", np.zeros((1, 3, 17, 17), np.float32))
    assert "wrong size" in _one_line_error(
        capsys, gan_yolo_plan.path, "--data", str(tmp_path / "odd.npy")
    )
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    assert "junk.png" in _one_line_error(
        capsys, gan_yolo_plan.path, "--data", str(tmp_path / "junk.png")
    )
    moved = tmp_path / "plan.yaml"
    text = exports_plan.read_text().replace("torch_unet_tiny.onnx", "gone/torch_unet_tiny.onnx")
    moved.write_text(text)
    assert "not found" in _one_line_error(capsys, str(moved), "--data", str(empty))


def _pipeline_with(tmp_path: Path, validate: str) -> Path:
    src = (Path(__file__).resolve().parents[2] / "pipelines" / "ct2mri_stroke.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(src + f"validate: {validate}\n")
    return path


def test_the_pipeline_file_sets_the_tolerances(exports_plan, slices, tensors, capsys, tmp_path):
    from hxsched.runtime.service.pipeline import load_pipeline

    strict = _pipeline_with(tmp_path, "{min_psnr: 200}")
    assert load_pipeline(strict).validate.min_psnr == 200
    argv = ["validate", str(exports_plan), "--data", str(slices / "ct0.dcm"), str(tensors)]
    rc = main([*argv, "--pipeline", str(strict), "-q"])
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL PSNR" in out
    # a flag given on the command line wins over the file
    rc = main([*argv, "--pipeline", str(strict), "--min-psnr", "0", "--min-f1", "0", "-q"])
    out = capsys.readouterr().out
    assert "FAIL PSNR" not in out


def test_bad_tolerances_are_one_line(exports_plan, slices, capsys, tmp_path):
    argv = ["validate", str(exports_plan), "--data", str(slices / "ct0.dcm")]
    bad = _pipeline_with(tmp_path, "{min_psnr: fast}")
    assert main([*argv, "--pipeline", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"hxsched validate: error: {bad}: validate.min_psnr: expected a number, got 'fast'"
    ]
    typo = _pipeline_with(tmp_path, "{min_snr: 20}")
    assert main([*argv, "--pipeline", str(typo)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "validate.min_snr: unknown key (did you mean 'min_psnr'?)" in err[0]
    assert main([*argv, "--min-f1", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hxsched validate: error: --min-f1: expected a number ≤ 1, got 2.0"]
