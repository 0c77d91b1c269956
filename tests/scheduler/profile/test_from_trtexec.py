"""Profiles imported from trtexec: GPU layer times per group, DLA subgraph totals apportioned."""

from __future__ import annotations

import pytest

from hxsched.errors import HxschedError
from hxsched.scheduler.profile.from_trtexec import import_trtexec
from hxsched.scheduler.profile.trtexec import parse_export_profile


def fake_profile(graph, *, dla_block=None, scale=0.01):
    """A profile in trtexec's format for this graph (constructed, not recorded: the recorded
    samples are Caffe GoogleNet, see test_trtexec)."""
    rows = [{"count": 100}]
    nodes = [n.name for n in graph.nodes]
    i = 0
    while i < len(nodes):
        if dla_block and nodes[i] == dla_block[0]:
            j = nodes.index(dla_block[1])
            rows.append(
                {
                    "name": f"{{ForeignNode[{nodes[i]}...{nodes[j]}]}}",
                    "timeMs": 1,
                    "averageMs": 0.001,
                }
            )
            rows.append(
                {"name": f"{nodes[j]} output reformatter 0", "timeMs": 100, "averageMs": 1.0}
            )
            i = j + 1
            continue
        rows.append({"name": nodes[i], "timeMs": 1.0, "averageMs": scale})
        i += 1
    return parse_export_profile(rows, "fake.json")


def test_gpu_and_dla_import(pix2pix_graph):
    names = [n.name for n in pix2pix_graph.nodes]
    gpu = fake_profile(pix2pix_graph)
    dla = fake_profile(pix2pix_graph, dla_block=(names[0], names[10]))
    prof = import_trtexec(pix2pix_graph, "orin-agx", gpu, dla)
    assert prof.group_total_ms("gpu") == pytest.approx(0.01 * len(names))
    covered = [g for g in prof.groups if g.sources.get("time_ms.dla") == "trtexec-dla"]
    assert covered and sum(g.time_ms["dla"] for g in covered) == pytest.approx(1.001)
    assert {prof.provenance[g.sources["time_ms.gpu"]].kind for g in prof.groups} == {"imported"}
    others = [g for g in prof.groups if "dla" in g.time_ms and g not in covered]
    assert all(g.sources["time_ms.dla"] == "cost-model" for g in others)


def test_profile_of_another_model_is_refused(pix2pix_graph, yolov8n_graph):
    with pytest.raises(HxschedError, match="same model"):
        import_trtexec(pix2pix_graph, "orin-agx", fake_profile(yolov8n_graph))
