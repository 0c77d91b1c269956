"""Error types: user errors print as one line without a traceback; internal errors are our bugs."""

from __future__ import annotations

import os


class HxschedError(Exception):
    """A problem with the user's input or environment: what went wrong and how to fix it.

    ``path`` names the file at fault (if any); the CLI prints ``path: message`` on one line.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InternalError(Exception):
    """A bug in hxsched itself (an invariant broke); reported with a traceback."""
