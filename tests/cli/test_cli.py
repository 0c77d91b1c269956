"""The CLI as a user meets it: every --help without hardware libraries, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hxsched.cli import SUBCOMMANDS, main

BLOCK_HW = (
    "import sys\n"
    "for name in ('tensorrt', 'pycuda', 'pycuda.driver', 'cuda', 'nvtx'):\n"
    "    sys.modules[name] = None  # any import of them now raises ImportError\n"
)


def run_cli(*args: str, block_hardware: bool = True) -> subprocess.CompletedProcess:
    code = (BLOCK_HW if block_hardware else "") + (
        "from hxsched.cli import console_main\nsys.argv = ['hxsched', *sys.argv[1:]]\nconsole_main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", "import sys\n" + code, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_works_without_hardware_libraries(command):
    args = ["--help"] if command is None else [command, "--help"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "usage: hxsched" in proc.stdout
    if command:
        assert "--json" in proc.stdout


def test_every_module_imports_without_hardware_libraries():
    code = BLOCK_HW + (
        "import importlib, pkgutil, hxsched\n"
        "names = [m.name for m in pkgutil.walk_packages(hxsched.__path__, 'hxsched.')]\n"
        "import hxsched.scheduler, hxsched.runtime\n"
        "for pkg in (hxsched.scheduler, hxsched.runtime):\n"
        "    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]\n"
        "for n in names:\n    if not n.endswith('__main__'): importlib.import_module(n)\n"
        "print(len(names))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 15


def test_scheduler_never_imports_runtime():
    code = (
        "import sys, importlib, pkgutil, hxsched.scheduler as s\n"
        "for m in pkgutil.walk_packages(s.__path__, 'hxsched.scheduler.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.startswith('hxsched.runtime')]\n"
        "print(bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_version_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def bad_inputs(tmp_path, data_dir, yolov8n_path):
    text = tmp_path / "notes.onnx"
    text.write_text("these are my notes, not a model\n")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(yolov8n_path.read_bytes()[:50_000])
    return {
        "missing": (tmp_path / "missing.onnx", "no such file"),
        "not onnx": (text, "not a readable ONNX model"),
        "truncated": (truncated, "not a readable ONNX model"),
        "dynamic": (data_dir / "torch" / "torch_dynamic_batch.onnx", "dynamic input shape"),
    }


@pytest.mark.parametrize("kind", ["missing", "not onnx", "truncated", "dynamic"])
@pytest.mark.parametrize("command", ["check", "rewrite"])
def test_bad_model_gives_one_line_error(tmp_path, data_dir, yolov8n_path, kind, command):
    path, needle = bad_inputs(tmp_path, data_dir, yolov8n_path)[kind]
    args = [command, str(path)]
    if command == "rewrite":
        args += ["-o", str(tmp_path / "out.onnx")]
    proc = run_cli(*args)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.onnx").exists()


# --- errors and progress through main() ---------------------------------------------------------


def _replace_zoo_run(monkeypatch, run):
    import hxsched.cli.zoo as zoo_cli

    monkeypatch.setattr(zoo_cli, "run", run)


def test_user_error_is_one_line(monkeypatch, capsys):
    from hxsched.errors import ModelError

    def run(args):
        raise ModelError("not a readable ONNX model", path="m.onnx")

    _replace_zoo_run(monkeypatch, run)
    assert main(["zoo"]) == 1
    err = capsys.readouterr().err
    assert err == "hxsched zoo: error: m.onnx: not a readable ONNX model\n"


def test_internal_error_is_reported_as_a_bug_with_traceback(monkeypatch, capsys):
    from hxsched.errors import InternalError

    def run(args):
        raise InternalError("plan at bound 3 evaluates to 4")

    _replace_zoo_run(monkeypatch, run)
    assert main(["zoo"]) == 3
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0] == (
        "hxsched zoo: internal error (a bug in hxsched): plan at bound 3 evaluates to 4"
    )
    assert "Traceback (most recent call last):" in err and "in run" in err
    assert lines[-1].startswith("hxsched zoo: this is a bug in hxsched") and "report" in lines[-1]


@pytest.mark.parametrize("exc", [ValueError("bad shape"), RuntimeError("no"), KeyError("k")])
def test_unexpected_exception_is_an_internal_error_never_a_bare_crash(monkeypatch, capsys, exc):
    def run(args):
        raise exc

    _replace_zoo_run(monkeypatch, run)
    assert main(["zoo"]) == 3
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("hxsched zoo: internal error (a bug in hxsched): ")
    assert type(exc).__name__ in first
    assert "Traceback" in err and "report" in err.strip().splitlines()[-1]


def test_broken_pipe_is_left_to_console_main(monkeypatch):
    def run(args):
        raise BrokenPipeError

    _replace_zoo_run(monkeypatch, run)
    with pytest.raises(BrokenPipeError):
        main(["zoo"])


def test_help_states_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "3 an internal error, a bug in hxsched" in out and "please report it" in out


def _logging_run(args):
    import logging

    log = logging.getLogger("hxsched.cli.zoo")
    log.debug("a debug line")
    log.info("a progress line")
    log.warning("a warning line")
    return 0


@pytest.mark.parametrize(
    ("flags", "shown", "hidden"),
    [
        ([], ["[hxsched] a progress line", "[hxsched] warning: a warning line"], ["debug"]),
        (["-q"], ["[hxsched] warning: a warning line"], ["progress", "debug"]),
        (["--quiet"], ["warning: a warning line"], ["progress", "debug"]),
        (["-v"], ["[hxsched] debug: a debug line", "[hxsched] a progress line"], []),
        (["--verbose"], ["debug: a debug line", "a progress line", "a warning line"], []),
    ],
)
def test_quiet_and_verbose_set_the_level(monkeypatch, capsys, flags, shown, hidden):
    _replace_zoo_run(monkeypatch, _logging_run)
    assert main(["zoo", *flags]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    for text in shown:
        assert text in captured.err
    for text in hidden:
        assert text not in captured.err


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["zoo", "-q", "-v"])
    assert exc.value.code == 2


def test_real_progress_lines_and_quiet(data_dir, tmp_path, capsys):
    src = data_dir / "torch" / "torch_unet_tiny.onnx"
    out = tmp_path / "r.onnx"
    assert main(["rewrite", str(src), "-o", str(out), "--verify", "--samples", "1"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "[hxsched] verifying on 1 seeded input(s) with ONNX Runtime (CPU, FP32)" in err
    assert f"[hxsched] writing {out}" in err
    assert main(["rewrite", str(src), "-o", str(out), "--verify", "--samples", "1", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_goes_to_stderr_in_a_subprocess(tmp_path, data_dir):
    src = data_dir / "torch" / "torch_unet_tiny.onnx"
    proc = run_cli("rewrite", str(src), "-o", str(tmp_path / "r.onnx"), "-v")
    assert proc.returncode == 0, proc.stderr
    assert f"[hxsched] writing {tmp_path / 'r.onnx'}" in proc.stderr.splitlines()
    assert "[hxsched]" not in proc.stdout
