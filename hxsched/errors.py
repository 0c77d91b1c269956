"""Error types: user errors print as one line without a traceback; internal errors are our bugs.

``HxschedError`` is everything a user can fix (input, environment); callers that need to tell
cases apart catch its subclasses. ``InternalError`` is an invariant of ours that broke: the CLI
prints it with its traceback and asks for a report.
"""

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


class SchemaError(HxschedError):
    """A profile, plan, pipeline or other hxsched file that breaks its schema.

    ``key`` is the dotted path inside the file (``sources[0].window``); printed as
    ``FILE: key: expected …, got …``.
    """

    def __init__(
        self, message: str, *, key: str = "", path: str | os.PathLike[str] | None = None
    ) -> None:
        self.key = key
        self.reason = message
        super().__init__(f"{key}: {message}" if key else message, path=path)
        self.message = message


class ModelError(HxschedError):
    """A model file that cannot be used: missing, not ONNX, truncated, dynamic, unsupported."""


class MissingDependencyError(HxschedError):
    """An optional library this command needs is not installed; the message says how to get it."""


class ResourceError(HxschedError):
    """The machine, not the input: disk full, I/O error, a port in use. Retry once it clears."""


class InternalError(Exception):
    """A bug in hxsched itself (an invariant broke); reported with a traceback."""
