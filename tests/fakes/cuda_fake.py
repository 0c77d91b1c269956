"""A strict fake of ``pycuda.driver`` (+ ``pycuda.autoinit``, ``pycuda.autoprimaryctx``) on the
CPU: numpy arrays stand in for device memory, contexts are per thread as in pycuda (its
``context_stack`` is a ``boost::thread_specific_ptr``, src/cpp/cuda.hpp), events carry
wall-clock timestamps."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import numpy as np

from fakes.surface import Strict, StrictModule, bind, load

NO_CONTEXT = (
    "explicit_context_dependent failed: invalid device context - no currently active context?"
)


class Error(Exception):
    """pycuda._driver.Error"""


class LogicError(Error):
    """pycuda._driver.LogicError"""


class MemoryError_(Error):  # noqa: N801 - pycuda's name is MemoryError
    """pycuda._driver.MemoryError"""


class LaunchError(Error):
    pass


class RuntimeError_(Error):  # noqa: N801
    pass


class Driver:
    """Process-wide state of the fake device: memory, contexts, the per-thread stacks."""

    def __init__(self, device_name: str = "Orin (fake)", cc: tuple[int, int] = (8, 7)) -> None:
        self.device_name, self.cc = device_name, cc
        self.memory: dict[int, np.ndarray] = {}
        # (dtype, format) an engine last wrote into a buffer; a host copy clears it
        self.layouts: dict[int, tuple[str, str]] = {}
        self._top = 0x7F0000000000
        self._handles = itertools.count(0x5000)
        self.local = threading.local()
        self.initialised = False
        self.primary: Any = None
        self.contexts_created = 0

    def stack(self) -> list[Any]:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def current(self) -> Any:
        st = self.stack()
        return st[-1] if st else None

    def need_context(self, what: str | None = None) -> Any:
        ctx = self.current()
        if ctx is None:
            raise LogicError(f"{what} failed: invalid device context" if what else NO_CONTEXT)
        return ctx

    def alloc(self, nbytes: int) -> int:
        addr = self._top
        self._top += (int(nbytes) + 0xFFFF) // 0x1000 * 0x1000  # disjoint, 4 KiB aligned
        self.memory[addr] = np.zeros(max(int(nbytes), 1), np.uint8)
        return addr

    def handle(self) -> int:
        return next(self._handles)

    def buffer(self, ptr: Any) -> np.ndarray:
        addr = int(ptr)
        if addr not in self.memory:
            raise LogicError("invalid device pointer (not the start of a fake allocation)")
        return self.memory[addr]


def build_driver(version: str = "2026.1", **kw: Any) -> tuple[StrictModule, Driver]:
    """A fresh ``pycuda.driver`` module for one recorded pycuda version."""
    surface = load("pycuda", version)["pycuda.driver"]
    mod = StrictModule("pycuda.driver", surface, version)
    drv = Driver(**kw)

    class Device:
        def __init__(self, number: int) -> None:
            if not drv.initialised:
                raise LogicError("cuDeviceGet failed: initialization error")
            if number != 0:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")
            self._n = number

        def name(self) -> str:
            return drv.device_name

        def compute_capability(self) -> tuple[int, int]:
            return drv.cc

        @staticmethod
        def count() -> int:
            return 1

        def make_context(self, flags: int = 0) -> Any:
            ctx = mod.Context(self, primary=False)
            drv.contexts_created += 1
            drv.stack().append(ctx)
            return ctx

        def retain_primary_context(self) -> Any:
            if drv.primary is None:
                drv.primary = mod.Context(self, primary=True)
            return drv.primary

    class Context:
        def __init__(self, device: Any = None, primary: bool = False) -> None:
            if device is None:
                raise TypeError("Context cannot be constructed from Python")
            self._device, self._primary = device, primary
            self._handle = drv.handle()

        @property
        def handle(self) -> int:
            return self._handle

        def push(self) -> None:
            drv.stack().append(self)

        @staticmethod
        def pop() -> None:
            st = drv.stack()
            if not st:
                raise LogicError("cuCtxPopCurrent failed: invalid device context")
            st.pop()

        def detach(self) -> None:
            st = drv.stack()
            if self in st:
                st.remove(self)

        @staticmethod
        def get_device() -> Any:
            return drv.need_context("cuCtxGetDevice")._device

        @staticmethod
        def get_current() -> Any:
            return drv.current()

        @staticmethod
        def synchronize() -> None:
            drv.need_context("cuCtxSynchronize")

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            if not isinstance(flags, int):
                raise TypeError(f"Stream(flags) takes an unsigned int, got {type(flags).__name__}")
            self._ctx = drv.need_context()
            self._flags = flags
            self._handle = drv.handle()
            drv.streams[self._handle] = self

        @property
        def handle(self) -> int:
            return self._handle

        def synchronize(self) -> None:
            drv.need_context("cuStreamSynchronize")

        def is_done(self) -> bool:
            return True

        def wait_for_event(self, event: Any) -> None:
            drv.need_context("cuStreamWaitEvent")
            if event._t is None:
                raise LogicError("cuStreamWaitEvent failed: invalid resource handle")

    class Event:
        def __init__(self, flags: int = 0) -> None:
            self._ctx = drv.need_context()
            self._t: float | None = None

        def record(self, stream: Any = None) -> Any:
            drv.need_context("cuEventRecord")
            self._t = time.perf_counter()
            return self

        def synchronize(self) -> Any:
            if self._t is None:
                raise LogicError("cuEventSynchronize failed: invalid resource handle")
            return self

        def query(self) -> bool:
            return self._t is not None

        def time_since(self, event: Any) -> float:
            if self._t is None or event._t is None:
                raise LogicError("cuEventElapsedTime failed: invalid resource handle")
            return (self._t - event._t) * 1e3

        def time_till(self, event: Any) -> float:
            return event.time_since(self)

    class DeviceAllocation:
        def __init__(self, addr: int) -> None:
            self._addr = addr

        def __int__(self) -> int:
            return self._addr

        __index__ = __int__

        def free(self) -> None:
            drv.memory.pop(self._addr, None)

        def __del__(self) -> None:  # pycuda frees on collection
            drv.memory.pop(self._addr, None)

    drv.streams = {}

    def init(flags: int = 0) -> None:
        drv.initialised = True

    def mem_alloc(nbytes: int) -> Any:
        drv.need_context()
        return mod.DeviceAllocation(drv.alloc(int(nbytes)))

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> Any:
        drv.need_context()
        return np.empty(shape, dtype, order=order)

    def _copy(dst: np.ndarray, src: np.ndarray, what: str) -> None:
        if src.nbytes > dst.nbytes:
            raise LogicError(f"{what} failed: invalid argument ({src.nbytes} > {dst.nbytes} B)")
        dst[: src.nbytes] = src

    def _flat(host: Any) -> np.ndarray:
        arr = np.asarray(host)
        if not arr.flags.c_contiguous:
            raise LogicError("host buffer is not contiguous")
        return arr.reshape(-1).view(np.uint8)

    def memcpy_htod(dest: Any, src: Any) -> None:
        drv.need_context("cuMemcpyHtoD")
        _copy(drv.buffer(dest), _flat(src), "cuMemcpyHtoD")
        drv.layouts.pop(int(dest), None)

    def memcpy_htod_async(dest: Any, src: Any, stream: Any = None) -> None:
        drv.need_context("cuMemcpyHtoDAsync")
        _copy(drv.buffer(dest), _flat(src), "cuMemcpyHtoDAsync")
        drv.layouts.pop(int(dest), None)

    def memcpy_dtoh(dest: Any, src: Any) -> None:
        drv.need_context("cuMemcpyDtoH")
        out, buf = _flat(dest), drv.buffer(src)
        _copy(out, buf[: out.nbytes], "cuMemcpyDtoH")

    def memcpy_dtoh_async(dest: Any, src: Any, stream: Any = None) -> None:
        drv.need_context("cuMemcpyDtoHAsync")
        out, buf = _flat(dest), drv.buffer(src)
        if out.nbytes > buf.nbytes:
            raise LogicError("cuMemcpyDtoHAsync failed: invalid argument")
        out[:] = buf[: out.nbytes]

    def memset_d8(dest: Any, data: int, size: int) -> None:
        drv.need_context("cuMemsetD8")
        drv.buffer(dest)[:size] = data

    impls = {
        "Device": Device,
        "Context": Context,
        "Stream": Stream,
        "Event": Event,
        "DeviceAllocation": DeviceAllocation,
    }
    funcs = {
        "init": init,
        "mem_alloc": mem_alloc,
        "pagelocked_empty": pagelocked_empty,
        "memcpy_htod": memcpy_htod,
        "memcpy_htod_async": memcpy_htod_async,
        "memcpy_dtoh": memcpy_dtoh,
        "memcpy_dtoh_async": memcpy_dtoh_async,
        "memset_d8": memset_d8,
    }
    attrs = {
        "Error": Error,
        "LogicError": LogicError,
        "MemoryError": MemoryError_,
        "LaunchError": LaunchError,
        "RuntimeError": RuntimeError_,
    }
    impls = {k: _strict(v) for k, v in impls.items()}
    bind(mod, impls, funcs, attrs)
    object.__setattr__(mod, "_driver", drv)
    return mod, drv


def _strict(cls: type) -> type:
    return type(cls.__name__ + "Impl", (cls, Strict), {"_module": "pycuda._driver"})


def autoinit(driver_module: StrictModule, name: str) -> StrictModule:
    """What importing ``pycuda.autoinit`` (a new non-primary context) or ``pycuda.autoprimaryctx``
    (the retained primary context) does, on the importing thread only."""
    version = driver_module._fake_version
    mod = StrictModule(name, load("pycuda", version)[name], version)
    cuda: Any = driver_module
    cuda.init()
    dev = cuda.Device(0)
    if name.endswith("autoprimaryctx"):
        ctx = dev.retain_primary_context()
        ctx.push()
    else:
        ctx = dev.make_context()
    mod.context, mod.device = ctx, dev
    return mod
