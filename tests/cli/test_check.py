"""hxsched check."""

from __future__ import annotations

import json

from hxsched.cli import main


def test_check_json(pix2pix_path, capsys):
    assert main(["check", str(pix2pix_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == str(pix2pix_path)
    assert data["target"] == "orin" and data["trt"] == "8.6"
    assert data["nodes"] == 52
    assert len(data["dla_incompatible"]) == 8
    assert data["dla_segments"] == 9
    item = data["dla_incompatible"][0]
    assert item["op_type"] == "ConvTranspose" and "padding 0" in item["reason"]


def test_check_table_and_summary(pix2pix_path, capsys):
    assert main(["check", str(pix2pix_path), "--target", "xavier"]) == 0
    out = capsys.readouterr().out
    assert "why not DLA" in out and "ConvTranspose" in out
    assert out.strip().splitlines()[-1].startswith(f"{pix2pix_path}: 52 nodes, 8 DLA-incompatible")
    assert "xavier, TensorRT 8.5" in out


def test_check_all_and_cuts(data_dir, capsys):
    path = data_dir / "torch" / "torch_unet_tiny.onnx"
    assert main(["check", str(path), "--all", "--cuts", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["verdicts"]) == data["nodes"]
    assert len(data["cut_points"]) == data["nodes"] - 1
    assert all(c["bytes"] > 0 for c in data["cut_points"])


def test_check_with_shape_override(data_dir, capsys):
    path = data_dir / "torch" / "torch_dynamic_batch.onnx"
    assert main(["check", str(path), "--shape", "input=1x4x16x16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"] > 0


def test_check_trt11_on_xavier_is_refused(pix2pix_path, capsys):
    assert main(["check", str(pix2pix_path), "--target", "xavier", "--trt", "11"]) == 1
    assert "AGX Orin" in capsys.readouterr().err
