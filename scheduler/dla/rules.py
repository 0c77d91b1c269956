"""The DLA's limits, one small predicate per limit, each citing its source (op table: dla_ops).

Sources (``hxsched check --rules --json`` lists every rule with its full citation):
  NVINFER   NVIDIA/TensorRT include/NvInfer.h, release/8.5 and 8.6 (same DLA text) and 10.x:
            the "If executing this layer on DLA ..." comments of each layer class.
  TRTDOCS   TensorRT docs, "DLA Supported Layers and Restrictions" (10.x page, general
            restrictions and the layer summary table).
  DLASW     NVIDIA/Deep-Learning-Accelerator-SW operators/README.md and FAQ (JetPack 6.0).
  LOGS      real TensorRT build logs posted in public issues (ultralytics#16449,
            ultralytics#18012, onnx/tensorflow-onnx#1632).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hxsched.errors import HxschedError
from hxsched.scheduler.dla.ops import SRC_PRECISION, TARGETS, op_support
from hxsched.scheduler.graph.graph import FLOAT_TYPES, Graph, Node, elem_name, format_shape

TRT_VERSIONS = ("8.5", "8.6", "10", "11")
PRECISIONS = ("fp16", "int8")
DEFAULT_TRT = {"orin": "8.6", "xavier": "8.5"}

SRC_GENERAL = "TRTDOCS general restrictions (10.x page; same wording in 8.x)"
SRC_TRT11 = (
    "TensorRT 11.4.1 docs work-with-dla.html and 10.x->11.x Jetson migration guide: strongly "
    "typed networks, DLA on AGX Orin with JetPack 7.2.2+ only (TensorRT 11.4.1 release notes)"
)


@dataclass(frozen=True)
class CheckContext:
    """The DLA being checked against: SoC generation, TensorRT version, build precision."""

    graph: Graph
    target: str = "orin"
    trt: str = "8.6"
    precision: str = "fp16"

    @property
    def trt_major(self) -> int:
        return int(self.trt.split(".")[0])

    @property
    def xavier(self) -> bool:
        return self.target == "xavier"


@dataclass(frozen=True)
class Rule:
    """One DLA limit: the ops it constrains, what it says, where it comes from, how to test it."""

    id: str
    ops: frozenset[str]
    summary: str
    source: str
    check: Callable[[Node, CheckContext], str | None] = field(repr=False, compare=False)
    when: Callable[[CheckContext], bool] = field(default=lambda cx: True, repr=False, compare=False)


RULES: list[Rule] = []
ALL = frozenset({"*"})


def rule(
    rule_id: str,
    ops: Sequence[str] | frozenset[str],
    summary: str,
    source: str,
    when: Callable[[CheckContext], bool] | None = None,
):
    """Register a predicate ``fn(node, ctx) -> reason | None`` as a DLA rule."""

    def register(fn: Callable[[Node, CheckContext], str | None]):
        RULES.append(Rule(rule_id, frozenset(ops), summary, source, fn, when or (lambda cx: True)))
        return fn

    return register


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _shape(cx: CheckContext, name: str) -> tuple[int, ...] | None:
    t = cx.graph.tensors.get(name)
    return None if t is None else t.shape


def _in_shape(node: Node, cx: CheckContext) -> tuple[int, ...] | None:
    acts = cx.graph.activation_inputs(node)
    return _shape(cx, acts[0]) if acts else None


def _out_shape(node: Node, cx: CheckContext) -> tuple[int, ...] | None:
    return _shape(cx, node.outputs[0]) if node.outputs and node.outputs[0] else None


def _spatial(node: Node, cx: CheckContext, key: str, default: int) -> list[int]:
    value = node.attr(key)
    if value is not None:
        return [int(v) for v in value]
    ishape = _in_shape(node, cx)
    n = len(ishape) - 2 if ishape else 2
    return [default] * n


def _kernel(node: Node, cx: CheckContext) -> list[int]:
    k = node.attr("kernel_shape")
    if k is not None:
        return [int(v) for v in k]
    w = cx.graph.tensors.get(node.inputs[1]) if len(node.inputs) > 1 else None
    return list(w.shape[2:]) if w is not None and w.shape else []


def _fmt(values: Sequence[int]) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"


def conv_pads(node: Node, cx: CheckContext) -> list[int]:
    """Explicit begin/end pads of a Conv or pooling node, resolving auto_pad."""
    auto = node.attr("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    k = _kernel(node, cx)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        ishape = _in_shape(node, cx) or ()
        strides = _spatial(node, cx, "strides", 1)
        dil = _spatial(node, cx, "dilations", 1)
        begin, end = [], []
        for i, kk in enumerate(k):
            size = ishape[2 + i] if len(ishape) > 2 + i else 1
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + (kk - 1) * dil[i] + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin + end
    if auto == "VALID":
        return [0] * (2 * len(k))
    pads = node.attr("pads")
    return [int(p) for p in pads] if pads is not None else [0] * (2 * len(k))


def deconv_pads(node: Node, cx: CheckContext) -> list[int]:
    """Effective begin/end pads of a ConvTranspose: explicit, auto_pad, or from output_shape."""
    k = _kernel(node, cx)
    strides = _spatial(node, cx, "strides", 1)
    dil = _spatial(node, cx, "dilations", 1)
    out_pad = _spatial(node, cx, "output_padding", 0)
    auto = node.attr("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    ishape = _in_shape(node, cx) or ()
    out_shape = node.attr("output_shape")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i, kk in enumerate(k):
            size = ishape[2 + i] if len(ishape) > 2 + i else 1
            full = strides[i] * (size - 1) + out_pad[i] + (kk - 1) * dil[i] + 1
            want = int(out_shape[-len(k) + i]) if out_shape is not None else size * strides[i]
            total = full - want
            if auto == "SAME_UPPER" or out_shape is not None and auto != "SAME_LOWER":
                begin.append(total // 2)
                end.append(total - total // 2)
            else:
                begin.append(total - total // 2)
                end.append(total // 2)
        return begin + end
    if auto == "VALID":
        return [0] * (2 * len(k))
    pads = node.attr("pads")
    return [int(p) for p in pads] if pads is not None else [0] * (2 * len(k))


def _in_range(values: Sequence[int], lo: int, hi: int) -> bool:
    return all(lo <= int(v) <= hi for v in values)


# ---------------------------------------------------------------------------------------------
# Rules that hold for every DLA layer
# ---------------------------------------------------------------------------------------------
def _exempt_rank(node: Node) -> bool:
    return op_support(node.op_type, node.domain).exempt_rank


@rule(
    "tensor.static",
    ALL,
    "every tensor has a static shape",
    f"{SRC_GENERAL}: 'DLA does not support dynamic dimensions'; NvInfer.h addInput",
)
def _static(node: Node, cx: CheckContext) -> str | None:
    for name in cx.graph.activation_inputs(node) + [o for o in node.outputs if o]:
        if _shape(cx, name) is None:
            return f"tensor {name!r} has no static shape (data-dependent): DLA needs static shapes"
    return None


@rule(
    "tensor.rank4",
    ALL,
    "DLA layers take 4-D NCHW tensors (FC-style Gemm/MatMul excepted)",
    "TRTDOCS general restrictions (batch = all dims but CHW); NVINFER ISliceLayer 'The input "
    "tensor has four dimensions'; LOGS 'DLA only supports slicing 4 dimensional tensors' "
    "(ultralytics#18012)",
)
def _rank4(node: Node, cx: CheckContext) -> str | None:
    if _exempt_rank(node):
        return None
    for name in cx.graph.activation_inputs(node) + [o for o in node.outputs if o]:
        shape = _shape(cx, name)
        if shape is not None and len(shape) != 4:
            return (
                f"tensor {name!r} is {len(shape)}-D ({format_shape(shape)}): DLA layers need "
                "4-D NCHW tensors"
            )
    return None


@rule(
    "tensor.dims",
    ALL,
    "non-batch dimensions at most 8192, batch at most 4096",
    f"{SRC_GENERAL}: 'maximum supported size for non-batch dimensions is 8192', 'maximum "
    "supported batch size is 4096'",
)
def _dims(node: Node, cx: CheckContext) -> str | None:
    for name in cx.graph.activation_inputs(node) + [o for o in node.outputs if o]:
        shape = _shape(cx, name)
        if not shape or len(shape) < 2:
            continue
        chw = shape[-3:] if len(shape) >= 3 else shape[-1:]
        batch = int(np.prod(shape[: len(shape) - len(chw)], dtype=np.int64))
        if any(d > 8192 for d in chw):
            return (
                f"tensor {name!r} ({format_shape(shape)}) has a dimension over 8192, the DLA "
                "maximum for C, H and W"
            )
        if batch > 4096:
            return f"tensor {name!r} has batch {batch}, over the DLA maximum of 4096"
    return None


_COMPARISON = frozenset({"Equal", "Greater", "Less"})


@rule(
    "tensor.dtype",
    ALL,
    "DLA computes in FP16 or INT8: activations must be floating point (integer/bool shape math "
    "lands on the GPU)",
    SRC_PRECISION,
)
def _dtype(node: Node, cx: CheckContext) -> str | None:
    names = cx.graph.activation_inputs(node)
    if node.op_type not in _COMPARISON:
        names = names + [o for o in node.outputs if o]
    for name in names:
        t = cx.graph.tensors.get(name)
        if t is not None and t.elem_type and t.elem_type not in FLOAT_TYPES:
            return (
                f"tensor {name!r} is {elem_name(t.elem_type)}: DLA only supports FP16 and INT8 "
                "precision"
            )
    return None


@rule(
    "tensor.typed_fp16",
    ALL,
    "TensorRT 11 builds strongly typed networks: DLA tensors must already be FP16 (or INT8 via "
    "Q/DQ) in the ONNX file",
    SRC_TRT11,
    when=lambda cx: cx.trt_major >= 11,
)
def _typed(node: Node, cx: CheckContext) -> str | None:
    for name in cx.graph.activation_inputs(node) + [o for o in node.outputs if o]:
        t = cx.graph.tensors.get(name)
        if t is not None and t.elem_type in (1, 11):
            return (
                f"tensor {name!r} is {elem_name(t.elem_type)}: TensorRT 11 keeps ONNX types "
                "(strongly typed), and DLA runs only FP16/INT8; export the model in FP16"
            )
    return None


_PARAM_INPUTS = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "BatchNormalization": (1, 2, 3, 4),
    "PRelu": (1,),
    "Clip": (1, 2),
    "Reshape": (1,),
    "Split": (1,),
    "Slice": (1, 2, 3, 4),
    "Resize": (1, 2, 3),
    "Gemm": (1, 2),
    "MatMul": (1,),
}
_PARAM_WHAT = {
    "Conv": "weights",
    "ConvTranspose": "weights",
    "BatchNormalization": "scale/shift",
    "PRelu": "slope (must be a build-time constant)",
    "Clip": "bounds",
    "Reshape": "shape",
    "Split": "split sizes",
    "Slice": "start/end/axes/steps (must be build-time constants)",
    "Resize": "scales",
    "Gemm": "second operand",
    "MatMul": "second operand",
}


@rule(
    "params.const",
    frozenset(_PARAM_INPUTS),
    "weights and layer parameters (conv weights, BN scale, PReLU slope, slice bounds, resize "
    "scales, Gemm/MatMul B) are build-time constants",
    "NVINFER IParametricReLULayer 'slopes input must be a build-time constant', ISliceLayer "
    "'start, size, and stride are build time constants'; DLASW Gemm/MatMul 'The second input "
    "must be a constant'",
)
def _params_const(node: Node, cx: CheckContext) -> str | None:
    for idx in _PARAM_INPUTS[node.op_type]:
        if idx < len(node.inputs) and node.inputs[idx] and not cx.graph.is_const(node.inputs[idx]):
            return (
                f"{node.op_type} {_PARAM_WHAT[node.op_type]} come from tensor "
                f"{node.inputs[idx]!r}, computed at run time; DLA needs build-time constants"
            )
    return None


def _per_channel_or_scalar(shape: tuple[int, ...], channels: int | None) -> bool:
    """True for a scalar, or a [C,1,1] / [1,C,1,1] constant that TensorRT turns into a Scale."""
    if int(np.prod(shape, dtype=np.int64)) == 1:
        return True
    if len(shape) > 4 or channels is None:
        return False
    n, c, h, w = (1,) * (4 - len(shape)) + tuple(shape)
    return n == 1 and c == channels and h == 1 and w == 1


_ELTWISE = frozenset({"Add", "Sub", "Mul", "Max", "Min", "Sum", "Div", "Pow"})


@rule(
    "eltwise.const_operand",
    _ELTWISE | frozenset({"Concat"}),
    "a constant operand must fold into a Scale (scalar or per-channel); other constants become "
    "CONSTANT layers, which cannot run on DLA",
    "TensorRT builder log 'Layer (CONSTANT): Unsupported on DLA' for a constant that does not "
    "fold into weights; LOGS ultralytics#16449 '/model.22/Constant_* (CONSTANT)'",
)
def _eltwise_const(node: Node, cx: CheckContext) -> str | None:
    out = _out_shape(node, cx)
    channels = out[1] if out and len(out) >= 2 else None
    for name in node.inputs:
        if not name or not cx.graph.is_const(name):
            continue
        shape = _shape(cx, name) or ()
        if node.op_type == "Concat":
            return (
                f"constant input {name!r} ({format_shape(shape)}) becomes a CONSTANT layer, "
                "unsupported on DLA"
            )
        if not _per_channel_or_scalar(shape, channels):
            return (
                f"constant operand {name!r} ({format_shape(shape)}) is not a scalar or "
                "per-channel scale; TensorRT makes it a CONSTANT layer, unsupported on DLA"
            )
    return None


@rule(
    "compare.int8",
    _COMPARISON,
    "comparison layers run on DLA only in INT8, with the output cast to FP16/INT8 right away",
    "TRTDOCS table row 'Comparison (Equal, Greater, Less): INT8; Output must be cast to "
    "FP16/INT8 immediately'",
)
def _compare(node: Node, cx: CheckContext) -> str | None:
    if cx.precision != "int8":
        return f"{node.op_type} runs on DLA only in INT8 builds (this check assumes {cx.precision})"
    readers = cx.graph.consumers(node.outputs[0])
    if not readers or any(r.op_type != "Cast" for r in readers):
        return f"{node.op_type}'s boolean output must be cast to FP16/INT8 immediately"
    return None


# ---------------------------------------------------------------------------------------------
# Convolution and deconvolution
# ---------------------------------------------------------------------------------------------
SRC_CONV = "NVINFER IConvolutionLayer (8.5/8.6/10.x): 'If executing this layer on DLA, ...'"
SRC_DECONV = "NVINFER IDeconvolutionLayer (8.5/8.6/10.x): 'If executing this layer on DLA, ...'"


@rule("conv.2d", ["Conv", "ConvTranspose"], "2-D convolution only", f"{SRC_CONV}; {SRC_DECONV}")
def _conv_2d(node: Node, cx: CheckContext) -> str | None:
    k = _kernel(node, cx)
    if len(k) != 2:
        return f"{node.op_type} is {len(k)}-D: DLA runs 2-D convolutions only"
    return None


@rule("conv.kernel", ["Conv"], "kernel height and width in [1, 32]", SRC_CONV)
def _conv_kernel(node: Node, cx: CheckContext) -> str | None:
    k = _kernel(node, cx)
    if len(k) == 2 and not _in_range(k, 1, 32):
        return f"Conv kernel {_fmt(k)}: DLA needs each side in [1, 32]"
    return None


@rule("conv.stride", ["Conv"], "stride height and width in [1, 8]", SRC_CONV)
def _conv_stride(node: Node, cx: CheckContext) -> str | None:
    s = _spatial(node, cx, "strides", 1)
    if len(s) == 2 and not _in_range(s, 1, 8):
        return f"Conv strides {_fmt(s)}: DLA needs each in [1, 8]"
    return None


@rule(
    "conv.padding",
    ["Conv"],
    "each padding in [0, 31] and smaller than the kernel in that dimension",
    SRC_CONV,
)
def _conv_pad(node: Node, cx: CheckContext) -> str | None:
    k = _kernel(node, cx)
    pads = conv_pads(node, cx)
    if len(k) != 2 or len(pads) != 4:
        return None
    if not _in_range(pads, 0, 31):
        return f"Conv pads {_fmt(pads)}: DLA needs each padding in [0, 31]"
    for i in range(2):
        if pads[i] >= k[i] or pads[i + 2] >= k[i]:
            return f"Conv pads {_fmt(pads)} with kernel {_fmt(k)}: DLA needs padding < kernel size"
    return None


@rule("conv.dilation", ["Conv"], "dilation height and width in [1, 32]", SRC_CONV)
def _conv_dil(node: Node, cx: CheckContext) -> str | None:
    d = _spatial(node, cx, "dilations", 1)
    if len(d) == 2 and not _in_range(d, 1, 32):
        return f"Conv dilations {_fmt(d)}: DLA needs each in [1, 32]"
    return None


def _out_channels(node: Node, cx: CheckContext) -> int | None:
    w = _shape(cx, node.inputs[1]) if len(node.inputs) > 1 else None
    if not w:
        return None
    if node.op_type == "ConvTranspose":
        return w[1] * int(node.attr("group", 1)) if len(w) > 1 else None
    return w[0]


@rule(
    "conv.out_channels",
    ["Conv", "ConvTranspose"],
    "number of output maps in [1, 8192]",
    f"{SRC_CONV}; {SRC_DECONV}",
)
def _conv_maps(node: Node, cx: CheckContext) -> str | None:
    m = _out_channels(node, cx)
    if m is not None and not 1 <= m <= 8192:
        return f"{node.op_type} has {m} output maps: DLA allows [1, 8192]"
    return None


@rule("conv.groups", ["Conv"], "at most 8192 groups", SRC_CONV)
def _conv_groups(node: Node, cx: CheckContext) -> str | None:
    g = int(node.attr("group", 1))
    if g > 8192:
        return f"Conv has {g} groups: DLA allows at most 8192"
    return None


@rule(
    "conv.int8_group_size",
    ["Conv"],
    "INT8 grouped convolution: channels per group a multiple of 4 on input and output",
    SRC_CONV + " ('the size of the groups ... must be a multiple of 4 for both input and output')",
    when=lambda cx: cx.precision == "int8",
)
def _conv_int8_groups(node: Node, cx: CheckContext) -> str | None:
    g = int(node.attr("group", 1))
    w = _shape(cx, node.inputs[1]) if len(node.inputs) > 1 else None
    if g <= 1 or not w:
        return None
    cin_g, cout_g = w[1], w[0] // g
    if cin_g % 4 or cout_g % 4:
        return (
            f"INT8 grouped Conv with {cin_g} input / {cout_g} output channels per group: DLA "
            "needs multiples of 4"
        )
    return None


def _deconv_dim_ok(values: Sequence[int]) -> bool:
    if _in_range(values, 1, 32):
        return True
    a, b = int(values[0]), int(values[1])
    return (a in (64, 96, 128) and b == 1) or (b in (64, 96, 128) and a == 1)


@rule(
    "deconv.kernel",
    ["ConvTranspose"],
    "kernel sides in [1, 32], or 1 x {64, 96, 128} / {64, 96, 128} x 1",
    SRC_DECONV,
)
def _deconv_kernel(node: Node, cx: CheckContext) -> str | None:
    k = _kernel(node, cx)
    if len(k) == 2 and not _deconv_dim_ok(k):
        return f"ConvTranspose kernel {_fmt(k)}: DLA needs [1, 32] per side (or 1x64/96/128)"
    return None


@rule(
    "deconv.stride",
    ["ConvTranspose"],
    "stride sides in [1, 32], or 1 x {64, 96, 128} / {64, 96, 128} x 1",
    SRC_DECONV,
)
def _deconv_stride(node: Node, cx: CheckContext) -> str | None:
    s = _spatial(node, cx, "strides", 1)
    if len(s) == 2 and not _deconv_dim_ok(s):
        return f"ConvTranspose strides {_fmt(s)}: DLA needs [1, 32] per side (or 1x64/96/128)"
    return None


@rule(
    "deconv.padding",
    ["ConvTranspose"],
    "padding must be 0 (pre, post and symmetric), and no output_padding",
    SRC_DECONV + ": 'If executing this layer on DLA, padding must be 0'; NVIDIA/TensorRT#3365",
)
def _deconv_pad(node: Node, cx: CheckContext) -> str | None:
    pads = deconv_pads(node, cx)
    if any(p != 0 for p in pads):
        how = "" if node.attr("pads") is not None else " (implied by auto_pad/output_shape)"
        return (
            f"ConvTranspose pads {_fmt(pads)}{how}: DLA deconvolution requires padding 0 "
            "(hxsched rewrite makes it pads 0 + an exact crop)"
        )
    op = _spatial(node, cx, "output_padding", 0)
    if any(p != 0 for p in op):
        return f"ConvTranspose output_padding {_fmt(op)}: DLA deconvolution requires padding 0"
    return None


@rule(
    "deconv.groups", ["ConvTranspose"], "exactly one group", SRC_DECONV + ": 'nbGroups must be one'"
)
def _deconv_groups(node: Node, cx: CheckContext) -> str | None:
    g = int(node.attr("group", 1))
    if g != 1:
        return f"ConvTranspose has {g} groups: DLA deconvolution needs exactly 1"
    return None


@rule("deconv.dilation", ["ConvTranspose"], "no dilation", "TRTDOCS table: 'no grouped/dilated'")
def _deconv_dil(node: Node, cx: CheckContext) -> str | None:
    d = _spatial(node, cx, "dilations", 1)
    if any(v != 1 for v in d):
        return f"ConvTranspose dilations {_fmt(d)}: DLA deconvolution is not dilated"
    return None


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------
SRC_POOL = "NVINFER IPoolingLayer (8.6): window [1,8], stride [1,16], padding [0,7]"


@rule("pool.window", ["MaxPool", "AveragePool"], "2-D window, each side in [1, 8]", SRC_POOL)
def _pool_window(node: Node, cx: CheckContext) -> str | None:
    k = _kernel(node, cx)
    if len(k) != 2:
        return f"{node.op_type} is {len(k)}-D: DLA pools 2-D windows only"
    if not _in_range(k, 1, 8):
        return f"{node.op_type} window {_fmt(k)}: DLA needs each side in [1, 8]"
    return None


@rule("pool.stride", ["MaxPool", "AveragePool"], "stride in [1, 16]", SRC_POOL)
def _pool_stride(node: Node, cx: CheckContext) -> str | None:
    s = _spatial(node, cx, "strides", 1)
    if not _in_range(s, 1, 16):
        return f"{node.op_type} strides {_fmt(s)}: DLA needs each in [1, 16]"
    return None


@rule("pool.padding", ["MaxPool", "AveragePool"], "padding in [0, 7]", SRC_POOL)
def _pool_pad(node: Node, cx: CheckContext) -> str | None:
    pads = conv_pads(node, cx)
    if not _in_range(pads, 0, 7):
        return f"{node.op_type} pads {_fmt(pads)}: DLA needs each in [0, 7]"
    return None


@rule(
    "pool.xavier_inclusive",
    ["AveragePool"],
    "Xavier: average pooling counts padding (count_include_pad=1) when padded",
    "NVINFER IPoolingLayer 8.6: 'On Xavier, DLA supports only inclusive padding'",
    when=lambda cx: cx.xavier,
)
def _pool_incl(node: Node, cx: CheckContext) -> str | None:
    if any(conv_pads(node, cx)) and not int(node.attr("count_include_pad", 0)):
        return "AveragePool excludes padding from the average: Xavier's DLA supports only inclusive padding"
    return None


@rule(
    "pool.global_window",
    ["GlobalAveragePool"],
    "global average pooling maps to a pooling window, so H and W must be at most 8",
    SRC_POOL + "; LOGS \"Layer 'GlobalAveragePool_30': Unsupported on DLA\"",
)
def _gap(node: Node, cx: CheckContext) -> str | None:
    shape = _in_shape(node, cx)
    if shape and len(shape) == 4 and (shape[2] > 8 or shape[3] > 8):
        return (
            f"GlobalAveragePool over {shape[2]}x{shape[3]}: the DLA pooling window is at most 8x8"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Shuffle, slice, concat, resize
# ---------------------------------------------------------------------------------------------
@rule(
    "concat.channel_axis",
    ["Concat"],
    "concatenation on the channel axis (third from last), with at least two inputs",
    "NVINFER IConcatenationLayer: 'the concatenation axis must be the third to last axis'; "
    "LOGS '/model.23/Concat_4: DLA only supports concatenation on the C dimension.'",
)
def _concat(node: Node, cx: CheckContext) -> str | None:
    shape = _out_shape(node, cx)
    if not shape:
        return None
    axis = int(node.attr("axis", 0))
    rank = len(shape)
    norm = axis + rank if axis < 0 else axis
    if norm != rank - 3:
        return (
            f"Concat on axis {axis} of a {rank}-D tensor: DLA only supports concatenation on "
            "the C dimension"
        )
    if len([i for i in node.inputs if i]) < 2:
        return "Concat with a single input: DLA concatenation needs at least 2 inputs"
    return None


def _slice_params(node: Node, cx: CheckContext):
    """(axes, steps) of a Slice/Split, or None when they are not constants."""
    shape = _in_shape(node, cx)
    rank = len(shape) if shape else 4
    if node.op_type == "Split":
        axis = int(node.attr("axis", 0))
        return [axis + rank if axis < 0 else axis], [1]
    if len(node.inputs) > 3 and node.inputs[3]:
        axes_v = cx.graph.const_value(node.inputs[3])
        if axes_v is None:
            return None
        axes = [int(a) for a in np.atleast_1d(axes_v)]
    else:
        starts = cx.graph.const_value(node.inputs[1]) if len(node.inputs) > 1 else None
        axes = list(range(len(np.atleast_1d(starts)))) if starts is not None else []
    steps = [1] * len(axes)
    if len(node.inputs) > 4 and node.inputs[4]:
        steps_v = cx.graph.const_value(node.inputs[4])
        if steps_v is None:
            return None
        steps = [int(s) for s in np.atleast_1d(steps_v)]
    return [a + rank if a < 0 else a for a in axes], steps


@rule(
    "slice.shape",
    ["Slice", "Split"],
    "stride 1 in every dimension and no slicing of the first (batch) dimension",
    "NVINFER ISliceLayer 8.6: 'Strides are 1 for all dimensions. Slicing is not performed on "
    "the first dimension'",
)
def _slice(node: Node, cx: CheckContext) -> str | None:
    params = _slice_params(node, cx)
    if params is None:
        return None  # params.const reports it
    axes, steps = params
    if any(s != 1 for s in steps):
        return f"{node.op_type} with steps {_fmt(steps)}: DLA slices with stride 1 only"
    if 0 in axes:
        return f"{node.op_type} along the batch axis: DLA does not slice the first dimension"
    return None


@rule(
    "slice.fp16_only",
    ["Slice", "Split"],
    "DLA slicing runs in FP16 only",
    "TRTDOCS DLA Supported Layers and Restrictions (Slice: FP16 only)",
    when=lambda cx: cx.precision == "int8",
)
def _slice_int8(node: Node, cx: CheckContext) -> str | None:
    return f"{node.op_type} runs on DLA in FP16 only, not in an INT8 build"


@rule(
    "reshape.next_to_slice_concat",
    ["Reshape"],
    "Orin's DLA rejects a Reshape directly connected to a Slice or Concat",
    "LOGS ultralytics#18012 (Orin): 'This version of DLA does not support reshape layers "
    "directly connected to Slice or Concat'",
    when=lambda cx: cx.target == "orin",
)
def _reshape_adjacent(node: Node, cx: CheckContext) -> str | None:
    neighbours = []
    src = cx.graph.producer(node.inputs[0])
    if src is not None:
        neighbours.append(src)
    neighbours.extend(cx.graph.consumers(node.outputs[0]))
    bad = [n for n in neighbours if n.op_type in ("Slice", "Split", "Concat")]
    if bad:
        return (
            f"Reshape directly connected to {bad[0].op_type} {bad[0].name!r}: this version of "
            "DLA does not support reshape layers directly connected to Slice or Concat"
        )
    return None


SRC_RESIZE = "NVINFER IResizeLayer (8.6 = 10.x) 'If executing this layer on DLA ...'"
_NEAREST_OK = {
    ("asymmetric", "floor"),
    ("half_pixel", "round_prefer_floor"),
    ("half_pixel", "round_prefer_ceil"),
    ("pytorch_half_pixel", "round_prefer_floor"),
    ("pytorch_half_pixel", "round_prefer_ceil"),
}


def _s(value: object, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


@rule(
    "resize.scales",
    ["Resize"],
    "scales (not output sizes): 4 values, the first two 1, the last two integers in [1, 32] "
    "(nearest) or [1, 4] (linear)",
    SRC_RESIZE + ": 'setOutputDimensions() is not supported', 'nbScales has to be exactly 4'",
)
def _resize_scales(node: Node, cx: CheckContext) -> str | None:
    sizes = node.inputs[3] if len(node.inputs) > 3 else ""
    scales_name = node.inputs[2] if len(node.inputs) > 2 else ""
    scales = cx.graph.const_value(scales_name)
    if sizes and (scales is None or np.asarray(scales).size == 0):
        return "Resize gives output sizes; DLA needs scales (setOutputDimensions is not supported)"
    if scales is None:
        return None
    scales = np.asarray(scales, dtype=np.float64).ravel()
    if scales.size != 4:
        return f"Resize has {scales.size} scales: DLA needs exactly 4"
    if scales[0] != 1 or scales[1] != 1:
        return f"Resize scales {scales.tolist()}: DLA needs the first two to be exactly 1"
    mode = _s(node.attr("mode"), "nearest")
    hi = 32 if mode == "nearest" else 4
    last = scales[2:]
    if not all(float(v).is_integer() and 1 <= v <= hi for v in last):
        return (
            f"Resize scales {[float(v) for v in last]} on H, W: DLA needs integers in [1, {hi}] "
            f"for {mode} mode"
        )
    return None


@rule(
    "resize.mode",
    ["Resize"],
    "nearest with (asymmetric, floor) or (half_pixel, round_prefer_floor/ceil); linear with "
    "half_pixel; Xavier: nearest only",
    SRC_RESIZE + "; Xavier forum thread 219158 ('Only Nearest Neighbor resize mode is supported')",
)
def _resize_mode(node: Node, cx: CheckContext) -> str | None:
    mode = _s(node.attr("mode"), "nearest")
    coord = _s(node.attr("coordinate_transformation_mode"), "half_pixel")
    nearest = _s(node.attr("nearest_mode"), "round_prefer_floor")
    if mode == "nearest":
        if (coord, nearest) not in _NEAREST_OK:
            return (
                f"Resize nearest with coordinate mode {coord!r} and nearest_mode {nearest!r}: "
                "DLA supports (asymmetric, floor) or (half_pixel, round_prefer_floor/ceil)"
            )
        return None
    if cx.xavier:
        return f"Resize mode {mode!r}: Xavier's DLA supports nearest-neighbour resize only"
    if mode == "linear":
        if coord not in ("half_pixel", "pytorch_half_pixel"):
            return f"Resize linear with coordinate mode {coord!r}: DLA needs half_pixel"
        return None
    return f"Resize mode {mode!r}: DLA supports nearest and linear only"


# ---------------------------------------------------------------------------------------------
# The rest
# ---------------------------------------------------------------------------------------------
@rule(
    "softmax.axis",
    ["Softmax"],
    "axis is C, H or W; axis length at most 8192 if the other non-batch dims are 1, else 1024",
    "NVINFER ISoftMaxLayer 8.6",
)
def _softmax(node: Node, cx: CheckContext) -> str | None:
    shape = _in_shape(node, cx)
    if not shape or len(shape) != 4:
        return None
    axis = int(node.attr("axis", -1 if cx.graph.default_opset >= 13 else 1))
    axis = axis + 4 if axis < 0 else axis
    if axis == 0:
        return "Softmax over the batch axis: DLA needs the axis to be C, H or W"
    others = [shape[i] for i in (1, 2, 3) if i != axis]
    limit = 8192 if all(d == 1 for d in others) else 1024
    if shape[axis] > limit:
        return f"Softmax over {shape[axis]} values: DLA allows at most {limit} here"
    return None


@rule(
    "softmax.fp16_only",
    ["Softmax"],
    "DLA runs SoftMax in FP16 only",
    "TensorRT operators page SoftMax: 'DLA FP16 is supported' (INT8 not listed)",
    when=lambda cx: cx.precision == "int8",
)
def _softmax_int8(node: Node, cx: CheckContext) -> str | None:
    return "Softmax runs on DLA in FP16 only, not in an INT8 build"


@rule("lrn.window", ["LRN"], "window size in {3, 5, 7, 9}", "NVINFER ILRNLayer; TRTDOCS table")
def _lrn(node: Node, cx: CheckContext) -> str | None:
    size = int(node.attr("size", 0))
    if size not in (3, 5, 7, 9):
        return f"LRN size {size}: DLA supports windows 3, 5, 7 and 9"
    return None


@rule(
    "fc.out_channels",
    ["Gemm", "MatMul"],
    "output channels in [1, 8192]",
    "NVINFER IFullyConnectedLayer 8.x: 'number of output channels must in the range [1,8192]'",
)
def _fc(node: Node, cx: CheckContext) -> str | None:
    out = _out_shape(node, cx)
    if out and out[-1] > 8192:
        return f"{node.op_type} has {out[-1]} output channels: DLA allows [1, 8192]"
    return None


def platform_error(target: str, trt: str) -> str | None:
    """Why (target, TensorRT) has no DLA at all, or None."""
    if target == "xavier" and int(trt.split(".")[0]) >= 11:
        return (
            "TensorRT 11 has no DLA on Xavier (11.4.1 brings DLA back only on AGX Orin with "
            "JetPack 7.2.2+); check Xavier with --trt 8.5"
        )
    return None


def platform_warning(target: str, trt: str) -> str | None:
    if target == "xavier" and int(trt.split(".")[0]) >= 10:
        return (
            "Xavier's JetPack 5 ships TensorRT 8.5; TensorRT 10 on Xavier is not a shipped "
            "combination, the rules are applied as written"
        )
    return None


def validate_options(target: str, trt: str, precision: str) -> None:
    if target not in TARGETS:
        raise HxschedError(f"unknown target {target!r} (known: {', '.join(TARGETS)})")
    if trt not in TRT_VERSIONS:
        raise HxschedError(f"unknown TensorRT version {trt!r} (known: {', '.join(TRT_VERSIONS)})")
    if precision not in PRECISIONS:
        raise HxschedError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    err = platform_error(target, trt)
    if err:
        raise HxschedError(err)


def node_verdict(node: Node, cx: CheckContext) -> tuple[list[str], list[str]]:
    """(reasons, rule ids) why ``node`` cannot run on the DLA; both empty if it can."""
    support = op_support(node.op_type, node.domain)
    if support.layer is None:
        return [support.gpu_reason], [f"op.{node.op_type}"]
    if support.since_trt and cx.trt_major < support.since_trt:
        return [support.gpu_reason], [f"op.{node.op_type}.trt"]
    if cx.target not in support.targets:
        return [support.gpu_reason], [f"op.{node.op_type}.target"]
    reasons: list[str] = []
    ids: list[str] = []
    for r in RULES:
        if (r.ops is ALL or "*" in r.ops or node.op_type in r.ops) and r.when(cx):
            why = r.check(node, cx)
            if why and why not in reasons:
                reasons.append(why)
                ids.append(r.id)
    return reasons, ids
