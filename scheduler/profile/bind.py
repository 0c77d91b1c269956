"""Binding a profile's groups to a model: by node name, else by position in the canonical order.

Two exports of one architecture hash alike (``hxsched.scheduler.graph.structure``) but may name
their nodes differently or hold a BatchNorm the other folded into its convolution. Their
canonical node orders are the same, so a group given as a run of the profile's model's nodes
is the same run of canonical positions in the other model; the group is re-named with that
model's first and last node of the run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from hxsched.errors import HxschedError
from hxsched.scheduler.graph.summary import ModelSummary
from hxsched.scheduler.profile.schema import Profile

log = logging.getLogger(__name__)


def canonical_positions(n_nodes: int, folded: Sequence[int]) -> list[int]:
    """Each node's position in the canonical order (a folded node shares the one before it)."""
    skip = set(folded)
    out: list[int] = []
    k = -1
    for i in range(n_nodes):
        if i not in skip:
            k += 1
        out.append(max(k, 0))
    return out


def _spans(model: ModelSummary) -> tuple[dict[int, int], dict[int, int]]:
    """First and last node index of every canonical position of ``model``."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, k in enumerate(canonical_positions(len(model.node_names), model.folded)):
        first.setdefault(k, i)
        last[k] = i
    return first, last


def by_position(model: ModelSummary, profile: Profile) -> Profile | None:
    """``profile`` with its groups named in ``model``'s nodes, placed by canonical position;
    None where the profile does not say where its groups lie or they do not fit the model."""
    info = profile.model
    groups = profile.groups
    if info.structural_hash != model.structural_hash or not info.nodes:
        return None
    if any(g.nodes is None or g.first is None or g.last is None for g in groups):
        return None
    if sum(g.nodes or 0 for g in groups) != info.nodes:
        return None
    theirs = canonical_positions(info.nodes, info.folded)
    first, last = _spans(model)
    if theirs[-1] != max(last, default=-1):
        return None
    names = model.node_names
    bound = []
    start = expected = 0
    for g in groups:
        end = start + (g.nodes or 0) - 1
        a, b = first[theirs[start]], last[theirs[end]]
        if a != expected or b < a:
            return None  # a group boundary inside a fold: no run of this model's nodes
        bound.append(dataclasses.replace(g, first=names[a], last=names[b], nodes=b - a + 1))
        start, expected = end + 1, b + 1
    if expected != len(names):
        return None
    model_info = dataclasses.replace(info, nodes=len(names), folded=model.folded)
    return dataclasses.replace(profile, model=model_info, groups=tuple(bound))


def _counted(model: ModelSummary, profile: Profile) -> Profile:
    """``profile`` (whose groups name ``model``'s nodes) with each group's node count and the
    model record as ``model`` has them (a BatchNorm the profile's model kept may be folded)."""
    order = {name: i for i, name in enumerate(model.node_names)}
    groups = tuple(
        dataclasses.replace(g, nodes=order[g.last] - order[g.first] + 1)
        if g.first in order and g.last in order
        else g
        for g in profile.groups
    )
    if groups == profile.groups and profile.model.folded == model.folded:
        return profile
    info = dataclasses.replace(profile.model, nodes=len(model.node_names), folded=model.folded)
    return dataclasses.replace(profile, model=info, groups=groups)


def bind_profile(model: ModelSummary, profile: Profile, where: str) -> Profile:
    """``profile`` as it applies to ``model``: by node name where its groups name the model's
    nodes, else placed by canonical position; the name check's error where neither fits."""
    from hxsched.scheduler.planning.planner import check_profile_matches

    try:
        check_profile_matches(model, profile, where)
        return _counted(model, profile)
    except HxschedError:
        bound = by_position(model, profile)
        if bound is None:
            raise
    log.info(
        f"profile {where or profile.model.name}: groups placed on {model.path} by position "
        "(same architecture, other node names or BatchNorm folding)"
    )
    return bound
