"""What this machine can do (GPU, Jetson, DLA, TensorRT), detected without importing hardware libs."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Capabilities:
    is_jetson: bool
    has_cuda_gpu: bool
    dla_cores: int
    trt_available: bool
    pycuda_available: bool

    def describe(self) -> str:
        kind = "Jetson" if self.is_jetson else ("CUDA GPU" if self.has_cuda_gpu else "CPU only")
        return (
            f"{kind}; DLA cores: {self.dla_cores}; TensorRT: "
            f"{'yes' if self.trt_available else 'no'}; pycuda: "
            f"{'yes' if self.pycuda_available else 'no'}"
        )


def _dla_cores() -> int:
    # Each DLA core appears as a platform device (nvdla0, nvdla1) on Jetson kernels.
    base = Path("/sys/devices/platform")
    if not base.exists():
        return 0
    try:
        return sum(1 for p in base.glob("**/nvdla*") if p.is_dir() and p.name[-1:].isdigit())
    except OSError:
        return 0


@functools.lru_cache(maxsize=1)
def detect() -> Capabilities:
    """Probe once; honours HXSCHED_FORCE_CPU=1 to pretend no accelerator exists."""
    if os.environ.get("HXSCHED_FORCE_CPU") == "1":
        return Capabilities(False, False, 0, False, False)
    is_jetson = Path("/etc/nv_tegra_release").exists()
    has_gpu = is_jetson or Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None
    return Capabilities(
        is_jetson=is_jetson,
        has_cuda_gpu=has_gpu,
        dla_cores=_dla_cores() if is_jetson else 0,
        trt_available=importlib.util.find_spec("tensorrt") is not None,
        pycuda_available=importlib.util.find_spec("pycuda") is not None,
    )
