"""Check that hxsched's core dependencies install from wheels on a Jetson (aarch64, CPython 3.10).

Usage: ``python tools/check_wheels.py [--glibc 2.31] [--glibc 2.17] [--extra dicom] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "3.10"  # JetPack 6's Python (Ubuntu 22.04)
# What a Jetson gets from JetPack or NVIDIA's Jetson wheels, never from the core install: a second
# copy from PyPI would shadow JetPack's CUDA/GStreamer cv2 or sit beside onnxruntime-gpu.
NOT_IN_CORE = frozenset(
    {
        "onnxruntime",
        "onnxruntime-gpu",
        "opencv-python",
        "opencv-python-headless",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
        "pydicom",
        "pynetdicom",
        "pillow",
    }
)


@dataclass(frozen=True)
class Target:
    """A Jetson's wheel tags: manylinux up to its glibc (PEP 600), aarch64, CPython 3.10."""

    glibc: str  # "2.17" is manylinux2014 alone; JetPack 5 (Ubuntu 20.04) has 2.31, JetPack 6 2.35

    def platform_args(self) -> list[str]:
        major, minor = (int(x) for x in self.glibc.split("."))
        tags = ["manylinux2014_aarch64"]
        tags += [f"manylinux_{major}_{m}_aarch64" for m in range(17, minor + 1)]
        return [arg for tag in tags for arg in ("--platform", tag)]

    def pip_args(self) -> list[str]:
        abi = "cp" + PYTHON.replace(".", "")
        return [
            "--only-binary=:all:",
            *self.platform_args(),
            "--python-version",
            PYTHON,
            "--implementation",
            "cp",
            "--abi",
            abi,
        ]


@dataclass(frozen=True)
class Row:
    """One resolved distribution: its wheel, and the newest release's wheel for this target."""

    name: str
    version: str
    wheel: str | None
    newest: str
    newest_wheel: str | None

    @property
    def ok(self) -> bool:
        return self.wheel is not None and self.newest_wheel is not None


def load_project() -> dict[str, Any]:
    """pyproject.toml's [project] table."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser as tomli
        from pip._vendor import tomli as tomllib

    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def requirements(extras: list[str]) -> list[str]:
    """The core dependencies of pyproject.toml plus ``extras``, self-references expanded."""
    project = load_project()
    optional = project.get("optional-dependencies", {})
    out: list[str] = []
    todo = [*project["dependencies"], *(f"hxsched[{e}]" for e in extras)]
    while todo:
        req = todo.pop(0)
        m = re.fullmatch(r"hxsched\[([^\]]+)\]", req.strip())
        if m:
            todo += [r for e in m.group(1).split(",") for r in optional[e.strip()]]
        elif req not in out:
            out.append(req)
    return out


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def resolve(reqs: list[str], target: Target, tmp: Path) -> list[tuple[str, str]]:
    """What pip installs for ``reqs`` on ``target``, wheels only: (name, version) pairs."""
    report = tmp / "report.json"
    proc = pip(
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        str(report),
        "--target",
        str(tmp / "target"),
        *target.pip_args(),
        *reqs,
    )
    if proc.returncode != 0:
        sys.exit(f"check_wheels: cannot resolve {reqs} for glibc {target.glibc}:\n{proc.stderr}")
    items = json.loads(report.read_text())["install"]
    return sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in items)


def newest(name: str, prerelease: bool) -> str:
    """The newest release of ``name`` for Python 3.10, on any platform, sdist or wheel."""
    proc = pip("index", "versions", name, "--python-version", PYTHON, *(["--pre"] * prerelease))
    m = re.search(r"^\S+ \(([^)]+)\)", proc.stdout, re.M)
    return m.group(1) if m else "?"


def download(name: str, version: str, target: Target, tmp: Path) -> str | None:
    """The wheel file that ``pip download --only-binary=:all: --no-deps`` fetches, or None."""
    dest = tmp / f"{name}-{version}-{target.glibc}"
    proc = pip(
        "download",
        "--quiet",
        *target.pip_args(),
        "--no-deps",
        f"{name}=={version}",
        "-d",
        str(dest),
    )
    wheels = sorted(p.name for p in dest.glob("*.whl")) if proc.returncode == 0 else []
    return wheels[0] if wheels else None


def check_one(name: str, version: str, target: Target, tmp: Path) -> Row:
    latest = newest(name, prerelease=bool(re.search(r"(a|b|rc|dev)\d*$", version)))
    wheel = download(name, version, target, tmp)
    if latest == version:
        return Row(name, version, wheel, latest, wheel)
    return Row(name, version, wheel, latest, download(name, latest, target, tmp))


def check(reqs: list[str], target: Target) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="hxsched-wheels-") as tmp:
        resolved = resolve(reqs, target, Path(tmp))
        with ThreadPoolExecutor(max_workers=4) as pool:
            jobs = [pool.submit(check_one, n, v, target, Path(tmp)) for n, v in resolved]
            return [job.result() for job in jobs]


def table(rows: list[Row], target: Target) -> str:
    platform = " ".join(target.platform_args()[1::2][:2]) + (" …" if target.glibc != "2.17" else "")
    lines = [
        f"linux aarch64, CPython {PYTHON}, glibc {target.glibc} ({platform}):",
        "",
        "| name | resolved | wheel | newest for 3.10 | its wheel | ok |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        latest = (
            "same" if r.newest == r.version else r.newest_wheel or f"no glibc {target.glibc} wheel"
        )
        lines.append(
            f"| {r.name} | {r.version} | {r.wheel or 'NONE'} | {r.newest} | {latest} | "
            f"{'ok' if r.ok else 'FAIL'} |"
        )
    return "\n".join(lines)


def jetpack_libraries(results: dict[str, list[Row]], core_only: bool) -> list[str]:
    """What the core declares, or (core only) resolves to, that a Jetson gets from JetPack."""
    declared = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements([])}
    resolved = {r.name.lower() for rows in results.values() for r in rows} if core_only else set()
    return sorted((declared | resolved) & NOT_IN_CORE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--glibc",
        action="append",
        help="target glibc, repeatable (default 2.31: JetPack 5; 2.17 is manylinux2014 alone)",
    )
    parser.add_argument("--extra", action="append", default=[], help="also check this extra")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    reqs = requirements(args.extra)
    results = {g: check(reqs, Target(g)) for g in args.glibc or ["2.31"]}
    bad_core = jetpack_libraries(results, core_only=not args.extra)
    ok = not bad_core and all(r.ok for rows in results.values() for r in rows)
    if args.json:
        out = {g: [asdict(r) | {"ok": r.ok} for r in rows] for g, rows in results.items()}
        print(json.dumps({"requirements": reqs, "glibc": out, "not_in_core": bad_core, "ok": ok}))
        return 0 if ok else 1
    print("requirements: " + ", ".join(reqs) + "\n")
    for g, rows in results.items():
        print(table(rows, Target(g)) + "\n")
    if bad_core:
        print("FAIL: the core set holds what a Jetson gets from JetPack: " + ", ".join(bad_core))
    print("all resolved and newest releases have wheels" if ok else "FAIL: see the table")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
