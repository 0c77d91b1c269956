"""HXSCHED_* settings."""

from __future__ import annotations

from pathlib import Path

from hxsched.config import Settings


def test_defaults_and_overrides(tmp_path):
    s = Settings.from_env({"XDG_CACHE_HOME": str(tmp_path)})
    assert s.cache_dir == tmp_path / "hxsched" and s.log_level == "WARNING"
    s = Settings.from_env({"HXSCHED_CACHE_DIR": "/x/y", "HXSCHED_LOG_LEVEL": "debug"})
    assert s.cache_dir == Path("/x/y") and s.log_level == "DEBUG"
