"""Where profiles are found: HXSCHED_PROFILE_PATH folders first, then the shipped ones.

A model finds its profile by structural hash (read from each file's header block only), so a
user's own export with the zoo's architecture (other weights, other names) uses the shipped one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hxsched.errors import HxschedError, SchemaError
from hxsched.scheduler.profile.schema import Profile, load_profile, read_header

log = logging.getLogger(__name__)


def shipped_dir() -> Path:
    import hxsched.profiles

    return Path(hxsched.profiles.__file__).parent


def profile_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("HXSCHED_PROFILE_PATH", "").split(os.pathsep) if p]
    return [*extra, shipped_dir()]


@dataclass(frozen=True)
class StoredProfile:
    path: Path
    profile: Profile | None
    error: str | None = None
    shipped: bool = False


def profile_files() -> Iterator[tuple[Path, bool]]:
    """Every ``*.yaml`` on the search path, in search order, with whether it is shipped."""
    shipped = shipped_dir().resolve()
    for folder in profile_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.yaml")):
            yield path, shipped in path.resolve().parents


def _reason(exc: HxschedError) -> str:
    """The error without the file name (listed beside it)."""
    if isinstance(exc, SchemaError) and exc.key:
        return f"{exc.key}: {exc.reason}"
    return exc.message


def list_profiles(device: str | None = None) -> list[StoredProfile]:
    """Every profile file on the search path (invalid ones listed with their error)."""
    found: list[StoredProfile] = []
    for path, is_shipped in profile_files():
        try:
            prof = load_profile(path)
        except HxschedError as exc:
            found.append(StoredProfile(path, None, _reason(exc), is_shipped))
            continue
        if device is None or prof.device == device:
            found.append(StoredProfile(path, prof, None, is_shipped))
    return found


def find_profile(device: str, structural_hash: str, precision: str | None = None) -> Profile | None:
    """The first profile on the search path for this device and architecture.

    Only each file's header (device, precision, model) is parsed to decide; the match alone is
    loaded and validated whole. Files whose header cannot be read alone are loaded whole.
    """
    for path, _shipped in profile_files():
        head = read_header(path)
        if head is not None and not (
            head.device == device
            and head.model.structural_hash == structural_hash
            and (precision is None or head.precision == precision)
        ):
            continue
        try:
            prof = load_profile(path)
        except HxschedError as exc:
            log.warning("skipping profile %s", exc)
            continue
        if prof.device != device or prof.model.structural_hash != structural_hash:
            continue
        if precision is None or prof.precision == precision:
            return prof
    return None


def closest_refused(device: str, nodes: int, folded: int = 0) -> str | None:
    """Which profile on the search path for ``device`` came closest to a model of ``nodes``
    nodes (``folded`` of them BatchNorms its canonical form folds) whose hash none matched,
    and why it was refused; None if there is none for the device. Headers only."""
    ours = nodes - folded
    best: tuple[int, str, int] | None = None
    for path, _shipped in profile_files():
        head = read_header(path)
        if head is None or head.device != device or not head.model.nodes:
            continue
        theirs = head.model.nodes - len(head.model.folded)
        if best is None or abs(theirs - ours) < abs(best[0] - ours):
            best = (theirs, f"{path.name} ({head.model.name})", head.model.nodes)
    if best is None:
        return None
    theirs, name, raw = best
    if theirs != ours:
        why = f"its model has {theirs} nodes with BatchNorm folded ({raw} as stored), this {ours}"
    else:
        why = "same node count, but other wiring, attributes, shapes or node order"
    return f"closest profile {name} refused: {why}"
