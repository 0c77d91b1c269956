"""The service's logs: JSON lines only, third-party text and warnings withheld (issue 13, #3)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings

import pytest

from hxsched.runtime.service import logsafe
from hxsched.runtime.service.logsafe import JsonLogFormatter, JsonStderrHandler

SENTINEL = "ZQXSENTINEL^PATIENT"
VALUES = (SENTINEL, "1961-02-03", "female", "ZQXSENTINEL")

SERVICE_SCRIPT = f"""
import logging, sys, threading, warnings
from hxsched.runtime.service.logsafe import setup_logging
setup_logging("DEBUG")
import pydicom
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

S = {SENTINEL!r}
config.settings.writing_validation_mode = config.IGNORE
ds = Dataset()
ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
ds.SOPClassUID = CTImageStorage
ds.PatientName, ds.PatientBirthDate, ds.PatientSex = S, "1961-02-03", "female"
ds.save_as(sys.argv[1], enforce_file_format=True)
config.settings.writing_validation_mode = config.WARN
config.settings.reading_validation_mode = config.WARN
read = pydicom.dcmread(sys.argv[1])
for elem in read:
    elem.value  # validation warns (and logs) with the value
net = logging.getLogger("pynetdicom.assoc")
net.info("Association Accepted")
net.info("Association Accepted %s", S)
net.error(f"Received an A-ASSOCIATE from {{S}}")
try:
    raise ValueError(S)
except ValueError as exc:
    net.exception(exc)
    logging.getLogger("hxsched.service").exception("decode failed")
logging.getLogger("PIL.Image").warning("bad chunk %s", S)
logging.getLogger().warning(S + "\\nsecond line")
lonely = logging.getLogger("lonely")
lonely.propagate = False
lonely.error(S)  # no handler anywhere: logging.lastResort
logging.getLogger("hxsched.service").info("%d items", S)  # a formatting error
warnings.warn(S)
logging.getLogger("hxsched.service").info("slice done\\nforged", extra={{"fields": {{"id": 3}}}})
t = threading.Thread(target=lambda: 1 / 0)
t.start(); t.join()
raise RuntimeError(S)
"""

WORKER_SCRIPT = f"""
import logging, sys, traceback
from hxsched.runtime.service.logsafe import setup_worker_logging
setup_worker_logging()
logging.getLogger("hxsched.service").info("worker up")
logging.getLogger("pydicom").warning({SENTINEL!r})
try:
    raise ValueError({SENTINEL!r})
except ValueError:
    sys.stderr.write("Process hxsched-host-0:\\n")
    traceback.print_exc()  # what multiprocessing does when a process dies
sys.stderr.flush()
"""


def _run(script: str, *args: str, env: dict | None = None) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.stderr, done.stdout
    for value in VALUES:
        assert value not in done.stderr
    lines = done.stderr.splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and r["level"] for r in records)
    return records


def test_service_logs_are_json_without_dicom_values(tmp_path):
    records = _run(SERVICE_SCRIPT, str(tmp_path / "bad.dcm"))
    msgs = [r["msg"] for r in records]
    assert "Association Accepted" in msgs  # an allow-listed constant
    assert msgs.count("Association Accepted") == 1  # with an argument: withheld
    withheld = [r for r in records if r.get("logger") == "pydicom"]
    assert len(withheld) >= 2 and all("text withheld" in r["msg"] for r in withheld)
    warned = [r for r in records if r.get("category")]
    assert {r["category"] for r in warned} == {"UserWarning"}
    assert {r["module"] for r in warned} == {"pydicom.valuerep", "unknown"}  # -c: no file
    assert {"ValueError", "ZeroDivisionError", "RuntimeError"} <= {r.get("exc") for r in records}
    assert any(r.get("logger") == "lonely" for r in records)
    assert any(r.get("logger") == "PIL.Image" for r in records)
    assert any(r.get("logger") == "root" for r in records)
    assert any("could not be formatted" in m for m in msgs)
    done = next(r for r in records if r["msg"].startswith("slice done"))
    assert done == {**done, "msg": "slice done\nforged", "id": 3}  # one line, escaped


def test_worker_stderr_is_json_lines_only(tmp_path):
    env = {**dict(__import__("os").environ), logsafe.LEVEL_ENV: "DEBUG"}
    records = _run(WORKER_SCRIPT, env=env)
    assert records[0]["msg"] == "worker up"
    assert records[1] == {**records[1], "logger": "pydicom", "level": "warning"}
    assert [r["msg"] for r in records[2:]] == ["non-JSON output (text withheld)"]  # one per run


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonLogFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured():
    handler = _Lines()
    own = logging.getLogger("hxsched.test_logsafe")
    saved = (own.level, own.propagate)
    own.addHandler(handler)
    own.setLevel(logging.DEBUG)
    yield own, handler
    own.removeHandler(handler)
    own.setLevel(saved[0])


def test_formatter_trusts_only_hxsched_records(captured):
    own, handler = captured
    fmt = JsonLogFormatter()
    third = logging.LogRecord("pydicom.valuerep", logging.WARNING, "f", 1, SENTINEL, (), None)
    assert json.loads(fmt.format(third)) == {
        "ts": pytest.approx(third.created, abs=0.01),
        "level": "warning",
        "logger": "pydicom.valuerep",
        "msg": "pydicom warning (text withheld: may contain DICOM values)",
    }
    try:
        raise KeyError(SENTINEL)
    except KeyError:
        own.exception("reading item %d failed", 7, extra={"fields": {"item": 7}})
    (line,) = handler.lines
    assert SENTINEL not in line and "Traceback" not in line
    got = json.loads(line)
    assert (got["msg"], got["item"], got["exc"]) == ("reading item 7 failed", 7, "KeyError")
    assert "logger" not in got  # hxsched's own lines keep their old shape


def test_warnings_keep_category_and_module_only(captured):
    _, handler = captured
    logging.getLogger("hxsched.warnings").addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = logsafe._show_warning
            warnings.warn(
                f"Invalid value for VR DA: {SENTINEL!r}", DeprecationWarning, stacklevel=1
            )
    finally:
        logging.getLogger("hxsched.warnings").removeHandler(handler)
    (line,) = handler.lines
    got = json.loads(line)
    assert SENTINEL not in line
    assert (got["category"], got["module"]) == ("DeprecationWarning", __name__)


def test_handler_error_is_one_json_line(capsys):
    record = logging.LogRecord("hxsched.x", logging.INFO, "f", 1, "%d", (SENTINEL,), None)
    JsonStderrHandler().handle(record)
    err = capsys.readouterr().err
    assert SENTINEL not in err and len(err.splitlines()) == 1
    assert json.loads(err)["msg"] == "a log record could not be formatted (text withheld)"
