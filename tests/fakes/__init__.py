"""Strict fakes of TensorRT and pycuda built from recorded API surfaces; ``install`` puts one
recorded version into ``sys.modules`` for a test."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from dataclasses import dataclass
from typing import Any

from fakes.cuda_fake import Driver, autoinit, build_driver
from fakes.surface import PYCUDA_VERSIONS, TRT_VERSIONS
from fakes.trt_fake import build_tensorrt

__all__ = ["PYCUDA_VERSIONS", "TRT_VERSIONS", "FakeStack", "install"]


@dataclass
class FakeStack:
    trt: Any
    cuda: Any
    driver: Driver
    version: str

    @property
    def stats(self) -> Any:
        return self.trt._stats


class _AutoLoader(importlib.abc.Loader, importlib.abc.MetaPathFinder):
    """Runs ``pycuda.autoinit`` / ``pycuda.autoprimaryctx`` on import, on the importing thread."""

    NAMES = ("pycuda.autoinit", "pycuda.autoprimaryctx")

    def __init__(self, cuda: Any) -> None:
        self.cuda = cuda

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in self.NAMES:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec: Any) -> Any:
        return autoinit(self.cuda, spec.name)

    def exec_module(self, module: Any) -> None:
        pass


def install(
    monkeypatch: Any, trt_version: str, pycuda_version: str = "2026.1", **kw: Any
) -> FakeStack:
    """Fake ``tensorrt`` (one recorded version) and ``pycuda`` in ``sys.modules`` for one test."""
    from hxsched import capabilities
    from hxsched.runtime.backends.trt import engine as te

    cuda, drv = build_driver(pycuda_version)
    trt = build_tensorrt(trt_version, drv, **kw)
    pkg = types.ModuleType("pycuda")
    pkg.__path__ = []  # a package, so ``import pycuda.autoinit`` goes to the finder
    pkg.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    pkg.driver = cuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    for name in _AutoLoader.NAMES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_AutoLoader(cuda), *sys.meta_path])
    for lazy in (te.trt, te.cuda):  # the lazy proxies cache the first module they load
        monkeypatch.setattr(lazy, "_lazy_module", None)
    monkeypatch.setenv("HXSCHED_FORCE_CPU", "0")
    capabilities.detect.cache_clear()
    return FakeStack(trt, cuda, drv, trt_version)
