"""Capability detection (no hardware libraries imported)."""

from __future__ import annotations

import sys

from hxsched.capabilities import Capabilities, detect


def test_detect_without_importing_hardware_libs(monkeypatch):
    detect.cache_clear()
    caps = detect()
    assert isinstance(caps, Capabilities)
    assert "tensorrt" not in sys.modules and "pycuda" not in sys.modules
    assert caps.describe()


def test_force_cpu(monkeypatch):
    detect.cache_clear()
    monkeypatch.setenv("HXSCHED_FORCE_CPU", "1")
    caps = detect()
    assert not caps.has_cuda_gpu and caps.dla_cores == 0 and "CPU only" in caps.describe()
    detect.cache_clear()
