"""hxsched rewrite."""

from __future__ import annotations

import json

from hxsched.cli import main
from hxsched.scheduler.dla.check import check_graph
from hxsched.scheduler.graph.onnx_io import load_model


def test_rewrite_pix2pix_verify_json(pix2pix_path, tmp_path, capsys):
    out = tmp_path / "p2p_dla.onnx"
    assert main(["rewrite", str(pix2pix_path), "-o", str(out), "--verify", "--json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dla_incompatible_before"] == 8 and data["dla_incompatible_after"] == 0
    assert len(data["rewritten"]) == 8 and data["refused"] == []
    assert data["verify"]["passed"] and data["verify"]["worst"] <= 1e-4
    assert check_graph(load_model(out)).incompatible == []


def test_rewrite_readable_output(data_dir, tmp_path, capsys):
    out = tmp_path / "tiny_dla.onnx"
    src = data_dir / "torch" / "torch_unet_tiny.onnx"
    assert main(["rewrite", str(src), "-o", str(out), "--verify", "-q"]) == 0
    text = capsys.readouterr().out
    assert "rewrote 2 ConvTranspose node(s)" in text
    assert "DLA-incompatible nodes 2 -> 0" in text and "max abs diff" in text


def test_rewrite_refuses_to_overwrite_input(pix2pix_path, capsys):
    assert main(["rewrite", str(pix2pix_path), "-o", str(pix2pix_path)]) == 1
    assert "overwrite" in capsys.readouterr().err


def test_rewrite_failed_verification_writes_nothing(pix2pix_path, tmp_path, capsys):
    out = tmp_path / "never.onnx"
    # a tolerance no FP32 computation meets: the verification must fail and write nothing
    code = main(
        [
            "rewrite",
            str(pix2pix_path),
            "-o",
            str(out),
            "--verify",
            "--tolerance",
            "0",
            "--samples",
            "1",
            "-q",
        ]
    )
    assert code == 1
    assert "nothing was written" in capsys.readouterr().err
    assert not out.exists()
