"""The roofline cost model: group times on each accelerator of a device, estimated from shapes.

Per node: time = max(FLOPs / (peak x compute efficiency), bytes / (bandwidth x memory
efficiency)) + a fixed launch cost; activations and BatchNorm that TensorRT fuses into the
preceding layer cost only their arithmetic. A GPU<->DLA hand-over costs a fixed submission and
synchronisation time plus the boundary tensor through a reformat kernel. The efficiency factors
of each device are calibrated against the published whole-model figures in ``CALIBRATION``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hxsched.errors import HxschedError
from hxsched.scheduler.cost.costs import NodeCost, model_element_bytes, node_cost
from hxsched.scheduler.cost.devices import DeviceSpec, EngineSpec
from hxsched.scheduler.cost.groups import LayerGroup
from hxsched.scheduler.graph.graph import Graph, Node
from hxsched.scheduler.types import AcceleratorKind, Precision, ProvenanceKind

COST_MODEL_VERSION = "hxsched.costmodel/1"
PRECISION_BYTES = {"fp16": 2, "int8": 1}
_HEAVY = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_FUSABLE = frozenset(
    {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Mul", "Add", "BatchNormalization", "PRelu"}
)


@dataclass(frozen=True)
class Published:
    """A published whole-model measurement the cost model is calibrated against."""

    device: str
    model: str  # zoo model name
    accelerator: AcceleratorKind
    ms: float
    source: str


CALIBRATION: tuple[Published, ...] = (
    Published(
        "orin-agx",
        "yolov8n",
        AcceleratorKind.GPU,
        2.13,
        "trtutils benchmark/data (TensorRT, 640x640, OrinAGX-64GB)",
    ),
    Published("orin-agx", "yolov8s", AcceleratorKind.GPU, 3.18, "same source"),
    Published(
        "orin-nx", "yolov8n", AcceleratorKind.GPU, 4.74, "trtutils benchmark/data, OrinNX-16GB"
    ),
    Published("orin-nx", "yolov8s", AcceleratorKind.GPU, 7.38, "same source"),
    Published(
        "orin-nano", "yolov8n", AcceleratorKind.GPU, 7.17, "trtutils benchmark/data, OrinNano-8GB"
    ),
    Published("orin-nano", "yolov8s", AcceleratorKind.GPU, 11.30, "same source"),
)
# Abdul Majeed et al. ("Edge GPU Aware Multiple AI Model Pipeline for Accelerated MRI
# Reconstruction and Analysis") run Pix2Pix and YOLOv8 in one DeepStream pipeline at 160.00 FPS with
# everything on the GPU (Table IV, original model): a whole-pipeline figure, so we compare it with
# the sum of both models' GPU estimates (the YOLOv8 variant is not stated; we take YOLOv8s).
PIPELINE_CHECK = Published(
    "orin-agx",
    "pix2pix_unet256+yolov8s",
    AcceleratorKind.GPU,
    1000 / 160.0,
    "Abdul Majeed et al., 'Edge GPU Aware Multiple AI Model Pipeline for Accelerated MRI "
    "Reconstruction and Analysis', Table IV: Pix2Pix + YOLOv8 pipeline, GPU only, 160.00 FPS "
    "(DeepStream)",
)
# DLA vs GPU on the same convolutional model: Orin MAXN INT8 conv 405.3 vs 132.7 qps (3.05x,
# NVIDIA forum 219770); Xavier GoogleNet 1.959 vs 3.656 ms (1.87x, HaX-CoNN). We aim for 2-3x.
DLA_GPU_RATIO_RANGE = (2.0, 3.0)


def fused_nodes(graph: Graph, members: set[str] | None = None) -> set[str]:
    """Nodes TensorRT fuses into the layer before them (activation/BN/residual epilogues);
    with ``members``, only fusions inside that set of nodes (one engine) count."""
    fused: set[str] = set()
    heavy_or_fused: set[str] = set()
    for node in graph.nodes:
        if members is not None and node.name not in members:
            continue
        if node.op_type in _HEAVY:
            heavy_or_fused.add(node.name)
            continue
        if node.op_type not in _FUSABLE:
            continue
        acts = graph.activation_inputs(node)
        producers = [graph.producer(a) for a in acts]
        if producers and any(p is not None and p.name in heavy_or_fused for p in producers):
            fused.add(node.name)
            heavy_or_fused.add(node.name)
    return fused


def node_time_ms(
    cost: NodeCost, engine: EngineSpec, precision: str, *, fused: bool, op_type: str = ""
) -> float:
    peak = engine.int8_tops if precision == "int8" else engine.fp16_tflops
    compute_s = cost.flops / (peak * 1e12 * engine.compute_eff) if cost.flops else 0.0
    if fused:
        return compute_s * 1e3
    mem_s = cost.bytes / (engine.mem_gbs * 1e9 * engine.mem_eff)
    return max(compute_s, mem_s) * 1e3 + engine.launch_us / 1e3


@dataclass(frozen=True)
class GroupEstimate:
    time_ms: dict[AcceleratorKind, float]  # ms on each accelerator kind
    memory_bw: dict[AcceleratorKind, float]  # bytes/s pulled from DRAM on each kind


def estimate_groups(
    graph: Graph,
    groups: Sequence[LayerGroup],
    device: DeviceSpec,
    precision: str = "fp16",
    costs: Mapping[str, NodeCost] | None = None,
) -> list[GroupEstimate]:
    """Estimated time and DRAM traffic of every group on the device's GPU and DLA."""
    costs = costs or {n.name: node_cost(graph, n) for n in graph.nodes}
    elem = PRECISION_BYTES[precision]
    model_elem = model_element_bytes(graph)
    by_name: dict[str, Node] = {n.name: n for n in graph.nodes}
    out: list[GroupEstimate] = []
    for g in groups:
        fused = fused_nodes(graph, set(g.nodes))
        times: dict[AcceleratorKind, float] = {}
        bws: dict[AcceleratorKind, float] = {}
        kinds = [(AcceleratorKind.GPU, device.gpu)]
        if device.dla is not None and g.dla:
            kinds.append((AcceleratorKind.DLA, device.dla))
        for kind, engine in kinds:
            total = 0.0
            moved = 0
            for name in g.nodes:
                c = costs[name].scaled(elem, model_elem)
                total += node_time_ms(
                    c, engine, precision, fused=name in fused, op_type=by_name[name].op_type
                )
                if name not in fused:
                    moved += c.bytes
            times[kind] = total
            bws[kind] = moved / (total / 1e3) if total > 0 else 0.0
        out.append(GroupEstimate(times, bws))
    return out


def transition_ms(
    device: DeviceSpec, boundary_bytes: int, precision: str, model_elem: int = 4
) -> float:
    """Estimated cost of handing a boundary tensor between the GPU and a DLA core."""
    if device.dla is None:
        return 0.0
    nbytes = boundary_bytes * PRECISION_BYTES[precision] / model_elem
    return device.transition_us / 1e3 + nbytes / (device.reformat_gbs * 1e9) * 1e3


def _check_precision(precision: str) -> None:
    if precision not in PRECISION_BYTES:
        raise HxschedError(f"precision {precision!r}: expected one of {', '.join(PRECISION_BYTES)}")


def estimate_profile(
    graph: Graph,
    device_name: str,
    *,
    precision: str = "fp16",
    max_groups: int = 40,
    model_name: str | None = None,
    trt: str | None = None,
):
    """A complete profile of ``graph`` on ``device_name`` from the cost model alone."""
    import datetime

    from hxsched import __version__
    from hxsched.scheduler.cost.contention import DEFAULT_CONTENTION
    from hxsched.scheduler.cost.devices import device as get_device
    from hxsched.scheduler.cost.groups import make_groups
    from hxsched.scheduler.dla.check import check_graph
    from hxsched.scheduler.profile.schema import (
        GroupProfile,
        ModelInfo,
        Profile,
        Provenance,
        Transition,
    )

    dev = get_device(device_name)
    _check_precision(precision)
    if dev.dla_target is not None:
        report = check_graph(graph, target=dev.dla_target, trt=trt, precision=precision)
        dla_ok = {v.node: v.dla for v in report.verdicts}
    else:
        dla_ok = {n.name: False for n in graph.nodes}
    costs = {n.name: node_cost(graph, n) for n in graph.nodes}
    groups = make_groups(graph, dla_ok, max_groups=max_groups, costs=costs)
    ests = estimate_groups(graph, groups, dev, precision, costs)
    model_elem = model_element_bytes(graph)
    profiles = []
    for g, e in zip(groups, ests, strict=True):
        profiles.append(
            GroupProfile(
                id=g.id,
                name=g.name,
                first=g.first,
                last=g.last,
                nodes=len(g.nodes),
                dla=g.dla and dev.dla is not None,
                flops=g.flops,
                bytes=g.bytes,
                weight_bytes=g.weight_bytes,
                out_bytes=g.out_bytes,
                time_ms=dict(e.time_ms),
                memory_bw=dict(e.memory_bw),
            )
        )
    transitions = []
    if dev.dla is not None:
        for g in groups[:-1]:
            full = transition_ms(dev, g.out_bytes, precision, model_elem)
            # the DLA side waits for the task submission; the GPU side only reformats
            back = full - dev.transition_us / 2e3
            transitions.append(Transition(g.id, full, back, bytes=g.out_bytes))
    provenance = Provenance(
        kind=ProvenanceKind.ESTIMATED,
        tool=COST_MODEL_VERSION,
        versions={"hxsched": __version__},
        date=datetime.date.today().isoformat(),
        notes=f"roofline on {dev.title}; hardware figures: {dev.source}",
    )
    contention = DEFAULT_CONTENTION.get(dev.name)
    return Profile(
        device=dev.name,
        precision=Precision(precision),
        model=ModelInfo.of(graph, model_name),
        provenance={"cost-model": provenance},
        default_source="cost-model",
        groups=tuple(profiles),
        transitions=tuple(transitions),
        contention=contention,
    )


def whole_model_ms(
    graph: Graph, device: DeviceSpec, kind: str = "gpu", precision: str = "fp16"
) -> float:
    """Estimated time of the whole model on one accelerator kind (one engine, no transitions)."""
    _check_precision(precision)
    engine = device.gpu if AcceleratorKind(kind) == AcceleratorKind.GPU else device.dla
    if engine is None:
        raise HxschedError(f"device {device.name} has no {kind}: it cannot be estimated there")
    fused = fused_nodes(graph)
    model_elem = model_element_bytes(graph)
    elem = PRECISION_BYTES[precision]
    return sum(
        node_time_ms(
            node_cost(graph, n).scaled(elem, model_elem),
            engine,
            precision,
            fused=n.name in fused,
            op_type=n.op_type,
        )
        for n in graph.nodes
    )


def dla_gpu_ratio(graph: Graph, device: DeviceSpec, dla_ok: Mapping[str, bool]) -> float:
    """Estimated DLA time / GPU time over the model's DLA-capable nodes."""
    if device.dla is None:
        raise HxschedError(f"device {device.name} has no DLA")
    sub_fused = fused_nodes(graph)
    model_elem = model_element_bytes(graph)
    gpu = dla = 0.0
    for n in graph.nodes:
        if not dla_ok.get(n.name):
            continue
        c = node_cost(graph, n).scaled(2, model_elem)
        f = n.name in sub_fused
        gpu += node_time_ms(c, device.gpu, "fp16", fused=f, op_type=n.op_type)
        dla += node_time_ms(c, device.dla, "fp16", fused=f, op_type=n.op_type)
    return dla / gpu if gpu else float("nan")


def calibration_table(load_zoo_graph) -> list[dict]:
    """The cost model against every published figure (``load_zoo_graph(name) -> Graph``).

    Rows of kind ``fit`` are what the efficiency factors were fitted to; ``pipeline`` and
    ``dla-ratio`` rows are checks the fit did not see.
    """
    from hxsched.scheduler.cost.devices import DEVICES
    from hxsched.scheduler.cost.devices import device as get_device
    from hxsched.scheduler.dla.check import check_graph
    from hxsched.scheduler.dla.rewrite import rewrite_for_dla

    rows = []
    for pub in CALIBRATION:
        est = whole_model_ms(load_zoo_graph(pub.model), get_device(pub.device), pub.accelerator)
        rows.append(
            {
                "kind": "fit",
                "device": pub.device,
                "model": pub.model,
                "what": "GPU ms",
                "published": pub.ms,
                "estimated": round(est, 3),
                "ratio": round(est / pub.ms, 3),
                "source": pub.source,
            }
        )
    pub = PIPELINE_CHECK
    dev = get_device(pub.device)
    est = sum(
        whole_model_ms(load_zoo_graph(m), dev, AcceleratorKind.GPU) for m in pub.model.split("+")
    )
    rows.append(
        {
            "kind": "pipeline",
            "device": pub.device,
            "model": pub.model,
            "what": "GPU ms per frame",
            "published": round(pub.ms, 3),
            "estimated": round(est, 3),
            "ratio": round(est / pub.ms, 3),
            "source": pub.source,
        }
    )
    lo, hi = DLA_GPU_RATIO_RANGE
    for dev in DEVICES.values():
        if dev.dla is None or dev.dla_target is None:
            continue
        for model in ("yolov8n", "pix2pix_unet256"):
            graph = load_zoo_graph(model).copy()
            if model.startswith("pix2pix"):
                rewrite_for_dla(graph)
                model += " (rewritten)"
            report = check_graph(graph, target=dev.dla_target)
            ratio = dla_gpu_ratio(graph, dev, {v.node: v.dla for v in report.verdicts})
            rows.append(
                {
                    "kind": "dla-ratio",
                    "device": dev.name,
                    "model": model,
                    "what": "DLA / GPU time, DLA-capable part",
                    "published": f"{lo:g}-{hi:g}",
                    "estimated": round(ratio, 2),
                    "ratio": None,
                    "source": "Orin INT8 conv 3.05x (forum 219770); Xavier GoogleNet 1.87x "
                    "(HaX-CoNN); vendor blog 2-4x",
                }
            )
    return rows
