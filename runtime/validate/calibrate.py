"""INT8 entropy calibration (the KL-divergence threshold search of TensorRT's
IInt8EntropyCalibrator2) and the TensorRT calibration cache text format, read and written."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hxsched.errors import HxschedError
from hxsched.files import atomic_write
from hxsched.scheduler.graph.graph import Graph

FLOAT = 1  # ONNX TensorProto.FLOAT

BINS = 2048  # histogram of |x|, as TensorRT's entropy calibration ("8-bit Inference with
QUANT_BINS = 128  # TensorRT", S. Migacz, GTC 2017) and NVIDIA pytorch-quantization's
START_BIN = 128  # HistogramCalibrator (_compute_amax_entropy)
ALGORITHM = "EntropyCalibration2"
_LINE = re.compile(r"^(?P<name>.+):\s*(?P<hex>[0-9a-fA-F]{1,8})\s*$")


def entropy_amax(hist: np.ndarray, edges: np.ndarray, *, stride: int = 1) -> float:
    """The clipping threshold whose 128-level quantization of the |x| histogram has the least
    KL divergence from the clipped distribution (pytorch-quantization's
    ``_compute_amax_entropy``: first bin set to the second, outliers folded into the last bin,
    the last of equal minima), all candidate thresholds at once."""
    bins = np.asarray(hist, np.float64).copy()
    n = bins.size
    if n < START_BIN + 1 or bins.sum() == 0:
        return float(edges[-1])
    bins[0] = bins[1]
    cand = np.arange(START_BIN, n + 1, stride)
    tail = np.concatenate([np.cumsum(bins[::-1])[::-1], [0.0]])  # tail[i] = sum(bins[i:])
    j = np.arange(n)
    kl = np.empty(cand.size)
    for lo in range(0, cand.size, 256):
        ii = cand[lo : lo + 256, None]
        inside = j[None, :] < ii
        d = (j[None, :] * QUANT_BINS) // ii  # the quantized bin of each histogram bin
        nz = inside & (bins[None, :] != 0)
        rows = np.arange(ii.shape[0])[:, None] * QUANT_BINS + d
        flat = rows[nz]
        size = ii.shape[0] * QUANT_BINS
        sums = np.bincount(flat, weights=np.broadcast_to(bins, nz.shape)[nz], minlength=size)
        cnt = np.bincount(flat, minlength=size)
        mean = sums / np.maximum(cnt, 1)
        q = np.where(nz, mean[np.where(nz, rows, 0)], 0.0)
        p = np.where(inside, bins[None, :], 0.0)
        p[np.arange(ii.shape[0]), ii[:, 0] - 1] += tail[ii[:, 0]]
        q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-300)
        p /= p.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p / q), 0.0)
        kl[lo : lo + 256] = terms.sum(axis=1)
    last = kl.size - 1 - int(np.argmin(kl[::-1]))
    return float(edges[cand[last]])


@dataclass
class Histogram:
    """|x| of one tensor over the calibration data, 2048 bins from 0 to the largest |x|; the
    range grows (re-binning the counts) when a later batch is larger."""

    amax: float = 0.0
    counts: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        a = np.abs(np.asarray(x, np.float32)).ravel()
        m = float(a.max()) if a.size else 0.0
        if not np.isfinite(m):
            raise HxschedError("calibration data gives a non-finite activation")
        if self.counts is None or m > self.amax:
            old, old_amax = self.counts, self.amax
            self.amax = max(m, 1e-12)
            self.counts = np.zeros(BINS, np.float64)
            if old is not None and old_amax > 0:
                centers = (np.arange(BINS) + 0.5) * old_amax / BINS
                self.counts += np.histogram(centers, BINS, (0, self.amax), weights=old)[0]
        self.counts += np.histogram(a, BINS, (0, self.amax))[0]

    def scale(self, *, stride: int = 1) -> float:
        """amax / 127 from the entropy threshold (0 for an all-zero tensor)."""
        if self.counts is None or self.amax <= 1e-12:
            return 0.0
        edges = np.linspace(0, self.amax, BINS + 1)
        return entropy_amax(self.counts, edges, stride=stride) / 127.0


def calibrate(batches: Iterable[Mapping[str, np.ndarray]], *, stride: int = 1) -> dict[str, float]:
    """Per-tensor symmetric INT8 scales (amax / 127) from activations, one mapping per batch."""
    hists: dict[str, Histogram] = {}
    for batch in batches:
        for name, value in batch.items():
            hists.setdefault(name, Histogram()).add(value)
    return {name: h.scale(stride=stride) for name, h in hists.items()}


def trt_version_tag(version: str) -> str:
    """``8.6.1`` -> ``8601`` (major*1000 + minor*100 + patch, as in headers TensorRT writes:
    TRT-8601-EntropyCalibration2 in Ultralytics' logs, TRT-7103 in ONNX Runtime's TensorRT EP
    comments). The TensorRT 10 form is not documented: copy the first line of a cache the
    target's TensorRT wrote when in doubt."""
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*", version.strip())
    if not m:
        raise HxschedError(f"--trt-version {version!r}: expected X.Y.Z, e.g. 8.6.1")
    major, minor, patch = (int(g or 0) for g in m.groups())
    if minor > 9 or patch > 99:
        raise HxschedError(f"--trt-version {version!r}: minor > 9 or patch > 99 has no tag")
    return str(major * 1000 + minor * 100 + patch)


def scale_hex(scale: float) -> str:
    """The float32 bits of ``scale`` as 8 hex digits, most significant first."""
    return struct.pack(">f", scale).hex()


def cache_text(scales: Mapping[str, float], trt_version: str) -> str:
    lines = [f"TRT-{trt_version_tag(trt_version)}-{ALGORITHM}"]
    lines += [f"{name}: {scale_hex(s)}" for name, s in scales.items() if s > 0]
    return "\n".join(lines) + "\n"


def write_cache(path: str | Path, scales: Mapping[str, float], trt_version: str) -> Path:
    """A TensorRT calibration cache: the header line, then ``tensor: <hex float32 scale>`` per
    tensor (the layout of NVIDIA Deep-Learning-Accelerator-SW qdq-translator's
    ``export_to_trt_calib`` and of ONNX Runtime's TensorRT EP ``ReadDynamicRange``)."""
    p = Path(path)
    atomic_write(p, cache_text(scales, trt_version).encode())
    return p


@dataclass(frozen=True)
class CalibrationCache:
    version: str  # the digits of the header, e.g. 8601
    algorithm: str
    scales: dict[str, float]


def parse_cache(text: str, path: str | None = None) -> CalibrationCache:
    lines = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
    head = re.fullmatch(r"TRT-(\d+)-(\w+)", lines[0].strip()) if lines else None
    if head is None:
        raise HxschedError(
            "not a TensorRT calibration cache (no TRT-<version>-<algorithm>)", path=path
        )
    scales: dict[str, float] = {}
    for k, line in enumerate(lines[1:], start=2):
        m = _LINE.match(line)
        if m is None:
            raise HxschedError(
                f"line {k}: expected 'tensor: <hex float32>', got {line[:60]!r}", path=path
            )
        scales[m["name"]] = struct.unpack(">f", bytes.fromhex(m["hex"].rjust(8, "0")))[0]
    return CalibrationCache(head[1], head[2], scales)


def read_cache(path: str | Path) -> dict[str, float]:
    """The per-tensor scales (amax / 127) of a TensorRT calibration cache file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise HxschedError(f"cannot read the calibration cache: {exc}", path=str(p)) from None
    return parse_cache(text, str(p)).scales


def activation_tensors(graph: Graph) -> list[str]:
    """Every float activation (graph inputs and node outputs): TensorRT's entropy calibration
    runs before layer fusion and gives every tensor a scale."""
    names = [t for t in graph.inputs if graph.tensors[t].elem_type == FLOAT]
    for node in graph.nodes:
        names += [
            o
            for o in node.outputs
            if o
            and graph.tensors.get(o) is not None
            and graph.tensors[o].elem_type == FLOAT
            and graph.tensors[o].shape is not None
        ]
    return names


def calibrate_graph(
    graph: Graph, feeds: Iterable[Mapping[str, np.ndarray]], *, stride: int = 1
) -> dict[str, float]:
    """Scales for every activation of ``graph`` from FP32 ONNX Runtime runs on ``feeds``."""
    from hxsched.runtime.reference import OrtModel

    g = graph.copy()
    names = activation_tensors(g)
    g.outputs = list(g.outputs) + [t for t in names if t not in g.outputs and t not in g.inputs]
    m = OrtModel(g)
    try:
        runs = ({**f, **m.run(f)} for f in feeds)
        return calibrate(({t: r[t] for t in names} for r in runs), stride=stride)
    finally:
        m.close()


def qdq_graph(graph: Graph, scales: Mapping[str, float]) -> Graph:
    """The FP32 model with explicit quantization (TensorRT >= 10 with Q/DQ, TensorRT 11's only
    INT8 path): QuantizeLinear/DequantizeLinear on every calibrated activation and per-channel
    INT8 weights behind a DequantizeLinear for Conv, ConvTranspose, Gemm and MatMul."""
    from hxsched.runtime.validate.emulate import insert_qdq

    if graph.opset.get("", 0) < 13:
        raise HxschedError(
            f"opset {graph.opset.get('', 0)}: per-channel DequantizeLinear needs opset 13 or "
            "newer (re-export the model)",
            path=graph.path,
        )
    return insert_qdq(graph.copy(), scales)
