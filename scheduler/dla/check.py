"""The DLA checker: a verdict per node and TensorRT's default GPU/DLA split of the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hxsched.scheduler.dla.placement import Placement, default_placement
from hxsched.scheduler.dla.rules import (
    DEFAULT_TRT,
    CheckContext,
    node_verdict,
    platform_warning,
    validate_options,
)
from hxsched.scheduler.graph.graph import Graph


@dataclass(frozen=True)
class Verdict:
    index: int
    node: str
    op_type: str
    dla: bool
    reasons: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "node": self.node,
            "op_type": self.op_type,
            "dla": self.dla,
            "reason": self.reasons[0] if self.reasons else "",
            "reasons": list(self.reasons),
            "rules": list(self.rules),
        }


@dataclass
class CheckReport:
    model: str
    target: str
    trt: str
    precision: str
    verdicts: list[Verdict]
    placement: Placement
    folded_nodes: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return len(self.verdicts)

    @property
    def incompatible(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.dla]

    def incompatible_by_op(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for v in self.incompatible:
            counts[v.op_type] = counts.get(v.op_type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self, *, all_nodes: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "target": self.target,
            "trt": self.trt,
            "precision": self.precision,
            "nodes": self.nodes,
            "dla_compatible": self.nodes - len(self.incompatible),
            "dla_incompatible": [
                {
                    "node": v.node,
                    "op_type": v.op_type,
                    "reason": v.reasons[0],
                    "rules": list(v.rules),
                }
                for v in self.incompatible
            ],
            "dla_segments": len(self.placement.dla_loadables),
            "gpu_islands": len(self.placement.gpu_islands),
            "placement": self.placement.to_dict(),
            "folded_nodes": self.folded_nodes,
            "warnings": list(self.warnings),
            "source": "static rule check (hxsched.scheduler.dla.rules); confirm on the device "
            "with a TensorRT build without GPU fallback",
        }
        if all_nodes:
            out["verdicts"] = [v.to_dict() for v in self.verdicts]
        return out

    def summary(self) -> str:
        bad = self.incompatible
        by_op = ", ".join(f"{op}x{n}" for op, n in self.incompatible_by_op().items())
        pl = self.placement
        text = (
            f"{self.model}: {self.nodes} nodes, {len(bad)} DLA-incompatible"
            f"{' (' + by_op + ')' if by_op else ''}; TensorRT default placement: "
            f"{len(pl.dla_loadables)} DLA loadable{'s' if len(pl.dla_loadables) != 1 else ''}, "
            f"{len(pl.gpu_islands)} GPU island{'s' if len(pl.gpu_islands) != 1 else ''} "
            f"[{self.target}, TensorRT {self.trt}, {self.precision}]"
        )
        if pl.over_limit:
            text += (
                f"; {len(pl.dla_loadables)} loadables exceed the 16 per DLA core, so TensorRT "
                f"would run {pl.over_limit} of them on the GPU"
            )
        return text


def check_graph(
    graph: Graph,
    *,
    target: str = "orin",
    trt: str | None = None,
    precision: str = "fp16",
    model_name: str | None = None,
) -> CheckReport:
    """Check every node of ``graph`` against the DLA rules of ``target`` with TensorRT ``trt``."""
    trt = trt or DEFAULT_TRT.get(target, "8.6")
    validate_options(target, trt, precision)
    cx = CheckContext(graph, target, trt, precision)
    verdicts = []
    for i, node in enumerate(graph.nodes):
        reasons, ids = node_verdict(node, cx)
        verdicts.append(
            Verdict(i, node.name, node.op_type, not reasons, tuple(reasons), tuple(ids))
        )
    placement = default_placement(graph, {v.node: v.dla for v in verdicts})
    warnings = list(graph.model_meta.get("warnings", []))
    warn = platform_warning(target, trt)
    if warn:
        warnings.append(warn)
    return CheckReport(
        model=model_name or graph.path or graph.name,
        target=target,
        trt=trt,
        precision=precision,
        verdicts=verdicts,
        placement=placement,
        folded_nodes=int(graph.model_meta.get("folded_nodes", 0)),
        warnings=warnings,
    )
