"""``hxsched zoo``: write the zoo's faithful ONNX models (no torch, no downloads)."""

from __future__ import annotations

import argparse
import hashlib
import logging

from hxsched.cli._common import add_json, add_quiet, emit, table
from hxsched.errors import HxschedError

log = logging.getLogger(__name__)

HELP = "write a zoo model (Pix2Pix U-Net, YOLOv8n/s) as ONNX with seeded random weights"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "zoo",
        help=HELP,
        description=HELP + ". The models follow the reference implementations node for node "
        "(opset 17, static shapes); their weights are random but calibrated so that outputs "
        "depend clearly on inputs. Synthetic: not for diagnostic use.",
    )
    p.add_argument("name", nargs="?", help="zoo model name (see --list)")
    p.add_argument("-o", "--output", help="where to write the .onnx file")
    p.add_argument("--list", action="store_true", help="list the zoo's models")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hxsched.scheduler.zoo import ZOO, zoo_entry

    if args.list:
        entries = list(ZOO.values())
        emit(
            args,
            [e.to_dict() for e in entries],
            lambda: table(
                [
                    [
                        e.name,
                        "x".join(map(str, e.input[1])),
                        "x".join(map(str, e.output[1])),
                        f"{e.params:,}",
                        e.description,
                    ]
                    for e in entries
                ],
                ["name", "input", "output", "params", "description"],
                max_width=80,
            ),
        )
        return 0
    if not args.name:
        raise HxschedError("name a zoo model (e.g. hxsched zoo yolov8n -o yolov8n.onnx) or --list")
    if not args.output:
        raise HxschedError(f"say where to write it: hxsched zoo {args.name} -o {args.name}.onnx")
    info = write_zoo_model(args.name, args.output, seed=args.seed)
    entry = zoo_entry(args.name)
    emit(
        args,
        info,
        lambda: (
            f"wrote {info['path']}: {entry.description}, "
            f"{info['params']:,} parameters, {info['nodes']} nodes, seed {args.seed}"
        ),
    )
    return 0


def write_zoo_model(name: str, path: str, *, seed: int = 0) -> dict:
    """Build and save zoo model ``name``; returns what was written."""
    import onnx

    from hxsched.scheduler.zoo import zoo_entry
    from hxsched.scheduler.zoo.builder import count_parameters

    entry = zoo_entry(name)
    log.info("building %s (seed %d), calibrating weights on sample inputs", name, seed)
    model = entry.build(seed=seed)
    from pathlib import Path

    out = Path(path)
    if out.is_dir():
        raise HxschedError(f"{path} is a directory; give a file name like {path}/{name}.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        onnx.save_model(model, str(out))
    except OSError as exc:
        raise HxschedError(f"cannot write {path}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    log.info("wrote %s", path)
    return {
        "name": name,
        "path": str(out),
        "seed": seed,
        "params": count_parameters(model),
        "nodes": len(model.graph.node),
        "input": entry.to_dict()["input"],
        "output": entry.to_dict()["output"],
        "bytes": out.stat().st_size,
        "sha256": digest,
    }
