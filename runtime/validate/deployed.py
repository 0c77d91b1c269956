"""What runs the planned segments as deployed for ``hxsched validate``: each segment emulated in
its precision on ONNX Runtime (CPU), or the segments' TensorRT engines on this device."""

from __future__ import annotations

import enum
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hxsched.errors import HxschedError
from hxsched.runtime.build import InstanceSpec, SegmentSpec
from hxsched.runtime.validate import CPU_NOTE
from hxsched.runtime.validate.emulate import Mode, boundary_tensors, emulate, fold_batchnorm
from hxsched.scheduler.types import Accelerator

log = logging.getLogger(__name__)

ENTROPY = "entropy calibration (KL divergence, 2048-bin |x| histogram)"


class PrecisionChoice(str, enum.Enum):
    """``fp16``/``int8``: every segment so (TensorRT sets FP16 on every engine, INT8 with it);
    ``plan``: what the plan forces, DLA segments FP16 (the DLA has no FP32), GPU ones FP32."""

    FP16 = "fp16"
    INT8 = "int8"
    PLAN = "plan"

    def __str__(self) -> str:
        return self.value


class DeployBackend(str, enum.Enum):
    """``ort``: CPU emulation on ONNX Runtime; ``trt``: the TensorRT engines themselves."""

    ORT = "ort"
    TRT = "trt"

    def __str__(self) -> str:
        return self.value


def segment_mode(accelerator: str, choice: PrecisionChoice) -> Mode:
    if choice is PrecisionChoice.PLAN:
        return Mode.FP16 if Accelerator(accelerator).is_dla else Mode.FP32
    return Mode(choice.value)


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    accelerator: str
    mode: str
    # emulation only (None on TensorRT, whose builder decides): tensors stored between fused
    # layers (round trips inserted), of those with an INT8 scale, BatchNorms folded
    boundaries: int | None
    quantized: int | None
    folded_batchnorm: int | None


@dataclass(frozen=True)
class DeployOptions:
    """How the deployed side runs: the backend and, for ``trt``, what ``hxsched build`` takes."""

    backend: DeployBackend = DeployBackend.ORT
    calibration_cache: str | None = None  # trt INT8: the cache from hxsched calibrate
    allow_gpu_fallback: bool = False
    engine_cache: str | None = None


class Runner(Protocol):
    """The deployed side of one instance: prepared once, then one segment at a time."""

    kind: DeployBackend
    note: str  # what ran the deployed side, for every output

    def calibration_tensors(self, inst: InstanceSpec) -> list[str]: ...

    def calibration_note(self, inputs: int) -> str: ...

    def prepare(self, inst: InstanceSpec, scales: Mapping[str, float]) -> list[SegmentInfo]: ...

    def run(self, seg: SegmentSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def stored_tensors(graph: Any) -> list[str]:
    """The tensors TensorRT stores between fused layers (after BatchNorm folding)."""
    g = graph.copy()
    fold_batchnorm(g)
    return list(boundary_tensors(g))


class EmulatedRunner:
    """Each segment emulated in its precision (``emulate``) on ONNX Runtime."""

    kind = DeployBackend.ORT
    note = CPU_NOTE

    def __init__(self, choice: PrecisionChoice) -> None:
        self.choice = choice
        self._models: dict[str, Any] = {}

    def _int8(self, inst: InstanceSpec) -> bool:
        return any(segment_mode(s.accelerator, self.choice) is Mode.INT8 for s in inst.segments)

    def calibration_tensors(self, inst: InstanceSpec) -> list[str]:
        assert inst.graph is not None
        return stored_tensors(inst.graph) if self._int8(inst) else []

    def calibration_note(self, inputs: int) -> str:
        return f"INT8 scales: {ENTROPY} on the same {inputs} input(s)"

    def prepare(self, inst: InstanceSpec, scales: Mapping[str, float]) -> list[SegmentInfo]:
        from hxsched.runtime.reference import OrtModel

        infos = []
        for seg in inst.segments:
            assert seg.graph is not None
            mode = segment_mode(seg.accelerator, self.choice)
            em = emulate(seg.graph, mode, scales)
            log.info("%s: %s on %s, %d stored tensors", seg.name, mode, seg.accelerator,
                     len(em.boundaries))  # fmt: skip
            self._models[seg.name] = OrtModel(em.graph)
            infos.append(
                SegmentInfo(
                    seg.name,
                    str(seg.accelerator),
                    str(mode),
                    len(em.boundaries),
                    len(em.quantized),
                    em.folded_bn,
                )
            )
        return infos

    def run(self, seg: SegmentSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self._models[seg.name].run(inputs))

    def close(self) -> None:
        for m in self._models.values():
            m.close()
        self._models.clear()


def trt_precision(choice: PrecisionChoice) -> str:
    """TensorRT builds every segment in fp16 or int8 (``hxsched build --precision``)."""
    if choice is PrecisionChoice.PLAN:
        raise HxschedError(
            "--precision plan is the CPU emulation's (GPU segments in FP32); TensorRT segments "
            "build in fp16 or int8 as hxsched build does: give --precision fp16 or int8"
        )
    return choice.value


class TrtRunner:
    """The segments' TensorRT engines, built (or taken from the engine cache) as ``hxsched build
    --backend trt`` builds them, chained on the device through the trt backend's own buffers."""

    kind = DeployBackend.TRT

    def __init__(self, choice: PrecisionChoice, opts: DeployOptions) -> None:
        from hxsched.runtime.backends.trt.backend import import_bindings

        self.precision = trt_precision(choice)
        self.opts = opts
        self.trt_version = str(import_bindings()[0].__version__)  # one line if not installed
        self.backend: Any = None
        self.note = f"measured: TensorRT {self.trt_version} (device not opened yet)"
        self._scales: dict[str, float] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def calibration_tensors(self, inst: InstanceSpec) -> list[str]:
        """INT8 without a cache: every activation, as ``hxsched calibrate`` writes it."""
        from hxsched.runtime.validate.calibrate import activation_tensors

        if self.precision != "int8" or self.opts.calibration_cache:
            return []
        assert inst.graph is not None
        return activation_tensors(inst.graph)

    def calibration_note(self, inputs: int) -> str:
        if self.opts.calibration_cache:
            return (
                f"INT8 scales: calibration cache {self.opts.calibration_cache}, read by "
                "TensorRT's builder through an IInt8EntropyCalibrator2"
            )
        return (
            f"INT8 scales: {ENTROPY} on the same {inputs} input(s), written as a TensorRT "
            "calibration cache (as hxsched calibrate) and read by TensorRT's builder"
        )

    def _cache(self, inst: InstanceSpec, scales: Mapping[str, float]) -> str | None:
        from hxsched.runtime.validate.calibrate import read_cache, write_cache

        if self.precision != "int8":
            return None
        if self.opts.calibration_cache:
            self._scales = read_cache(self.opts.calibration_cache)
            return self.opts.calibration_cache
        self._tmp = tempfile.TemporaryDirectory(prefix="hxsched-calib-")
        path = Path(self._tmp.name) / f"{inst.name.replace('#', '_')}.cache"
        self._scales = dict(scales)
        return str(write_cache(path, scales, self.trt_version))

    def prepare(self, inst: InstanceSpec, scales: Mapping[str, float]) -> list[SegmentInfo]:
        from hxsched.runtime.backends.trt.backend import TrtBackend

        self.backend = TrtBackend(
            precision=self.precision,
            allow_gpu_fallback=self.opts.allow_gpu_fallback,
            calibration_cache=self._cache(inst, scales),
            cache_dir=self.opts.engine_cache,
        )
        self.backend.prepare([inst], inflight=1)
        version, device, cc = self.backend.device_identity()
        self.note = (
            f"measured: TensorRT {version} on {device} (sm {cc}), {self.precision} engines of "
            "the plan's segments (as hxsched build --backend trt builds them, or from its "
            "engine cache) chained on the device, against FP32 ONNX Runtime (CPU)"
        )
        return [
            SegmentInfo(s.name, str(s.accelerator), self.precision, None, None, None)
            for s in inst.segments
        ]

    def run(self, seg: SegmentSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One segment of one frame; what it hands to the next segment stays on the device and
        is read back only to be compared."""
        from hxsched.runtime.backends.base import FrameState

        frame = FrameState(0, {seg.instance: dict(inputs)})
        self.backend.stream(seg.accelerator).enqueue(seg, frame, []).wait()
        out = {}
        for t in seg.outputs:
            if seg.outputs_to.get(t) is None:  # to the host: the backend's own copy back
                out[t] = np.asarray(frame.tensors[seg.instance][t], np.float32)
            else:
                out[t] = self.backend.read_tensor(seg.instance, t, int8_scale=self._scales.get(t))
        return out

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def make_runner(choice: PrecisionChoice, opts: DeployOptions) -> Runner:
    if opts.backend is DeployBackend.TRT:
        return TrtRunner(choice, opts)
    if opts.calibration_cache:
        raise HxschedError(
            "--calibration-cache is for --backend trt (the CPU emulation calibrates on --data)"
        )
    return EmulatedRunner(choice)


def chain(
    inst: InstanceSpec, runner: Runner, feeds: Sequence[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """Every input through the segments in the plan's order, each segment fed what the earlier
    ones handed on, so error that enters in one segment is seen where it ends up."""
    results = []
    for f in feeds:
        r = dict(f)
        for seg in inst.segments:
            r.update(runner.run(seg, {t: r[t] for t in seg.inputs}))
        results.append(r)
    return results
