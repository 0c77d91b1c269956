"""One import namespace: scheduler/ and runtime/ are hxsched/scheduler and hxsched/runtime.

Checked for a wheel, a normal install and an editable install, each in a fresh virtual
environment (no dependencies needed: only the package layout and the console script are tested);
the test suite itself runs against the developer's install.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import hxsched, hxsched.scheduler, hxsched.runtime, hxsched.cli\n"
    "print(hxsched.scheduler.__file__); print(hxsched.runtime.__file__)\n"
)


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)])
    (whl,) = out.glob("hxsched-*.whl")
    return whl


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def probe_in(py: Path, cwd: Path) -> list[str]:
    # run from an unrelated folder so the source tree cannot be picked up by accident
    out = _run([py, "-c", PROBE], cwd=cwd)
    _run([py.parent / "hxsched", "--version"], cwd=cwd)
    return out.stdout.split()


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "hxsched/cli/check.py",
        "hxsched/scheduler/graph/graph.py",
        "hxsched/scheduler/zoo/yolov8.py",
        "hxsched/runtime/reference.py",
    ):
        assert module in names
    assert not [n for n in names if n.startswith(("scheduler/", "runtime/", "tests/"))]
    assert "hxsched/py.typed" in names  # PEP 561: the package's type hints are used by checkers


def test_wheel_install_in_fresh_venv(wheel, tmp_path):
    py = fresh_venv(tmp_path / "venv")
    _run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)])
    sched, rt = probe_in(py, tmp_path)
    assert "site-packages/hxsched/scheduler/__init__.py" in sched
    assert "site-packages/hxsched/runtime/__init__.py" in rt


def test_normal_install_from_source(tmp_path):
    py = fresh_venv(tmp_path / "venv")
    # a normal user install: pip builds in an isolated environment with setuptools from PyPI
    _run([py, "-m", "pip", "install", "-q", "--no-deps", str(ROOT)])
    sched, _ = probe_in(py, tmp_path)
    assert "site-packages/hxsched/scheduler/__init__.py" in sched
    from_root_works(py)


def test_editable_install(tmp_path):
    py = fresh_venv(tmp_path / "venv")
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)])
    sched, rt = probe_in(py, tmp_path)
    # the import path is the file path, and that file is the top-level folder's
    assert sched == str(ROOT / "hxsched" / "scheduler" / "__init__.py")
    assert rt == str(ROOT / "hxsched" / "runtime" / "__init__.py")
    assert Path(sched).resolve() == ROOT / "scheduler" / "__init__.py"
    assert Path(rt).resolve() == ROOT / "runtime" / "__init__.py"
    # a plain path entry, not an import hook a static tool cannot follow
    pths = list((py.parent.parent / "lib").glob("python*/site-packages/__editable__*.pth"))
    assert [p.read_text().strip() for p in pths] == [str(ROOT)]
    from_root_works(py)


def from_root_works(py: Path) -> None:
    """`python -m hxsched` from the repository root, where the on-disk hxsched/ comes first."""
    out = _run([py, "-m", "hxsched", "--help"], cwd=ROOT)
    assert "check" in out.stdout
    probe = _run([py, "-c", PROBE], cwd=ROOT)
    assert probe.stdout.split()[0] == str(ROOT / "hxsched" / "scheduler" / "__init__.py")


def test_pytest_sees_the_mapped_packages():
    import hxsched.runtime
    import hxsched.scheduler

    assert Path(hxsched.scheduler.__file__).parent.name == "scheduler"
    assert Path(hxsched.runtime.__file__).parent.name == "runtime"
    assert "scheduler" not in sys.modules and "runtime" not in sys.modules


def test_wheel_requires_no_jetpack_library_unconditionally(wheel):
    """A Jetson's JetPack provides cv2 and NVIDIA's onnxruntime-gpu: only extras may pull them."""
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        lines = zf.read(meta).decode().splitlines()
    requires = [
        line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")
    ]
    core = [r for r in requires if "extra ==" not in r]
    names = {
        r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for r in core
    }
    assert names == {"numpy", "onnx", "ml-dtypes", "pyyaml", "python-sat", "highspy"}
    assert not [r for r in core if "[" in r]  # python-sat without [pb]
    for extra, dist in (("ort", "onnxruntime"), ("opencv", "opencv-python-headless")):
        assert any(r.startswith(dist) and f'extra == "{extra}"' in r for r in requires)
