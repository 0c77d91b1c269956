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

import numpy as np
import onnx

from hxsched.scheduler.zoo.builder import ModelBuilder, param_prefix
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
        prefix = param_prefix(scope)
        w = b.weight(f"{prefix}.weight", b.he((cout, cin, k, k), cin * k * k))
        bias = b.weight(f"{prefix}.bias", np.zeros(cout, np.float32))
        p = k // 2
        out = b.op(
            scope,
            "Conv",
            [x, w, bias],
            dilations=[1, 1],
            group=1,
            kernel_shape=[k, k],
            pads=[p, p, p, p],
            strides=[s, s],
        )
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
        split = self.b.unscoped_const([c, c], "Split")  # torch writes split sizes unscoped
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
                sub,
                "MaxPool",
                [y[-1]],
                ceil_mode=0,
                dilations=[1, 1],
                kernel_shape=[k, k],
                pads=[k // 2] * 4,
                strides=[1, 1],
            )
            self.shapes[out] = self.shapes[y[-1]]
            y.append(out)
        return self.conv(f"{scope}/cv2", self.concat(scope, y), cout, 1, 1)

    def upsample(self, scope: str, x: str) -> str:
        scales = self.b.const(scope, [1.0, 1.0, 2.0, 2.0], np.float32)
        out = self.b.op(
            scope,
            "Resize",
            [x, "", scales],
            coordinate_transformation_mode="asymmetric",
            cubic_coeff_a=-0.75,
            mode="nearest",
            nearest_mode="floor",
        )
        c, h, w = self.shapes[x]
        self.shapes[out] = (c, h * 2, w * 2)
        return out

    def detect(self, scope: str, feats: list[str], nc: int, strides: list[int], head: str) -> str:
        b = self.b
        reg_max = 16
        no = nc + 4 * reg_max
        ch = [self.shapes[f][0] for f in feats]
        c2 = max(16, ch[0] // 4, reg_max * 4)
        c3 = max(ch[0], min(nc, 100))
        box_target = AffineOutput(1.5, 0.0, 0.3)

        def branch(name: str, i: int, f: str, c: int, cout: int, target: AffineOutput) -> str:
            h = self.conv(f"{scope}/{name}.{i}/{name}.{i}.0", f, c, 3)
            h = self.conv(f"{scope}/{name}.{i}/{name}.{i}.1", h, c, 3)
            return self.conv2d(f"{scope}/{name}.{i}/{name}.{i}.2", h, c, cout, 1, 1, target=target)

        n_anchor = sum(self.shapes[f][1] * self.shapes[f][2] for f in feats)
        if head == "split":
            # Ultralytics 8.0-8.3: cat(box, cls) per level, view(b, no, -1), cat over anchors, split.
            levels = []
            for i, f in enumerate(feats):
                box = branch("cv2", i, f, c2, 4 * reg_max, box_target)
                cls = branch("cv3", i, f, c3, nc, _cls_target(nc, strides[i]))
                levels.append(self.concat(scope, [box, cls]))
            flat = [
                b.op(scope, "Reshape", [lvl, b.const(scope, [1, no, -1])], allowzero=0)
                for lvl in levels
            ]
            x_cat = b.op(scope, "Concat", flat, axis=2)
            split = b.unscoped_const([4 * reg_max, nc], "Split")
            box, cls = b.op(scope, "Split", [x_cat, split], n_out=2, axis=1)
        elif head == "separate":
            # Ultralytics 8.4+: box and class branches flattened and concatenated separately.
            boxes = [branch("cv2", i, f, c2, 4 * reg_max, box_target) for i, f in enumerate(feats)]
            boxes = [
                b.op(scope, "Reshape", [x, b.const(scope, [1, 4 * reg_max, -1])], allowzero=0)
                for x in boxes
            ]
            box = b.op(scope, "Concat", boxes, axis=-1)
            clss = [
                branch("cv3", i, f, c3, nc, _cls_target(nc, strides[i]))
                for i, f in enumerate(feats)
            ]
            clss = [
                b.op(scope, "Reshape", [x, b.const(scope, [1, nc, -1])], allowzero=0) for x in clss
            ]
            cls = b.op(scope, "Concat", clss, axis=-1)
        else:
            raise ValueError(f"unknown Detect head style {head!r} (split or separate)")
        # DFL: softmax over the 16 bins, expectation by a fixed 1x1 conv with weights 0..15.
        dfl = f"{scope}/dfl"
        r = b.op(dfl, "Reshape", [box, b.const(dfl, [1, 4, reg_max, n_anchor])], allowzero=0)
        t = b.op(dfl, "Transpose", [r], perm=[0, 2, 1, 3])
        sm = b.op(dfl, "Softmax", [t], axis=1)
        w_dfl = b.weight(
            f"{param_prefix(dfl)}.conv.weight",
            np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1),
        )
        d = b.op(
            f"{dfl}/conv",
            "Conv",
            [sm, w_dfl],
            dilations=[1, 1],
            group=1,
            kernel_shape=[1, 1],
            pads=[0, 0, 0, 0],
            strides=[1, 1],
        )
        dist = b.op(dfl, "Reshape", [d, b.const(dfl, [1, 4, n_anchor])], allowzero=0)
        # dist2bbox: lt, rb = distance.chunk(2, 1), which torch writes as shape arithmetic.
        axis = b.const(scope, [1])
        dim = b.op(scope, "Gather", [b.op(scope, "Shape", [dist]), axis], axis=0)
        start = b.const(scope, [0])
        half = b.op(
            scope, "Div", [b.op(scope, "Add", [dim, b.const(scope, [1])]), b.const(scope, [2])]
        )
        end0 = b.op(scope, "Mul", [half, b.const(scope, [1])])
        lt = b.op(scope, "Slice", [dist, start, end0, axis])
        end1 = b.op(scope, "Mul", [half, b.const(scope, [2])])
        rb = b.op(scope, "Slice", [dist, end0, end1, axis])
        anchors, stride_row = [], []
        for f, s in zip(feats, strides, strict=True):
            _, h, w = self.shapes[f]
            sx = np.arange(w, dtype=np.float32) + 0.5
            sy = np.arange(h, dtype=np.float32) + 0.5
            gy, gx = np.meshgrid(sy, sx, indexing="ij")
            anchors.append(np.stack([gx.ravel(), gy.ravel()], 0))
            stride_row.append(np.full((1, h * w), s, np.float32))
        anchor_points = np.concatenate(anchors, 1)[None]
        x1y1 = b.op(scope, "Sub", [b.const(scope, anchor_points, np.float32), lt])
        x2y2 = b.op(scope, "Add", [b.const(scope, anchor_points, np.float32), rb])
        c_xy = b.op(
            scope, "Div", [b.op(scope, "Add", [x1y1, x2y2]), b.const(scope, 2.0, np.float32)]
        )
        wh = b.op(scope, "Sub", [x2y2, x1y1])
        dbox = b.op(scope, "Concat", [c_xy, wh], axis=1)
        dbox = b.op(scope, "Mul", [dbox, b.const(scope, np.concatenate(stride_row, 1), np.float32)])
        return b.op(scope, "Concat", [dbox, b.op(scope, "Sigmoid", [cls])], axis=1)


def _cls_target(nc: int, stride: int) -> AffineOutput:
    """Class logits of one level: centred on Ultralytics' prior, ``Detect.bias_init`` in
    ultralytics/nn/modules/head.py, ``b[-1].bias.data[: m.nc] = math.log(5 / m.nc / (640 / s)
    ** 2)`` (about 5 objects per 640 x 640 image, spread over the level's anchors and the
    classes), with a spread of 1 logit and 0.5 between classes."""
    return AffineOutput(1.0, float(np.log(5 / nc / (640 / stride) ** 2)), 0.5)


def calibration_images(rng: np.random.Generator, n: int, imgsz: int) -> np.ndarray:
    """``n`` samples [n, 3, imgsz, imgsz] in [0, 1] that the weights are normalised on: every
    other one uniform noise, the others image-like (flat regions, objects with edges, a smooth
    shading, a little noise, letterbox bands of 114/255). Normalised on noise alone, the
    head's activations came out 50-80x their calibrated spread on a CT slice (flat regions and
    edges, which noise does not have) and every class score saturated at 1.0."""
    out = np.empty((n, 3, imgsz, imgsz), np.float32)
    yy, xx = np.mgrid[0:imgsz, 0:imgsz].astype(np.float32)
    coarse = np.linspace(0, imgsz - 1, 9)
    for k in range(n):
        if k % 2:
            out[k] = rng.uniform(0, 1, (3, imgsz, imgsz))
            continue
        img = np.full((imgsz, imgsz), rng.uniform(0, 1), np.float32)
        for _ in range(int(rng.integers(3, 12))):
            cx, cy = rng.uniform(0, imgsz, 2)
            a, b = rng.uniform(imgsz / 40, imgsz / 3, 2)
            img[((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1] = rng.uniform(0, 1)
        grid = rng.uniform(-1, 1, (9, 9))
        rows = np.stack([np.interp(xx[0], coarse, g) for g in grid])  # [9, imgsz]
        shade = np.stack([np.interp(yy[:, 0], coarse, c) for c in rows.T], axis=1)
        img += 0.15 * shade + rng.normal(0, 0.03, img.shape)
        pad = int(rng.integers(0, imgsz // 4))
        if pad:
            img[:pad] = img[imgsz - pad :] = 114 / 255
        out[k] = np.clip(img, 0, 1)[None]
    return out


def build_yolov8(
    scale: str = "n",
    *,
    nc: int = 80,
    imgsz: int = 640,
    seed: int = 0,
    head: str = "split",
    calibrate_weights: bool = True,
) -> onnx.ModelProto:
    """YOLOv8{n,s} for ``nc`` classes at ``imgsz`` x ``imgsz``; output ``[1, 4 + nc, anchors]``.

    ``head`` picks the Detect export of Ultralytics 8.0-8.3 (``split``: per-level box+class
    concat, one Reshape per level, Concat over anchors, Split) or 8.4+ (``separate``).

    Calibrated weights (random otherwise) are normalised on ``calibration_images`` and the class
    logits start from Ultralytics' prior (``_cls_target``), so the outputs look like those of a
    detector that finds little: class scores mostly ~1e-4 to 1e-5; with seed 0, 0-10 anchors of
    8,400 over 0.25 on the service's phantom CT slices (0-9 boxes after NMS), boxes 90-340 px
    wide (5th-95th percentile) in a 640 input. How far a random network's activations drift on
    inputs unlike its calibration images depends on the seed: other seeds give none to a few
    thousand candidates. Before (noise-only calibration, logits centred on -2) every anchor
    scored ~1.0 on a CT slice.
    """
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
    out = y.detect("/model.22", [layers[15], layers[18], layers[21]], nc, [8, 16, 32], head)
    n_anchor = sum((imgsz // s) ** 2 for s in (8, 16, 32))
    b.output(out, "output0", [1, 4 + nc, n_anchor])
    model = b.build(
        doc=f"hxsched zoo: YOLOv8{scale} (ultralytics yolov8.yaml, nc={nc}, imgsz={imgsz}), "
        f"{head} Detect head, seeded random weights (seed {seed}); synthetic, not for diagnostic use"
    )
    if calibrate_weights:
        rng = np.random.default_rng(seed + 1)
        samples = {"images": calibration_images(rng, 12, imgsz)}
        model = calibrate(model, y.targets, samples, rng)
    return model
