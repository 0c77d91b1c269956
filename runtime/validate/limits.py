"""The tolerances of ``hxsched validate`` (a pipeline file's ``validate:`` section): plain data,
importable without numpy so that every ``--help`` runs on a bare install."""

from __future__ import annotations

from dataclasses import dataclass, field

from hxsched.codec import meta


@dataclass(frozen=True)
class ValidateLimits:
    """What ``hxsched validate`` accepts of the deployed precision against FP32 (worst slice)."""

    min_psnr: float = field(default=30.0, metadata=meta(ge=0))  # dB, synth outputs
    min_ssim: float = field(default=0.95, metadata=meta(ge=-1, le=1))
    min_cosine: float = field(default=0.99, metadata=meta(ge=-1, le=1))  # every output
    min_agreement: float = field(default=0.95, metadata=meta(ge=0, le=1))  # finding / none
    min_f1: float = field(default=0.9, metadata=meta(ge=0, le=1))  # boxes at IoU >= 0.5
    min_map50: float = field(default=0.9, metadata=meta(ge=0, le=1))
