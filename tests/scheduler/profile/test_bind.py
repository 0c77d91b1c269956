"""Binding a profile to another export of its architecture: BatchNorm folded or not, renamed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hxsched.errors import HxschedError
from hxsched.scheduler.cost.estimate import estimate_profile
from hxsched.scheduler.graph.onnx_io import graph_from_proto
from hxsched.scheduler.graph.summary import ModelSummary
from hxsched.scheduler.profile.bind import bind_profile, by_position, canonical_positions
from hxsched.scheduler.profile.schema import profile_from_dict
from hxsched.scheduler.profile.store import shipped_dir

sys.path.insert(0, str(Path(__file__).parents[1] / "graph"))
from test_structure import _block  # noqa: E402


def _covers(profile, summary):
    names = summary.node_names
    spans = [(names.index(g.first), names.index(g.last)) for g in profile.groups]
    assert spans[0][0] == 0 and spans[-1][1] == len(names) - 1
    assert all(spans[k][1] + 1 == spans[k + 1][0] for k in range(len(spans) - 1))
    assert [g.nodes for g in profile.groups] == [b - a + 1 for a, b in spans]


def test_canonical_positions():
    assert canonical_positions(6, (1, 4)) == [0, 0, 1, 2, 2, 3]
    assert canonical_positions(3, ()) == [0, 1, 2]


@pytest.mark.parametrize("source_folded", [False, True])
def test_a_profile_binds_to_the_export_folded_the_other_way(source_folded):
    src = _block(fold=source_folded)
    prof = estimate_profile(src, "orin-agx", max_groups=4)
    assert prof.model.folded == (() if source_folded else (1,))
    for other in (_block(fold=not source_folded),):
        summary = ModelSummary.of(other)
        bound = bind_profile(summary, prof, "p.yaml")
        _covers(bound, summary)
        assert [g.time_ms for g in bound.groups] == [g.time_ms for g in prof.groups]
        assert bound.model.structural_hash == prof.model.structural_hash
        assert bound.model.nodes == len(other.nodes) and bound.model.folded == summary.folded


def test_a_bound_profile_round_trips_and_binds_again():
    prof = estimate_profile(_block(fold=False), "orin-agx", max_groups=4)
    folded = ModelSummary.of(_block(fold=True))
    bound = bind_profile(folded, prof, "p.yaml")
    again = profile_from_dict(bound.to_dict())

    def spans(p):
        return [(g.first, g.last, g.nodes) for g in p.groups]

    assert again.model.folded == () and spans(again) == spans(bound)
    kept = ModelSummary.of(_block(fold=False))
    assert spans(bind_profile(kept, again, "q.yaml")) == spans(prof)


def test_renamed_nodes_bind_by_position_and_same_names_stay_as_they_are():
    g = _block(fold=False)
    prof = estimate_profile(g, "orin-agx", max_groups=4)
    same = ModelSummary.of(g)
    assert bind_profile(same, prof, "p.yaml") is prof
    for i, node in enumerate(g.nodes):
        node.name = f"node_{i}"
    g.reindex()
    bound = bind_profile(ModelSummary.of(g), prof, "p.yaml")
    assert bound.groups[0].first == "node_0" and bound.groups[-1].last == "node_5"


def test_another_architecture_is_refused_with_the_name_check_error():
    prof = estimate_profile(_block(fold=False), "orin-agx", max_groups=4)
    yolo = ModelSummary.of(_block(fold=True, yolo=True))
    with pytest.raises(HxschedError, match="another architecture"):
        bind_profile(yolo, prof, "p.yaml")
    assert by_position(yolo, prof) is None
    # a profile that does not say how many nodes its groups hold cannot be placed by position
    bare = profile_from_dict(
        {**prof.to_dict(), "groups": [{**g.to_dict(), "nodes": None} for g in prof.groups]}
    )
    assert by_position(ModelSummary.of(_block(fold=True)), bare) is None


def test_shipped_pix2pix_profile_binds_to_the_real_torch_default_export(data_dir):
    """torch's default export folds 6 of Pix2Pix's 13 BatchNorms (those after a Conv): the
    shipped profile (made on the zoo model, which keeps them) takes it, every group on a run of
    its 46 nodes."""
    from onnx_builders import from_structure_record

    from hxsched.scheduler.profile.schema import load_profile

    rec = data_dir / "exports" / "pix2pix_unet256_torch_2.13_default.structure.json"
    summary = ModelSummary.of(graph_from_proto(from_structure_record(rec)))
    assert len(summary.node_names) == 46 and summary.folded == ()
    for device in ("orin-agx", "xavier-agx"):
        prof = load_profile(shipped_dir() / device / "pix2pix_unet256.yaml")
        assert prof.model.nodes == 52 and len(prof.model.folded) == 6
        bound = bind_profile(summary, prof, prof.path or "")
        _covers(bound, summary)
        assert len(bound.groups) == len(prof.groups)
