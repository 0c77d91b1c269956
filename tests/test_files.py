"""Atomic writes and YAML reading with one-line errors."""

from __future__ import annotations

import os
import stat

import pytest

from hxsched.errors import HxschedError
from hxsched.files import atomic_write, read_yaml


def test_atomic_write_creates_folders_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    assert atomic_write(target, b"one") == target
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    atomic_write(target, b"old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_read_yaml_errors_name_the_file(tmp_path):
    good = tmp_path / "g.yaml"
    good.write_text("a: 1\n")
    assert read_yaml(good) == {"a": 1}
    with pytest.raises(HxschedError, match="pipeline file not found") as info:
        read_yaml(tmp_path / "none.yaml", "pipeline file")
    assert info.value.path == str(tmp_path / "none.yaml")
    bad = tmp_path / "b.yaml"
    bad.write_text("a: [\n")
    with pytest.raises(HxschedError, match="not readable YAML") as info:
        read_yaml(bad)
    assert "\n" not in str(info.value)
