"""ONNX op -> TensorRT layer on DLA, or why the op stays on the GPU (TRTDOCS, DLASW tables).

Sources are abbreviated as in ``dla_rules`` (NVINFER, TRTDOCS, DLASW, LOGS).
"""

from __future__ import annotations

from dataclasses import dataclass

TARGETS = ("orin", "xavier")
SRC_PRECISION = (
    "TRTDOCS dla-build-and-run: 'DLA support is currently limited to networks running in FP16 "
    "and INT8 mode'; LOGS onnx/tensorflow-onnx#1632"
)


@dataclass(frozen=True)
class OpSupport:
    """How TensorRT maps an ONNX op on DLA: the layer, or why it stays on the GPU."""

    layer: str | None  # TensorRT layer on DLA, None if the op never runs there
    source: str
    gpu_reason: str = ""
    since_trt: int = 0  # first TensorRT major version whose DLA runs it
    targets: tuple[str, ...] = TARGETS
    exempt_rank: bool = False  # FC-style ops take 2-D inputs


# ---------------------------------------------------------------------------------------------
# Op table (TRTDOCS DLA layer support summary, DLASW operators/README.md)
# ---------------------------------------------------------------------------------------------
_RFE = "DLASW lists it as 'See RFE' (not available through TensorRT)"
OPS: dict[str, OpSupport] = {
    "Conv": OpSupport("Convolution", "NVINFER IConvolutionLayer; TRTDOCS table"),
    "ConvTranspose": OpSupport("Deconvolution", "NVINFER IDeconvolutionLayer; TRTDOCS table"),
    "BatchNormalization": OpSupport("Scale", "TensorRT operators page Scale: DLA FP16/INT8"),
    "Relu": OpSupport("Activation", "NVINFER IActivationLayer: kRELU"),
    "Sigmoid": OpSupport("Activation", "NVINFER IActivationLayer: kSIGMOID"),
    "Tanh": OpSupport("Activation", "NVINFER IActivationLayer: kTANH"),
    "Clip": OpSupport("Activation", "NVINFER IActivationLayer: kCLIP"),
    "LeakyRelu": OpSupport(
        "Activation",
        "TRTDOCS 10.x table lists Leaky ReLU; DLASW 'Native' (NvInfer.h 8.6 lists only "
        "ReLU/Sigmoid/TanH/Clip: confirm on Xavier with can_run_on_DLA)",
    ),
    "PRelu": OpSupport("ParametricReLU", "NVINFER IParametricReLULayer"),
    "Add": OpSupport("ElementWise(kSUM)", "NVINFER IElementWiseLayer"),
    "Sum": OpSupport("ElementWise(kSUM)", "NVINFER IElementWiseLayer"),
    "Sub": OpSupport("ElementWise(kSUB)", "NVINFER IElementWiseLayer"),
    "Mul": OpSupport("ElementWise(kPROD)", "NVINFER IElementWiseLayer"),
    "Max": OpSupport("ElementWise(kMAX)", "NVINFER IElementWiseLayer"),
    "Min": OpSupport("ElementWise(kMIN)", "NVINFER IElementWiseLayer"),
    "Div": OpSupport(
        "ElementWise(kDIV)",
        "TRTDOCS 10.x table lists Div; LOGS TRT 8.5 Orin 'DLA cores do not support DIV "
        "ElementWise operation'",
        gpu_reason="DLA cores do not support DIV ElementWise operation before TensorRT 10",
        since_trt=10,
    ),
    "Pow": OpSupport(
        "ElementWise(kPOW)",
        "TRTDOCS 10.x table lists Pow; NvInfer.h 8.x allows only SUM/PROD/MAX/MIN/SUB",
        gpu_reason="DLA supports only SUM, PROD, MAX, MIN and SUB element-wise ops before TensorRT 10",
        since_trt=10,
    ),
    "Equal": OpSupport("ElementWise(kEQUAL)", "TRTDOCS table: Comparison INT8; DLASW Equal native"),
    "Greater": OpSupport(
        "ElementWise(kGREATER)",
        "TRTDOCS table: Comparison INT8; DLASW 'Native (as of TensorRT 8.6.12)' (DRIVE only)",
        gpu_reason="Greater runs on DLA only from TensorRT 10 (8.6.12 on DRIVE)",
        since_trt=10,
    ),
    "Less": OpSupport(
        "ElementWise(kLESS)",
        "TRTDOCS table: Comparison INT8; DLASW 'Native (as of TensorRT 8.6.12)' (DRIVE only)",
        gpu_reason="Less runs on DLA only from TensorRT 10 (8.6.12 on DRIVE)",
        since_trt=10,
    ),
    "Concat": OpSupport("Concatenation", "NVINFER IConcatenationLayer; TRTDOCS table"),
    "Split": OpSupport(
        "Slice", "TensorRT ONNX parser translates Split to Slice; NVINFER ISliceLayer"
    ),
    "Slice": OpSupport("Slice", "NVINFER ISliceLayer"),
    "Resize": OpSupport("Resize", "NVINFER IResizeLayer"),
    "MaxPool": OpSupport("Pooling(kMAX)", "NVINFER IPoolingLayer"),
    "AveragePool": OpSupport("Pooling(kAVERAGE)", "NVINFER IPoolingLayer"),
    "GlobalAveragePool": OpSupport(
        "Pooling(kAVERAGE)", "NVINFER IPoolingLayer window rule; DLASW GlobalAveragePool 'See RFE'"
    ),
    "GlobalMaxPool": OpSupport(
        "Reduce(kMAX)",
        "TensorRT operators page Reduce (10.x): DLA MAX over CHW; DLASW 'Native (as of 8.6.12)'",
        gpu_reason="GlobalMaxPool runs on DLA only from TensorRT 10 (8.6.12 on DRIVE)",
        since_trt=10,
    ),
    "ReduceMax": OpSupport(
        "Reduce(kMAX)",
        "TensorRT operators page Reduce (10.x): 'DLA supports ... MAX where any combination of "
        "the CHW is reduced'",
        gpu_reason="ReduceMax runs on DLA only from TensorRT 10",
        since_trt=10,
    ),
    "Softmax": OpSupport(
        "SoftMax",
        "NVINFER ISoftMaxLayer 8.6: 'On Xavier, this layer is not supported on DLA'",
        gpu_reason="Softmax is not supported on Xavier's DLA",
        targets=("orin",),
    ),
    "LRN": OpSupport("LRN", "NVINFER ILRNLayer; TRTDOCS table"),
    "Abs": OpSupport("Unary(kABS)", "NVINFER IUnaryLayer: 'only UnaryOperation::kABS'"),
    "Sin": OpSupport(
        "Unary(kSIN)",
        "DLASW 'Native (as of TensorRT 8.6.12)'",
        since_trt=10,
        gpu_reason="DLA runs only Abs among unary ops before TensorRT 10 (8.6.12 on DRIVE)",
    ),
    "Cos": OpSupport(
        "Unary(kCOS)",
        "DLASW 'Native (as of TensorRT 8.6.12)'",
        since_trt=10,
        gpu_reason="DLA runs only Abs among unary ops before TensorRT 10 (8.6.12 on DRIVE)",
    ),
    "Atanh": OpSupport(
        "Unary(kATANH)",
        "DLASW 'Native (as of TensorRT 8.6.12)'",
        since_trt=10,
        gpu_reason="DLA runs only Abs among unary ops before TensorRT 10 (8.6.12 on DRIVE)",
    ),
    "Reshape": OpSupport("Shuffle", "DLASW: Reshape 'Native'"),
    "Transpose": OpSupport("Shuffle", "DLASW: Transpose 'Native'"),
    "Gemm": OpSupport(
        "FullyConnected / 1x1 Convolution",
        "NVINFER IFullyConnectedLayer (8.x); DLASW: 'The second input must be a constant'",
        exempt_rank=True,
    ),
    "MatMul": OpSupport(
        "FullyConnected / 1x1 Convolution",
        "DLASW operators table: MatMul with constant second input becomes a 1x1 Conv",
        exempt_rank=True,
    ),
}

_GPU_ONLY = {
    "Gather": ("Gather has no DLA support", "NVINFER IGatherLayer: 'No DLA support'"),
    "GatherElements": ("Gather has no DLA support", "NVINFER IGatherLayer"),
    "GatherND": ("Gather has no DLA support", "NVINFER IGatherLayer"),
    "Flatten": (f"Flatten is not offered on DLA; {_RFE}", "DLASW operators table"),
    "Squeeze": (f"Squeeze is not offered on DLA; {_RFE}", "DLASW operators table"),
    "Unsqueeze": (f"Unsqueeze is not offered on DLA; {_RFE}", "DLASW operators table"),
    "QuantizeLinear": (
        "explicit quantization (Q/DQ) does not run on DLA; turn it into a calibration cache "
        "with DLA-SW's qdq-translator",
        "NVIDIA CN blog 'DLA不支持Explicit Quantization'; DLASW tools/qdq-translator",
    ),
    "DequantizeLinear": (
        "explicit quantization (Q/DQ) does not run on DLA; turn it into a calibration cache "
        "with DLA-SW's qdq-translator",
        "NVIDIA CN blog 'DLA不支持Explicit Quantization'; DLASW tools/qdq-translator",
    ),
    "Pad": (
        "Pad is not a DLA layer; fold constant zero padding into the next Conv's pads",
        "TRTDOCS DLA layer support summary (no padding layer)",
    ),
    "Shape": ("shape arithmetic (INT32/INT64) always runs on the GPU", SRC_PRECISION),
    "Cast": ("Cast produces non-FP16/INT8 data and runs on the GPU", SRC_PRECISION),
    "Where": ("Where has no DLA layer", "TRTDOCS DLA layer support summary"),
    "TopK": ("TopK has no DLA layer", "TRTDOCS DLA layer support summary"),
    "NonMaxSuppression": ("NMS has no DLA layer", "TRTDOCS DLA layer support summary"),
}
for _act in ("HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Mish", "Erf", "Gelu"):
    _GPU_ONLY[_act] = (
        f"{_act} is not a DLA activation (DLA runs ReLU, Sigmoid, TanH, Clip, LeakyReLU); {_RFE}",
        "NVINFER IActivationLayer; DLASW operators table; LOGS 'HARD_SIGMOID is not supported on DLA'",
    )
for _un in ("Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Floor", "Ceil", "Round", "Sign", "Not"):
    _GPU_ONLY[_un] = (
        f"{_un} is not a DLA unary op (DLA runs only Abs through TensorRT 8.x); {_RFE}",
        "NVINFER IUnaryLayer: 'only UnaryOperation::kABS is supported'; DLASW operators table",
    )
for _red in ("ReduceMean", "ReduceSum", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceLogSumExp"):
    _GPU_ONLY[_red] = (
        f"{_red} has no DLA layer (DLA reduces with MAX only; rewrite as pooling where possible)",
        "TensorRT operators page Reduce (10.x); DLASW operators table ('reconstruct')",
    )


def op_support(op_type: str, domain: str = "") -> OpSupport:
    """The op table entry for an ONNX op (unknown ops stay on the GPU)."""
    if domain not in ("", "ai.onnx"):
        return OpSupport(
            None,
            "custom-domain ops are TensorRT plugins",
            gpu_reason=f"{domain}::{op_type} is a custom op (a TensorRT plugin), which runs on the GPU",
        )
    if op_type in OPS:
        return OPS[op_type]
    if op_type in _GPU_ONLY:
        reason, source = _GPU_ONLY[op_type]
        return OpSupport(None, source, gpu_reason=reason)
    return OpSupport(
        None,
        "TRTDOCS DLA Supported Layers and Restrictions: ops outside its layer table run on the GPU",
        gpu_reason=f"{op_type} has no DLA implementation in TensorRT's DLA layer table",
    )
