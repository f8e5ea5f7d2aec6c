from __future__ import annotations

import os
import stat

import pytest

from embedforge.io import atomic_dir, atomic_write


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]
    with atomic_write(target) as f:
        f.write("new")
    assert target.read_text() == "new"


def test_atomic_outputs_get_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.txt") as f:
            f.write("x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "a").write_text("y")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_atomic_dir_keeps_the_old_directory_on_failure(tmp_path):
    old = tmp_path / "d"
    old.mkdir()
    (old / "keep").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(old) as d:
        (d / "new").write_text("2")
        raise RuntimeError
    assert sorted(os.listdir(tmp_path)) == ["d"] and os.listdir(old) == ["keep"]
