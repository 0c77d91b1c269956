"""The core install without ONNX Runtime, OpenCV, DICOM or the service: what runs, what says why.

Twice: here with those libraries blocked (fast), and in a fresh virtual environment made by a
plain ``pip install .`` without extras (slow: it installs the core dependencies from pip's cache).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from hxsched.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("onnxruntime", "cv2", "pydicom", "pynetdicom", "prometheus_client")
HARDWARE = ("tensorrt", "pycuda", "pycuda.driver", "cuda", "nvtx")
BLOCK = f"import sys\nfor _n in {OPTIONAL + HARDWARE!r}:\n    sys.modules[_n] = None\n"
# Every module imports, or fails with a MissingDependencyError: collected as {module: message}.
IMPORT_ALL = """
import importlib, json, pkgutil, hxsched
from hxsched.errors import MissingDependencyError
names = [m.name for m in pkgutil.walk_packages(hxsched.__path__, 'hxsched.')]
import hxsched.scheduler, hxsched.runtime
for pkg in (hxsched.scheduler, hxsched.runtime):
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]
missing = {}
for n in sorted(set(names)):
    if n.endswith('__main__'):
        continue
    try:
        importlib.import_module(n)
    except MissingDependencyError as exc:
        missing[n] = str(exc)
print(json.dumps({'modules': len(names), 'missing': missing}))
"""
# Runs each argument list of argv[1] (JSON) through the CLI in this one process: rc and output.
RUN_ALL = """
import contextlib, io, json, sys
from hxsched.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as exc:  # --help
            rc = exc.code or 0
    results.append({'args': args, 'rc': rc, 'stderr': err.getvalue()})
print(json.dumps(results))
"""
PROFILES = ROOT / "profiles" / "orin-agx"


def load_check_wheels():
    spec = importlib.util.spec_from_file_location("check_wheels", ROOT / "tools/check_wheels.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_wheels"] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def project() -> dict:
    return load_check_wheels().load_project()


def dist_name(req: str) -> str:
    return req.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()


def test_core_holds_nothing_a_jetson_gets_from_jetpack():
    cw = load_check_wheels()
    core = [dist_name(r) for r in project()["dependencies"]]
    assert not set(core) & cw.NOT_IN_CORE
    assert set(core) == {"numpy", "onnx", "ml-dtypes", "pyyaml", "python-sat", "highspy"}
    # python-sat's [pb] extra (pypblib) is not used: the cardinality encodings are native
    assert all("[" not in r for r in project()["dependencies"])
    jetson = {dist_name(r) for r in cw.requirements(["jetson"])}
    assert {"pycuda", "nvtx", "pydicom", "pynetdicom"} <= jetson
    assert not jetson & {"onnxruntime", "opencv-python-headless"}


def test_extras_set_up_what_the_readme_commands_need():
    cw = load_check_wheels()
    service = {dist_name(r) for r in cw.requirements(["service"])}
    assert {"onnxruntime", "opencv-python-headless", "pydicom", "pynetdicom"} <= service
    assert "prometheus-client" in service
    test = {dist_name(r) for r in cw.requirements(["test"])}
    assert service | {"pytest", "hypothesis", "ruff"} <= test
    readme = (ROOT / "README.md").read_text()
    assert "pip install '.[service]' && hxsched demo" in readme
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n{ci}\n```" in readme  # the README's test command is what CI runs


def test_check_wheels_table_format():
    cw = load_check_wheels()
    rows = [cw.Row("onnx", "1.19.1", "onnx-1.19.1.whl", "1.23.2", None)]
    text = cw.table(rows, cw.Target("2.17"))
    assert "| onnx | 1.19.1 | onnx-1.19.1.whl | 1.23.2 | no glibc 2.17 wheel | FAIL |" in text
    assert cw.Target("2.31").platform_args()[-1] == "manylinux_2_31_aarch64"


def run_py(py: Path | str, code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(py), "-c", code, *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def check_core(py: Path | str, prefix: str, cwd: Path) -> None:
    """Modules, every --help, and the core commands; the others fail on one line with a fix."""
    proc = run_py(py, prefix + IMPORT_ALL, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["modules"] >= 15
    for module, message in result["missing"].items():
        assert module.startswith("hxsched.runtime.service."), (module, message)
        assert "pip install 'hxsched[" in message and "\n" not in message

    model = cwd / "yolov8n.onnx"
    data = ROOT / "tests/data/exports/yolov8n_ultralytics_8.4.190_zeroed.onnx.gz"
    model.write_bytes(gzip.decompress(data.read_bytes()))
    unet = str(ROOT / "tests/data/torch/torch_unet_tiny.onnx")
    helps = [["--help"]] + [[command, "--help"] for command in SUBCOMMANDS]
    core = [
        ["check", "--rules"],
        ["check", str(model), "--json"],
        ["rewrite", unet, "-o", "r.onnx"],
        ["profile", str(model), "--device", "orin-agx", "-o", "p.yaml"],
        ["plan", "--profile", str(PROFILES / "pix2pix_unet256_dla.yaml"), "--device", "orin-agx"]
        + ["--profile", str(PROFILES / "yolov8n.yaml"), "-o", "plan.yaml", "--chart", "plan.svg"],
        ["run", "plan.yaml", "--backend", "sim", "--frames", "20"],
    ]
    need_ort = [
        ["zoo", "yolov8n", "-o", "z.onnx"],
        ["rewrite", unet, "-o", "v.onnx", "--verify"],
        ["profile", str(model), "--backend", "ort"],
    ]
    proc = run_py(py, prefix + RUN_ALL, json.dumps(helps + core + need_ort), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for r in results[: len(helps) + len(core)]:
        assert r["rc"] == 0, (r["args"], r["stderr"])
    assert (cwd / "plan.yaml").exists() and (cwd / "plan.svg").exists()
    for r in results[len(helps) + len(core) :]:
        assert r["rc"] == 1, (r["args"], r["stderr"])
        last = r["stderr"].strip().splitlines()[-1]
        assert "error: this needs onnxruntime" in last and "'hxsched[ort]'" in last
        assert "Traceback" not in r["stderr"]
    assert not (cwd / "v.onnx").exists()  # --verify refused to write what it could not verify


def test_core_commands_with_optional_libraries_blocked(tmp_path):
    check_core(sys.executable, BLOCK, tmp_path)


@pytest.mark.slow
def test_plain_install_is_the_core(tmp_path):
    """`pip install .` without extras in a fresh venv: the core set, and the core commands run."""
    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    py = tmp_path / "venv" / "bin" / "python"
    proc = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    absent = run_py(
        py,
        "import importlib.util, sys\n"
        f"print([n for n in {OPTIONAL!r} if importlib.util.find_spec(n)])",
        cwd=tmp_path,
    )
    assert absent.stdout.strip() == "[]", absent.stdout + absent.stderr
    work = tmp_path / "work"
    work.mkdir()
    check_core(py, "import sys\n", work)
    help_ = subprocess.run([py.parent / "hxsched", "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "usage: hxsched" in help_.stdout, help_.stderr


def test_require_names_the_extra_and_where_a_jetson_gets_it(monkeypatch):
    from hxsched._compat import require
    from hxsched.errors import MissingDependencyError

    assert require("json").dumps([]) == "[]"
    for name in OPTIONAL:
        monkeypatch.setitem(sys.modules, name, None)
        for sub in [m for m in sys.modules if m.startswith(name + ".")]:  # imported earlier
            monkeypatch.setitem(sys.modules, sub, None)
    with pytest.raises(MissingDependencyError) as exc:
        require("onnxruntime", extra="ort")
    assert "onnxruntime" in str(exc.value) and "pip install 'hxsched[ort]'" in str(exc.value)
    assert "onnxruntime-gpu" in str(exc.value)  # a Jetson keeps NVIDIA's build
    with pytest.raises(MissingDependencyError) as exc:
        require("cv2")
    assert "opencv-python-headless" in str(exc.value) and "'hxsched[opencv]'" in str(exc.value)
    assert "JetPack's OpenCV" in str(exc.value)
    with pytest.raises(MissingDependencyError) as exc:
        require("pydicom.uid", extra="service")
    assert "'hxsched[service]'" in str(exc.value) and "'hxsched[jetson]'" in str(exc.value)
    assert "\n" not in str(exc.value)
