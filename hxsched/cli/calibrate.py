"""``hxsched calibrate``: INT8 entropy calibration from real slices, written as a TensorRT
calibration cache (TensorRT <= 10) or a QDQ ONNX model (TensorRT 11)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hxsched.cli._common import add_json, add_quiet, emit
from hxsched.errors import HxschedError

log = logging.getLogger(__name__)

HELP = "INT8 entropy calibration from real slices: a TensorRT calibration cache or QDQ ONNX"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help=HELP,
        description=HELP + ". Every activation gets a symmetric per-tensor scale (amax / 127) "
        "from the KL-divergence search over a 2048-bin |x| histogram of TensorRT's "
        "EntropyCalibration2. TensorRT <= 10 reads the cache (hxsched build/run --backend trt "
        "--precision int8 --calibration-cache CACHE); TensorRT 11 has no calibrators, so there "
        "-o names the QDQ ONNX model written from the same ranges.",
    )
    p.add_argument("model", help="MODEL.onnx or PLAN.yaml (every model of the plan)")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR|FILE")
    p.add_argument("-o", "--out", required=True, help="the cache (or QDQ .onnx for TensorRT 11)")
    p.add_argument(
        "--trt-version",
        metavar="X.Y.Z",
        help="the target TensorRT (default: the importable tensorrt's version)",
    )
    p.add_argument("--qdq", metavar="OUT.onnx", help="also write the QDQ ONNX (one model)")
    p.add_argument(
        "--role",
        choices=("synth", "detect"),
        help="pre-processing, where the output shape does not tell",
    )
    p.add_argument("--stride", type=int, default=1, help="entropy search step over the bins")
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def _trt_version(given: str | None) -> str:
    if given:
        return given
    try:
        import tensorrt
    except ImportError:
        raise HxschedError(
            "give --trt-version X.Y.Z (the target TensorRT; it must match the cache header, "
            "and no tensorrt is importable here to read it from)"
        ) from None
    return str(tensorrt.__version__)


def _instances(path: str):
    """(name, InstanceSpec-like) pairs: every model of a plan, or the one model."""
    from hxsched.runtime.build import InstanceSpec, plan_instance_specs
    from hxsched.scheduler.graph.onnx_io import load_model

    if path.endswith((".yaml", ".yml")):
        from hxsched.scheduler.planning.plan import load_plan

        specs = plan_instance_specs(load_plan(path))
        seen, out = set(), []
        for s in specs:
            if s.model_path not in seen:
                seen.add(s.model_path)
                out.append(s)
        return out
    g = load_model(path)
    return [InstanceSpec(Path(path).stem, Path(path).stem, [], g, path)]


def run(args: argparse.Namespace) -> int:
    from hxsched.runtime.service.roles import Role
    from hxsched.runtime.validate import calibrate as cal
    from hxsched.runtime.validate.validate import (
        collect_samples,
        infer_role,
        pipeline_model,
        prepare,
    )
    from hxsched.scheduler.graph.onnx_io import save_model

    version = _trt_version(args.trt_version)
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    samples = collect_samples(args.data)
    scales: dict[str, float] = {}
    models = []
    for inst in _instances(args.model):
        assert inst.graph is not None
        role = Role(args.role) if args.role else infer_role(inst.graph)
        model = pipeline_model(inst, role)
        feeds = [{inst.graph.inputs[0]: prepare(s, inst, role, model)[0]} for s in samples]
        log.info("calibrating %s on %d input(s)", inst.model, len(feeds))
        mine = cal.calibrate_graph(inst.graph, feeds, stride=args.stride)
        for t, s in mine.items():
            if t in scales and scales[t] != s:
                raise HxschedError(
                    f"tensor {t!r} is in two models with different ranges: calibrate each "
                    "model on its own (hxsched calibrate MODEL.onnx)"
                )
        scales.update(mine)
        models.append((inst, mine))
    out = Path(args.out)
    data: dict[str, object] = {
        "trt_version": version,
        "tensors": len(scales),
        "inputs": len(samples),
        "models": [i.model for i, _ in models],
    }
    if major >= 11:
        if len(models) != 1 or out.suffix != ".onnx":
            raise HxschedError(
                "TensorRT 11 has no calibrators: give one model and -o OUT.onnx (the QDQ model)"
            )
        save_model(cal.qdq_graph(models[0][0].graph, models[0][1]), out)
        data["qdq"] = str(out)
    else:
        cal.write_cache(out, scales, version)
        data["cache"] = str(out)
        data["header"] = f"TRT-{cal.trt_version_tag(version)}-{cal.ALGORITHM}"
        if args.qdq:
            if len(models) != 1:
                raise HxschedError("--qdq writes one model: give MODEL.onnx, not a plan")
            save_model(cal.qdq_graph(models[0][0].graph, models[0][1]), args.qdq)
            data["qdq"] = args.qdq

    def human() -> str:
        what = data.get("cache") or data.get("qdq")
        line = (
            f"{len(scales)} tensor scales from {len(samples)} input(s) (entropy, 2048 bins) "
            f"for TensorRT {version}: wrote {what}"
        )
        if data.get("qdq") and data.get("cache"):
            line += f" and {data['qdq']}"
        return line + (
            "\nthe header must match the target TensorRT's own (it skips a cache "
            "that does not); check on the device"
            if "cache" in data
            else ""
        )

    emit(args, data, human)
    return 0
