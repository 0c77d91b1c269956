"""The service's logging: one JSON object per line on stderr, never a DICOM value.

Third-party records (pydicom, pynetdicom, PIL, ...) and Python warnings are not trusted: only
their logger, level and a fixed text are kept, unless the message is a known-safe constant.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import threading
import time
import warnings
from types import TracebackType
from typing import TextIO

NAMESPACE = "hxsched"
LEVEL_ENV = "HXSCHED_LOG_LEVEL"  # the level the spawned host workers inherit
THIRD_PARTY = ("pydicom", "pynetdicom", "PIL")
WITHHELD = "{name} {level} (text withheld: may contain DICOM values)"

# Constant messages (no arguments, no f-string values) that pynetdicom 3.0 logs for
# associations (pynetdicom/acse.py, pynetdicom/association.py); any other text is withheld.
SAFE_MESSAGES: dict[str, frozenset[str]] = {
    "pynetdicom": frozenset(
        {
            "Requesting Association",
            "Accepting Association",
            "Association Accepted",
            "Rejecting Association",
            "Association Rejected",
            "Releasing Association",
            "Association Released",
            "Aborting Association",
            "Association Aborted",
            "Received Store Request",
            "No accepted presentation contexts",
            "Network timeout reached",
            "Connection closed while waiting for DIMSE message",
            "DIMSE timeout reached while waiting for message response",
            "Exception in the handler bound to 'evt.EVT_C_STORE'",
        }
    )
}


def _own(record: logging.LogRecord) -> bool:
    return record.name == NAMESPACE or record.name.startswith(NAMESPACE + ".")


def _safe_text(record: logging.LogRecord) -> str:
    """A third-party record's message if it is a known constant, else a fixed text."""
    top = record.name.split(".", 1)[0]
    msg = record.msg
    if not record.args and isinstance(msg, str) and msg in SAFE_MESSAGES.get(top, ()):
        return msg
    return WITHHELD.format(name=top, level=record.levelname.lower())


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; callers pass only ids, counts and reasons (never patient data).

    hxsched's own records keep their message and ``extra={"fields": {...}}``, and of an
    exception only its type name; other loggers' records keep their logger name and level.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {"ts": round(record.created, 3), "level": record.levelname.lower()}
        if _own(record):
            out["msg"] = record.getMessage()
            fields = getattr(record, "fields", None)
            if isinstance(fields, dict):
                out.update(fields)
            if record.exc_info and record.exc_info[0] is not None:
                out["exc"] = record.exc_info[0].__name__
        else:
            out["logger"] = record.name
            out["msg"] = _safe_text(record)
        # json.dumps escapes control characters (newlines included) and, with ensure_ascii,
        # U+2028/U+2029: always exactly one line
        return json.dumps(out, default=str)


class JsonStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each record; a failure to format is one JSON line
    (``logging.Handler.handleError`` would print the record's arguments and a traceback)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonLogFormatter())

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass

    def handleError(self, record: logging.LogRecord) -> None:
        line = {"ts": round(record.created, 3), "level": "error", "logger": record.name}
        line["msg"] = "a log record could not be formatted (text withheld)"
        with contextlib.suppress(Exception):  # nothing left to report to
            sys.stderr.write(json.dumps(line) + "\n")


_HANDLER = JsonStderrHandler()
_WARN = logging.getLogger(NAMESPACE + ".warnings")
_MODULES: dict[str, str] = {}


def _module_of(filename: str) -> str:
    """The dotted module name that ``filename`` is (``pydicom.valuerep``), never the path."""
    if filename not in _MODULES:
        name = next(
            (
                mod_name
                for mod_name, mod in list(sys.modules.items())
                if getattr(mod, "__file__", None) == filename
            ),
            "unknown",
        )
        _MODULES[filename] = name
    return _MODULES[filename]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning``: category and module only (pydicom's invalid-VR warnings quote
    the value, e.g. a birth date)."""
    fields = {"category": category.__name__, "module": _module_of(filename)}
    _WARN.warning(
        "python warning (text withheld: may contain DICOM values)", extra={"fields": fields}
    )


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger(NAMESPACE).critical("uncaught exception", exc_info=(kind, exc, tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit:
        _excepthook(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)


def _route(level: str) -> None:
    """The ``hxsched`` logger at ``level``; the root logger (so every other logger, and
    ``logging.lastResort``) through the same JSON handler, at WARNING or ``level`` if lower."""
    levelno = _levelno(level)
    own = logging.getLogger(NAMESPACE)
    own.handlers[:] = [_HANDLER]
    own.setLevel(levelno)
    own.propagate = False
    root = logging.getLogger()
    # raw text handlers on stderr go; others (a test's capture handler) stay
    root.handlers[:] = [h for h in root.handlers if not _raw_stderr(h)]
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    root.setLevel(min(levelno, logging.WARNING))
    for name in THIRD_PARTY:
        other = logging.getLogger(name)
        other.handlers[:] = [h for h in other.handlers if not _raw_stderr(h)]
        other.propagate = True
    logging.lastResort = _HANDLER
    warnings.showwarning = _show_warning
    _quiet_native_libraries()


def _quiet_native_libraries() -> None:
    """OpenCV logs from C++ straight to stderr (e.g. ``[ WARN:0@1.7] global grfmt_tiff.cpp``
    on a broken TIFF), past Python's logging: silence it. OPENCV_LOG_LEVEL is read when OpenCV
    first logs ("OpenCV environment variables", docs.opencv.org); set it for this process and
    the workers it spawns, and set the level directly where cv2 is loaded already."""
    os.environ["OPENCV_LOG_LEVEL"] = "SILENT"
    cv2 = sys.modules.get("cv2")
    utils = getattr(getattr(cv2, "utils", None), "logging", None)
    if utils is not None:
        with contextlib.suppress(Exception):  # an OpenCV build without the logging module
            utils.setLogLevel(utils.LOG_LEVEL_SILENT)


def _levelno(level: str) -> int:
    got = logging.getLevelName(level.upper())
    return got if isinstance(got, int) else logging.INFO


def _raw_stderr(handler: logging.Handler) -> bool:
    if isinstance(handler, JsonStderrHandler):
        return True
    stream = getattr(handler, "stream", None)
    return isinstance(handler, logging.StreamHandler) and stream in (sys.stderr, sys.__stderr__)


def setup_logging(level: str = "INFO") -> None:
    """``hxsched serve``: every log line on stderr is one JSON object without DICOM values;
    uncaught exceptions are logged by type name; spawned workers inherit ``level``."""
    _route(level)
    os.environ[LEVEL_ENV] = level
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook


def setup_worker_logging(level: str | None = None) -> None:
    """A spawned host worker process: the service's JSON lines on stderr, at the service's level
    (``HXSCHED_LOG_LEVEL``, set by ``setup_logging``) unless ``level`` is given."""
    if not isinstance(sys.stderr, _JsonLinesOnly):
        sys.stderr = _JsonLinesOnly(sys.stderr)
    _route(level or os.environ.get(LEVEL_ENV, "INFO"))
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook


class _JsonLinesOnly(io.TextIOBase):
    """A worker's ``sys.stderr``: JSON lines pass, any other text (``multiprocessing`` prints a
    crashed process's traceback straight to stderr) becomes one withheld-text record per run."""

    def __init__(self, raw: TextIO) -> None:
        self._raw, self._buf, self._quiet = raw, "", False

    def write(self, s: str) -> int:
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(line)
        return len(s)

    def _line(self, line: str) -> None:
        if _is_json_object(line):
            self._raw.write(line + "\n")
            self._quiet = False
        elif not self._quiet and line.strip():
            text = {
                "ts": round(time.time(), 3),
                "level": "error",
                "logger": "stderr",
                "msg": "non-JSON output (text withheld)",
            }
            self._raw.write(json.dumps(text) + "\n")
            self._quiet = True

    def flush(self) -> None:
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
