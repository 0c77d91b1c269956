"""``hxsched validate``: real slices through the pipeline's pre-processing, the FP32 reference of
each whole model, and the plan's segments chained as deployed (emulated, or TensorRT's engines)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hxsched.errors import HxschedError
from hxsched.runtime.build import InstanceSpec
from hxsched.runtime.service.pipeline import (
    ValidateLimits as Tolerances,  # the pipeline's validate: section
)
from hxsched.runtime.service.roles import Role, role_handler
from hxsched.runtime.validate import CPU_NOTE
from hxsched.runtime.validate.calibrate import calibrate
from hxsched.runtime.validate.deployed import (
    DeployBackend,
    EmulatedRunner,
    PrecisionChoice,
    Runner,
    SegmentInfo,
    chain,
)
from hxsched.runtime.validate.emulate import Mode
from hxsched.runtime.validate.metrics import (
    Box,
    DetectionAgreement,
    ErrorStats,
    detection_agreement,
    error_stats,
    mse,
    psnr,
    ssim,
)
from hxsched.scheduler.graph.graph import Graph

log = logging.getLogger(__name__)

SYNTH_RANGE = 2.0  # the synth role's tanh output spans [-1, 1]
TENSOR_SUFFIXES = (".npy",)


@dataclass(frozen=True)
class Sample:
    """One input: a slice (its window in [0, 1] for the report) or a saved tensor."""

    name: str
    window01: np.ndarray | None
    hu: np.ndarray | None = None
    is_hu: bool = False
    tensor: np.ndarray | None = None


def collect_samples(paths: Sequence[str]) -> list[Sample]:
    """Slices (DICOM CT, PNG, TIFF) and saved tensors (.npy) from files and folders."""
    from hxsched.runtime.service.dicom_io import read_slice

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise HxschedError("no such file or folder", path=str(p))
    if not files:
        raise HxschedError(f"no slices in {', '.join(paths)} (DICOM, PNG, TIFF or .npy)")
    out = []
    for f in files:
        if f.suffix.lower() in TENSOR_SUFFIXES:
            out.append(Sample(f.name, None, tensor=np.load(f, allow_pickle=False)))
        else:
            sl = read_slice(f)
            out.append(Sample(f.name, None, sl.pixels, sl.is_hu))
    return out


def infer_role(graph: Graph) -> Role:
    """synth when the output is an image of the input's size, detect for [1, 4 + classes, N]."""
    i = graph.tensors[graph.inputs[0]].shape or ()
    o = graph.tensors[graph.outputs[0]].shape or ()
    if len(o) == 4 and len(i) == 4 and tuple(o[2:]) == tuple(i[2:]):
        return Role.SYNTH
    if len(o) == 3 and o[1] >= 5:
        return Role.DETECT
    raise HxschedError(
        f"cannot tell whether model {graph.path} is a synth or a detect model from its output "
        f"shape {o}; give --role INSTANCE=synth|detect",
        path=graph.path,
    )


def pipeline_model(inst: InstanceSpec, role: Role):
    """The role's settings (defaults) with the model's own input size and channels."""
    from hxsched.runtime.service.pipeline import PipelineModel

    assert inst.graph is not None
    shape = inst.graph.tensors[inst.graph.inputs[0]].shape or (1, 3, 256, 256)
    kw: dict[str, Any] = {"size": int(shape[-1])}
    if role is Role.SYNTH:
        kw["channels"] = int(shape[1]) if shape[1] in (1, 3) else 3
    return PipelineModel(name=inst.model, role=role, path=inst.model_path or inst.model, **kw)


def prepare(
    sample: Sample, inst: InstanceSpec, role: Role, model
) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """The model input of one sample, what post-processing needs, and the CT window."""
    from hxsched.runtime.service.imaging import window_hu

    assert inst.graph is not None
    name = inst.graph.inputs[0]
    want = tuple(inst.graph.tensors[name].shape or ())
    if sample.tensor is not None:
        arr, info, win = sample.tensor.astype(np.float32), None, None
    else:
        assert sample.hu is not None
        win = window_hu(sample.hu, preset=model.window) if sample.is_hu else _normalise01(sample)
        prepared = role_handler(role).prepare(win, model)
        arr, info = prepared.array, prepared.info
    if tuple(arr.shape) != want:
        raise HxschedError(
            f"wrong size: {tuple(arr.shape)} for input {name!r} of {inst.name}, which takes {want}",
            path=sample.name,
        )
    if role is Role.DETECT and info is None:
        from hxsched.runtime.service.imaging import LetterboxInfo

        info = LetterboxInfo(1.0, 0.0, 0.0, int(want[-1]), int(want[-2]))
    return arr, info, win


def _normalise01(sample: Sample) -> np.ndarray:
    """A plain image scaled to [0, 1] as the service does (its own function, wherever the
    service's refactoring puts it)."""
    try:
        from hxsched.runtime.service.workers import normalise01
    except ImportError:  # the service before its worker processes
        from hxsched.runtime.service.service import _normalise01 as plain  # type: ignore

        return plain(sample.hu)
    from hxsched.runtime.service.dicom_io import Slice, SliceKind

    assert sample.hu is not None
    return normalise01(Slice(sample.hu, SliceKind.IMAGE, False, sample.name))


@dataclass(frozen=True)
class BoundaryStat:
    segment: str
    accelerator: str
    mode: str
    tensor: str
    stats: ErrorStats


@dataclass(frozen=True)
class ImageMetrics:
    psnr_mean: float
    psnr_min: float
    ssim_mean: float
    ssim_min: float
    mse: float
    data_range: float = SYNTH_RANGE


@dataclass(frozen=True)
class Check:
    what: str
    value: float
    limit: float
    passed: bool


@dataclass
class InstanceResult:
    instance: str
    model: str
    role: str
    segments: list[SegmentInfo]
    outputs: dict[str, ErrorStats]
    boundaries: list[BoundaryStat]
    drift_segment: str | None
    image: ImageMetrics | None = None
    detection: DetectionAgreement | None = None
    checks: list[Check] = field(default_factory=list)
    # kept for the report and the Polygraphy files (not in JSON)
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False)
    reference: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False)
    deployed: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False)
    windows: list[np.ndarray | None] = field(default_factory=list, repr=False)
    boxes: list[tuple[list[Box], list[Box]]] = field(default_factory=list, repr=False)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "model": self.model,
            "role": self.role,
            "passed": self.passed,
            "segments": [asdict(s) for s in self.segments],
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "image": asdict(self.image) if self.image else None,
            "detection": self.detection.to_dict() if self.detection else None,
            "boundaries": [{**asdict(b), "stats": b.stats.to_dict()} for b in self.boundaries],
            "drift_segment": self.drift_segment,
            "checks": [asdict(c) for c in self.checks],
        }


@dataclass
class Validation:
    plan: str
    precision: str
    slices: int
    instances: list[InstanceResult]
    note: str = CPU_NOTE
    calibration: str = ""
    backend: str = DeployBackend.ORT.value  # what ran the deployed side: ort (emulated) or trt

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.instances)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "precision": self.precision,
            "slices": self.slices,
            "passed": self.passed,
            "instances": [r.to_dict() for r in self.instances],
            "calibration": self.calibration,
            "backend": self.backend,
            "note": self.note,
        }


def _stack(values: Sequence[dict[str, np.ndarray]], name: str) -> np.ndarray:
    return np.concatenate([np.asarray(v[name], np.float32).ravel() for v in values])


def reference_run(
    graph: Graph, feeds: Sequence[dict[str, np.ndarray]], extra: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """The whole model in FP32 on ONNX Runtime, with ``extra`` tensors as outputs too."""
    from hxsched.runtime.reference import OrtModel

    g = graph.copy()
    g.outputs = list(g.outputs) + [t for t in extra if t not in g.outputs and t in g.tensors]
    m = OrtModel(g)
    try:
        return [m.run(f) for f in feeds]
    finally:
        m.close()


def deployed_run(
    inst: InstanceSpec,
    runner: Runner,
    feeds: Sequence[dict[str, np.ndarray]],
    scales: dict[str, float],
) -> tuple[list[dict[str, np.ndarray]], list[SegmentInfo]]:
    """The runner's segments prepared (with the INT8 scales) and chained on every input."""
    try:
        infos = runner.prepare(inst, scales)
        return chain(inst, runner, feeds), infos
    finally:
        runner.close()


def _boundaries(
    inst: InstanceSpec, infos: list[SegmentInfo], ref: list[dict], dep: list[dict]
) -> tuple[list[BoundaryStat], str | None]:
    """Statistics of every tensor a segment hands on, and the segment whose outputs lose the
    most cosine similarity beyond what its inputs had lost already."""
    stats: list[BoundaryStat] = []
    worst, worst_gain = None, 0.0
    loss: dict[str, float] = {}
    for seg, info in zip(inst.segments, infos, strict=True):
        before = max((loss.get(t, 0.0) for t in seg.inputs), default=0.0)
        for t in seg.outputs:
            s = error_stats(_stack(ref, t), _stack(dep, t))
            stats.append(BoundaryStat(seg.name, info.accelerator, info.mode, t, s))
            loss[t] = 1.0 - s.cosine
            if loss[t] - before > worst_gain:
                worst, worst_gain = seg.name, loss[t] - before
    return stats, worst


def _image_metrics(ref: list[dict], dep: list[dict], name: str) -> ImageMetrics:
    ps, ss, ms = [], [], []
    for r, d in zip(ref, dep, strict=True):
        a, b = _image(r[name]), _image(d[name])
        ps.append(psnr(a, b, SYNTH_RANGE))
        ss.append(ssim(a, b, SYNTH_RANGE))
        ms.append(mse(a, b))
    return ImageMetrics(
        float(np.mean(ps)),
        float(np.min(ps)),
        float(np.mean(ss)),
        float(np.min(ss)),
        float(np.mean(ms)),
    )


def _image(out: np.ndarray) -> np.ndarray:
    """An image output [1, C, H, W] as its channel mean (what the synth role writes)."""
    a = np.asarray(out, np.float64)
    while a.ndim > 3:
        a = a[0]
    return a.mean(axis=0) if a.ndim == 3 else a


def _boxes(out: np.ndarray, info: Any, model) -> list[Box]:
    from hxsched.runtime.service.imaging import decode_yolov8

    found = decode_yolov8(out, info, conf=model.conf, iou=model.iou, max_det=model.max_det)
    return [Box(d.box_xyxy, d.score, d.class_id) for d in found]


def _checks(res: InstanceResult, tol: Tolerances) -> list[Check]:
    out = [
        Check(f"cosine {k}", v.cosine, tol.min_cosine, v.cosine >= tol.min_cosine)
        for k, v in res.outputs.items()
    ]
    if res.image is not None:
        out.append(
            Check(
                "PSNR dB (worst slice)",
                res.image.psnr_min,
                tol.min_psnr,
                res.image.psnr_min >= tol.min_psnr,
            )
        )
        out.append(
            Check(
                "SSIM (worst slice)",
                res.image.ssim_min,
                tol.min_ssim,
                res.image.ssim_min >= tol.min_ssim,
            )
        )
    if res.detection is not None:
        d = res.detection
        out.append(
            Check(
                "decision agreement",
                d.decision_agreement,
                tol.min_agreement,
                d.decision_agreement >= tol.min_agreement,
            )
        )
        out.append(Check("box F1", d.f1, tol.min_f1, d.f1 >= tol.min_f1))
        out.append(Check("mAP50", d.map50, tol.min_map50, d.map50 >= tol.min_map50))
    return out


def validate_instance(
    inst: InstanceSpec,
    samples: Sequence[Sample],
    choice: PrecisionChoice,
    tol: Tolerances,
    *,
    role: Role | None = None,
    stride: int = 1,
    runner: Runner | None = None,
) -> InstanceResult:
    assert inst.graph is not None
    runner = runner or EmulatedRunner(choice)
    role = role or infer_role(inst.graph)
    model = pipeline_model(inst, role)
    slices = _takes_slices(inst, role)
    usable = [
        s
        for s in samples
        if (s.tensor is None and slices) or (s.tensor is not None and _fits(inst, s.tensor))
    ]
    if not usable:
        raise HxschedError(
            f"wrong size: no input fits {inst.name}, which takes {_input_shape(inst)}",
            path=samples[0].name,
        )
    prepared = [prepare(s, inst, role, model) for s in usable]
    feeds = [{inst.graph.inputs[0]: arr} for arr, _, _ in prepared]
    cut = [t for seg in inst.segments for t in seg.outputs]
    calib = runner.calibration_tensors(inst)
    log.info("%s: FP32 reference on %d input(s)", inst.name, len(feeds))
    ref = reference_run(inst.graph, feeds, cut + calib)
    scales = (
        calibrate(({t: r[t] for t in calib if t in r} for r in ref), stride=stride) if calib else {}
    )
    dep, infos = deployed_run(inst, runner, feeds, scales)
    outputs = {o: error_stats(_stack(ref, o), _stack(dep, o)) for o in inst.graph.outputs}
    bstats, drift = _boundaries(inst, infos, ref, dep)
    res = InstanceResult(inst.name, inst.model, str(role), infos, outputs, bstats, drift)
    first = inst.graph.outputs[0]
    if role is Role.SYNTH:
        res.image = _image_metrics(ref, dep, first)
    else:
        pairs = [
            (_boxes(r[first], info, model), _boxes(d[first], info, model))
            for r, d, (_, info, _) in zip(ref, dep, prepared, strict=True)
        ]
        res.detection = detection_agreement([p[0] for p in pairs], [p[1] for p in pairs])
        res.boxes = pairs
    res.checks = _checks(res, tol)
    keep = set(inst.graph.outputs)
    res.feeds = feeds
    res.reference = [{k: v for k, v in r.items() if k in keep} for r in ref]
    res.deployed = [{k: v for k, v in d.items() if k in keep} for d in dep]
    res.windows = [w for _, _, w in prepared]
    return res


def _input_shape(inst: InstanceSpec) -> tuple[int, ...]:
    assert inst.graph is not None
    return tuple(inst.graph.tensors[inst.graph.inputs[0]].shape or ())


def _takes_slices(inst: InstanceSpec, role: Role) -> bool:
    """Whether the role's pre-processing can make this model's input from a slice."""
    shape = _input_shape(inst)
    ok = len(shape) == 4 and shape[0] == 1 and shape[2] == shape[3]
    return ok and (
        role is Role.DETECT and shape[1] == 3 or role is Role.SYNTH and shape[1] in (1, 3)
    )


def _fits(inst: InstanceSpec, tensor: np.ndarray) -> bool:
    return tuple(tensor.shape) == _input_shape(inst)


def validate_plan(
    specs: Sequence[InstanceSpec],
    samples: Sequence[Sample],
    choice: PrecisionChoice,
    tol: Tolerances,
    *,
    plan_path: str = "",
    roles: dict[str, Role] | None = None,
    stride: int = 1,
    runner: Runner | None = None,
) -> Validation:
    """Every instance validated; ``runner`` runs the deployed side (default: the emulation)."""
    runner = runner or EmulatedRunner(choice)
    for s in samples:  # a saved tensor goes to the models whose input it fits
        if s.tensor is not None and not any(_fits(i, s.tensor) for i in specs):
            want = ", ".join(f"{i.name} {_input_shape(i)}" for i in specs)
            raise HxschedError(
                f"wrong size: tensor {tuple(s.tensor.shape)} fits no model ({want})", path=s.name
            )
    results = [
        validate_instance(
            i, samples, choice, tol, role=(roles or {}).get(i.name), stride=stride, runner=runner
        )
        for i in specs
    ]
    calib = ""
    if any(s.mode == Mode.INT8 for r in results for s in r.segments):
        calib = runner.calibration_note(len(samples))
    return Validation(
        plan_path,
        str(choice),
        len(samples),
        results,
        note=runner.note,
        calibration=calib,
        backend=str(runner.kind),
    )
