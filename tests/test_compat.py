"""Lazy imports of optional hardware libraries."""

from __future__ import annotations

import pytest

from hxsched._compat import lazy_import, module_available
from hxsched.errors import HxschedError


def test_lazy_module_imports_on_first_use():
    json_mod = lazy_import("json")
    assert json_mod.dumps([1]) == "[1]"
    assert json_mod.available


def test_missing_module_names_the_extra():
    trt = lazy_import("tensorrt_that_is_not_installed", hint="install it from JetPack")
    assert not trt.available
    with pytest.raises(HxschedError, match="JetPack"):
        trt.Builder  # noqa: B018


def test_known_hints():
    assert "hxsched[jetson]" in lazy_import("pycuda.driver")._lazy_hint
    assert module_available("json") and not module_available("surely_not_a_module_x")


def test_missing_module_is_a_missing_dependency_error():
    from hxsched.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="pip install surely_not_a_module_y"):
        lazy_import("surely_not_a_module_y").anything  # noqa: B018
