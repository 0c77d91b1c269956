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
