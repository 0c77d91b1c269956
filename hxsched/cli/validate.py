"""``hxsched validate``: the plan's segments in FP16/INT8 (emulated on the CPU, or TensorRT's
engines with --backend trt) against FP32."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hxsched.cli._common import add_json, add_quiet, emit, table
from hxsched.errors import HxschedError

log = logging.getLogger(__name__)

HELP = "compare the plan's segments in FP16/INT8 (CPU emulation) with FP32 on real slices"


def register(sub: argparse._SubParsersAction) -> None:
    from hxsched.runtime.validate.limits import ValidateLimits as Tolerances

    d = Tolerances()
    p = sub.add_parser(
        "validate",
        help=HELP,
        description=HELP + ". Slices go through the pipeline's own pre-processing; the "
        "reference is each whole model in FP32 on ONNX Runtime; each planned segment is "
        "emulated with FP16 (or INT8, entropy-calibrated on --data) storage at TensorRT fusion "
        "boundaries and the segments are chained as the plan cuts them. CPU emulation bounds "
        "the precision effect only: the final check is on the device (--backend trt: the "
        "segments' TensorRT engines, as hxsched build builds them, chained on this device). "
        "Exit status 1 when a tolerance is not met.",
    )
    p.add_argument("plan", help="plan.yaml from hxsched plan (with model paths)")
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="DIR|FILE",
        help="DICOM CT, PNG/TIFF slices or .npy input tensors (files or folders)",
    )
    p.add_argument(
        "--precision",
        choices=("fp16", "int8", "plan"),
        default="fp16",
        help="fp16/int8: every segment; plan: DLA segments FP16, GPU FP32",
    )
    p.add_argument(
        "--backend",
        choices=("ort", "trt"),
        default="ort",
        help="ort: FP16/INT8 emulated on ONNX Runtime (CPU); trt: the TensorRT engines on this "
        "device (built or from the engine cache, as hxsched build --backend trt)",
    )
    p.add_argument(
        "--calibration-cache",
        metavar="CACHE",
        help="trt INT8: the cache from hxsched calibrate (default: calibrate on --data)",
    )
    p.add_argument("--allow-gpu-fallback", action="store_true", help="trt: as hxsched build")
    p.add_argument("--engine-cache", help="trt: engine cache folder (as hxsched build)")
    p.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="INSTANCE=ROLE",
        help="synth or detect, where the output shape does not tell",
    )
    p.add_argument(
        "--report", metavar="DIR", help="write PNG + HTML and the Polygraphy input/output JSON here"
    )
    p.add_argument(
        "--pipeline",
        metavar="FILE",
        help="take the tolerances from this pipeline's validate: section (flags still override)",
    )
    for name in ("psnr", "ssim", "cosine", "agreement", "f1", "map50"):
        p.add_argument(
            f"--min-{name}",
            type=float,
            default=None,
            help=f"default {getattr(d, 'min_' + name):g}, or the pipeline's",
        )
    p.add_argument(
        "--calibration-stride",
        type=int,
        default=1,
        help="entropy search step over the 2048 bins (1: every threshold)",
    )
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def _roles(items: list[str]):
    from hxsched.runtime.service.roles import Role

    out = {}
    for item in items:
        name, _, role = item.partition("=")
        try:
            out[name] = Role(role)
        except ValueError:
            raise HxschedError(
                f"--role {item}: expected INSTANCE=synth or INSTANCE=detect"
            ) from None
    return out


def _tolerances(args: argparse.Namespace):
    """The pipeline's ``validate:`` limits (or the defaults), with the flags given on top."""
    import dataclasses

    from hxsched.codec import decode
    from hxsched.errors import SchemaError
    from hxsched.runtime.validate.limits import ValidateLimits as Tolerances

    base = Tolerances()
    if args.pipeline:
        from hxsched.runtime.service.pipeline import load_pipeline

        base = load_pipeline(args.pipeline).validate
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(base)
        if getattr(args, f.name) is not None
    }
    try:  # the same bounds as in the pipeline file
        return decode(Tolerances, {**dataclasses.asdict(base), **given}, path=None)
    except SchemaError as exc:
        raise HxschedError(f"--{exc.key.replace('_', '-')}: {exc.reason}") from None


def run(args: argparse.Namespace) -> int:
    from hxsched.runtime.build import plan_instance_specs
    from hxsched.runtime.validate.deployed import DeployBackend, DeployOptions, make_runner
    from hxsched.runtime.validate.validate import (
        PrecisionChoice,
        collect_samples,
        validate_plan,
    )
    from hxsched.scheduler.planning.plan import load_plan

    if args.calibration_stride < 1:
        raise HxschedError("--calibration-stride must be at least 1")
    opts = DeployOptions(
        DeployBackend(args.backend),
        args.calibration_cache,
        args.allow_gpu_fallback,
        args.engine_cache,
    )
    runner = make_runner(PrecisionChoice(args.precision), opts)  # no TensorRT: one line now
    plan = load_plan(args.plan)
    specs = plan_instance_specs(plan)  # a missing model is named before the data is read
    samples = collect_samples(args.data)
    tol = _tolerances(args)
    log.info("validating %d instance(s) on %d input(s)", len(specs), len(samples))
    v = validate_plan(
        specs,
        samples,
        PrecisionChoice(args.precision),
        tol,
        plan_path=args.plan,
        roles=_roles(args.role),
        stride=args.calibration_stride,
        runner=runner,
    )
    data = v.to_dict()
    if args.report:
        data["report"] = _write(v, Path(args.report))
    emit(args, data, lambda: human(v, data.get("report")))
    return 0 if v.passed else 1


def _write(v, out: Path) -> dict[str, object]:
    from hxsched.runtime.validate import polygraphy
    from hxsched.runtime.validate.report import write_report

    page = write_report(v, out)
    files = {}
    for r in v.instances:
        ins, outs = polygraphy.save(out, r.instance.replace("#", "_"), r.feeds, r.reference)
        files[r.instance] = {"inputs": str(ins), "fp32_outputs": str(outs)}
    return {"html": str(page), "polygraphy": files}


def human(v, report) -> str:
    lines = [f"precision {v.precision}, {v.slices} input(s); {v.note}"]
    deployed = "emulated" if v.backend == "ort" else "TensorRT"
    if v.calibration:
        lines.append(v.calibration)
    for r in v.instances:
        lines.append(f"\n{r.instance} ({r.role}): {'pass' if r.passed else 'FAIL'}")
        if r.image:
            i = r.image
            lines.append(
                f"  PSNR {i.psnr_mean:.2f} dB (worst {i.psnr_min:.2f}), SSIM "
                f"{i.ssim_mean:.6f} (worst {i.ssim_min:.6f}), MSE {i.mse:.3g}, "
                f"data range {i.data_range:g}"
            )
        if r.detection:
            d = r.detection
            lines.append(
                f"  decision agreement {d.decision_agreement:.3f} over {d.slices} slices, "
                f"P {d.precision:.3f} R {d.recall:.3f} F1 {d.f1:.3f} mAP50 {d.map50:.3f} "
                f"({d.reference_boxes} FP32 boxes, {d.deployed_boxes} deployed)"
            )
        for name, s in r.outputs.items():
            lines.append(
                f"  {name}: cosine {s.cosine:.6f}, |d| max {s.max_abs:.3g} median "
                f"{s.median_abs:.3g} p99 {s.p99_abs:.3g}, rel p99 {s.p99_rel:.3g}"
            )
        rows = [
            [
                b.segment,
                b.accelerator,
                b.mode,
                b.tensor[-48:],
                f"{b.stats.cosine:.6f}",
                f"{b.stats.max_abs:.3g}",
                f"{b.stats.median_abs:.3g}",
                f"{b.stats.p99_abs:.3g}",
                f"{b.stats.max_rel:.3g}",
            ]
            for b in r.boundaries
        ]
        lines.append(
            table(
                rows,
                [
                    "segment",
                    "on",
                    deployed,
                    "boundary tensor",
                    "cosine",
                    "max |d|",
                    "median |d|",
                    "p99 |d|",
                    "max rel",
                ],
            )
        )
        if r.drift_segment:
            lines.append(
                f"  error grows most in {r.drift_segment} (cosine loss beyond its inputs')"
            )
        for c in r.checks:
            if not c.passed:
                lines.append(f"  FAIL {c.what}: {c.value:.6g} (limit {c.limit:g})")
    if report:
        lines.append(
            f"\nwrote {report['html']} and Polygraphy JSON (polygraphy run SEG.onnx "
            "--trt --load-inputs X.inputs.json --load-outputs X.fp32_outputs.json)"
        )
    lines.append("PASS" if v.passed else "FAIL")
    return "\n".join(lines)
