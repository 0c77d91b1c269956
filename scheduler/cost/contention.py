"""Shared-DRAM contention: how much a layer group slows when other accelerators pull memory too.

A PCCS-like piecewise model (HaX-CoNN cites PCCS): below a knee of total DRAM demand nothing
slows; above it the slowdown grows linearly with the excess demand until the bus saturates,
scaled by how memory-bound the group itself is. Three parameters per device, fitted from co-run
measurements (``fit_contention``); the defaults come from published co-runs on Orin and Xavier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hxsched.codec import decode, meta
from hxsched.errors import HxschedError, InternalError


def _fraction(value: float) -> str | None:
    return None if 0 < value < 1 else "expected a fraction in (0, 1)"


@dataclass(frozen=True)
class ContentionModel:
    """The three fitted parameters (the profile's ``contention`` block)."""

    peak_gbs: float = field(metadata=meta(gt=0))  # DRAM bandwidth of the device
    knee: float = field(metadata=meta(check=_fraction))  # fraction of peak: below, nothing slows
    max_slowdown: float = field(metadata=meta(ge=1))  # a fully memory-bound group, saturated bus

    KEYS = ("peak_gbs", "knee", "max_slowdown")

    def slowdown(self, own_bw: float, other_bw: float) -> float:
        """Factor (>= 1) for a group pulling ``own_bw`` bytes/s while others pull ``other_bw``."""
        if other_bw <= 0 or own_bw <= 0:
            return 1.0
        peak = self.peak_gbs * 1e9
        knee_bw = self.knee * peak
        demand = own_bw + other_bw
        if demand <= knee_bw:
            return 1.0
        pressure = min(1.0, (demand - knee_bw) / max(peak - knee_bw, 1.0))
        boundness = min(1.0, own_bw / knee_bw) if knee_bw > 0 else 1.0
        return 1.0 + (self.max_slowdown - 1.0) * pressure * boundness

    def to_dict(self) -> dict[str, float]:
        return {"peak_gbs": self.peak_gbs, "knee": self.knee, "max_slowdown": self.max_slowdown}

    @classmethod
    def from_dict(cls, data: Mapping[str, float], path: str | None = None) -> ContentionModel:
        """Decode ``data``; errors name ``contention.<key>`` (and ``path``)."""
        return decode(cls, dict(data), path=path, where="contention")


# Published co-runs the defaults are fitted to (slowdown of the first engine while the other
# runs): Orin MAXN INT8 conv, GPU alone 405.3 qps -> 229.2 qps beside two DLAs (1.77x), DLA 132.7
# -> 113.1 qps (1.17x), NVIDIA forum thread 219770; Orin, NVIDIA/TensorRT#2745: GPU model
# 45 -> 51..59 ms (1.13-1.31x), DLA model 17 -> 20.8..21.8 ms (1.22-1.28x).
DEFAULT_CONTENTION = {
    "orin-agx": ContentionModel(204.8, 0.5, 1.8),
    "orin-nx": ContentionModel(102.4, 0.5, 1.8),
    "orin-nano": ContentionModel(68.0, 0.5, 1.8),
    "xavier-agx": ContentionModel(137.0, 0.5, 1.7),
}


@dataclass(frozen=True)
class CoRun:
    """One co-run measurement: a group alone vs beside other traffic."""

    own_bw: float  # bytes/s the group pulls alone
    other_bw: float  # bytes/s the co-runner pulls
    slowdown: float  # measured time beside the co-runner / time alone


def fit_contention(samples: Sequence[CoRun], peak_gbs: float) -> tuple[ContentionModel, float]:
    """Least-squares fit of knee and max slowdown to co-run measurements; returns (model, rmse)."""
    if not samples:
        raise HxschedError("no co-run measurements to fit the contention model to")
    best: tuple[float, ContentionModel] | None = None
    for k in range(10, 96, 1):
        knee = k / 100
        for s in range(100, 401, 2):
            model = ContentionModel(peak_gbs, knee, s / 100)
            err = sum((model.slowdown(x.own_bw, x.other_bw) - x.slowdown) ** 2 for x in samples)
            if best is None or err < best[0]:
                best = (err, model)
    if best is None:
        raise InternalError("contention fit: the grid search evaluated no model")
    return best[1], (best[0] / len(samples)) ** 0.5
