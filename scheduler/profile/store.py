"""Where profiles are found: HXSCHED_PROFILE_PATH folders first, then the shipped ones.

A model finds its profile by structural hash, so a user's own export with the zoo's
architecture (other weights, other names) uses the shipped profile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hxsched.errors import HxschedError
from hxsched.scheduler.profile.schema import Profile, load_profile


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


def list_profiles(device: str | None = None) -> list[StoredProfile]:
    """Every profile file on the search path (invalid ones listed with their error)."""
    found: list[StoredProfile] = []
    shipped = shipped_dir().resolve()
    for folder in profile_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.yaml")):
            is_shipped = shipped in path.resolve().parents
            try:
                prof = load_profile(path)
            except HxschedError as exc:
                found.append(StoredProfile(path, None, exc.message, is_shipped))
                continue
            if device is None or prof.device == device:
                found.append(StoredProfile(path, prof, None, is_shipped))
    return found


def find_profile(device: str, structural_hash: str, precision: str | None = None) -> Profile | None:
    """The first profile on the search path for this device and architecture."""
    for item in list_profiles(device):
        p = item.profile
        if p is None or p.model.structural_hash != structural_hash:
            continue
        if precision is None or p.precision == precision:
            return p
    return None
