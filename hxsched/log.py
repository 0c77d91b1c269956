"""Progress and diagnostics through :mod:`logging`: modules log to ``logging.getLogger(__name__)``
(the ``hxsched`` namespace); the CLI shows them on stderr as ``[hxsched] …`` lines."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

NAMESPACE = "hxsched"
PREFIX = "[hxsched]"


class _PlainFormatter(logging.Formatter):
    """``[hxsched] message`` for progress (INFO); other levels name themselves."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno != logging.INFO:
            text = f"{record.levelname.lower()}: {text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{PREFIX} {text}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (test captures swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def cli_level(quiet: bool = False, verbose: bool = False) -> int:
    """``-q`` shows warnings and errors only, ``-v`` adds debug lines; progress (INFO) otherwise."""
    if verbose:
        return logging.DEBUG
    return logging.WARNING if quiet else logging.INFO


def configure_cli(level: int = logging.INFO) -> logging.Logger:
    """Send the ``hxsched`` loggers' records at ``level`` and above to stderr, one plain line each.

    Only the ``hxsched`` logger is touched (never the root logger): its handlers are replaced, so
    a repeated call (or ``hxsched serve`` installing its JSON-lines handler afterwards) leaves
    exactly one. Records still propagate to the root logger, where an application may listen.
    """
    logger = logging.getLogger(NAMESPACE)
    handler = _StderrHandler()
    handler.setFormatter(_PlainFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = True
    return logger
