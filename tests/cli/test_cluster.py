"""``hxsched cluster orthanc-config``: the files it writes, and one line for bad input."""

from __future__ import annotations

import json

import pytest

from hxsched.cli import main


def test_orthanc_config_writes_the_configuration_and_the_script(tmp_path, capsys):
    out = tmp_path / "router"
    argv = ["cluster", "orthanc-config", "--node", "a=127.0.0.1:11112", "--node"]
    argv += ["b=127.0.0.1:11113:NODEB", "--pacs", "127.0.0.1:104", "-o", str(out)]
    argv += ["--dicom-port", "4300", "--http-port", "8100", "--aet", "ROUTER", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nodes"] == ["a", "b"] and (data["dicom_port"], data["http_port"]) == (4300, 8100)
    config = json.loads((out / "orthanc.json").read_text())
    assert config["DicomAet"] == "ROUTER"
    assert set(config["DicomModalities"]) == {"a", "b", "pacs"}
    assert (out / "hxsched-router.lua").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--node", "a:1"], "expected NAME=HOST:PORT"),
        (["--node", "a=h:1", "--node", "a=h:2"], "'a' given twice"),
        (["--node", "a=h:99999"], "not a port"),
        (["--node", "a=h:1", "--http-port", "0"], "--http-port: 0 is not a port"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, extra, message):
    argv = ["cluster", "orthanc-config", "--pacs", "h:104", "-o", str(tmp_path / "r"), *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("hxsched cluster: error")
    assert not (tmp_path / "r").exists()


def test_a_missing_option_is_usage_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["cluster", "orthanc-config", "--node", "a=h:1", "-o", str(tmp_path)])
    assert stop.value.code == 2 and "--pacs" in capsys.readouterr().err
