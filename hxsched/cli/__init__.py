"""The ``hxsched`` command: one module per subcommand, errors printed on one line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hxsched import __version__
from hxsched.errors import HxschedError

# Subcommand modules, in the order ``hxsched --help`` lists them.
SUBCOMMANDS = ("demo", "zoo", "check", "rewrite", "profile", "plan", "build", "run", "serve")

DESCRIPTION = """\
hxsched plans and runs several neural networks across an NVIDIA Jetson's GPU and DLA cores.
Every subcommand runs without a GPU; each has --json for machines and a table for people."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hxsched",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hxsched {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"hxsched.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 user error, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HxschedError as exc:
        print(f"hxsched {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hxsched {args.command}: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `hxsched check m.onnx --json | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
