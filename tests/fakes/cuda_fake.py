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
        self.streams: dict[int, Any] = {}  # handle -> Stream (TensorRT gets the handle)
        self.mod: Any = None  # the fake pycuda.driver module

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


class Device:
    _t: Driver

    def __init__(self, number: int) -> None:
        if not self._t.initialised:
            raise LogicError("cuDeviceGet failed: initialization error")
        if number != 0:
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self._n = number

    def name(self) -> str:
        return self._t.device_name

    def compute_capability(self) -> tuple[int, int]:
        return self._t.cc

    @staticmethod
    def count() -> int:
        return 1

    def make_context(self, flags: int = 0) -> Any:
        """A new (non-primary) context, pushed on this thread (cuCtxCreate)."""
        ctx = self._t.mod.Context(self, primary=False)
        self._t.contexts_created += 1
        self._t.stack().append(ctx)
        return ctx

    def retain_primary_context(self) -> Any:
        """The device's primary context, not pushed (cuDevicePrimaryCtxRetain)."""
        if self._t.primary is None:
            self._t.primary = self._t.mod.Context(self, primary=True)
        return self._t.primary


class Context:
    _t: Driver

    def __init__(self, device: Any = None, primary: bool = False) -> None:
        if device is None:
            raise TypeError("Context cannot be constructed from Python")
        self._device, self._primary = device, primary
        self._handle = self._t.handle()

    @property
    def handle(self) -> int:
        return self._handle

    def push(self) -> None:
        self._t.stack().append(self)

    def detach(self) -> None:
        st = self._t.stack()
        if self in st:
            st.remove(self)


class Stream:
    _t: Driver

    def __init__(self, flags: int = 0) -> None:
        if not isinstance(flags, int):
            raise TypeError(f"Stream(flags) takes an unsigned int, got {type(flags).__name__}")
        self._ctx = self._t.need_context()
        self._flags = flags
        self._handle = self._t.handle()
        self._t.streams[self._handle] = self

    @property
    def handle(self) -> int:
        return self._handle

    def synchronize(self) -> None:
        self._t.need_context("cuStreamSynchronize")

    def is_done(self) -> bool:
        return True

    def wait_for_event(self, event: Any) -> None:
        self._t.need_context("cuStreamWaitEvent")
        if event._t_ms is None:
            raise LogicError("cuStreamWaitEvent failed: invalid resource handle")


class Event:
    """Work runs when it is enqueued, so an event's timestamp is the host time of its record."""

    _t: Driver

    def __init__(self, flags: int = 0) -> None:
        self._ctx = self._t.need_context()
        self._t_ms: float | None = None

    def record(self, stream: Any = None) -> Any:
        self._t.need_context("cuEventRecord")
        self._t_ms = time.perf_counter() * 1e3
        return self

    def synchronize(self) -> Any:
        if self._t_ms is None:
            raise LogicError("cuEventSynchronize failed: invalid resource handle")
        return self

    def query(self) -> bool:
        return self._t_ms is not None

    def time_since(self, event: Any) -> float:
        if self._t_ms is None or event._t_ms is None:
            raise LogicError("cuEventElapsedTime failed: invalid resource handle")
        return self._t_ms - event._t_ms

    def time_till(self, event: Any) -> float:
        return event.time_since(self)


class DeviceAllocation:
    _t: Driver

    def __init__(self, addr: int) -> None:
        self._addr = addr

    def __int__(self) -> int:
        return self._addr

    __index__ = __int__

    def free(self) -> None:
        self._t.memory.pop(self._addr, None)

    def __del__(self) -> None:  # pycuda frees device memory when the object is collected
        self._t.memory.pop(self._addr, None)


def _copy(dst: np.ndarray, src: np.ndarray, what: str) -> None:
    if src.nbytes > dst.nbytes:
        raise LogicError(f"{what} failed: invalid argument ({src.nbytes} > {dst.nbytes} B)")
    dst[: src.nbytes] = src


def _flat(host: Any) -> np.ndarray:
    arr = np.asarray(host)
    if not arr.flags.c_contiguous:
        raise LogicError("host buffer is not contiguous")
    return arr.reshape(-1).view(np.uint8)


def _functions(drv: Driver) -> dict[str, Any]:
    """The module functions the fake implements (bound to one driver's state)."""

    def init(flags: int = 0) -> None:
        drv.initialised = True

    def mem_alloc(nbytes: int) -> Any:
        drv.need_context()
        return drv.mod.DeviceAllocation(drv.alloc(int(nbytes)))

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> Any:
        drv.need_context()
        return np.empty(shape, dtype, order=order)

    def htod(what: str) -> Any:
        def copy(dest: Any, src: Any, stream: Any = None) -> None:
            drv.need_context(what)
            _copy(drv.buffer(dest), _flat(src), what)
            drv.layouts.pop(int(dest), None)  # the host wrote raw bytes

        return copy

    def dtoh(what: str) -> Any:
        def copy(dest: Any, src: Any, stream: Any = None) -> None:
            drv.need_context(what)
            out, buf = _flat(dest), drv.buffer(src)
            if out.nbytes > buf.nbytes:
                raise LogicError(f"{what} failed: invalid argument")
            out[:] = buf[: out.nbytes]

        return copy

    def memset_d8(dest: Any, data: int, size: int) -> None:
        drv.need_context("cuMemsetD8")
        drv.buffer(dest)[:size] = data

    return {
        "init": init,
        "mem_alloc": mem_alloc,
        "pagelocked_empty": pagelocked_empty,
        "memcpy_htod": htod("cuMemcpyHtoD"),
        "memcpy_htod_async": htod("cuMemcpyHtoDAsync"),
        "memcpy_dtoh": dtoh("cuMemcpyDtoH"),
        "memcpy_dtoh_async": dtoh("cuMemcpyDtoHAsync"),
        "memset_d8": memset_d8,
    }


def _context_statics(drv: Driver) -> dict[str, Any]:
    """Context's static methods: they act on the calling thread's context stack."""

    def pop() -> None:
        st = drv.stack()
        if not st:
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        st.pop()

    def get_device() -> Any:
        return drv.need_context("cuCtxGetDevice")._device

    def get_current() -> Any:
        return drv.current()

    def synchronize() -> None:
        drv.need_context("cuCtxSynchronize")

    return {
        "pop": staticmethod(pop),
        "get_device": staticmethod(get_device),
        "get_current": staticmethod(get_current),
        "synchronize": staticmethod(synchronize),
    }


_EXCEPTIONS = {
    "Error": Error,
    "LogicError": LogicError,
    "MemoryError": MemoryError_,
    "LaunchError": LaunchError,
    "RuntimeError": RuntimeError_,
}


def build_driver(version: str = "2026.1", **kw: Any) -> tuple[StrictModule, Driver]:
    """A fresh ``pycuda.driver`` module for one recorded pycuda version."""
    surface = load("pycuda", version)["pycuda.driver"]
    mod = StrictModule("pycuda.driver", surface, version)
    drv = Driver(**kw)
    drv.mod = mod
    context = type("Context", (Context,), _context_statics(drv))
    impls = {c.__name__: _strict(c) for c in (Device, context, Stream, Event, DeviceAllocation)}
    bind(mod, impls, _functions(drv), _EXCEPTIONS, shared=drv)
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
