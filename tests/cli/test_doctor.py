"""``hxsched doctor``: the report on this machine (nothing of TensorRT here), the pure readers of
what a Jetson shows, and the DLA cross-check's comparison."""

from __future__ import annotations

import argparse
import json

from hxsched.cli import doctor, main
from hxsched.cli.doctor import (
    Disagreement,
    Finding,
    Status,
    clock_text,
    compare_dla_verdicts,
    dla_finding,
    module_finding,
    power_mode,
    tensorrt_finding,
)


def test_on_this_machine_everything_missing_is_reported_and_exits_0(capsys):
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    found = {f["name"]: f for f in data["findings"]}
    assert set(found) >= {"tensorrt", "pycuda", "nvtx", "nsys", "dla cores", "power mode"}
    for f in data["findings"]:
        assert f["status"] in ("ok", "missing", "unknown")
        if f["status"] == "missing" and f["name"] not in ("dla cores",):
            assert f["fix"], f  # every missing thing says what to do
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "tensorrt" in text and "what to do" in text


def test_the_model_cross_check_is_skipped_without_tensorrt(capsys, tmp_path):
    assert main(["doctor", "--json", "--model", str(tmp_path / "m.onnx")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dla_disagreements"] == [] and "needs TensorRT and a DLA" in data["note"]


def test_a_jetson_as_the_fakes_show_it(capsys, monkeypatch):
    jetson = [
        Finding("jetson", Status.OK, "R36 (release), REVISION: 4.3"),
        tensorrt_finding("10.3.0.30", None, (3, 10)),
        dla_finding(2, True),
    ]
    monkeypatch.setattr(
        doctor, "cross_check", lambda model: [Disagreement("/model.22/Div", True, False)]
    )
    args = argparse.Namespace(json=False, model="yolov8n.onnx")
    assert doctor.run(args, probe=lambda: jetson) == 0
    out = capsys.readouterr().out
    assert "10.3.0.30" in out
    assert (
        "finding: /model.22/Div: hxsched check says DLA, TensorRT's can_run_on_DLA says GPU" in out
    )


def test_findings_say_what_to_do():
    old = tensorrt_finding("8.4.1.5", None, (3, 8))
    assert old.status == Status.MISSING and ">= 8.5" in old.fix
    none = tensorrt_finding(None, "not installed", (3, 10))
    assert none.status == Status.MISSING and "JETSON.md" in none.fix and "3.10" in none.fix
    assert tensorrt_finding("8.6.2", None, (3, 10)).status == Status.OK
    jp5 = tensorrt_finding(
        None, "not installed", (3, 10), ("/usr/lib/python3.8/dist-packages/tensorrt",)
    )
    assert "another Python" in jp5.fix and "JetPack 5.1" in jp5.fix
    assert module_finding("pycuda", None, "pip install x").fix == "pip install x"
    assert module_finding("nvtx", "0.2.10", "").status == Status.OK
    assert dla_finding(0, False).status == Status.MISSING


def test_power_mode_from_nvpmodel_or_its_config():
    q = "NV Power Mode: MAXN\n0\n"
    assert power_mode(None, q) == "MAXN (mode 0)"
    conf = "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\n< PM_CONFIG DEFAULT=2 >\n"
    assert power_mode(conf, None).startswith("default mode 2")
    assert power_mode(None, None) is None


def test_gpu_clocks_from_devfreq():
    text = clock_text({"17000000.ga10b": ("1300500000", "1300500000"), "x": (None, None)})
    assert text == "17000000.ga10b: 1300 MHz of 1300 MHz"
    assert clock_text({}) is None


def test_compare_dla_verdicts_reports_only_disagreements():
    static = {"Conv_0": True, "Div_1": True, "Resize_2": False, "Gone_3": True}
    trt = {"Conv_0": True, "Div_1": False, "Resize_2": True, "(Unnamed Layer* 7)": False}
    assert compare_dla_verdicts(static, trt) == [
        Disagreement("Div_1", True, False),
        Disagreement("Resize_2", False, True),
    ]
    assert compare_dla_verdicts({}, trt) == []


def test_the_cross_check_uses_the_rules_of_the_installed_tensorrt():
    from hxsched.cli.doctor import check_trt_option

    assert [check_trt_option(v) for v in ("8.5.2.2", "8.6.2.3", "10.3.0.30", "11.4.1")] == [
        "8.5",
        "8.6",
        "10",
        "11",
    ]
