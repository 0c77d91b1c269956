"""Optional hardware libraries, imported on first use with an error that says how to get them."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from hxsched.errors import MissingDependencyError

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
                raise MissingDependencyError(
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
        except MissingDependencyError:
            return False
        return True


def lazy_import(name: str, hint: str | None = None) -> LazyModule:
    """Return a proxy for module ``name`` that imports it only when first used."""
    return LazyModule(name, hint)


def module_available(name: str) -> bool:
    """True if ``name`` can be imported here (without importing it)."""
    return importlib.util.find_spec(name.split(".")[0]) is not None


# Python libraries hxsched needs only for some commands, by import name: the PyPI distribution,
# the extra of pyproject.toml that installs it, and where a Jetson gets it. JetPack provides cv2
# (its CUDA/GStreamer OpenCV, seen from a venv made with --system-site-packages) and NVIDIA's
# onnxruntime-gpu wheel provides onnxruntime: the PyPI packages would put a second copy beside them.
_JETSON_EXTRA = "on a Jetson: pip install 'hxsched[jetson]'"
_OPTIONAL = {
    "onnxruntime": (
        "onnxruntime",
        "ort",
        "on a Jetson, NVIDIA's onnxruntime-gpu wheel provides it",
    ),
    "cv2": ("opencv-python-headless", "opencv", "on a Jetson, JetPack's OpenCV provides it"),
    "pydicom": ("pydicom", "dicom", _JETSON_EXTRA),
    "pynetdicom": ("pynetdicom", "dicom", _JETSON_EXTRA),
    "prometheus_client": ("prometheus-client", "service", _JETSON_EXTRA),
}


def missing_dependency(name: str, extra: str | None, exc: ImportError) -> MissingDependencyError:
    """The one-line MissingDependencyError for module ``name``: what to pip install, and where
    a Jetson gets it instead."""
    top = name.split(".")[0]
    dist, default_extra, jetson = _OPTIONAL.get(top, (top, "", ""))
    extra = extra or default_extra
    fix = f"pip install 'hxsched[{extra}]'" if extra else f"pip install {dist}"
    hint = f"{fix}; {jetson}" if jetson else fix
    return MissingDependencyError(
        f"this needs {dist} (module {top}), which is not importable ({exc}): {hint}"
    )


def require(name: str, extra: str | None = None) -> ModuleType:
    """Import ``name``, or raise a one-line MissingDependencyError naming the extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise missing_dependency(name, extra, exc) from exc
