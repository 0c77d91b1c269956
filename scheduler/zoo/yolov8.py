"""YOLOv8 detection models with Ultralytics' structure and node names, as its ONNX export writes them.

Follows ultralytics/cfg/models/v8/yolov8.yaml with the n/s scales and ultralytics/nn/modules:
``Conv`` = Conv2d + BatchNorm + SiLU (BatchNorm fused into the Conv at export, SiLU written as
Sigmoid * x), ``C2f`` (cv1, Split, Bottlenecks with residual Add, Concat, cv2), ``SPPF`` (three
MaxPool k5 s1 p2), nearest ``Upsample`` x2, channel ``Concat`` and the ``Detect`` head: per level
two 3x3 Convs and a 1x1 Conv for box (4 x 16) and class logits, concatenated, flattened over
anchors, the DFL (Reshape, Transpose, Softmax, fixed 1x1 Conv with weights 0..15) and dist2bbox
(chunk via Shape/Gather/Add/Div/Mul/Slice, Sub, Add, Div, Concat), times strides, Sigmoid, Concat.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from hxsched.scheduler.zoo.builder import ModelBuilder
from hxsched.scheduler.zoo.liveness import AffineOutput, Target, calibrate

# (depth multiple, width multiple, max channels) from yolov8.yaml "scales".
SCALES = {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024)}


def _make_divisible(x: float, divisor: int = 8) -> int:
    return int(np.ceil(x / divisor) * divisor)


class _Yolo:
    def __init__(self, b: ModelBuilder, width: float, depth: float, max_ch: int) -> None:
        self.b = b
        self.width = width
        self.depth = depth
        self.max_ch = max_ch
        self.targets: dict[str, Target] = {}
        self.shapes: dict[str, tuple[int, int, int]] = {}  # tensor -> (C, H, W)

    def ch(self, c: int) -> int:
        return _make_divisible(min(c, self.max_ch) * self.width, 8)

    def n(self, n: int) -> int:
        return max(round(n * self.depth), 1) if n > 1 else n

    # -- modules -----------------------------------------------------------------------------
    def conv2d(self, scope: str, x: str, cin: int, cout: int, k: int, s: int, *, target) -> str:
        """A plain Conv2d with bias (a fused Conv+BN, or the Detect head's last 1x1)."""
        b = self.b
        prefix = scope.strip("/").replace("/", ".")
        w = b.weight(f"{prefix}.weight", b.he((cout, cin, k, k), cin * k * k))
        bias = b.weight(f"{prefix}.bias", np.zeros(cout, np.float32))
        p = k // 2
        out = b.op(
            scope, "Conv", [x, w, bias], dilations=[1, 1], group=1, kernel_shape=[k, k],
            pads=[p, p, p, p], strides=[s, s],
        )  # fmt: skip
        self.targets[b.nodes[-1].name] = target
        c, h, wd = self.shapes[x]
        self.shapes[out] = (cout, (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1)
        return out

    def conv(self, scope: str, x: str, cout: int, k: int = 1, s: int = 1) -> str:
        """Ultralytics ``Conv``: Conv2d(bias=False) + BatchNorm2d (fused) + SiLU."""
        cin = self.shapes[x][0]
        # A BatchNorm with random gamma/beta, folded into the conv as the exporter does.
        h = self.conv2d(
            f"{scope}/conv", x, cin, cout, k, s, target=AffineOutput((0.6, 1.4), 0.0, 0.5)
        )
        sig = self.b.op(f"{scope}/act", "Sigmoid", [h])
        out = self.b.op(f"{scope}/act", "Mul", [h, sig])
        self.shapes[sig] = self.shapes[out] = self.shapes[h]
        return out

    def concat(self, scope: str, xs: list[str], axis: int = 1) -> str:
        out = self.b.op(scope, "Concat", xs, axis=axis)
        c = sum(self.shapes[x][0] for x in xs)
        self.shapes[out] = (c, *self.shapes[xs[0]][1:])
        return out

    def c2f(self, scope: str, x: str, cout: int, n: int, shortcut: bool) -> str:
        c = int(cout * 0.5)
        y = self.conv(f"{scope}/cv1", x, 2 * c, 1, 1)
        split = self.b.const(scope, [c, c])  # torch writes the split sizes as a constant
        parts = self.b.op(scope, "Split", [y, split], n_out=2, axis=1)
        for p in parts:
            self.shapes[p] = (c, *self.shapes[y][1:])
        outs = list(parts)
        for j in range(n):
            h = self.conv(f"{scope}/m.{j}/cv1", outs[-1], c, 3, 1)
            h = self.conv(f"{scope}/m.{j}/cv2", h, c, 3, 1)
            if shortcut:
                h2 = self.b.op(f"{scope}/m.{j}", "Add", [outs[-1], h])
                self.shapes[h2] = self.shapes[h]
                h = h2
            outs.append(h)
        cat = self.concat(scope, outs)
        return self.conv(f"{scope}/cv2", cat, cout, 1, 1)

    def sppf(self, scope: str, x: str, cout: int, k: int = 5) -> str:
        c_ = self.shapes[x][0] // 2
        y = [self.conv(f"{scope}/cv1", x, c_, 1, 1)]
        for i in range(3):
            sub = f"{scope}/m" if i == 0 else f"{scope}/m_{i}"
            out = self.b.op(
                sub, "MaxPool", [y[-1]], ceil_mode=0, dilations=[1, 1], kernel_shape=[k, k],
                pads=[k // 2] * 4, strides=[1, 1],
            )  # fmt: skip
            self.shapes[out] = self.shapes[y[-1]]
            y.append(out)
        return self.conv(f"{scope}/cv2", self.concat(scope, y), cout, 1, 1)

    def upsample(self, scope: str, x: str) -> str:
        scales = self.b.const(scope, [1.0, 1.0, 2.0, 2.0], np.float32)
        out = self.b.op(
            scope, "Resize", [x, "", scales], coordinate_transformation_mode="asymmetric",
            cubic_coeff_a=-0.75, mode="nearest", nearest_mode="floor",
        )  # fmt: skip
        c, h, w = self.shapes[x]
        self.shapes[out] = (c, h * 2, w * 2)
        return out

    def detect(self, scope: str, feats: list[str], nc: int, strides: list[int]) -> str:
        b = self.b
        reg_max = 16
        no = nc + 4 * reg_max
        ch = [self.shapes[f][0] for f in feats]
        c2 = max(16, ch[0] // 4, reg_max * 4)
        c3 = max(ch[0], min(nc, 100))
        levels = []
        for i, f in enumerate(feats):
            box = self.conv(f"{scope}/cv2.{i}/cv2.{i}.0", f, c2, 3)
            box = self.conv(f"{scope}/cv2.{i}/cv2.{i}.1", box, c2, 3)
            box = self.conv2d(
                f"{scope}/cv2.{i}/cv2.{i}.2", box, c2, 4 * reg_max, 1, 1,
                target=AffineOutput(1.5, 0.0, 0.3),
            )  # fmt: skip
            cls = self.conv(f"{scope}/cv3.{i}/cv3.{i}.0", f, c3, 3)
            cls = self.conv(f"{scope}/cv3.{i}/cv3.{i}.1", cls, c3, 3)
            cls = self.conv2d(
                f"{scope}/cv3.{i}/cv3.{i}.2", cls, c3, nc, 1, 1,
                target=AffineOutput(1.5, -2.0, 0.5),
            )  # fmt: skip
            levels.append(self.concat(scope, [box, cls]))
        flat = []
        anchors, stride_col = [], []
        for lvl, s in zip(levels, strides, strict=True):
            _, h, w = self.shapes[lvl]
            shape = b.const(scope, [1, no, -1])
            flat.append(b.op(scope, "Reshape", [lvl, shape], allowzero=0))
            sx = np.arange(w, dtype=np.float32) + 0.5
            sy = np.arange(h, dtype=np.float32) + 0.5
            gy, gx = np.meshgrid(sy, sx, indexing="ij")
            anchors.append(np.stack([gx.ravel(), gy.ravel()], 0))
            stride_col.append(np.full((1, h * w), s, np.float32))
        n_anchor = sum(a.shape[1] for a in anchors)
        x_cat = b.op(scope, "Concat", flat, axis=2)
        split = b.const(scope, [4 * reg_max, nc])
        box, cls = b.op(scope, "Split", [x_cat, split], n_out=2, axis=1)
        # DFL: softmax over the 16 bins, expectation by a fixed 1x1 conv with weights 0..15.
        dfl = f"{scope}/dfl"
        r = b.op(dfl, "Reshape", [box, b.const(dfl, [1, 4, reg_max, n_anchor])], allowzero=0)
        t = b.op(dfl, "Transpose", [r], perm=[0, 2, 1, 3])
        sm = b.op(dfl, "Softmax", [t], axis=1)
        w_dfl = b.weight(
            "model.22.dfl.conv.weight",
            np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1),
        )
        d = b.op(
            f"{dfl}/conv", "Conv", [sm, w_dfl], dilations=[1, 1], group=1, kernel_shape=[1, 1],
            pads=[0, 0, 0, 0], strides=[1, 1],
        )  # fmt: skip
        dist = b.op(dfl, "Reshape", [d, b.const(dfl, [1, 4, n_anchor])], allowzero=0)
        # dist2bbox: lt, rb = distance.chunk(2, 1), written by torch as shape arithmetic.
        shp = b.op(scope, "Shape", [dist])
        dim = b.op(scope, "Gather", [shp, b.const(scope, 1)], axis=0)
        plus = b.op(scope, "Add", [dim, b.const(scope, 1)])
        half = b.op(scope, "Div", [plus, b.const(scope, 2)])
        zero = b.const(scope, [0])
        one_ax = b.const(scope, [1])
        end0 = b.op(scope, "Unsqueeze", [half, b.const(scope, [0])])
        lt = b.op(scope, "Slice", [dist, zero, end0, one_ax])
        end1 = b.op(scope, "Mul", [half, b.const(scope, 2)])
        end1u = b.op(scope, "Unsqueeze", [end1, b.const(scope, [0])])
        rb = b.op(scope, "Slice", [dist, b.op(scope, "Unsqueeze", [half, b.const(scope, [0])]),
                                   end1u, one_ax])  # fmt: skip
        anchor_points = b.weight(
            f"{scope.strip('/')}.anchors", np.concatenate(anchors, 1)[None].astype(np.float32)
        )
        x1y1 = b.op(scope, "Sub", [anchor_points, lt])
        x2y2 = b.op(scope, "Add", [anchor_points, rb])
        c_xy = b.op(
            scope, "Div", [b.op(scope, "Add", [x1y1, x2y2]), b.const(scope, 2.0, np.float32)]
        )
        wh = b.op(scope, "Sub", [x2y2, x1y1])
        dbox = b.op(scope, "Concat", [c_xy, wh], axis=1)
        stride_t = b.weight(
            f"{scope.strip('/')}.strides", np.concatenate(stride_col, 1)[None].astype(np.float32)
        )
        dbox = b.op(scope, "Mul", [dbox, stride_t])
        sig = b.op(scope, "Sigmoid", [cls])
        return b.op(scope, "Concat", [dbox, sig], axis=1)


def build_yolov8(
    scale: str = "n",
    *,
    nc: int = 80,
    imgsz: int = 640,
    seed: int = 0,
    calibrate_weights: bool = True,
    progress: Callable[[str], None] | None = None,
) -> onnx.ModelProto:
    """YOLOv8{n,s} for ``nc`` classes at ``imgsz`` x ``imgsz``; output ``[1, 4 + nc, anchors]``."""
    if scale not in SCALES:
        raise ValueError(f"unknown YOLOv8 scale {scale!r} (known: {', '.join(SCALES)})")
    if imgsz % 32:
        raise ValueError(f"imgsz {imgsz} must be a multiple of 32")
    depth, width, max_ch = SCALES[scale]
    b = ModelBuilder("main_graph", seed=seed)
    y = _Yolo(b, width, depth, max_ch)
    x = b.input("images", [1, 3, imgsz, imgsz])
    y.shapes[x] = (3, imgsz, imgsz)
    ch = y.ch
    layers: list[str] = []
    layers.append(y.conv("/model.0", x, ch(64), 3, 2))
    layers.append(y.conv("/model.1", layers[-1], ch(128), 3, 2))
    layers.append(y.c2f("/model.2", layers[-1], ch(128), y.n(3), True))
    layers.append(y.conv("/model.3", layers[-1], ch(256), 3, 2))
    layers.append(y.c2f("/model.4", layers[-1], ch(256), y.n(6), True))
    layers.append(y.conv("/model.5", layers[-1], ch(512), 3, 2))
    layers.append(y.c2f("/model.6", layers[-1], ch(512), y.n(6), True))
    layers.append(y.conv("/model.7", layers[-1], ch(1024), 3, 2))
    layers.append(y.c2f("/model.8", layers[-1], ch(1024), y.n(3), True))
    layers.append(y.sppf("/model.9", layers[-1], ch(1024), 5))
    layers.append(y.upsample("/model.10", layers[-1]))
    layers.append(y.concat("/model.11", [layers[-1], layers[6]]))
    layers.append(y.c2f("/model.12", layers[-1], ch(512), y.n(3), False))
    layers.append(y.upsample("/model.13", layers[-1]))
    layers.append(y.concat("/model.14", [layers[-1], layers[4]]))
    layers.append(y.c2f("/model.15", layers[-1], ch(256), y.n(3), False))
    layers.append(y.conv("/model.16", layers[-1], ch(256), 3, 2))
    layers.append(y.concat("/model.17", [layers[-1], layers[12]]))
    layers.append(y.c2f("/model.18", layers[-1], ch(512), y.n(3), False))
    layers.append(y.conv("/model.19", layers[-1], ch(512), 3, 2))
    layers.append(y.concat("/model.20", [layers[-1], layers[9]]))
    layers.append(y.c2f("/model.21", layers[-1], ch(1024), y.n(3), False))
    out = y.detect("/model.22", [layers[15], layers[18], layers[21]], nc, [8, 16, 32])
    n_anchor = sum((imgsz // s) ** 2 for s in (8, 16, 32))
    b.output(out, "output0", [1, 4 + nc, n_anchor])
    model = b.build(
        doc=f"hxsched zoo: YOLOv8{scale} (ultralytics yolov8.yaml, nc={nc}, imgsz={imgsz}), "
        f"seeded random weights (seed {seed}); synthetic, not for diagnostic use"
    )
    if calibrate_weights:
        rng = np.random.default_rng(seed + 1)
        samples = {"images": rng.uniform(0, 1, size=(4, 3, imgsz, imgsz)).astype(np.float32)}
        model = calibrate(model, y.targets, samples, rng, progress)
    return model
