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


# --- check_text / check_output / the data directory ----------------------------------------------


def test_check_text_rejects_lone_surrogates_and_overlong_texts_naming_the_place():
    from embedforge.errors import InputError
    from embedforge.io import MAX_TEXT_CHARS, check_text

    assert check_text("fine \U0001f600 text", "f.jsonl", 3) == "fine \U0001f600 text"
    with pytest.raises(InputError, match=r"^f\.jsonl:3: text holds a lone UTF-16 surrogate \(U\+D800 at character 2\)"):
        check_text("a\ud800b", "f.jsonl", 3)
    with pytest.raises(InputError, match=r"^input\[2\]: .*surrogate \(U\+DC00"):
        check_text("\udc00", "input[2]")  # the form an HTTP 400 names a field in
    assert check_text("x" * MAX_TEXT_CHARS) == "x" * MAX_TEXT_CHARS
    with pytest.raises(InputError, match="longest accepted is 1,000,000"):
        check_text("x" * (MAX_TEXT_CHARS + 1), "t.txt", 1)


def test_check_output_refuses_an_input_under_any_name(tmp_path):
    from embedforge.errors import InputError
    from embedforge.io import check_output

    src = tmp_path / "in.txt"
    src.write_text("data\n")
    os.link(src, tmp_path / "hard.txt")
    os.symlink(src, tmp_path / "soft.txt")
    for name in ("in.txt", "hard.txt", "soft.txt", "sub/../in.txt"):
        with pytest.raises(InputError, match="is also an input"):
            check_output(tmp_path / name, inputs=[src], suffixes=(".txt",))
    assert check_output(tmp_path / "new" / "out.txt", inputs=[src, None], suffixes=(".txt",)) == tmp_path / "new" / "out.txt"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    with pytest.raises(InputError, match="holds an input"):
        check_output(tmp_path, inputs=[src], directory=True)


def test_check_output_type_suffix_and_writability(tmp_path, monkeypatch):
    from embedforge.errors import InputError
    from embedforge.io import check_output

    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"--output: unsupported output type '\.csv'; expected \.npy"):
        check_output(tmp_path / "e.csv", suffixes=(".npy",))
    assert check_output(tmp_path / "E.NPY", suffixes=(".npy",))
    with pytest.raises(InputError, match="is a directory; expected a file path"):
        check_output(tmp_path, suffixes=None)
    with pytest.raises(InputError, match="is a file; expected a directory"):
        check_output(tmp_path / "file", directory=True)
    with pytest.raises(InputError, match="cannot be created: .*file is not a directory"):
        check_output(tmp_path / "file" / "sub" / "e.npy", suffixes=(".npy",))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only place, even for root
    with pytest.raises(InputError, match="cannot write here: .* is not writable"):
        check_output(tmp_path / "d" / "e.npy", suffixes=(".npy",))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_check_output_read_only_directory(tmp_path):
    from embedforge.errors import InputError
    from embedforge.io import check_output

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError, match="not writable"):
            check_output(ro / "e.npy", suffixes=(".npy",))
    finally:
        ro.chmod(0o755)


def test_data_dir_from_the_environment_else_the_development_path_else_a_clear_error(tmp_path, monkeypatch):
    from embedforge.errors import InputError
    from embedforge.io import DATA_ENV, default_data_dir, require_data_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert default_data_dir() is None
    with pytest.raises(InputError, match="set EMBEDFORGE_DATA"):
        require_data_dir(None)
    assert str(require_data_dir("given")) == "given"
    (tmp_path.parent / "shared" / "data").mkdir(parents=True, exist_ok=True)
    try:
        assert default_data_dir() == "../shared/data"
        monkeypatch.setenv(DATA_ENV, "/from/env")
        assert default_data_dir() == "/from/env" and str(require_data_dir(None)) == "/from/env"
        assert str(require_data_dir("explicit")) == "explicit"
    finally:
        (tmp_path.parent / "shared" / "data").rmdir()
        (tmp_path.parent / "shared").rmdir()
