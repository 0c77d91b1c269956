"""Layer groups: constant DLA verdict, cheap cuts, no fused layer split, bounded count, stable."""

from __future__ import annotations

import pytest

from hxsched.errors import HxschedError
from hxsched.scheduler.cost.groups import breaks_fusion, make_groups
from hxsched.scheduler.dla.check import check_graph


def verdicts(g, **kw):
    return {v.node: v.dla for v in check_graph(g, **kw).verdicts}


def test_groups_partition_the_model_in_order(yolov8n_graph):
    groups = make_groups(yolov8n_graph, verdicts(yolov8n_graph))
    names = [n for g in groups for n in g.nodes]
    assert names == [n.name for n in yolov8n_graph.nodes]
    assert [g.id for g in groups] == list(range(len(groups)))
    assert 2 <= len(groups) <= 40


def test_each_group_has_one_verdict_and_boundaries_follow_verdict_changes(yolov8n_graph):
    ok = verdicts(yolov8n_graph)
    groups = make_groups(yolov8n_graph, ok)
    for g in groups:
        assert {ok[n] for n in g.nodes} == {g.dla}
    # the Detect head's GPU-only nodes form their own groups after the DLA-capable ones
    dla_flags = [g.dla for g in groups]
    assert dla_flags == sorted(dla_flags, reverse=True)


def test_no_group_splits_a_layer_from_its_fused_activation(yolov8n_graph, pix2pix_graph):
    for graph in (yolov8n_graph, pix2pix_graph):
        ok = verdicts(graph)
        index = {n.name: i for i, n in enumerate(graph.nodes)}
        for g in make_groups(graph, ok)[:-1]:
            i = index[g.last]
            if ok[graph.nodes[i].name] == ok[graph.nodes[i + 1].name]:
                assert not breaks_fusion(graph, i), g.last


def test_bound_and_stability(pix2pix_graph):
    ok = verdicts(pix2pix_graph)
    a = make_groups(pix2pix_graph, ok, max_groups=10)
    b = make_groups(pix2pix_graph, ok, max_groups=10)
    assert [(g.first, g.last) for g in a] == [(g.first, g.last) for g in b]
    # 8 GPU-only ConvTranspose groups force at least 17 groups whatever the bound
    assert len(a) >= 17
    free = make_groups(pix2pix_graph, {n.name: True for n in pix2pix_graph.nodes}, max_groups=5)
    assert len(free) <= 5


def test_group_figures(yolov8n_graph):
    groups = make_groups(yolov8n_graph, verdicts(yolov8n_graph))
    assert sum(g.flops for g in groups) > 8e9  # YOLOv8n: ~8.7 GFLOPs
    cuts = {c.after: c.bytes for c in yolov8n_graph.cut_points()}
    for g in groups[:-1]:
        assert g.out_bytes == cuts[g.last]


def test_bad_bound(yolov8n_graph):
    with pytest.raises(HxschedError, match="max-groups"):
        make_groups(yolov8n_graph, {}, max_groups=0)
