"""Structural hash: stable across weights and names, different across architectures."""

from __future__ import annotations

import numpy as np

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


# --- BatchNorm folded or not: one architecture -------------------------------------------------
def _block(*, fold: bool, deconv_fold: bool = False, training: int = 0, yolo: bool = False):
    """A torch-like block exported with BatchNorm kept (eval mode, ``TrainingMode.PRESERVE``) or
    folded (torch's default ``do_constant_folding``: Conv+BN -> Conv with a bias; a
    ConvTranspose's BN stays, unless ``deconv_fold``). ``yolo``: Ultralytics' Conv = Conv2d + BN
    + SiLU (Sigmoid, Mul); else Pix2Pix's down (Conv, BN, LeakyRelu) and up (ConvTranspose, BN,
    Relu) steps."""
    from onnx import helper
    from onnx_builders import graph, w

    inits = {"w1": w(8, 3, 4, 4), "w2": w(8, 4, 4, 4, seed=1)}
    nodes = []

    def bn(x: str, c: int, tag: str) -> str:
        for k, v in {"s": 1.0, "b": 0.0, "m": 0.0, "v": 1.0}.items():
            inits[f"{tag}_{k}"] = np.full(c, v, np.float32)
        names = [f"{tag}_{k}" for k in "sbmv"]
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [x, *names],
                [f"{tag}_y"],
                name=f"/{tag}/BatchNormalization",
                epsilon=1e-5,
                training_mode=training,
            )
        )
        return f"{tag}_y"

    def conv(op: str, x: str, wname: str, c: int, tag: str, folded: bool) -> str:
        ins = [x, wname]
        if folded:
            inits[f"{tag}_bias"] = np.zeros(c, np.float32)
            ins.append(f"{tag}_bias")
        kw = {"kernel_shape": [4, 4], "pads": [1, 1, 1, 1], "strides": [2, 2]}
        nodes.append(helper.make_node(op, ins, [f"{tag}_c"], name=f"/{tag}/{op}", **kw))
        return f"{tag}_c" if folded else bn(f"{tag}_c", c, tag)

    h = conv("Conv", "input", "w1", 8, "down", fold)
    if yolo:
        nodes.append(helper.make_node("Sigmoid", [h], ["sig"], name="/down/act/Sigmoid"))
        nodes.append(helper.make_node("Mul", [h, "sig"], ["output"], name="/down/act/Mul"))
        return graph(nodes, {"input": [1, 3, 32, 32]}, ["output"], inits)
    nodes.append(helper.make_node("LeakyRelu", [h], ["act"], name="/down/LeakyRelu", alpha=0.2))
    h = conv("ConvTranspose", "act", "w2", 4, "up", deconv_fold)
    nodes.append(helper.make_node("Relu", [h], ["output"], name="/up/Relu"))
    return graph(nodes, {"input": [1, 3, 32, 32]}, ["output"], inits)


def test_batchnorm_folded_or_not_hashes_alike():
    from hxsched.scheduler.graph.structure import canonical

    kept, folded = _block(fold=False), _block(fold=True)
    assert len(kept.nodes) == 6 and len(folded.nodes) == 5
    assert structural_hash(kept) == structural_hash(folded)
    assert canonical(kept).folded == {1} and canonical(kept).position == (0, 0, 1, 2, 3, 4)
    assert canonical(folded).folded == frozenset() and canonical(folded).size == 5
    # a ConvTranspose's BatchNorm is not folded (torch keeps it; a profile may cut before it)
    assert structural_hash(_block(fold=True, deconv_fold=True)) != structural_hash(folded)
    assert structural_hash(_block(fold=False, yolo=True)) == structural_hash(
        _block(fold=True, yolo=True)
    )
    assert structural_hash(_block(fold=True, yolo=True)) != structural_hash(folded)


def test_what_does_not_fold_still_tells_architectures_apart():
    from onnx import helper
    from onnx_builders import graph, w

    # a training-mode BatchNorm is not folded (it normalises with the batch's statistics)
    assert structural_hash(_block(fold=False, training=1)) != structural_hash(_block(fold=True))
    # without a BatchNorm, a bias still matters
    kw = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    inits = {"w": w(4, 3, 3, 3), "b": np.zeros(4, np.float32)}
    with_b = graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], **kw)], {"x": [1, 3, 8, 8]}, ["y"], inits
    )
    without = graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **kw)], {"x": [1, 3, 8, 8]}, ["y"], inits
    )
    assert structural_hash(with_b) != structural_hash(without)
    # a BatchNorm whose convolution output is read elsewhere too cannot fold
    stats = {k: np.ones(4, np.float32) for k in ("s", "bb", "m", "v")}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], **kw),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"]),
        helper.make_node("Add", ["c", "n"], ["y"]),
    ]
    shared = graph(nodes, {"x": [1, 3, 8, 8]}, ["y"], {**inits, **stats})
    from hxsched.scheduler.graph.structure import canonical

    assert canonical(shared).folded == frozenset()


def test_real_torch_pix2pix_exports_folded_and_not_hash_as_the_zoo(data_dir):
    """torch 2.13's Pix2Pix UnetGenerator exported by default (BatchNorm folded into the 6
    inner Convs) and with ``TrainingMode.PRESERVE`` (13 BatchNorms kept), rebuilt from their
    records, hash as the zoo model (which keeps them) and as the shipped profile says."""
    from onnx_builders import from_structure_record

    from hxsched.scheduler.profile.store import find_profile

    exports = data_dir / "exports"
    hashes = {}
    for variant in ("default", "preserve"):
        rec = exports / f"pix2pix_unet256_torch_2.13_{variant}.structure.json"
        g = graph_from_proto(from_structure_record(rec))
        hashes[variant] = (len(g.nodes), structural_hash(g))
    assert hashes["default"][0] == 46 and hashes["preserve"][0] == 52
    assert hashes["default"][1] == hashes["preserve"][1] == structural_hash(zoo("pix2pix_unet256"))
    for device in ("orin-agx", "xavier-agx"):
        found = find_profile(device, hashes["default"][1])
        assert found is not None and found.model.name == "pix2pix_unet256"
