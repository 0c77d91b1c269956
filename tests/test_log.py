"""The CLI's logging set-up: plain stderr lines on the ``hxsched`` logger, never the root."""

from __future__ import annotations

import json
import logging

import pytest

from hxsched.log import cli_level, configure_cli


@pytest.fixture(autouse=True)
def _restore_hxsched_logger():
    logger = logging.getLogger("hxsched")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_levels():
    assert cli_level() == logging.INFO
    assert cli_level(quiet=True) == logging.WARNING
    assert cli_level(verbose=True) == logging.DEBUG


def test_plain_lines_on_the_current_stderr(capsys):
    configure_cli(logging.INFO)
    log = logging.getLogger("hxsched.runtime.session")
    log.info("running %d frames on %s", 4, "sim")
    log.debug("not shown")
    log.error("a segment failed")
    assert capsys.readouterr().err == (
        "[hxsched] running 4 frames on sim\n[hxsched] error: a segment failed\n"
    )


def test_only_the_hxsched_logger_is_configured():
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    configure_cli(logging.DEBUG)
    configure_cli(logging.INFO)  # a second main() in the same process: still one handler
    assert (list(root.handlers), root.level) == before
    assert len(logging.getLogger("hxsched").handlers) == 1
    assert logging.getLogger("hxsched").level == logging.INFO


def test_the_cli_set_up_leaves_the_service_json_lines_alone(capsys):
    from hxsched.runtime.service.service import setup_logging

    configure_cli(logging.INFO)  # what main() does before ``hxsched serve`` runs
    setup_logging("INFO")
    logging.getLogger("hxsched.service").info("slice done", extra={"fields": {"slices": 1}})
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line) for line in lines][0]["msg"] == "slice done"
    assert len(lines) == 1  # not also as a plain line


def test_records_still_reach_caplog(caplog):
    configure_cli(logging.WARNING)
    caplog.set_level(logging.INFO, logger="hxsched")
    logging.getLogger("hxsched.cli.build").info("cutting 2 instance(s) into segments")
    assert caplog.messages == ["cutting 2 instance(s) into segments"]
