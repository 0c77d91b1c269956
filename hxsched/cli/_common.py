"""Argument groups and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from hxsched.errors import HxschedError


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of a table"
    )


def add_shape(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="fix a dynamic input's shape, e.g. --shape images=1x3x640x640 (repeatable)",
    )


def add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        choices=("orin", "xavier"),
        default="orin",
        help="DLA generation: orin (DLA 2.0, AGX Orin / Orin NX) or xavier (DLA 1.0)",
    )
    parser.add_argument(
        "--trt",
        choices=("8.5", "8.6", "10", "11"),
        default=None,
        help="TensorRT version whose DLA rules apply (default: 8.6 for orin, 8.5 for xavier)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp16", "int8"),
        default="fp16",
        help="precision the DLA engine is built in (default: fp16)",
    )


def parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    if not items:  # no overrides: nothing to import (onnx costs a tenth of `plan`)
        return {}
    from hxsched.scheduler.graph.onnx_io import parse_shape_arg

    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, shape = parse_shape_arg(item)
        if name in shapes:
            raise HxschedError(f"--shape given twice for input {name!r}")
        shapes[name] = shape
    return shapes


def load_graph(path: str, shape_args: list[str]):
    """Load and normalise one model, with the CLI's --shape overrides."""
    from hxsched.scheduler.graph.onnx_io import load_model

    return load_model(path, parse_shapes(shape_args))


def emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    """Print ``data`` as JSON when --json was given, else the readable text."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
    else:
        text = human()
        if text:
            print(text)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def progress(args: argparse.Namespace | None = None) -> Callable[[str], None]:
    """Transitional: a progress callable that logs at INFO (``main`` sets the level from -q/-v).

    New code logs with ``logging.getLogger(__name__).info(...)``; this goes once no subcommand
    calls it."""
    return logging.getLogger("hxsched.cli").info


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``-q`` (warnings and errors only) and ``-v`` (debug lines too) for the stderr log."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress lines on stderr, only warnings"
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", help="debug lines on stderr besides progress"
    )


def table(rows: list[list[str]], headers: list[str], *, max_width: int = 60) -> str:
    """A plain text table; cells longer than ``max_width`` are shortened in the middle."""

    def clip(cell: str) -> str:
        if len(cell) <= max_width:
            return cell
        keep = max_width - 1
        return cell[: keep // 2] + "…" + cell[-(keep - keep // 2) :]

    # The last column (usually the reason) is never shortened.
    body = [[clip(str(c)) for c in row[:-1]] + [str(row[-1])] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in body]
    return "\n".join(line.rstrip() for line in lines)
