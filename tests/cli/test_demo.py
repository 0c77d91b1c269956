"""hxsched demo: the README's main job."""

from __future__ import annotations

import json

from hxsched.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "pix2pix_unet256_dla.onnx" in text and "not for diagnostic use" in text
    summary = json.loads((out / "summary.json").read_text())
    p2p, yolo = summary["models"]
    assert len(p2p["check"]["dla_incompatible"]) == 8
    assert p2p["rewrite"]["check_after"]["dla_incompatible"] == []
    assert p2p["rewrite"]["verify"]["worst"] <= 1e-4
    assert all(i["node"].startswith("/model.22/") for i in yolo["check"]["dla_incompatible"])
    assert (out / "pix2pix_unet256_dla.onnx").exists()
