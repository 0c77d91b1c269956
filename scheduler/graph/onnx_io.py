"""ONNX at the edges: the one importer (file -> Graph) and the one exporter (Graph -> ONNX)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from hxsched.errors import HxschedError, ModelError
from hxsched.scheduler.graph.graph import Graph, Node, Tensor, format_shape

MIN_OPSET = 11
MAX_CHECKED_OPSET = 19
# Initializers at most this large are read eagerly (they may feed shape arithmetic).
SMALL_CONST_BYTES = 64 * 1024
# Protobuf cannot serialise more than 2 GiB; above this the exporter writes external data.
EXTERNAL_DATA_THRESHOLD = 1 << 30

ShapeMap = Mapping[str, tuple[int, ...]]


def parse_shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    """``images=1x3x640x640`` -> ``("images", (1, 3, 640, 640))``."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise HxschedError(f"--shape {text!r}: expected NAME=DIMS, e.g. images=1x3x640x640")
    try:
        shape = tuple(int(d) for d in re.split(r"[x,]", dims.strip().lower()) if d != "")
    except ValueError:
        raise HxschedError(
            f"--shape {text!r}: dimensions must be positive integers separated by 'x'"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise HxschedError(f"--shape {text!r}: dimensions must be positive integers")
    return name, shape


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------
def read_model_proto(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX file without its external data, with one-line errors for bad files."""
    p = Path(path)
    if not p.exists():
        raise ModelError("no such file", path=p)
    if p.is_dir():
        raise ModelError("is a directory, not an ONNX file", path=p)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"not a readable ONNX model (truncated or not ONNX: {detail})", path=p
        ) from None
    if not model.graph.node or model.ir_version <= 0 or not model.opset_import:
        raise ModelError(
            "not an ONNX model (no graph, IR version or opset in the file; truncated or "
            "another format?)",
            path=p,
        )
    try:
        onnx.checker.check_model(str(p))
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelError(f"invalid ONNX model: {detail}", path=p) from None
    return model


def _dims_of(value_info: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _external_loader(proto: onnx.TensorProto, base_dir: str, path: str):
    def load() -> np.ndarray:
        t = onnx.TensorProto()
        t.CopyFrom(proto)
        try:
            external_data_helper.load_external_data_for_tensor(t, base_dir)
        except Exception as exc:
            raise ModelError(
                f"cannot read external data of initializer {proto.name!r}: {exc}", path=path
            ) from None
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]
        return numpy_helper.to_array(t)

    return load


def _check_external(proto: onnx.TensorProto, base_dir: str, path: str) -> None:
    info = {e.key: e.value for e in proto.external_data}
    location = info.get("location", "")
    file = os.path.join(base_dir, location)
    if not location or not os.path.isfile(file):
        raise ModelError(
            f"initializer {proto.name!r} keeps its data in {location!r}, which is missing "
            "(copy the external data file next to the model)",
            path=path,
        )
    offset = int(info.get("offset", 0) or 0)
    length = info.get("length")
    need = int(length) if length else 0
    size = os.path.getsize(file)
    if offset + need > size:
        raise ModelError(
            f"external data file {location!r} is truncated: initializer {proto.name!r} needs "
            f"bytes {offset}..{offset + need}, the file has {size}",
            path=path,
        )


def _const_tensor(proto: onnx.TensorProto, base_dir: str, path: str) -> Tensor:
    shape = tuple(int(d) for d in proto.dims)
    t = Tensor(name=proto.name, elem_type=proto.data_type, shape=shape, const=True, proto=proto)
    if external_data_helper.uses_external_data(proto):
        _check_external(proto, base_dir, path)
        t.loader = _external_loader(proto, base_dir, path)
        if (t.nbytes or 0) <= SMALL_CONST_BYTES:
            t.value  # noqa: B018 - read small external constants now, they may feed shape math
    else:
        t.loader = lambda proto=proto: numpy_helper.to_array(proto)
    return t


def graph_from_proto(
    model: onnx.ModelProto,
    *,
    path: str | os.PathLike[str] | None = None,
    shapes: ShapeMap | None = None,
) -> Graph:
    """Turn a ModelProto into a Graph: static shapes, folded constants, topological order.

    ``shapes`` fixes the shapes of graph inputs (``--shape``); any input left dynamic is refused,
    because the DLA (and hxsched's planning) needs static shapes.
    """
    path_s = os.fspath(path) if path is not None else "<model>"
    base_dir = os.path.dirname(os.path.abspath(path_s)) if path is not None else os.getcwd()
    opset = {o.domain or "": int(o.version) for o in model.opset_import}
    default_opset = opset.get("", opset.get("ai.onnx", 0))
    if default_opset and default_opset < MIN_OPSET:
        raise ModelError(
            f"ONNX opset {default_opset} is too old (hxsched reads opset {MIN_OPSET}-"
            f"{MAX_CHECKED_OPSET}); convert it with onnx.version_converter.convert_version",
            path=path_s,
        )
    warnings: list[str] = []
    if default_opset > MAX_CHECKED_OPSET:
        warnings.append(
            f"opset {default_opset} is newer than the opsets hxsched's rules were checked "
            f"against ({MIN_OPSET}-{MAX_CHECKED_OPSET})"
        )
    g = model.graph
    tensors: dict[str, Tensor] = {}
    for init in g.initializer:
        tensors[init.name] = _const_tensor(init, base_dir, path_s)
    for sparse in g.sparse_initializer:
        raise ModelError(
            f"sparse initializer {sparse.values.name!r} is not supported; densify it first",
            path=path_s,
        )

    overrides = dict(shapes or {})
    inputs: list[str] = []
    problems: list[tuple[str, str]] = []
    dynamic: list[tuple[str, str]] = []
    for vi in g.input:
        if vi.name in tensors:  # old exporters list initializers as inputs too
            continue
        inputs.append(vi.name)
        elem = vi.type.tensor_type.elem_type
        if not vi.type.HasField("tensor_type"):
            raise ModelError(
                f"input {vi.name!r} is not a tensor (sequence/map inputs are not supported)",
                path=path_s,
            )
        dims = _dims_of(vi)
        if vi.name in overrides:
            want = overrides.pop(vi.name)
            if dims is not None and len(dims) != len(want):
                raise ModelError(
                    f"--shape {vi.name}={format_shape(want)}: the input has rank {len(dims)} "
                    f"({_fmt_dims(dims)}), not {len(want)}",
                    path=path_s,
                )
            if dims is not None:
                for have, new in zip(dims, want, strict=True):
                    if isinstance(have, int) and have != new:
                        raise ModelError(
                            f"--shape {vi.name}={format_shape(want)} contradicts the model's "
                            f"static shape {_fmt_dims(dims)}",
                            path=path_s,
                        )
            tensors[vi.name] = Tensor(vi.name, elem, tuple(want))
        elif dims is None or any(not isinstance(d, int) for d in dims):
            dynamic.append((vi.name, _fmt_dims(dims)))
            guess = "x".join(
                str(d) if isinstance(d, int) else ("1" if i == 0 else "N")
                for i, d in enumerate(dims or ())
            )
            problems.append((vi.name, guess or "DIMS"))
            tensors[vi.name] = Tensor(vi.name, elem, None)
        else:
            tensors[vi.name] = Tensor(vi.name, elem, tuple(d for d in dims if isinstance(d, int)))
    if overrides:
        names = ", ".join(inputs) or "none"
        raise ModelError(
            f"--shape names {', '.join(sorted(overrides))}, but the model has no such input "
            f"(its inputs: {names})",
            path=path_s,
        )
    if problems:
        fixes = " ".join(f"--shape {name}={dims}" for name, dims in problems)
        listed = "; ".join(f"{name} [{shown}]" for name, shown in dynamic)
        raise ModelError(
            f"dynamic input shape {listed}: the DLA needs static shapes; fix them with "
            f"{fixes} (put your real sizes where the model has names)",
            path=path_s,
        )

    nodes: list[Node] = []
    seen: set[str] = set()
    for i, np_ in enumerate(g.node):
        name = np_.name or f"{np_.op_type}_{i}"
        base, k = name, 1
        while name in seen:
            name = f"{base}_{k}"
            k += 1
        seen.add(name)
        attrs = {a.name: helper.get_attribute_value(a) for a in np_.attribute}
        nodes.append(
            Node(
                name=name,
                op_type=np_.op_type,
                inputs=list(np_.input),
                outputs=list(np_.output),
                attrs=attrs,
                domain=np_.domain,
                attr_protos={a.name: a for a in np_.attribute},
                doc_string=np_.doc_string,
            )
        )
        for out in np_.output:
            if out and out not in tensors:
                tensors[out] = Tensor(out)
    outputs = [o.name for o in g.output]
    for o in g.output:
        if o.name not in tensors:
            tensors[o.name] = Tensor(o.name, o.type.tensor_type.elem_type)
        elif not tensors[o.name].elem_type:
            tensors[o.name].elem_type = o.type.tensor_type.elem_type
    meta = {
        "ir_version": model.ir_version,
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "domain": model.domain,
        "model_version": model.model_version,
        "doc_string": model.doc_string,
        "graph_doc_string": g.doc_string,
        "metadata_props": {p.key: p.value for p in model.metadata_props},
        "functions": list(model.functions),
        "warnings": warnings,
        "external_data": any(external_data_helper.uses_external_data(i) for i in g.initializer),
    }
    graph = Graph(
        g.name or "main", nodes, tensors, inputs, outputs, opset, path=path_s, model_meta=meta
    )
    graph.toposort()
    normalize(graph)
    return graph


def _fmt_dims(dims: tuple[Any, ...] | None) -> str:
    if dims is None:
        return "unknown rank"
    return "x".join("?" if d is None else str(d) for d in dims)


def load_model(path: str | os.PathLike[str], shapes: ShapeMap | None = None) -> Graph:
    """Read, validate and normalise an ONNX file into a Graph (static shapes, folded)."""
    return graph_from_proto(read_model_proto(path), path=path, shapes=shapes)


# ---------------------------------------------------------------------------------------------
# Normalisation: shapes, folding, pass-through removal
# ---------------------------------------------------------------------------------------------
def normalize(graph: Graph, *, max_rounds: int = 8) -> None:
    """Infer static shapes, fold constants and shape arithmetic, drop no-op nodes, to a fixpoint."""
    from hxsched.scheduler.graph.fold import bypass_passthrough, fold_constants

    for _ in range(max_rounds):
        infer_shapes(graph)
        changed = fold_constants(graph)
        changed += bypass_passthrough(graph)
        if not changed:
            break
        graph.cleanup()
    else:
        infer_shapes(graph)
    graph.cleanup()
    unknown = [
        out
        for n in graph.nodes
        for out in n.outputs
        if out and not graph.tensors[out].const and graph.tensors[out].shape is None
    ]
    if unknown:
        # Data-dependent shapes (e.g. after NonMaxSuppression or runtime Slice bounds) stay
        # unknown; the DLA checker sends those nodes to the GPU.
        hints = [w for w in graph.model_meta.get("warnings", []) if w.startswith("shape inference")]
        graph.model_meta.setdefault("warnings", []).append(
            f"{len(unknown)} tensor(s) have no static shape, e.g. {unknown[0]!r} "
            f"(data-dependent){'; ' + hints[-1] if hints else ''}"
        )


def infer_shapes(graph: Graph) -> None:
    """Run ONNX shape inference on a weight-free copy of the graph and record the shapes."""
    skeleton = to_model_proto(graph, weights="skeleton")
    try:
        inferred = onnx.shape_inference.infer_shapes(
            skeleton, check_type=False, strict_mode=True, data_prop=True
        )
    except Exception as exc:
        first = " ".join(str(exc).split())[:300]
        try:
            inferred = onnx.shape_inference.infer_shapes(
                skeleton, check_type=False, strict_mode=False, data_prop=True
            )
        except Exception:
            raise ModelError(f"shape inference failed: {first}", path=graph.path) from None
        graph.model_meta.setdefault("warnings", []).append(f"shape inference: {first}")
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = graph.tensors.get(vi.name)
        if t is None or t.const:
            continue
        tt = vi.type.tensor_type
        if tt.elem_type and not t.elem_type:
            t.elem_type = tt.elem_type
        dims = _dims_of(vi)
        if dims is not None and all(isinstance(d, int) for d in dims):
            t.shape = tuple(d for d in dims if isinstance(d, int))  # all int: checked above
        elif dims is not None and len(dims) == 0:
            t.shape = ()


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
def _value_info(t: Tensor) -> onnx.ValueInfoProto:
    shape = list(t.shape) if t.shape is not None else None
    return helper.make_tensor_value_info(t.name, t.elem_type or onnx.TensorProto.FLOAT, shape)


def _initializer(t: Tensor, *, embed: bool) -> onnx.TensorProto:
    external = t.proto is not None and external_data_helper.uses_external_data(t.proto)
    if t.proto is not None and t.proto.name == t.name and not (embed and external):
        return t.proto
    value = t.value
    if value is None:
        raise ModelError(f"constant {t.name!r} has no data")
    return numpy_helper.from_array(np.asarray(value), t.name)


def to_model_proto(graph: Graph, *, weights: bool | str = True) -> onnx.ModelProto:
    """Build a ModelProto from the graph.

    ``weights=True`` embeds every constant (external data stays external only when saved by
    :func:`save_model`); ``"skeleton"`` keeps small constants and turns large ones into typed
    graph inputs, which is all shape inference needs and never approaches protobuf's 2 GiB limit.
    """
    used: set[str] = set()
    for n in graph.nodes:
        used.update(i for i in n.inputs if i)
    used.update(graph.outputs)
    initializers: list[onnx.TensorProto] = []
    extra_inputs: list[onnx.ValueInfoProto] = []
    for name in sorted(used, key=lambda s: (s not in graph.tensors, s)):
        t = graph.tensors.get(name)
        if t is None or not t.const:
            continue
        if weights == "skeleton":
            small = (t.nbytes or 0) <= SMALL_CONST_BYTES or t.elem_type in (6, 7)
            if small and t.has_value and t.value is not None:
                initializers.append(numpy_helper.from_array(np.asarray(t.value), name))
            else:
                extra_inputs.append(_value_info(t))
        else:
            initializers.append(_initializer(t, embed=bool(weights)))
    value_info = [
        _value_info(graph.tensors[o])
        for n in graph.nodes
        for o in n.outputs
        if o
        and o not in graph.outputs
        and graph.tensors.get(o) is not None
        and graph.tensors[o].shape is not None
        and graph.tensors[o].elem_type
    ]
    nodes = []
    for n in graph.nodes:
        proto = helper.make_node(
            n.op_type, n.inputs, n.outputs, name=n.name, domain=n.domain or None
        )
        if n.doc_string:
            proto.doc_string = n.doc_string
        for key, value in n.attrs.items():
            ap = n.attr_protos.get(key)
            proto.attribute.append(ap if ap is not None else helper.make_attribute(key, value))
        nodes.append(proto)
    gp = helper.make_graph(
        nodes,
        graph.name,
        [_value_info(graph.tensors[i]) for i in graph.inputs] + extra_inputs,
        [_value_info(graph.tensors[o]) for o in graph.outputs],
        initializer=initializers,
        value_info=value_info,
        doc_string=graph.model_meta.get("graph_doc_string") or None,
    )
    meta = graph.model_meta
    model = helper.make_model(
        gp,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(graph.opset.items())],
        producer_name=meta.get("producer_name") or "hxsched",
        producer_version=meta.get("producer_version") or "",
    )
    model.ir_version = int(meta.get("ir_version") or model.ir_version)
    for key in ("domain", "doc_string"):
        if meta.get(key):
            setattr(model, key, meta[key])
    if meta.get("model_version"):
        model.model_version = int(meta["model_version"])
    for key, value in (meta.get("metadata_props") or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    for fn in meta.get("functions") or []:
        model.functions.append(fn)
    return model


def save_model(graph: Graph, path: str | os.PathLike[str]) -> Path:
    """Write the graph as an ONNX file; weights over 1 GiB go to ``<name>.data`` beside it."""
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    model = to_model_proto(graph, weights=True)
    total = sum(
        (graph.tensors[i.name].nbytes or 0)
        for i in model.graph.initializer
        if i.name in graph.tensors
    )
    external = total > EXTERNAL_DATA_THRESHOLD or bool(graph.model_meta.get("external_data"))
    if external:
        data_name = out.name + ".data"
        if (out.parent / data_name).exists():
            (out.parent / data_name).unlink()
        onnx.save_model(
            model,
            str(out),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(out))
    return out
