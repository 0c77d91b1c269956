"""The closed sets every layer shares: accelerators, objectives, precisions, provenance kinds.

``str`` enums: a member compares equal to its value and serialises as it, so files keep their
spelling (``gpu``, ``dla0``) while the code names the case it means.
"""

from __future__ import annotations

import enum


class AcceleratorKind(str, enum.Enum):
    """What a profile times: one number per kind, whichever DLA core runs it."""

    GPU = "gpu"
    DLA = "dla"
    CPU = "cpu"

    def __str__(self) -> str:
        return self.value


class Accelerator(str, enum.Enum):
    """One accelerator of a device, as plans name them (one stream each)."""

    GPU = "gpu"
    DLA0 = "dla0"
    DLA1 = "dla1"
    CPU = "cpu"  # a measured CPU profile planned with `--device cpu`

    @property
    def is_dla(self) -> bool:
        return self in (Accelerator.DLA0, Accelerator.DLA1)

    @property
    def dla_core(self) -> int | None:
        """0 or 1 for a DLA, None otherwise (TensorRT's ``IBuilderConfig.DLA_core``)."""
        return int(self.value[3:]) if self.is_dla else None

    @property
    def kind(self) -> AcceleratorKind:
        return AcceleratorKind.DLA if self.is_dla else AcceleratorKind(self.value)

    def __str__(self) -> str:
        return self.value


class Objective(str, enum.Enum):
    THROUGHPUT = "throughput"
    LATENCY = "latency"

    def __str__(self) -> str:
        return self.value


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value


class ProvenanceKind(str, enum.Enum):
    MEASURED = "measured"
    ESTIMATED = "estimated"
    IMPORTED = "imported"
    PUBLISHED = "published"

    def __str__(self) -> str:
        return self.value
