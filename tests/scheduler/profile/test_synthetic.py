"""Seeded synthetic profiles: valid, reproducible, shaped like the models they stand for."""

from __future__ import annotations

import numpy as np

from hxsched.scheduler.profile.synthetic import benchmark_profile, random_profile


def test_random_profile_is_seeded_and_on_ticks():
    a = random_profile(np.random.default_rng(3), 12, "m")
    b = random_profile(np.random.default_rng(3), 12, "m")
    assert a == b
    assert len(a.groups) == 12 and len(a.transitions) == 11
    for g in a.groups:
        for ms in g.time_ms.values():
            assert abs(ms * 100 - round(ms * 100)) < 1e-9
        assert ("dla" in g.time_ms) == g.dla


def test_benchmark_profile_has_a_gpu_only_tail_and_slower_dla():
    p = benchmark_profile(np.random.default_rng(42), 40, "m")
    dla = [g.dla for g in p.groups]
    assert dla[:36] == [True] * 36 and dla[36:] == [False] * 4
    for g in p.groups:
        if g.dla:
            assert g.time_ms["dla"] >= g.time_ms["gpu"]
