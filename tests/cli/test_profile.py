"""hxsched profile."""

from __future__ import annotations

import json

from hxsched.cli import main
from hxsched.scheduler.profile.schema import load_profile


def test_estimate_writes_a_valid_profile(yolov8n_path, tmp_path, capsys):
    out = tmp_path / "y.yaml"
    assert main(["profile", str(yolov8n_path), "--device", "orin-agx", "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "estimated (hxsched.costmodel/1" in text
    prof = load_profile(out)
    assert prof.device == "orin-agx" and prof.model.name == "yolov8n"


def test_ort_backend_json(data_dir, tmp_path, capsys):
    out = tmp_path / "t.yaml"
    src = data_dir / "torch" / "torch_unet_tiny.onnx"
    assert (
        main(
            [
                "profile",
                str(src),
                "--backend",
                "ort",
                "-o",
                str(out),
                "--runs",
                "3",
                "--warmup",
                "1",
                "--json",
                "-q",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["profile"]["device"] == "cpu"
    assert data["whole_model_ms"] > 0 and data["groups_sum_ms"] > 0
    assert load_profile(out).provenance["ort"].kind == "measured"


def test_trtexec_backend(data_dir, tmp_path, capsys):
    assert (
        main(
            [
                "profile",
                str(data_dir / "torch" / "torch_unet_tiny.onnx"),
                "--backend",
                "trtexec",
                "-o",
                str(tmp_path / "x.yaml"),
            ]
        )
        == 1
    )
    assert "--gpu-profile" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert (
        main(
            [
                "profile",
                str(data_dir / "torch" / "torch_unet_tiny.onnx"),
                "--backend",
                "trtexec",
                "--gpu-profile",
                str(bad),
                "-o",
                str(tmp_path / "x.yaml"),
            ]
        )
        == 1
    )
    assert "not a trtexec --exportProfile file" in capsys.readouterr().err


def test_list_and_calibration(capsys):
    assert main(["profile", "--list", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    shipped = [i for i in items if i.get("shipped")]
    zoo = [i for i in shipped if "published" not in i["path"]]
    published = [i for i in shipped if "published" in i["path"]]
    assert len(zoo) >= 8 and all(
        i["numbers"] == {"estimated": sum(i["numbers"].values())} for i in zoo
    )
    assert published and all("published" in i["numbers"] for i in published)
    assert main(["profile", "--list", "--device", "xavier-agx"]) == 0
    assert "orin-agx" not in capsys.readouterr().out
    assert main(["profile", "--calibration"]) == 0
    out = capsys.readouterr().out
    assert "2.13" in out and "trtutils" in out


def test_unknown_device(yolov8n_path, tmp_path, capsys):
    assert (
        main(["profile", str(yolov8n_path), "--device", "pi5", "-o", str(tmp_path / "a.yaml")]) == 1
    )
    assert "unknown device 'pi5'" in capsys.readouterr().err
