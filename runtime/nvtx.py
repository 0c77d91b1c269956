"""NVTX ranges per frame and per segment when the optional ``nvtx`` package is installed, so
Nsight Systems shows the pipeline; no-ops otherwise."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
from collections.abc import Iterator, Sequence
from typing import Any

_COLORS = {"gpu": "green", "dla0": "blue", "dla1": "purple", "frame": "orange"}
_nvtx: Any = None  # the `nvtx` module (no type information) when installed
if importlib.util.find_spec("nvtx") is not None:  # pragma: no cover - optional
    try:
        _nvtx = importlib.import_module("nvtx")
    except Exception:  # noqa: BLE001 - a broken optional install must not break runs
        _nvtx = None


def available() -> bool:
    return _nvtx is not None


@contextlib.contextmanager
def annotate(message: str, lane: str = "frame") -> Iterator[None]:
    if _nvtx is None:
        yield
        return
    with _nvtx.annotate(message, color=_COLORS.get(lane, "gray"), domain="hxsched"):
        yield


# Nsight Systems on Jetson Orin traces DLA work through cuDLA and the tegra-accelerators
# source, as NVIDIA's own Orin command lines do (``-t cuda,cudla,osrt,nvtx,tegra-accelerators
# --accelerator-trace=tegra-accelerators``, NVIDIA's MLPerf Automotive Orin tuning guide); the
# values accepted vary by nsys release: check ``nsys profile --help`` on the device.
TRACE_X86 = "cuda,nvtx,osrt"
TRACE_JETSON = "cuda,nvtx,osrt,cudla,tegra-accelerators"
TEGRA_RELEASE = "/etc/nv_tegra_release"  # present on every L4T / JetPack image


def is_jetson(release_file: str = TEGRA_RELEASE) -> bool:
    return os.path.exists(release_file)


def nsys_trace_args(jetson: bool) -> list[str]:
    """The trace options: DLA tracing on a Jetson, plain CUDA/NVTX/OS runtime elsewhere."""
    if jetson:
        return [f"--trace={TRACE_JETSON}", "--accelerator-trace=tegra-accelerators"]
    return [f"--trace={TRACE_X86}"]


def nsys_command(
    argv: Sequence[str], output: str = "hxsched-run", *, jetson: bool | None = None
) -> str:
    """The ``nsys profile`` line that records this run with CUDA and NVTX traces (and the DLA's
    on a Jetson; ``jetson`` None: this machine)."""
    rest = [a for a in argv if a != "--nsys"]
    on_jetson = is_jetson() if jetson is None else jetson
    return shlex.join(
        [
            "nsys",
            "profile",
            *nsys_trace_args(on_jetson),
            "--sample=none",
            "-o",
            output,
            "--force-overwrite=true",
            "hxsched",
            *rest,
        ]
    )
