"""Reading trtexec's JSON: ``--exportProfile`` per-layer times and ``--exportLayerInfo`` layers.

trtexec names layers after the ONNX nodes they came from, joined when fused (``A + B``, parallel
``A || B``, pointwise ``PWN(A, B)``); DLA subgraphs appear as one layer, ``{ForeignNode[a...b]}``
(TensorRT 8+) or ``{a,b,c}`` (TensorRT 7). Reformatters, copies and DLA memory transfers are
extra rows named after the layer or tensor they serve. DLA time is not per layer: a DLA
subgraph's time hides in its transfer/reformat rows, so it is only meaningful as a whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hxsched.errors import HxschedError
from hxsched.scheduler.graph.graph import Graph

_AUX = [
    re.compile(r"^(?P<base>.*) input reformatter \d+$"),
    re.compile(r"^(?P<base>.*) output reformatter \d+$"),
    re.compile(r"^(?P<base>.*) reformatted input \d+ finish$"),
    re.compile(r"^(?P<base>.*) output to be reformatted \d+ finish$"),
    re.compile(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to (?P<base>.*)$"),
    re.compile(r"^(?P<base>.*) copy finish$"),
    re.compile(r"^(?P<base>.*) to nvm$"),
    re.compile(r"^(?P<base>.*) from nvm$"),
    re.compile(r"^(?P<base>.*) copy$"),
    re.compile(r"^(?P<base>.*) finish$"),
]
_FOREIGN = re.compile(r"^\{ForeignNode\[(?P<first>.*?)\.\.\.(?P<last>.*)\]\}$")


@dataclass(frozen=True)
class LayerRow:
    name: str
    avg_ms: float
    total_ms: float | None = None
    median_ms: float | None = None

    @property
    def ms(self) -> float:
        return self.median_ms if self.median_ms is not None else self.avg_ms


@dataclass(frozen=True)
class ExportedProfile:
    iterations: int
    rows: tuple[LayerRow, ...]
    path: str = "<trtexec profile>"

    @property
    def total_ms(self) -> float:
        return sum(r.ms for r in self.rows)


def _ms(item: Mapping[str, Any], key: str, i: int, path: str) -> float:
    try:
        return float(item[key])
    except (TypeError, ValueError):
        raise HxschedError(
            f"entry {i} ({item['name']!r}): {key} is not a number", path=path
        ) from None


def parse_export_profile(data: Any, path: str = "<trtexec profile>") -> ExportedProfile:
    """The JSON of ``trtexec --exportProfile``: ``[{count}, {name, timeMs, averageMs, ...}, ...]``."""
    if (
        not isinstance(data, list)
        or not data
        or not isinstance(data[0], dict)
        or "count" not in data[0]
    ):
        raise HxschedError(
            'not a trtexec --exportProfile file (expected a JSON list starting with {"count": N})',
            path=path,
        )
    rows = []
    for i, item in enumerate(data[1:], start=1):
        if not isinstance(item, dict) or "name" not in item or "averageMs" not in item:
            raise HxschedError(
                f"entry {i}: expected {{name, timeMs, averageMs, ...}}, got {item!r:.80}", path=path
            )
        avg = _ms(item, "averageMs", i, path)
        if avg < 0:
            raise HxschedError(f"entry {i} ({item['name']!r}): negative time {avg}", path=path)
        rows.append(
            LayerRow(
                name=str(item["name"]),
                avg_ms=avg,
                total_ms=_ms(item, "timeMs", i, path) if "timeMs" in item else None,
                median_ms=_ms(item, "medianMs", i, path) if "medianMs" in item else None,
            )
        )
    count = data[0]["count"]
    if isinstance(count, bool) or not isinstance(count, int):
        raise HxschedError(f"entry 0: count: expected an integer, got {count!r:.40}", path=path)
    return ExportedProfile(count, tuple(rows), path)


def _read_json(path: str | Path) -> Any:
    p = Path(path)
    if not p.exists():
        raise HxschedError("no such file", path=p)
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HxschedError(f"not valid JSON: {exc}", path=p) from None


def load_export_profile(path: str | Path) -> ExportedProfile:
    return parse_export_profile(_read_json(path), str(path))


@dataclass(frozen=True)
class EngineLayer:
    name: str
    layer_type: str = ""
    dla: bool = False


def parse_layer_info(data: Any, path: str = "<layer info>") -> list[EngineLayer]:
    """``trtexec --exportLayerInfo`` / engine inspector JSON: ``{"Layers": [...], "Bindings": [...]}``.

    Layers are names (``ProfilingVerbosity.LAYER_NAMES_ONLY``) or objects with ``Name`` and
    ``LayerType`` (``DETAILED``); DLA subgraphs are the ``{ForeignNode[...]}`` layers.
    """
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise HxschedError('not an engine layer-info file (expected {"Layers": [...]})', path=path)
    layers = []
    for item in data["Layers"]:
        if isinstance(item, str):
            name, kind = item, ""
        elif isinstance(item, dict) and "Name" in item:
            name, kind = str(item["Name"]), str(item.get("LayerType", ""))
        else:
            raise HxschedError(f"unexpected layer entry {item!r:.80}", path=path)
        dla = (
            name.startswith("{") or "ForeignNode" in name or kind.lower() in ("dla", "foreignnode")
        )
        layers.append(EngineLayer(name, kind, dla))
    return layers


def load_layer_info(path: str | Path) -> list[EngineLayer]:
    return parse_layer_info(_read_json(path), str(path))


def split_aux(name: str) -> tuple[str, bool]:
    """(base layer/tensor name, whether the row is an auxiliary reformat/copy/transfer row)."""
    for pattern in _AUX:
        m = pattern.match(name)
        if m:
            return m.group("base"), True
    return name, False


def layer_members(
    name: str, order: Mapping[str, int], nodes: Sequence[str]
) -> tuple[list[str], bool]:
    """ONNX node names a TensorRT layer covers, and whether it is a DLA subgraph."""
    m = _FOREIGN.match(name)
    if m:
        a, b = order.get(m.group("first")), order.get(m.group("last"))
        if a is None or b is None:
            return [], True
        return list(nodes[min(a, b) : max(a, b) + 1]), True
    if name.startswith("{") and name.endswith("}"):
        return [p for p in name[1:-1].split(",") if p in order], True
    parts = re.split(r" \|\| | \+ ", name)
    found: list[str] = []
    for part in parts:
        part = part.strip()
        if part.startswith("PWN(") and part.endswith(")"):
            found += [p.strip() for p in part[4:-1].split(",") if p.strip() in order]
        elif part in order:
            found.append(part)
    return found, False


@dataclass
class Attribution:
    """Per-node times from one engine's profile, and what could not be placed."""

    node_ms: dict[str, float] = field(default_factory=dict)
    dla_blocks: list[tuple[list[str], float]] = field(default_factory=list)
    unattributed_ms: float = 0.0
    rows: int = 0


def attribute(profile: ExportedProfile, graph: Graph) -> Attribution:
    """Map every row's time onto ONNX nodes; a row nobody names joins the row before it."""
    nodes = [n.name for n in graph.nodes]
    order = {n: i for i, n in enumerate(nodes)}
    out = Attribution(rows=len(profile.rows))
    previous: tuple[list[str], bool] | None = None
    pending = 0.0  # rows before any named layer (e.g. "data to nvm") join the first one
    for row in profile.rows:
        base, _aux = split_aux(row.name)
        members, is_dla = layer_members(base, order, nodes)
        if not members and previous is not None:
            members, is_dla = previous
        if not members:
            pending += row.ms
            continue
        if not is_dla:
            # e.g. "loss3/classifier finish": a layer inside a DLA subgraph seen before
            inside = next((b for b, _ in out.dla_blocks if set(members) <= set(b)), None)
            if inside is not None:
                members, is_dla = inside, True
        previous = (members, is_dla)
        ms = row.ms + pending
        pending = 0.0
        if is_dla:
            for k, (block, total) in enumerate(out.dla_blocks):
                if block == members:
                    out.dla_blocks[k] = (block, total + ms)
                    break
            else:
                out.dla_blocks.append((members, ms))
        else:
            share = ms / len(members)
            for name in members:
                out.node_ms[name] = out.node_ms.get(name, 0.0) + share
    out.unattributed_ms = pending
    return out
