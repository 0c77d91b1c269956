"""Model zoo: faithful, torch-free ONNX builds of the models hxsched is tested and shipped with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx

from hxsched.errors import HxschedError


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    reference: str
    input: tuple[str, tuple[int, ...]]
    output: tuple[str, tuple[int, ...]]
    params: int  # trainable parameters as the reference implementation counts them
    _build: Callable[..., onnx.ModelProto]

    def build(
        self,
        *,
        seed: int = 0,
        calibrate_weights: bool = True,
    ) -> onnx.ModelProto:
        """The model with seeded weights (calibrated to keep activations alive by default)."""
        return self._build(seed=seed, calibrate_weights=calibrate_weights)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "reference": self.reference,
            "input": {"name": self.input[0], "shape": list(self.input[1])},
            "output": {"name": self.output[0], "shape": list(self.output[1])},
            "params": self.params,
        }


def _pix2pix(channels: int) -> Callable[..., onnx.ModelProto]:
    def build(**kw: Any) -> onnx.ModelProto:
        from hxsched.scheduler.zoo.pix2pix import build_pix2pix

        return build_pix2pix(channels, **kw)

    return build


def _yolo(scale: str) -> Callable[..., onnx.ModelProto]:
    def build(**kw: Any) -> onnx.ModelProto:
        from hxsched.scheduler.zoo.yolov8 import build_yolov8

        return build_yolov8(scale, **kw)

    return build


_PIX2PIX_REF = (
    "junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py UnetGenerator(num_downs=8, ngf=64, "
    "norm_layer=BatchNorm2d)"
)
_YOLO_REF = "ultralytics/cfg/models/v8/yolov8.yaml + ultralytics/nn/modules (ONNX export, BN fused)"

# Bumped whenever a builder's weights or structure change, so cached model files are rebuilt
# (2: YOLOv8 calibrated on image-like samples, class logits from Ultralytics' prior).
REVISION = 2

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            "pix2pix_unet256",
            "Pix2Pix U-Net 256 generator, 3 channels in/out (as in Abdul Majeed et al.)",
            _PIX2PIX_REF,
            ("input", (1, 3, 256, 256)),
            ("output", (1, 3, 256, 256)),
            54_413_955,
            _pix2pix(3),
        ),
        ZooEntry(
            "pix2pix_unet256_1ch",
            "Pix2Pix U-Net 256 generator, 1 channel in/out (CT slice -> synthetic MRI slice)",
            _PIX2PIX_REF,
            ("input", (1, 1, 256, 256)),
            ("output", (1, 1, 256, 256)),
            54_407_809,
            _pix2pix(1),
        ),
        ZooEntry(
            "yolov8n",
            "YOLOv8n detector, 640x640, 80 classes",
            _YOLO_REF,
            ("images", (1, 3, 640, 640)),
            ("output0", (1, 84, 8400)),
            3_151_904,
            _yolo("n"),
        ),
        ZooEntry(
            "yolov8s",
            "YOLOv8s detector, 640x640, 80 classes",
            _YOLO_REF,
            ("images", (1, 3, 640, 640)),
            ("output0", (1, 84, 8400)),
            11_156_544,
            _yolo("s"),
        ),
    )
}


def zoo_entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise HxschedError(
            f"unknown zoo model {name!r} (known: {', '.join(ZOO)}; see hxsched zoo --list)"
        ) from None


def build_zoo_model(
    name: str,
    *,
    seed: int = 0,
    calibrate_weights: bool = True,
) -> onnx.ModelProto:
    """Build zoo model ``name`` with seeded weights."""
    return zoo_entry(name).build(seed=seed, calibrate_weights=calibrate_weights)
