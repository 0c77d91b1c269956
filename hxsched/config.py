"""Settings read from HXSCHED_* environment variables, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _cache_default(env: dict[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "hxsched"


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    log_level: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        cache = env.get("HXSCHED_CACHE_DIR")
        return cls(
            cache_dir=Path(cache) if cache else _cache_default(env),
            log_level=env.get("HXSCHED_LOG_LEVEL", "WARNING").upper(),
        )


def settings() -> Settings:
    """Current settings (read fresh each call so tests can change the environment)."""
    return Settings.from_env()
