"""Synthetic group-level profiles (seeded) for tests and benchmarks: random chains shaped like
real models, no ONNX needed. Times are whole ticks of 0.01 ms, so every solver sees the same
integers."""

from __future__ import annotations

from hxsched.scheduler.profile.schema import (
    GroupProfile,
    ModelInfo,
    Profile,
    Provenance,
    Transition,
)
from hxsched.scheduler.types import AcceleratorKind, Precision, ProvenanceKind

GPU, DLA = AcceleratorKind.GPU, AcceleratorKind.DLA


def random_profile(rng, n_groups: int, name: str, device: str = "orin-agx") -> Profile:
    groups = []
    for g in range(n_groups):
        dla = bool(rng.random() < 0.75)
        gpu = int(rng.integers(2, 30)) * 0.01
        times = {GPU: gpu}
        if dla:
            times[DLA] = int(rng.integers(2, 60)) * 0.01
        bw = {k: float(rng.integers(1, 150)) * 1e9 for k in times}
        groups.append(GroupProfile(id=g, time_ms=times, dla=dla, memory_bw=bw))
    trans = tuple(
        Transition(g, int(rng.integers(0, 5)) * 0.01, int(rng.integers(0, 5)) * 0.01)
        for g in range(n_groups - 1)
    )
    prov = {"t": Provenance(ProvenanceKind.PUBLISHED, "test generator")}
    return Profile(device, Precision.FP16, ModelInfo(name), prov, "t", tuple(groups), trans)


def benchmark_profile(rng, n_groups: int, name: str, device: str = "orin-agx") -> Profile:
    """A model-like chain: every group DLA-capable except a short GPU-only tail (a detection
    head), DLA 1.5-3x slower than the GPU, hand-overs 0.02-0.08 ms."""
    groups = []
    tail = max(1, n_groups // 10)
    for g in range(n_groups):
        gpu = max(0.01, float(rng.uniform(0.02, 0.3)))
        dla = g < n_groups - tail
        times = {GPU: round(gpu, 2)}
        if dla:
            times[DLA] = round(gpu * float(rng.uniform(1.5, 3.0)), 2)
        bw = {k: float(rng.uniform(5, 120)) * 1e9 for k in times}
        groups.append(GroupProfile(id=g, time_ms=times, dla=dla, memory_bw=bw))
    trans = tuple(
        Transition(
            g, round(float(rng.uniform(0.02, 0.08)), 2), round(float(rng.uniform(0.01, 0.05)), 2)
        )
        for g in range(n_groups - 1)
    )
    prov = {"b": Provenance(ProvenanceKind.PUBLISHED, "benchmark generator (random, seeded)")}
    return Profile(device, Precision.FP16, ModelInfo(name), prov, "b", tuple(groups), trans)
