"""NVTX ranges per frame and per segment when the optional ``nvtx`` package is installed, so
Nsight Systems shows the pipeline; no-ops otherwise."""

from __future__ import annotations

import contextlib
import importlib.util
import shlex
from collections.abc import Iterator, Sequence

_COLORS = {"gpu": "green", "dla0": "blue", "dla1": "purple", "frame": "orange"}
_nvtx = None
if importlib.util.find_spec("nvtx") is not None:  # pragma: no cover - optional
    try:
        import nvtx as _nvtx
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


def nsys_command(argv: Sequence[str], output: str = "hxsched-run") -> str:
    """The ``nsys profile`` line that records this run with CUDA and NVTX traces."""
    rest = [a for a in argv if a != "--nsys"]
    return shlex.join(
        [
            "nsys",
            "profile",
            "--trace=cuda,nvtx,osrt",
            "--sample=none",
            "-o",
            output,
            "--force-overwrite=true",
            "hxsched",
            *rest,
        ]
    )
