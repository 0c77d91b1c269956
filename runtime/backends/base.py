"""The one small interface every backend implements: a clock, a stream per accelerator that
takes segment runs in order, and events that say when a run has finished."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hxsched.runtime.build import InstanceSpec, SegmentSpec


@dataclass
class FrameState:
    """One frame in flight: every instance's tensors so far, and when it was admitted."""

    index: int
    inputs: dict[str, dict[str, Any]]  # instance -> model input name -> array
    admitted_ms: float = 0.0
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    tag: Any = None  # the caller's handle (e.g. the service's item id)

    def __post_init__(self) -> None:
        if not self.tensors:
            self.tensors = {inst: dict(feeds) for inst, feeds in self.inputs.items()}


class Event(Protocol):
    """Completion of one enqueued segment run (start/end in the backend's clock, ms)."""

    start_ms: float
    end_ms: float

    def done(self) -> bool: ...

    def wait(self) -> None: ...


class Stream(Protocol):
    accelerator: str

    def enqueue(self, seg: SegmentSpec, frame: FrameState, waits: Sequence[Event]) -> Event: ...


class Backend(Protocol):
    name: str
    computes: bool  # False: no tensors are produced (sim)

    def prepare(
        self,
        specs: Sequence[InstanceSpec],
        *,
        inflight: int,
    ) -> None: ...

    def stream(self, accelerator: str) -> Stream: ...

    def now_ms(self) -> float: ...

    def source(self) -> str:
        """Where this backend's numbers come from, for every number a run prints."""
        ...

    def close(self) -> None: ...


class SegmentFailed(Exception):
    """A segment run failed; carried by its event to whoever waits on it."""
