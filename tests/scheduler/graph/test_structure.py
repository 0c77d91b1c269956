"""Structural hash: stable across weights and names, different across architectures."""

from __future__ import annotations

from hxsched.scheduler.dla.rewrite import rewrite_for_dla
from hxsched.scheduler.graph.onnx_io import graph_from_proto, load_model
from hxsched.scheduler.graph.structure import structural_hash
from hxsched.scheduler.zoo import build_zoo_model


def zoo(name, seed=0):
    return graph_from_proto(build_zoo_model(name, seed=seed, calibrate_weights=False))


def test_same_architecture_other_weights():
    assert structural_hash(zoo("yolov8n", 0)) == structural_hash(zoo("yolov8n", 7))


def test_other_architectures_differ():
    hashes = {
        structural_hash(zoo(n))
        for n in ("yolov8n", "yolov8s", "pix2pix_unet256", "pix2pix_unet256_1ch")
    }
    assert len(hashes) == 4
    g = zoo("pix2pix_unet256")
    before = structural_hash(g)
    rewrite_for_dla(g)
    assert structural_hash(g) != before


def test_node_names_do_not_matter(data_dir):
    g = load_model(data_dir / "torch" / "torch_unet_tiny.onnx")
    h = structural_hash(g)
    for i, node in enumerate(g.nodes):
        node.name = f"renamed_{i}"
    g.reindex()
    assert structural_hash(g) == h
    assert h.startswith("sha256:") and len(h) == 71
