"""Exact DLA rewrites (Abdul Majeed et al., "Edge GPU Aware Multiple AI Model Pipeline for
Accelerated MRI Reconstruction and Analysis"): a padded ConvTranspose becomes pads 0 plus a
border crop.

A transposed convolution with pads computes the unpadded ("full") output and drops ``pads``
rows/columns at each border. So ``ConvTranspose(pads=p)`` equals ``ConvTranspose(pads=0)``
followed by ``Slice`` of exactly those borders: the same function, bit for bit up to summation
order, with no retraining; and the DLA accepts both the pad-free deconvolution and the 4-D,
stride-1, constant Slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from hxsched.scheduler.dla.rules import CheckContext, deconv_pads
from hxsched.scheduler.graph.graph import Graph, Node, Tensor


@dataclass(frozen=True)
class CropRewrite:
    """One ConvTranspose made pad-free, and the Slice that restores its output."""

    node: str
    pads: tuple[int, ...]
    output_padding: tuple[int, ...]
    slice_node: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    uncropped_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "pads": list(self.pads),
            "output_padding": list(self.output_padding),
            "slice_node": self.slice_node,
            "crop_starts": list(self.starts),
            "crop_ends": list(self.ends),
            "uncropped_shape": list(self.uncropped_shape),
        }


@dataclass(frozen=True)
class Refusal:
    node: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "reason": self.reason}


@dataclass
class RewriteResult:
    rewrites: list[CropRewrite] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def _ints(value: Any, n: int, default: int) -> list[int]:
    return [int(v) for v in value] if value is not None else [default] * n


def _plan_crop(graph: Graph, node: Node) -> tuple[CropRewrite | None, str | None]:
    """How to rewrite ``node`` exactly, or why it cannot be (None, reason)."""
    x = graph.tensors.get(node.inputs[0])
    y = graph.tensors.get(node.outputs[0])
    w = graph.tensors.get(node.inputs[1]) if len(node.inputs) > 1 else None
    if x is None or x.shape is None or y is None or y.shape is None or w is None or not w.shape:
        return None, "input, weight or output shape unknown"
    nsp = len(x.shape) - 2
    if nsp < 1 or len(w.shape) != nsp + 2:
        return None, f"unexpected ranks: input {len(x.shape)}-D, weight {len(w.shape)}-D"
    kernel = (
        _ints(node.attr("kernel_shape"), nsp, 0) if node.attr("kernel_shape") else list(w.shape[2:])
    )
    strides = _ints(node.attr("strides"), nsp, 1)
    dil = _ints(node.attr("dilations"), nsp, 1)
    out_pad = _ints(node.attr("output_padding"), nsp, 0)
    pads = deconv_pads(node, CheckContext(graph))
    if len(pads) != 2 * nsp:
        return None, f"pads {pads} do not match {nsp} spatial dimensions"
    if any(p < 0 for p in pads):
        return None, f"negative pads {pads} add bias-only borders that a crop cannot produce"
    begin, end = pads[:nsp], pads[nsp:]
    full = [strides[i] * (x.shape[2 + i] - 1) + (kernel[i] - 1) * dil[i] + 1 for i in range(nsp)]
    want = list(y.shape[2:])
    starts, ends = [], []
    for i in range(nsp):
        if out_pad[i] > end[i]:
            return None, (
                f"output_padding {out_pad[i]} exceeds the end padding {end[i]} on spatial axis "
                f"{i}: the extra rows hold only bias, which a crop of the pad-free output cannot "
                "reproduce"
            )
        stop = begin[i] + want[i]
        if stop > full[i] or full[i] + out_pad[i] - begin[i] - end[i] != want[i]:
            return None, (
                f"output size {want[i]} on spatial axis {i} does not follow from input "
                f"{x.shape[2 + i]}, kernel {kernel[i]}, stride {strides[i]} and pads "
                f"{begin[i]}/{end[i]}"
            )
        starts.append(begin[i])
        ends.append(stop)
    crop = CropRewrite(
        node=node.name,
        pads=tuple(pads),
        output_padding=tuple(out_pad),
        slice_node=f"{node.name}/crop",
        starts=tuple(starts),
        ends=tuple(ends),
        uncropped_shape=(*y.shape[:2], *full),
    )
    return crop, None


def needs_crop_rewrite(graph: Graph, node: Node) -> bool:
    """A ConvTranspose the DLA refuses only because of its padding (explicit or implied)."""
    if node.op_type != "ConvTranspose" or node.domain not in ("", "ai.onnx"):
        return False
    pads = deconv_pads(node, CheckContext(graph))
    out_pad = node.attr("output_padding")
    return any(p != 0 for p in pads) or any(int(v) != 0 for v in (out_pad or []))


def rewrite_for_dla(graph: Graph) -> RewriteResult:
    """Rewrite, in place, every padded ConvTranspose into pad-free ConvTranspose + exact crop."""
    result = RewriteResult()
    new_nodes: list[Node] = []
    for node in graph.nodes:
        new_nodes.append(node)
        if not needs_crop_rewrite(graph, node):
            continue
        crop, why = _plan_crop(graph, node)
        if crop is None:
            result.refusals.append(Refusal(node.name, why or "unknown"))
            continue
        nsp = len(crop.starts)
        out = node.outputs[0]
        uncropped = graph.unique_name(f"{out}_uncropped")
        slice_name = graph.unique_name(crop.slice_node, taken=[n.name for n in new_nodes])
        consts = {
            "starts": np.array(crop.starts, dtype=np.int64),
            "ends": np.array(crop.ends, dtype=np.int64),
            "axes": np.arange(2, 2 + nsp, dtype=np.int64),
        }
        const_names = []
        for key, value in consts.items():
            cname = graph.unique_name(f"{slice_name}_{key}")
            t = Tensor(cname, onnx.TensorProto.INT64, tuple(value.shape), const=True)
            t.set_value(value)
            graph.tensors[cname] = t
            const_names.append(cname)
        src = graph.tensors[out]
        graph.tensors[uncropped] = Tensor(uncropped, src.elem_type, crop.uncropped_shape)
        node.outputs = [uncropped if o == out else o for o in node.outputs]
        node.set_attr("pads", [0] * (2 * nsp))
        for key in ("output_padding", "auto_pad", "output_shape"):
            node.del_attr(key)
        new_nodes.append(
            Node(
                name=slice_name,
                op_type="Slice",
                inputs=[uncropped, *const_names],
                outputs=[out],
                doc_string=f"hxsched rewrite: exact crop of {node.name}'s padding "
                f"{list(crop.pads)}",
            )
        )
        if slice_name != crop.slice_node:
            crop = CropRewrite(**{**crop.__dict__, "slice_node": slice_name})
        result.rewrites.append(crop)
    graph.nodes = new_nodes
    graph.reindex()
    return result
