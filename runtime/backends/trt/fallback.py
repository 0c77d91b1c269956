"""DLA fallback detection for the TensorRT backend: engine inspector JSON, builder logs and runtime
latency drift, mapped back to ONNX node names. Pure Python; never imports tensorrt."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hxsched.errors import HxschedError

__all__ = [
    "BuilderLogReport",
    "DriftDetector",
    "EngineLayer",
    "FallbackEvent",
    "find_fallbacks",
    "layer_onnx_nodes",
    "parse_builder_log",
    "parse_inspector_json",
]


@dataclass(frozen=True)
class EngineLayer:
    """One layer of a built engine. ``onnx_nodes`` are the ONNX nodes named by the layer (for a
    ``{ForeignNode[a...b]}`` range only ``a`` and ``b``; expand with ``layer_onnx_nodes``)."""

    name: str
    layer_type: str | None
    device: str | None  # "dla" | "gpu" | None when the artifact does not say
    onnx_nodes: tuple[str, ...]
    reformat: bool


@dataclass(frozen=True)
class BuilderLogReport:
    """What a TensorRT builder log says about DLA placement. Layer names as printed (without the
    ``[GpuLayer] TYPE:`` prefix); ``switched`` maps network layer name -> reason for GPU."""

    dla_layers: tuple[str, ...] = ()
    gpu_layers: tuple[str, ...] = ()
    switched: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class FallbackEvent:
    """A planned-DLA node that runs on the GPU (``node``), or a segment whose latency drifted
    (``node`` is None); ``source`` is "inspector", "builder-log" or "runtime-drift"."""

    segment: str
    node: str | None
    reason: str
    source: str
    layer: str | None = None


# --- layer names -------------------------------------------------------------------------------

_FOREIGN = re.compile(r"^\{ForeignNode\[(.*)\]\}$", re.S)
_BRACED = re.compile(r"^\{(.*)\}$", re.S)  # TensorRT 7 DLA subgraph: {a,b,c}
# Layers TensorRT inserts to move or reformat data: never model nodes.
_DLA_TRANSFER = re.compile(r" (?:to nvm|from nvm|copy finish|finish)$")
_REFORMAT = re.compile(
    r"^Reformatting CopyNode for "
    r"| (?:input|output) reformatter \d+$"
    r"| reformatted input \d+ finish$"
    r"| output to be reformatted \d+ finish$"
    r"| copy$|_copy_(?:input|output)$"
)


def _split_top(text: str, seps: tuple[str, ...]) -> list[str]:
    """Split ``text`` on any of ``seps`` outside parentheses and brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0:
            sep = next((s for s in seps if text.startswith(s, i)), None)
            if sep:
                parts.append(text[start:i])
                i += len(sep)
                start = i
                continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _encloses(expr: str, opener: str) -> bool:
    """Whether ``expr`` is ``opener(...)`` with the parenthesis opened there closing at its end."""
    if not (expr.startswith(opener) and expr.endswith(")")):
        return False
    depth = 0
    for i in range(len(opener) - 1, len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[i], 0)
        if depth == 0:
            return i == len(expr) - 1
    return False


def _leaves(expr: str) -> list[str]:
    """Node names in a fused layer name: ``a + b``, ``a || b``, ``PWN(PWN(a), b)``."""
    expr = expr.strip()
    if _encloses(expr, "PWN("):
        return [n for part in _split_top(expr[4:-1], (", ",)) for n in _leaves(part)]
    parts = _split_top(expr, (" + ", " || "))
    if len(parts) > 1:
        return [n for part in parts for n in _leaves(part)]
    return [expr] if expr else []


def _is_reformat(name: str) -> bool:
    return bool(_REFORMAT.search(name) or _DLA_TRANSFER.search(name))


def layer_onnx_nodes(name: str, node_order: Sequence[str] | None = None) -> tuple[str, ...]:
    """The ONNX node names a TensorRT layer name stands for. ``{ForeignNode[a...b]}`` covers every
    node from ``a`` to ``b`` in ``node_order`` (only ``a`` and ``b`` without it); reformat and copy
    layers stand for no node."""
    name = name.strip()
    if _is_reformat(name):
        return ()
    m = _FOREIGN.match(name)
    if m:
        ends = [_leaves(p) for p in m.group(1).split("...")]
        nodes = [n for part in ends for n in part]
        if node_order is not None and len(ends) > 1 and ends[0] and ends[-1]:
            index = {n: i for i, n in enumerate(node_order)}
            first, last = index.get(ends[0][0]), index.get(ends[-1][-1])
            if first is not None and last is not None and first <= last:
                nodes = list(node_order[first : last + 1]) + nodes
        return tuple(dict.fromkeys(nodes))
    m = _BRACED.match(name)
    if m:
        return tuple(dict.fromkeys(n.strip() for n in m.group(1).split(",") if n.strip()))
    return tuple(dict.fromkeys(_leaves(name)))


# --- engine inspector --------------------------------------------------------------------------


def _metadata_nodes(meta: object) -> tuple[str, ...]:
    # TensorRT 10: "[ONNX Layer: a]\x1e[ONNX Layer: b]" (older builds separate with \x1f).
    if not isinstance(meta, str):
        return ()
    nodes = []
    for piece in re.split(r"[\x1e\x1f]", meta):
        piece = piece.strip()
        if piece.startswith("[ONNX Layer: ") and piece.endswith("]"):
            nodes.append(piece[len("[ONNX Layer: ") : -1])
    return tuple(dict.fromkeys(nodes))


def _device(name: str, layer_type: str | None, tactic: str | None, reformat: bool) -> str | None:
    if _DLA_TRANSFER.search(name):
        return "dla"  # DLA input/output staging ("x to nvm", "y from nvm", "z copy finish")
    if reformat:
        return "gpu"  # reformatting runs on the GPU
    kind = (layer_type or "").lower()
    if "dla" in kind:
        return "dla"
    if _FOREIGN.match(name):
        # A ForeignNode is a DLA loadable or a Myelin (GPU) graph; only the details tell which.
        if kind == "myelin" or tactic:
            return "gpu"
        return None
    if _BRACED.match(name):
        return "dla"  # TensorRT 7 names DLA subgraphs "{a,b,c}"
    return "gpu"  # outside a DLA subgraph every engine layer runs on the GPU


def _layer(entry: object, i: int, path: str | None) -> EngineLayer:
    if isinstance(entry, str):
        reformat = _is_reformat(entry)
        return EngineLayer(
            name=entry,
            layer_type=None,
            device=_device(entry, None, None, reformat),
            onnx_nodes=layer_onnx_nodes(entry),
            reformat=reformat,
        )
    if not isinstance(entry, dict) or not isinstance(entry.get("Name"), str):
        raise HxschedError(
            f"engine layer {i} is neither a name nor an object with a 'Name' string; "
            "expected TensorRT engine inspector JSON",
            path=path,
        )
    name = entry["Name"]
    layer_type = entry.get("LayerType") if isinstance(entry.get("LayerType"), str) else None
    tactic = entry.get("TacticName") if isinstance(entry.get("TacticName"), str) else None
    reformat = _is_reformat(name) or layer_type == "Reformat" or entry.get("Origin") == "REFORMAT"
    nodes = () if reformat else (_metadata_nodes(entry.get("Metadata")) or layer_onnx_nodes(name))
    return EngineLayer(
        name=name,
        layer_type=layer_type,
        device=_device(name, layer_type, tactic, reformat),
        onnx_nodes=nodes,
        reformat=reformat,
    )


def parse_inspector_json(
    data: str | bytes | dict | list, path: str | None = None
) -> list[EngineLayer]:
    """Layers of an engine from ``IEngineInspector.get_engine_information(JSON)`` or trtexec
    ``--exportLayerInfo``, at DETAILED or LAYER_NAMES_ONLY verbosity."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HxschedError(
                f"engine layer info is not UTF-8 text ({e.reason})", path=path
            ) from None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as e:
            raise HxschedError(f"engine layer info is not JSON ({e})", path=path) from None
    if isinstance(data, dict):
        if not isinstance(data.get("Layers"), list):
            raise HxschedError(
                "engine layer info has no 'Layers' list; was the engine built with "
                "ProfilingVerbosity NONE?",
                path=path,
            )
        entries = data["Layers"]
    elif isinstance(data, list):
        entries = data
    else:
        raise HxschedError(
            f"engine layer info must be a JSON object or list, not {type(data).__name__}",
            path=path,
        )
    return [_layer(entry, i, path) for i, entry in enumerate(entries)]


# --- builder log -------------------------------------------------------------------------------

_PREFIX = re.compile(
    r"^\s*(?:\[\d{2}/\d{2}/\d{4}-\d{2}:\d{2}:\d{2}\]\s*"
    r"|\[(?:TRT|TensorRT)\]:?\s*"
    r"|\[(?P<sev>[VIWEF])\]\s*"
    r"|(?P<word>VERBOSE|INFO|WARNING|ERROR|INTERNAL_ERROR):\s*)+"
)
_SECTION = re.compile(r"^-{5,}\s*Layers Running on (DLA|GPU)\b", re.I)
_LISTED = re.compile(r"^\[(Dla|Gpu)Layer\]\s*(.*)$")
_GPU_TYPE = re.compile(r"^[A-Z][A-Z0-9_]*: ")
# (pattern, whether the line itself states the reason)
_SWITCHES = (
    # TensorRT >= 8.5: "Layer 'x' (SLICE): Unsupported on DLA. Switching this layer's ..."
    (
        re.compile(
            r"^Layer '(?P<name>.*)'(?: \((?P<type>[A-Z0-9_]+)\))?: (?P<why>.*?)\.?\s*"
            r"Switching this layer's device type to GPU\.?$"
        ),
        False,
    ),
    (
        re.compile(r"^Validation failed for DLA layer: (?P<name>.*?)\. Switching to GPU fallback"),
        False,
    ),
    # TensorRT <= 8.4
    (
        re.compile(
            r"^Default DLA is enabled but layer (?P<name>.*) is (?P<why>not supported|not running)"
            r" on DLA, falling back to GPU\.?$"
        ),
        False,
    ),
    (
        re.compile(r"^(?P<why>DLA only supports .*?)\. Switching (?P<name>.*) device type to GPU"),
        True,
    ),
    (
        re.compile(r"^(?P<why>DLA supports only .*?)\. Switching to GPU for layer (?P<name>.*)$"),
        True,
    ),
)


def _strip(line: str) -> tuple[str, str | None]:
    m = _PREFIX.match(line)
    if not m:
        return line.strip(), None
    sev = None
    for token in re.findall(r"\[([VIWEF])\]|(VERBOSE|INFO|WARNING|ERROR|INTERNAL_ERROR):", m[0]):
        sev = (token[0] or token[1][0]).upper()
    return line[m.end() :].strip(), sev


def _reason(name: str, default: str, pending: list[str]) -> str:
    for msg in reversed(pending):
        if msg.startswith(f"{name}: "):
            return msg[len(name) + 2 :].rstrip(".")
    naming = [m for m in pending if name in m]
    return "; ".join(m.rstrip(".") for m in naming or pending) or default


def parse_builder_log(lines: Iterable[str]) -> BuilderLogReport:
    """Parse a TensorRT builder log (info or verbose; trtexec, Python or DeepStream prefixes):
    the "Layers Running on DLA/GPU" sections, layers switched to the GPU and why."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    dla: list[str] = []
    gpu: list[str] = []
    switched: dict[str, str] = {}
    warnings: list[str] = []
    pending: list[str] = []  # DLA messages since the last switch: the reasons TensorRT gave
    section: str | None = None
    old_list = False  # TensorRT 7 prints each section as one comma-separated line
    for raw in lines:
        text, sev = _strip(raw.rstrip("\n"))
        m = _SECTION.match(text)
        if m:
            section, old_list = m.group(1).upper(), not text.rstrip().endswith("-")
            continue
        listed = _LISTED.match(text) if section else None
        if listed:  # the old header may precede new-style entries, each with a trailing comma
            entry = listed.group(2).strip().rstrip(",").strip()
            if listed.group(1) == "Gpu":
                entry = _GPU_TYPE.sub("", entry, count=1)
            (dla if listed.group(1) == "Dla" else gpu).append(entry)
            continue
        if section and old_list:
            target = dla if section == "DLA" else gpu
            if section == "DLA":
                target.extend("{" + g + "}" for g in re.findall(r"\{([^{}]*)\}", text))
            else:
                names = (n.rstrip(",").strip() for n in _split_top(text, (", ",)))
                target.extend(n for n in names if n)
            section = None
            continue
        section = None
        for pattern, inline in _SWITCHES:
            sm = pattern.match(text)
            if sm:
                name, why = sm.group("name"), (sm.groupdict().get("why") or "").strip()
                if not why:
                    why = "DLA validation failed"
                elif why.startswith("not "):
                    why = f"{why} on DLA"
                if sm.groupdict().get("type"):
                    why = f"{why} ({sm.group('type')})"
                switched[name] = why if inline else _reason(name, why, pending)
                pending = []
                break
        else:
            if "DLA" in text and sev not in ("I", "V"):
                warnings.append(text)
                pending.append(text)
    return BuilderLogReport(tuple(dla), tuple(gpu), switched, tuple(warnings))


# --- fallbacks ---------------------------------------------------------------------------------


def find_fallbacks(
    planned_dla_nodes: Collection[str],
    *,
    layers: Sequence[EngineLayer] | None = None,
    log: BuilderLogReport | None = None,
    segment: str,
    node_order: Sequence[str] | None = None,
) -> list[FallbackEvent]:
    """ONNX nodes planned for the DLA that TensorRT put on the GPU, with the reason it gave.

    A node counts as on the DLA when a DLA layer names it (ForeignNode ranges expand over
    ``node_order``); it falls back when the log switched it to the GPU, or a GPU layer names it and
    no DLA layer names it explicitly. Reformat and copy layers are never model nodes."""
    planned = list(dict.fromkeys(planned_dla_nodes))
    wanted = set(planned)
    explicit_dla: set[str] = set()
    gpu_evidence: dict[str, tuple[str, str, str]] = {}  # node -> (source, reason, layer)

    def note_gpu(node: str, source: str, reason: str, layer: str) -> None:
        prev = gpu_evidence.get(node)
        log_over_inspector = source == "builder-log" and prev is not None and prev[0] != source
        if node in wanted and (prev is None or log_over_inspector):
            gpu_evidence[node] = (source, reason, layer)

    if layers:
        for layer in layers:
            if layer.reformat or layer.device is None:
                continue
            if layer.device == "dla":
                explicit_dla.update(layer.onnx_nodes)
                explicit_dla.update(layer_onnx_nodes(layer.name, node_order))
            else:
                kind = f" ({layer.layer_type})" if layer.layer_type else ""
                for node in layer.onnx_nodes:
                    note_gpu(node, "inspector", f"engine layer runs on the GPU{kind}", layer.name)
    if log:
        for name in log.dla_layers:
            explicit_dla.update(layer_onnx_nodes(name, node_order))
        for name in log.gpu_layers:
            for node in layer_onnx_nodes(name):
                why = log.switched.get(node, "listed under 'Layers Running on GPU'")
                note_gpu(node, "builder-log", why, name)
    events = []
    switched = dict(log.switched) if log else {}
    for node in planned:
        if node in switched:
            layer_name = gpu_evidence.get(node, ("", "", node))[2]
            events.append(FallbackEvent(segment, node, switched[node], "builder-log", layer_name))
        elif node in gpu_evidence and node not in explicit_dla:
            source, reason, layer_name = gpu_evidence[node]
            events.append(FallbackEvent(segment, node, reason, source, layer_name))
    if node_order is not None:
        index = {n: i for i, n in enumerate(node_order)}
        events.sort(key=lambda e: index.get(e.node or "", len(index)))
    return events


# --- runtime drift -----------------------------------------------------------------------------


class DriftDetector:
    """Watches one segment's measured latency against its profiled time: an EWMA of the samples
    (after ``warmup``) that stays above ``threshold`` x expected for ``sustain`` updates raises
    one event; it re-arms once the EWMA is back under the threshold."""

    def __init__(
        self,
        expected_ms: float,
        *,
        segment: str = "",
        alpha: float = 0.2,
        threshold: float = 1.3,
        sustain: int = 20,
        warmup: int = 5,
    ) -> None:
        if not (isinstance(expected_ms, (int, float)) and math.isfinite(expected_ms)):
            raise HxschedError(f"expected latency must be a finite number, got {expected_ms!r}")
        if expected_ms <= 0:
            raise HxschedError(f"expected latency must be positive, got {expected_ms} ms")
        if not 0 < alpha <= 1:
            raise HxschedError(f"EWMA weight alpha must be in (0, 1], got {alpha}")
        if not threshold > 0:
            raise HxschedError(f"drift threshold ratio must be positive, got {threshold}")
        if sustain < 1 or warmup < 0:
            raise HxschedError(f"need sustain >= 1 and warmup >= 0, got {sustain} and {warmup}")
        self.expected_ms = float(expected_ms)
        self.segment = segment
        self.alpha = alpha
        self.threshold = threshold
        self.sustain = sustain
        self.warmup = warmup
        self.ewma: float | None = None
        self.alarm = False
        self._seen = 0
        self._over = 0

    @property
    def ratio(self) -> float | None:
        """EWMA over expected latency (None until the first sample after warm-up)."""
        return None if self.ewma is None else self.ewma / self.expected_ms

    def update(self, ms: float) -> FallbackEvent | None:
        """Feed one latency sample; returns an event only when sustained drift begins."""
        if not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
            return None
        self._seen += 1
        if self._seen <= self.warmup:
            return None
        self.ewma = ms if self.ewma is None else self.alpha * ms + (1 - self.alpha) * self.ewma
        ratio = self.ewma / self.expected_ms
        if ratio <= self.threshold:
            self._over, self.alarm = 0, False
            return None
        self._over += 1
        if self.alarm or self._over < self.sustain:
            return None
        self.alarm = True
        reason = (
            f"latency EWMA {self.ewma:.3g} ms is {ratio:.2f}x the profiled {self.expected_ms:.3g} ms "
            f"for {self._over} samples (threshold {self.threshold}x): layers may have fallen back "
            "to the GPU or the accelerator is contended"
        )
        return FallbackEvent(self.segment, None, reason, "runtime-drift")
