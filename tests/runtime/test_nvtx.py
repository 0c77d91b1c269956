"""NVTX ranges (no-ops without the nvtx package) and the ``nsys profile`` command line."""

from __future__ import annotations

import contextlib
import shlex

import pytest

from hxsched.runtime import nvtx


def test_annotate_is_a_no_op_without_nvtx(monkeypatch):
    monkeypatch.setattr(nvtx, "_nvtx", None)
    assert not nvtx.available()
    ran = []
    with nvtx.annotate("m/s0 f3", "dla0") as value:
        ran.append(value)
    assert ran == [None]
    with nvtx.annotate("frame 1"):  # default lane
        pass
    # Exceptions pass through unchanged, and the context manager is reusable.
    with pytest.raises(KeyError), nvtx.annotate("boom", "gpu"):
        raise KeyError("x")
    for _ in range(3):
        with nvtx.annotate("again"):
            pass


def test_annotate_uses_the_lane_color_when_nvtx_is_there(monkeypatch):
    calls: list[tuple[str, str, str]] = []

    class FakeNvtx:
        @staticmethod
        @contextlib.contextmanager
        def annotate(message, color, domain):
            calls.append((message, color, domain))
            yield

    monkeypatch.setattr(nvtx, "_nvtx", FakeNvtx)
    assert nvtx.available()
    with nvtx.annotate("m/s0 f0", "gpu"), nvtx.annotate("m/s1 f0", "dla1"):
        pass
    with nvtx.annotate("f0"), nvtx.annotate("x", "npu"):
        pass
    assert calls == [
        ("m/s0 f0", "green", "hxsched"),
        ("m/s1 f0", "purple", "hxsched"),
        ("f0", "orange", "hxsched"),
        ("x", "gray", "hxsched"),
    ]


def test_nsys_command_drops_the_flag_and_quotes(monkeypatch):
    monkeypatch.setattr(nvtx, "is_jetson", lambda release_file=nvtx.TEGRA_RELEASE: False)
    argv = ["run", "plan.json", "--nsys", "--backend", "trt", "--label", "two words", "a'b"]
    line = nvtx.nsys_command(argv)
    assert line.startswith("nsys profile ")
    words = shlex.split(line)
    assert "--nsys" not in words
    assert words[:2] == ["nsys", "profile"]
    assert "--trace=cuda,nvtx,osrt" in words
    assert words[words.index("-o") + 1] == "hxsched-run"
    i = words.index("hxsched")
    assert words[i + 1 :] == ["run", "plan.json", "--backend", "trt", "--label", "two words", "a'b"]
    assert "'two words'" in line  # quoted, not split


def test_nsys_command_output_name_is_quoted():
    line = nvtx.nsys_command(["run", "p.json"], output="my run; rm -rf x")
    words = shlex.split(line)
    assert words[words.index("-o") + 1] == "my run; rm -rf x"
    assert words[-3:] == ["hxsched", "run", "p.json"]


def test_nsys_command_traces_the_dla_on_a_jetson(tmp_path):
    jetson = shlex.split(nvtx.nsys_command(["run", "p.json"], jetson=True))
    assert "--trace=cuda,nvtx,osrt,cudla,tegra-accelerators" in jetson
    assert "--accelerator-trace=tegra-accelerators" in jetson
    x86 = shlex.split(nvtx.nsys_command(["run", "p.json"], jetson=False))
    assert "--trace=cuda,nvtx,osrt" in x86
    assert not any(w.startswith("--accelerator-trace") for w in x86)
    assert jetson[-3:] == x86[-3:] == ["hxsched", "run", "p.json"]
    release = tmp_path / "nv_tegra_release"
    assert not nvtx.is_jetson(str(release))
    release.write_text("# R36 (release), REVISION: 4.3\n")
    assert nvtx.is_jetson(str(release))


def test_nsys_command_on_this_machine_follows_the_tegra_release_file(monkeypatch):
    monkeypatch.setattr(nvtx, "is_jetson", lambda release_file=nvtx.TEGRA_RELEASE: True)
    assert "--accelerator-trace=tegra-accelerators" in nvtx.nsys_command(["run", "p.json"])
    monkeypatch.setattr(nvtx, "is_jetson", lambda release_file=nvtx.TEGRA_RELEASE: False)
    assert "--accelerator-trace" not in nvtx.nsys_command(["run", "p.json"])
