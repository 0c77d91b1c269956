"""The ``hxsched`` command: one module per subcommand, errors printed on one line."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from hxsched import __version__
from hxsched.errors import HxschedError, InternalError
from hxsched.log import cli_level, configure_cli

# Subcommand modules, in the order ``hxsched --help`` lists them.
SUBCOMMANDS = (
    "demo",
    "zoo",
    "check",
    "rewrite",
    "profile",
    "plan",
    "build",
    "run",
    "bench",
    "validate",
    "calibrate",
    "serve",
    "cluster",
    "doctor",
)

DESCRIPTION = """\
hxsched plans and runs several neural networks across an NVIDIA Jetson's GPU and DLA cores.
Every subcommand runs without a GPU; each has --json for machines and a table for people."""

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EPILOG = """\
exit status: 0 done; 1 a problem with the input or the machine (one line names it); 2 bad
usage; 3 an internal error, a bug in hxsched (printed with its traceback: please report it);
130 interrupted."""

REPORT = (
    "this is a bug in hxsched, not in your input: please report it on the hxsched issue "
    "tracker with the command line and the traceback above"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hxsched",
        description=DESCRIPTION,
        epilog=EPILOG,
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
    """Run the CLI; returns the exit code (0 ok, 1 user error, 2 usage, 3 internal error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_cli(cli_level(getattr(args, "quiet", False), getattr(args, "verbose", False)))
    try:
        return int(args.func(args) or 0)
    except HxschedError as exc:
        print(f"hxsched {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print(f"hxsched {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # the reader went away (`| head`): console_main handles it
    except Exception as exc:  # noqa: BLE001 - InternalError or any other bug: report it
        report_internal_error(args.command, exc)
        return EXIT_INTERNAL


def report_internal_error(command: str, exc: BaseException) -> None:
    """Print a bug: what broke, the traceback, and where to report it."""
    what = str(exc) if isinstance(exc, InternalError) else f"{type(exc).__name__}: {exc}"
    err = sys.stderr
    print(f"hxsched {command}: internal error (a bug in hxsched): {what}", file=err)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=err)
    print(f"hxsched {command}: {REPORT}", file=err, flush=True)


def console_main() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `hxsched check m.onnx --json | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
