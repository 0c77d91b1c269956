"""``hxsched doctor``: what this machine has for ``--backend trt`` (TensorRT, DLA cores, power
mode and clocks, pycuda, nvtx, nsys), each with what to do when it is missing. A report: exit 0."""

from __future__ import annotations

import argparse
import enum
import importlib
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from hxsched.cli._common import add_json, add_quiet, emit, table

HELP = "report what this machine has for --backend trt (TensorRT, DLA, clocks, pycuda, nvtx, nsys)"
GUIDE = "JETSON.md"
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
NVPMODEL_CONF = Path("/etc/nvpmodel.conf")
# GPU devfreq nodes: /sys/devices/gpu.0 (Xavier, JetPack 5) and /sys/devices/platform/gpu.0
# (Orin, JetPack 6) hold devfreq/<name>/{cur_freq,max_freq}.
DEVFREQ_GLOBS = ("/sys/devices/gpu.0/devfreq/*", "/sys/devices/platform/gpu.0/devfreq/*")


class Status(str, enum.Enum):
    OK = "ok"
    MISSING = "missing"
    UNKNOWN = "unknown"  # present but unreadable here (no permission, not a Jetson file)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    """One thing the doctor looked for: what it found and, when missing, what to do."""

    name: str
    status: Status
    value: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Disagreement:
    """A node where hxsched check and TensorRT's IBuilderConfig.can_run_on_DLA disagree."""

    node: str
    hxsched_dla: bool
    tensorrt_dla: bool

    def describe(self) -> str:
        ours = "DLA" if self.hxsched_dla else "GPU"
        theirs = "DLA" if self.tensorrt_dla else "GPU"
        return f"{self.node}: hxsched check says {ours}, TensorRT's can_run_on_DLA says {theirs}"


# --- pure: findings from what the probes read ---------------------------------------------------


def tensorrt_finding(
    version: str | None, error: str | None, python: tuple[int, int], other: tuple[str, ...] = ()
) -> Finding:
    if version is None and other:
        fix = (
            f"the binding in {other[0]} is for another Python, not {python[0]}.{python[1]}: "
            f"build it for this Python ({GUIDE}, 'JetPack 5.1') or use JetPack 6"
        )
        return Finding("tensorrt", Status.MISSING, error or "not importable", fix)
    if version is None:
        fix = (
            f"install JetPack's TensorRT for this Python {python[0]}.{python[1]} "
            f"({GUIDE}: JetPack 6: python3-libnvinfer; JetPack 5.1: build the binding for 3.10)"
        )
        return Finding("tensorrt", Status.MISSING, error or "not importable", fix)
    parts = version.split(".")
    old = len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit()
    if old and (int(parts[0]), int(parts[1])) < (8, 5):
        return Finding(
            "tensorrt", Status.MISSING, version, f"TensorRT >= 8.5 needed (JetPack >= 5.1, {GUIDE})"
        )
    return Finding("tensorrt", Status.OK, version)


def module_finding(name: str, version: str | None, fix: str) -> Finding:
    if version is None:
        return Finding(name, Status.MISSING, "not importable", fix)
    return Finding(name, Status.OK, version)


def dla_finding(cores: int, jetson: bool) -> Finding:
    if cores:
        return Finding("dla cores", Status.OK, str(cores))
    fix = "" if not jetson else "this Jetson shows no nvdla device: plans need --device without DLA"
    return Finding("dla cores", Status.MISSING, "0" if jetson else "0 (not a Jetson)", fix)


def power_mode(conf_text: str | None, nvpmodel_q: str | None) -> str | None:
    """The power mode: ``nvpmodel -q`` ("NV Power Mode: MAXN" then the mode number), else the
    default in /etc/nvpmodel.conf (``< PM_CONFIG DEFAULT=0 >``)."""
    if nvpmodel_q:
        lines = [ln.strip() for ln in nvpmodel_q.splitlines() if ln.strip()]
        named = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("NV Power Mode")]
        if named:
            return named[0] + (f" (mode {lines[-1]})" if lines[-1].isdigit() else "")
    if conf_text:
        for line in conf_text.splitlines():
            if "PM_CONFIG" in line and "DEFAULT=" in line:
                value = line.split("DEFAULT=", 1)[1].strip(" >\t")
                return f"default mode {value} (from {NVPMODEL_CONF}; nvpmodel -q for the current)"
    return None


def clock_text(freqs: Mapping[str, tuple[str | None, str | None]]) -> str | None:
    """GPU clocks from devfreq: ``{node: (cur_freq, max_freq)}`` in Hz."""
    parts = []
    for node, (cur, top) in sorted(freqs.items()):
        if cur is None:
            continue
        text = f"{node}: {int(cur) / 1e6:.0f} MHz"
        if top is not None:
            text += f" of {int(top) / 1e6:.0f} MHz"
        parts.append(text)
    return "; ".join(parts) or None


def check_trt_option(version: str) -> str:
    """The ``hxsched check --trt`` rules matching an installed TensorRT (8.5, 8.6, 10, 11)."""
    parts = (version.split(".") + ["0"])[:2]
    major, minor = (int(p) if p.isdigit() else 0 for p in parts)
    if major >= 10:
        return str(min(major, 11))
    return "8.6" if (major, minor) >= (8, 6) else "8.5"


def compare_dla_verdicts(
    static: Mapping[str, bool], tensorrt: Mapping[str, bool]
) -> list[Disagreement]:
    """Nodes both sides judged, where hxsched's static DLA verdict differs from TensorRT's."""
    return [
        Disagreement(node, static[node], tensorrt[node])
        for node in static
        if node in tensorrt and static[node] != tensorrt[node]
    ]


# --- thin probes -------------------------------------------------------------------------------


def _version_of(module: str, dist: str | None = None) -> tuple[str | None, str | None]:
    """(version, error) of an importable module; (None, why) otherwise."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return None, "not installed"
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken install is a finding, not a crash
        return None, f"import fails: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    version = getattr(mod, "__version__", None) or getattr(mod, "VERSION_TEXT", None)
    if version is None:
        try:
            version = importlib.metadata.version(dist or module)
        except importlib.metadata.PackageNotFoundError:
            version = "installed"
    return str(version), None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _devfreq() -> dict[str, tuple[str | None, str | None]]:
    out: dict[str, tuple[str | None, str | None]] = {}
    for pattern in DEVFREQ_GLOBS:
        for node in sorted(Path("/").glob(pattern.lstrip("/"))):
            cur, top = _read(node / "cur_freq"), _read(node / "max_freq")
            out[node.name] = (cur.strip() if cur else None, top.strip() if top else None)
    return out


def gather() -> list[Finding]:
    """Every finding on this machine (reads files, imports modules, runs nvpmodel/nsys)."""
    from hxsched.capabilities import detect
    from hxsched.runtime.backends.trt.backend import foreign_trt_bindings

    py = (sys.version_info[0], sys.version_info[1])
    caps = detect()
    release = _read(TEGRA_RELEASE)
    findings = [
        Finding(
            "jetson",
            Status.OK if release else Status.MISSING,
            release.splitlines()[0].strip("# ") if release else "not a Jetson (no L4T release)",
            "" if release else "DLA and --backend trt on a DLA plan need a Jetson",
        ),
        Finding("python", Status.OK, f"{py[0]}.{py[1]}"),
        tensorrt_finding(*_version_of("tensorrt"), py, tuple(foreign_trt_bindings(py))),
        module_finding(
            "pycuda",
            _version_of("pycuda")[0],
            f"pip install 'hxsched[jetson]' (builds against JetPack's CUDA; {GUIDE})",
        ),
        module_finding(
            "nvtx", _version_of("nvtx")[0], "pip install nvtx (in hxsched[jetson]): NVTX ranges"
        ),
        dla_finding(caps.dla_cores, caps.is_jetson),
    ]
    mode = power_mode(_read(NVPMODEL_CONF), _run(["nvpmodel", "-q"]))
    findings.append(
        Finding("power mode", Status.OK, mode)
        if mode
        else Finding("power mode", Status.UNKNOWN, "unreadable", "on a Jetson: sudo nvpmodel -q")
    )
    clocks = clock_text(_devfreq())
    findings.append(
        Finding("gpu clocks", Status.OK, clocks)
        if clocks
        else Finding(
            "gpu clocks", Status.UNKNOWN, "unreadable", "on a Jetson: sudo jetson_clocks --show"
        )
    )
    nsys = shutil.which("nsys")
    version = (_run(["nsys", "--version"]) or "").strip() if nsys else ""
    findings.append(
        Finding("nsys", Status.OK, version or nsys)
        if nsys
        else Finding(
            "nsys", Status.MISSING, "not on PATH", f"install Nsight Systems ({GUIDE}) for --nsys"
        )
    )
    return findings


def tensorrt_dla_verdicts(onnx_bytes: bytes) -> dict[str, bool]:
    """Per network layer, TensorRT's own ``IBuilderConfig.can_run_on_DLA`` (needs TensorRT and
    a DLA): layer names are the ONNX node names for parsed models."""
    import tensorrt as trt

    from hxsched.runtime.backends.trt.engine import network_flag_names

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in network_flag_names(str(trt.__version__), strongly_typed=False):
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        return {}
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = 0
    layers = (network.get_layer(i) for i in range(network.num_layers))
    return {layer.name: bool(config.can_run_on_DLA(layer)) for layer in layers}


def cross_check(model: str) -> list[Disagreement]:
    import tensorrt as trt

    from hxsched.scheduler.dla.check import check_graph
    from hxsched.scheduler.graph.onnx_io import load_model, to_model_proto

    graph = load_model(model)
    rules = check_trt_option(str(trt.__version__))
    static = {v.node: v.dla for v in check_graph(graph, trt=rules).verdicts}
    return compare_dla_verdicts(
        static, tensorrt_dla_verdicts(to_model_proto(graph).SerializeToString())
    )


# --- the command -------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help=HELP,
        description=HELP + ". Every line says what was found and, when something is missing, "
        f"what to do ({GUIDE}). With --model on a Jetson with TensorRT, compares hxsched check's "
        "DLA verdicts with TensorRT's can_run_on_DLA layer by layer. Always exits 0.",
    )
    p.add_argument("--model", help="an ONNX model to cross-check against TensorRT (a Jetson only)")
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, probe: Callable[[], list[Finding]] = gather) -> int:
    findings = probe()
    found = {f.name: f for f in findings}
    disagreements: list[Disagreement] = []
    note = ""
    if args.model:
        ready = all(
            found.get(n) and found[n].status == Status.OK for n in ("tensorrt", "dla cores")
        )
        if ready:
            disagreements = cross_check(args.model)
        else:
            note = "cross-check skipped: it needs TensorRT and a DLA (run it on the Jetson)"
    data = {
        "findings": [f.to_dict() for f in findings],
        "dla_disagreements": [asdict(d) for d in disagreements],
        "note": note,
    }
    emit(args, data, lambda: _human(findings, disagreements, note))
    return 0


def _human(findings: list[Finding], disagreements: list[Disagreement], note: str) -> str:
    rows = [[f.name, str(f.status), f.value, f.fix] for f in findings]
    text = table(rows, ["what", "status", "found", "what to do"], max_width=70)
    for d in disagreements:
        text += f"\nfinding: {d.describe()}"
    if note:
        text += f"\n{note}"
    return text
