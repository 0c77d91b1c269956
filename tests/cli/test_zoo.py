"""hxsched zoo."""

from __future__ import annotations

import json

import onnx

from hxsched.cli import main


def test_zoo_list_json(capsys):
    assert main(["zoo", "--list", "--json"]) == 0
    names = [e["name"] for e in json.loads(capsys.readouterr().out)]
    assert names == ["pix2pix_unet256", "pix2pix_unet256_1ch", "yolov8n", "yolov8s"]


def test_zoo_list_table(capsys):
    assert main(["zoo", "--list"]) == 0
    assert "54,413,955" in capsys.readouterr().out


def test_zoo_writes_model(tmp_path, capsys):
    out = tmp_path / "sub" / "y.onnx"
    assert main(["zoo", "yolov8n", "-o", str(out), "--json", "-q", "--seed", "2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 3_151_904 and info["seed"] == 2
    onnx.checker.check_model(str(out))
    assert len(info["sha256"]) == 64


def test_zoo_errors(tmp_path, capsys):
    assert main(["zoo", "resnet"]) == 1
    assert "-o" in capsys.readouterr().err
    assert main(["zoo", "resnet", "-o", str(tmp_path / "r.onnx")]) == 1
    assert "unknown zoo model" in capsys.readouterr().err
    assert main(["zoo"]) == 1
    assert main(["zoo", "yolov8n", "-o", str(tmp_path)]) == 1
    assert "directory" in capsys.readouterr().err
