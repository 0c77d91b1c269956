"""Pix2Pix U-Net 256 generator, node for node as ``torch.onnx.export`` writes it.

Follows ``UnetGenerator(input_nc, output_nc, num_downs=8, ngf=64, norm_layer=BatchNorm2d)`` and
``UnetSkipConnectionBlock`` of junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py):
down = LeakyReLU(0.2) -> Conv(k4, s2, p1, no bias) -> BatchNorm, up = ReLU -> ConvTranspose(k4,
s2, p1, no bias) -> BatchNorm, skip = cat([x, block(x)], 1). The outermost block has no
pre-activation and no norm on the way down and ends ConvTranspose (with bias) -> Tanh; the
innermost has no down norm. The in-place LeakyReLU means the skip carries LeakyReLU(x), which is
what the exporter records too. BatchNorm is kept as its own node (eval mode, not folded).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from hxsched.scheduler.zoo.builder import ModelBuilder, param_prefix
from hxsched.scheduler.zoo.liveness import AffineOutput, BatchNormStats, Target, calibrate


class _Unet:
    def __init__(self, b: ModelBuilder) -> None:
        self.b = b
        self.targets: dict[str, Target] = {}

    def conv(self, scope: str, op: str, x: str, cin: int, cout: int, *, bias: bool) -> str:
        """Conv(k4, s2, p1) or ConvTranspose(k4, s2, p1), He-initialised."""
        b = self.b
        prefix = param_prefix(scope)
        if op == "Conv":
            w = b.he((cout, cin, 4, 4), cin * 16)
        else:  # ConvTranspose weights are [C_in, C_out, kH, kW]; each output sees C_in*4 taps
            w = b.he((cin, cout, 4, 4), cin * 4)
        inputs = [x, b.weight(f"{prefix}.weight", w)]
        if bias:
            inputs.append(b.weight(f"{prefix}.bias", np.zeros(cout, np.float32)))
        return b.op(
            scope,
            op,
            inputs,
            dilations=[1, 1],
            group=1,
            kernel_shape=[4, 4],
            pads=[1, 1, 1, 1],
            strides=[2, 2],
        )

    def norm(self, scope: str, x: str, c: int) -> str:
        b = self.b
        prefix = param_prefix(scope)
        names = [
            b.weight(f"{prefix}.weight", np.ones(c, np.float32)),
            b.weight(f"{prefix}.bias", np.zeros(c, np.float32)),
            b.weight(f"{prefix}.running_mean", np.zeros(c, np.float32)),
            b.weight(f"{prefix}.running_var", np.ones(c, np.float32)),
        ]
        out = b.op(
            scope, "BatchNormalization", [x, *names], epsilon=1e-5, momentum=0.9, training_mode=0
        )
        self.targets[b.nodes[-1].name] = BatchNormStats()
        return out

    def block(
        self,
        path: str,
        x: str,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None,
        submodule: Callable[[str, str], str] | None,
        *,
        outermost: bool = False,
        innermost: bool = False,
    ) -> str:
        """Emit one ``UnetSkipConnectionBlock`` whose module path is ``path`` (e.g. /model)."""
        b = self.b
        input_nc = outer_nc if input_nc is None else input_nc
        seq = f"{path}/model/model"  # the block's Sequential is its attribute ``model``
        if outermost:
            h = self.conv(f"{seq}.0", "Conv", x, input_nc, inner_nc, bias=False)
            assert submodule is not None
            h = submodule(f"{seq}.1", h)
            h = b.op(f"{seq}.2", "Relu", [h])
            h = self.conv(f"{seq}.3", "ConvTranspose", h, inner_nc * 2, outer_nc, bias=True)
            self.targets[b.nodes[-1].name] = AffineOutput(std=0.6)
            return b.op(f"{seq}.4", "Tanh", [h])
        a = b.op(f"{seq}.0", "LeakyRelu", [x], alpha=0.2)
        h = self.conv(f"{seq}.1", "Conv", a, input_nc, inner_nc, bias=False)
        if innermost:
            h = b.op(f"{seq}.2", "Relu", [h])
            h = self.conv(f"{seq}.3", "ConvTranspose", h, inner_nc, outer_nc, bias=False)
            h = self.norm(f"{seq}.4", h, outer_nc)
        else:
            h = self.norm(f"{seq}.2", h, inner_nc)
            assert submodule is not None
            h = submodule(f"{seq}.3", h)
            h = b.op(f"{seq}.4", "Relu", [h])
            h = self.conv(f"{seq}.5", "ConvTranspose", h, inner_nc * 2, outer_nc, bias=False)
            h = self.norm(f"{seq}.6", h, outer_nc)
        return b.op(path, "Concat", [a, h], axis=1)


def build_pix2pix(
    channels: int = 3,
    *,
    ngf: int = 64,
    num_downs: int = 8,
    size: int = 256,
    seed: int = 0,
    calibrate_weights: bool = True,
) -> onnx.ModelProto:
    """The U-Net generator with ``channels`` in and out (3 = RGB as published, 1 = CT/MRI)."""
    if size % (2**num_downs):
        raise ValueError(f"size {size} must be divisible by 2**num_downs = {2**num_downs}")
    b = ModelBuilder("main_graph", seed=seed)
    net = _Unet(b)
    x = b.input("input", [1, channels, size, size])

    # Build the nesting from the innermost block out, as UnetGenerator.__init__ does.
    def make(level: int) -> Callable[[str, str], str]:
        # level 0 = innermost; levels 1..num_downs-5 = ngf*8 middles; then 4,2,1 x ngf.
        n_mid = num_downs - 5
        if level == 0:
            return lambda p, h: net.block(p, h, ngf * 8, ngf * 8, None, None, innermost=True)
        if level <= n_mid:
            return lambda p, h: net.block(p, h, ngf * 8, ngf * 8, None, make(level - 1))
        widths = {n_mid + 1: (ngf * 4, ngf * 8), n_mid + 2: (ngf * 2, ngf * 4)}
        widths[n_mid + 3] = (ngf, ngf * 2)
        outer, inner = widths[level]
        return lambda p, h: net.block(p, h, outer, inner, None, make(level - 1))

    top = num_downs - 2  # the block just inside the outermost
    y = net.block("/model", x, channels, ngf, channels, make(top), outermost=True)
    b.output(y, "output", [1, channels, size, size])
    model = b.build(
        doc=f"hxsched zoo: pix2pix UnetGenerator(input_nc={channels}, output_nc={channels}, "
        f"num_downs={num_downs}, ngf={ngf}, BatchNorm2d), seeded random weights (seed {seed}); "
        "synthetic, not for diagnostic use"
    )
    if calibrate_weights:
        rng = np.random.default_rng(seed + 1)
        samples = {"input": rng.uniform(-1, 1, size=(8, channels, size, size)).astype(np.float32)}
        model = calibrate(model, net.targets, samples, rng)
    return model
