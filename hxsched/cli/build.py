"""``hxsched build``: cut a plan's models into segments and build what a backend runs."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hxsched.cli._common import add_json, add_quiet, add_shape, emit, parse_shapes, table
from hxsched.errors import InternalError

if TYPE_CHECKING:
    from hxsched.runtime.build import InstanceSpec

log = logging.getLogger(__name__)

HELP = "cut each planned model into its segments (ONNX) and, with --backend trt, build engines"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help=HELP,
        description=HELP + ". ort: one standalone ONNX per segment plus manifest.json (the "
        "segments chained give the whole model's outputs; --verify checks it on ONNX Runtime). "
        "trt: one TensorRT engine per segment, DLA segments on their planned core in FP16/INT8 "
        "with GPU fallback off (a fallback is an error naming the layer), cached by TensorRT "
        "version, device, DLA core, precision and segment hash.",
    )
    p.add_argument("plan", help="plan.yaml from hxsched plan")
    p.add_argument("--backend", choices=("ort", "trt"), default="ort")
    p.add_argument("-o", "--out", default="hxsched-build", help="output folder")
    p.add_argument(
        "--verify",
        action="store_true",
        help="run the chained segments and the whole model on ONNX Runtime and compare",
    )
    p.add_argument("--precision", choices=("fp16", "int8"), default="fp16")
    p.add_argument("--allow-gpu-fallback", action="store_true")
    p.add_argument("--calibration-cache")
    p.add_argument("--engine-cache", help="engine cache folder (default ~/.cache/hxsched/engines)")
    add_shape(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hxsched.runtime.build import write_segments
    from hxsched.runtime.session import specs_for
    from hxsched.scheduler.planning.plan import load_plan

    plan = load_plan(args.plan)
    log.info("cutting %d instance(s) into segments", len(plan.instances))
    specs = specs_for(plan, args.backend, parse_shapes(args.shape))  # --shape as at plan time
    out = Path(args.out)
    rows = write_segments(specs, out)
    data = {"plan": args.plan, "backend": args.backend, "out": str(out), "segments": rows}
    if args.backend == "trt":
        from hxsched.runtime.backends.trt.backend import TrtBackend

        be = TrtBackend(
            precision=args.precision,
            allow_gpu_fallback=args.allow_gpu_fallback,
            calibration_cache=args.calibration_cache,
            cache_dir=args.engine_cache,
        )
        be.prepare(specs, inflight=1)
        data["fallbacks"] = [e.__dict__ for e in be.fallbacks]
        be.close()
    if args.verify:
        data["verify"] = verify_chained(specs)
    (out / "manifest.json").write_text(
        json.dumps({"schema": "hxsched.build/1", **data}, indent=1) + "\n"
    )

    def human() -> str:
        t = table(
            [
                [
                    r["instance"],
                    str(r["segment"]),
                    r["accelerator"],
                    f"{r['nodes'][0]}-{r['nodes'][1]}",
                    r["file"],
                ]
                for r in rows
            ],
            ["instance", "seg", "accelerator", "nodes", "file"],
        )
        extra = ""
        if "verify" in data:
            extra = "\n" + "\n".join(
                f"verify {i} {k}: max |diff| {v:.2e} (ONNX Runtime CPU FP32)"
                for i, outs in data["verify"].items()
                for k, v in outs.items()
            )
        return t + extra + f"\nwrote {out}/manifest.json"

    emit(args, data, human)
    return 0


def verify_chained(specs: Sequence[InstanceSpec]) -> dict[str, dict[str, float]]:
    """Per instance and output, max |diff| of the chained segments against the whole model."""
    import numpy as np

    from hxsched.runtime.reference import OrtModel, random_inputs

    verify = {}
    for inst in specs:
        log.info("verifying %s: chained segments vs the whole model (ONNX Runtime)", inst.name)
        if inst.graph is None:
            raise InternalError(f"{inst.name}: segments were written without the model")
        feeds = random_inputs(inst.graph, 0)
        whole = OrtModel(inst.graph)
        ref = whole.run(feeds)
        whole.close()
        tensors = dict(feeds)
        for seg in inst.segments:
            if seg.graph is None:
                raise InternalError(f"{seg.name}: a segment was written without its model")
            m = OrtModel(seg.graph)
            tensors.update(m.run({t: tensors[t] for t in seg.inputs}))
            m.close()
        verify[inst.name] = {
            k: float(np.max(np.abs(v.astype(np.float64) - tensors[k]))) for k, v in ref.items()
        }
    return verify
