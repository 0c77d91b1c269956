"""What a model role is: its pipeline settings and defaults, how a slice becomes its input, and
how its output becomes files (the role registry the generic service looks roles up in)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hxsched.files import atomic_write

if TYPE_CHECKING:
    from hxsched.runtime.service.dicom_io import ScTemplates, Slice
    from hxsched.runtime.service.imaging import Detection
    from hxsched.runtime.service.pipeline import PipelineModel, Sinks


class Role(str, enum.Enum):
    """What a model does with a CT slice."""

    SYNTH = "synth"  # image to image: CT slice -> synthetic MRI slice
    DETECT = "detect"  # detector: boxes for screening

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Prepared:
    """A model's input array and what its post-processing needs to map back (e.g. letterbox)."""

    array: np.ndarray
    info: Any = None


@dataclass(frozen=True)
class SliceContext:
    """One finished slice as a role sees it: where its files go and what labels them."""

    item_id: str
    slice: Slice
    out: Path  # the service's output folder
    sinks: Sinks
    backend: str
    instance: str  # the plan instance (``model#k``)
    index: int  # the instance's position in the plan (series numbers follow it)
    templates: ScTemplates | None = None  # Secondary Capture templates per series
    write: Callable[[Path, bytes], Path] = atomic_write  # how a file is written (atomically)
    replayed: bool = False  # sim: the output is a recorded ONNX Runtime output, replayed


@dataclass
class RoleResult:
    """What a role made of one slice: an image for the preview, boxes, files written."""

    image: np.ndarray | None = None  # uint8, source size
    detections: list[Detection] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # output key -> path


class RoleHandler:
    """One role. ``settings``: the model keys this role reads, with their defaults; a key of
    another role given to a model of this one is refused."""

    role: ClassVar[Role]
    settings: ClassVar[Mapping[str, Any]]

    def prepare(self, window01: np.ndarray, model: PipelineModel) -> Prepared:
        raise NotImplementedError

    def prepare_into(self, window01: np.ndarray, model: PipelineModel, out: np.ndarray) -> Any:
        """``prepare`` written into ``out`` (a hand-over slot of ``input_shape``); its info."""
        got = self.prepare(window01, model)
        out[...] = got.array
        return got.info

    def input_shape(self, model: PipelineModel) -> tuple[int, ...]:
        """The shape of the array ``prepare`` makes (the host path's hand-over slot)."""
        raise NotImplementedError

    def passthrough(self, prepared: np.ndarray) -> np.ndarray:
        """The output a backend that computes nothing (sim) stands in with."""
        raise NotImplementedError

    def finish(
        self, output: np.ndarray, info: Any, model: PipelineModel, ctx: SliceContext
    ) -> RoleResult:
        raise NotImplementedError


_REGISTRY: dict[Role, RoleHandler] = {}


def register(cls: type[RoleHandler]) -> type[RoleHandler]:
    """Class decorator: one handler per role."""
    _REGISTRY[cls.role] = cls()
    return cls


def role_handler(role: Role | str) -> RoleHandler:
    return _REGISTRY[Role(role)]


def roles_with(setting: str) -> list[Role]:
    """The roles that read a model setting (for error messages)."""
    return [r for r, h in _REGISTRY.items() if setting in h.settings]
