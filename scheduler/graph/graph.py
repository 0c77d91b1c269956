"""The graph view every analysis and rewrite works on; ONNX protobuf stays in ``onnx_io``."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hxsched.errors import HxschedError, InternalError

# ONNX TensorProto element types we size and name; others are reported as "type N".
_ELEM_NAMES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}
_ELEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
FLOAT_TYPES = frozenset({1, 10, 11, 16})


def elem_name(elem_type: int) -> str:
    """Readable name of an ONNX element type (``1`` -> ``float32``)."""
    return _ELEM_NAMES.get(elem_type, f"type {elem_type}")


def elem_bytes(elem_type: int) -> int:
    """Bytes per element of an ONNX element type (0 if unsized, e.g. strings)."""
    return _ELEM_BYTES.get(elem_type, 0)


def format_shape(shape: Iterable[int] | None) -> str:
    """``(1, 3, 640, 640)`` -> ``1x3x640x640`` (``?`` when unknown)."""
    if shape is None:
        return "?"
    dims = list(shape)
    return "x".join(str(d) for d in dims) if dims else "scalar"


@dataclass
class Tensor:
    """A value in the graph: an activation, a graph input, or a constant (initializer)."""

    name: str
    elem_type: int = 0
    shape: tuple[int, ...] | None = None
    const: bool = False
    # Constant data: either a numpy array, or a loader (for external data, loaded on demand).
    _value: np.ndarray | None = field(default=None, repr=False)
    loader: Any = field(default=None, repr=False)  # callable() -> np.ndarray
    proto: Any = field(default=None, repr=False)  # original onnx.TensorProto, reused on export

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def numel(self) -> int | None:
        if self.shape is None:
            return None
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        return None if n is None else n * elem_bytes(self.elem_type)

    @property
    def has_value(self) -> bool:
        return self._value is not None or self.loader is not None

    @property
    def value(self) -> np.ndarray | None:
        """The constant's data (loads external data on first use); None for activations."""
        if self._value is None and self.loader is not None:
            self._value = self.loader()
        return self._value

    def set_value(self, value: np.ndarray) -> None:
        """Replace a constant's data (drops the original proto so the exporter re-encodes it)."""
        self._value = value
        self.loader = None
        self.proto = None
        self.shape = tuple(int(d) for d in value.shape)


@dataclass
class Node:
    """One operator: ONNX op type, tensor names in and out, decoded attributes."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    # Original AttributeProtos by name, reused verbatim on export unless the attribute changed.
    attr_protos: dict[str, Any] = field(default_factory=dict, repr=False)
    doc_string: str = ""

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def copy(self) -> Node:
        """A new node record with its own lists and dicts (attribute values are shared)."""
        return Node(
            self.name,
            self.op_type,
            list(self.inputs),
            list(self.outputs),
            dict(self.attrs),
            self.domain,
            dict(self.attr_protos),
            self.doc_string,
        )

    def set_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = value
        self.attr_protos.pop(key, None)

    def del_attr(self, key: str) -> None:
        self.attrs.pop(key, None)
        self.attr_protos.pop(key, None)


@dataclass(frozen=True)
class CutPoint:
    """The boundary after ``nodes[index]``: what a segment ending there hands to the next one."""

    index: int
    after: str
    before: str
    tensors: tuple[str, ...]
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "after": self.after,
            "before": self.before,
            "tensors": list(self.tensors),
            "bytes": self.bytes,
        }


class Graph:
    """A topologically ordered ONNX graph with static shapes and named constants."""

    def __init__(
        self,
        name: str,
        nodes: list[Node],
        tensors: dict[str, Tensor],
        inputs: list[str],
        outputs: list[str],
        opset: dict[str, int],
        *,
        path: str | None = None,
        model_meta: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.nodes = nodes
        self.tensors = tensors
        self.inputs = inputs
        self.outputs = outputs
        self.opset = opset
        self.path = path
        # ir_version, producer, metadata_props, functions...: carried through to the exporter.
        self.model_meta = dict(model_meta or {})
        self._producer: dict[str, Node] = {}
        self._consumers: dict[str, list[Node]] = {}
        self._by_name: dict[str, Node] = {}
        self.reindex()

    def copy(self) -> Graph:
        """An independent copy: nodes and tensor records are new, constant data is shared."""
        nodes = [n.copy() for n in self.nodes]
        tensors = {
            k: Tensor(t.name, t.elem_type, t.shape, t.const, t._value, t.loader, t.proto)
            for k, t in self.tensors.items()
        }
        meta = dict(self.model_meta)
        meta["warnings"] = list(meta.get("warnings", []))
        return Graph(
            self.name,
            nodes,
            tensors,
            list(self.inputs),
            list(self.outputs),
            dict(self.opset),
            path=self.path,
            model_meta=meta,
        )

    # -- indexes ---------------------------------------------------------------------------
    def reindex(self) -> None:
        """Rebuild producer/consumer/name indexes after the node list changed."""
        self._producer = {}
        self._consumers = {}
        self._by_name = {}
        for node in self.nodes:
            if node.name in self._by_name:
                raise InternalError(f"duplicate node name {node.name!r}")
            self._by_name[node.name] = node
            for out in node.outputs:
                if out:
                    self._producer[out] = node
            for inp in node.inputs:
                if inp:
                    self._consumers.setdefault(inp, []).append(node)

    @property
    def default_opset(self) -> int:
        return self.opset.get("", self.opset.get("ai.onnx", 0))

    def producer(self, tensor: str) -> Node | None:
        return self._producer.get(tensor)

    def consumers(self, tensor: str) -> list[Node]:
        return self._consumers.get(tensor, [])

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise HxschedError(f"no node named {name!r}", path=self.path) from None

    def has_node(self, name: str) -> bool:
        return name in self._by_name

    def index_of(self, name: str) -> int:
        return self.nodes.index(self.node(name))

    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise InternalError(f"unknown tensor {name!r}") from None

    def is_const(self, name: str) -> bool:
        t = self.tensors.get(name)
        return bool(t is not None and t.const)

    def const_value(self, name: str) -> np.ndarray | None:
        """The value of a constant input, or None if ``name`` is an activation or omitted."""
        if not name:
            return None
        t = self.tensors.get(name)
        return t.value if t is not None and t.const else None

    def activation_inputs(self, node: Node) -> list[str]:
        """The inputs of ``node`` that carry data at run time (not constants, not omitted)."""
        return [i for i in node.inputs if i and not self.is_const(i)]

    def unique_name(self, base: str, *, taken: Iterable[str] = ()) -> str:
        """A node or tensor name not yet used in the graph, derived from ``base``."""
        used = set(taken)
        if base not in self._by_name and base not in self.tensors and base not in used:
            return base
        i = 1
        while True:
            cand = f"{base}_{i}"
            if cand not in self._by_name and cand not in self.tensors and cand not in used:
                return cand
            i += 1

    # -- structure -------------------------------------------------------------------------
    def toposort(self) -> None:
        """Order nodes topologically, keeping the existing order wherever it is already valid."""
        position = {id(n): i for i, n in enumerate(self.nodes)}
        available = set(self.inputs) | {n for n, t in self.tensors.items() if t.const}
        producer_of: dict[str, Node] = {}
        for node in self.nodes:
            for out in node.outputs:
                if out:
                    producer_of[out] = node
        waiting: dict[int, int] = {}
        dependents: dict[int, list[Node]] = {}
        heap: list[tuple[int, int]] = []
        by_id = {id(n): n for n in self.nodes}
        for node in self.nodes:
            deps = set()
            for inp in node.inputs:
                if not inp or inp in available:
                    continue
                prod = producer_of.get(inp)
                if prod is None:
                    raise HxschedError(
                        f"node {node.name!r} ({node.op_type}) reads tensor {inp!r}, which no node "
                        "produces and which is neither a graph input nor an initializer",
                        path=self.path,
                    )
                if prod is not node:
                    deps.add(id(prod))
                else:
                    raise HxschedError(
                        f"node {node.name!r} reads its own output {inp!r}", path=self.path
                    )
            waiting[id(node)] = len(deps)
            for d in deps:
                dependents.setdefault(d, []).append(node)
            if not deps:
                heapq.heappush(heap, (position[id(node)], id(node)))
        ordered: list[Node] = []
        while heap:
            _, nid = heapq.heappop(heap)
            node = by_id[nid]
            ordered.append(node)
            for dep in dependents.get(nid, []):
                waiting[id(dep)] -= 1
                if waiting[id(dep)] == 0:
                    heapq.heappush(heap, (position[id(dep)], id(dep)))
        if len(ordered) != len(self.nodes):
            stuck = next(n for n in self.nodes if waiting[id(n)] > 0)
            raise HxschedError(
                f"the graph has a cycle through node {stuck.name!r} ({stuck.op_type})",
                path=self.path,
            )
        self.nodes = ordered
        self.reindex()

    def remove_nodes(self, doomed: Iterable[Node]) -> None:
        ids = {id(n) for n in doomed}
        self.nodes = [n for n in self.nodes if id(n) not in ids]
        self.reindex()

    def replace_uses(self, old: str, new: str) -> None:
        """Point every reader of tensor ``old`` (nodes and graph outputs) at ``new``."""
        for node in self.consumers(old):
            node.inputs = [new if i == old else i for i in node.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]
        self.reindex()

    def cleanup(self) -> int:
        """Drop nodes whose outputs nobody reads and constants nobody uses; returns nodes dropped."""
        live = set(self.outputs)
        keep: list[Node] = []
        for node in reversed(self.nodes):
            if any(o in live for o in node.outputs if o):
                keep.append(node)
                live.update(i for i in node.inputs if i)
        dropped = len(self.nodes) - len(keep)
        keep.reverse()
        self.nodes = keep
        used = live | set(self.inputs)
        for name in [n for n, t in self.tensors.items() if n not in used]:
            del self.tensors[name]
        self.reindex()
        return dropped

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return dict(sorted(counts.items()))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    # -- cut points --------------------------------------------------------------------------
    def cut_points(self) -> list[CutPoint]:
        """Every boundary between consecutive nodes, with the activations that cross it.

        A tensor crosses the cut after node ``i`` if it is produced at or before ``i`` and read
        after ``i``. Graph inputs and constants are not handed over between segments, so they
        never count; graph outputs produced before the cut leave the model there instead.
        """
        n = len(self.nodes)
        if n < 2:
            return []
        pos = {id(node): i for i, node in enumerate(self.nodes)}
        starts: dict[int, list[str]] = {}
        ends: dict[int, list[str]] = {}
        for i, node in enumerate(self.nodes):
            for out in node.outputs:
                if not out or self.is_const(out):
                    continue
                readers = [pos[id(c)] for c in self.consumers(out)]
                last = max(readers, default=i)
                if last > i:
                    starts.setdefault(i, []).append(out)
                    ends.setdefault(last, []).append(out)
        live: dict[str, int] = {}
        total = 0
        cuts: list[CutPoint] = []
        for i in range(n - 1):
            for name in starts.get(i, []):
                size = self.tensors[name].nbytes or 0
                live[name] = size
                total += size
            for name in ends.get(i, []):
                total -= live.pop(name, 0)
            cuts.append(
                CutPoint(
                    index=i,
                    after=self.nodes[i].name,
                    before=self.nodes[i + 1].name,
                    tensors=tuple(live),
                    bytes=total,
                )
            )
        return cuts
