"""Weight calibration: BatchNorm statistics and fused-conv rescaling from real activations."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from hxsched.scheduler.zoo.builder import ModelBuilder
from hxsched.scheduler.zoo.liveness import AffineOutput, BatchNormStats, calibrate


def small_net():
    b = ModelBuilder("g", seed=0)
    x = b.input("x", [1, 3, 8, 8])
    w = b.weight("w", b.he((4, 3, 3, 3), 27) * 50.0)  # badly scaled on purpose
    bias = b.weight("bias", np.full(4, 7.0, np.float32))
    h = b.op("/conv", "Conv", [x, w, bias], pads=[1, 1, 1, 1])
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    stats = [b.weight(n, v) for n, v in (("g", ones), ("b", zeros), ("m", zeros), ("v", ones))]
    y = b.op("/bn", "BatchNormalization", [h, *stats])
    b.output(y, "y", [1, 4, 8, 8])
    return b.build()


def run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_affine_target_normalises_conv_output():
    model = small_net()
    rng = np.random.default_rng(0)
    samples = {"x": rng.standard_normal((8, 3, 8, 8)).astype(np.float32)}
    out = calibrate(model, {"/conv/Conv": AffineOutput(std=1.0, mean=0.0)}, samples, rng)
    # read the conv output directly by making the BN an identity: check its statistics
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    y_before, y_after = run(model, x), run(out, x)
    assert abs(float(y_before.std())) > 20  # the badly scaled original
    assert 0.5 < float(y_after.std()) < 2.0


def test_batchnorm_stats_come_from_the_data():
    model = small_net()
    rng = np.random.default_rng(1)
    samples = {"x": rng.standard_normal((8, 3, 8, 8)).astype(np.float32)}
    out = calibrate(
        model, {"/bn/BatchNormalization": BatchNormStats(gamma=(1, 1), beta_std=0)}, samples, rng
    )
    y = run(out, rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    per_channel = y.reshape(4, -1)
    assert np.all(np.abs(per_channel.mean(axis=1)) < 0.5)
    assert np.all((per_channel.std(axis=1) > 0.5) & (per_channel.std(axis=1) < 2.0))
