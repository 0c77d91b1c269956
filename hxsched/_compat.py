"""Optional hardware libraries, imported on first use with an error that says how to get them."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from hxsched.errors import HxschedError

_HINTS = {
    "tensorrt": "TensorRT ships with JetPack (apt install python3-libnvinfer); "
    "on an x86 GPU machine: pip install tensorrt",
    "pycuda": "pip install 'hxsched[jetson]' (needs the CUDA toolkit)",
    "pycuda.driver": "pip install 'hxsched[jetson]' (needs the CUDA toolkit)",
    "nvtx": "pip install nvtx",
}


class LazyModule(ModuleType):
    """Stands in for a module and imports it on first attribute access."""

    def __init__(self, name: str, hint: str | None = None) -> None:
        super().__init__(name)
        self._lazy_name = name
        self._lazy_hint = hint or _HINTS.get(name.split(".")[0], f"pip install {name}")
        self._lazy_module: ModuleType | None = None

    def _load(self) -> ModuleType:
        if self._lazy_module is None:
            try:
                self._lazy_module = importlib.import_module(self._lazy_name)
            except ImportError as exc:
                raise HxschedError(
                    f"this needs the optional module '{self._lazy_name}', which is not "
                    f"importable ({exc}); {self._lazy_hint}"
                ) from exc
        return self._lazy_module

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_lazy_"):
            raise AttributeError(attr)
        return getattr(self._load(), attr)

    @property
    def available(self) -> bool:
        try:
            self._load()
        except HxschedError:
            return False
        return True


def lazy_import(name: str, hint: str | None = None) -> LazyModule:
    """Return a proxy for module ``name`` that imports it only when first used."""
    return LazyModule(name, hint)


def module_available(name: str) -> bool:
    """True if ``name`` can be imported here (without importing it)."""
    return importlib.util.find_spec(name.split(".")[0]) is not None
