"""Every command that writes a file checks its outputs before any work (issue 14, item 3).

An output equal to an input, a wrong suffix or an unwritable place is one line on stderr and exit 2,
before a model loads or data is read, and the input is left byte for byte as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedforge.cli import main


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test if a command gets as far as loading a model."""
    import embedforge.models

    loaded: list[str] = []

    def refuse(name: object, *args: object, **kwargs: object) -> None:
        loaded.append(str(name))
        raise AssertionError(f"a model was loaded ({name}) before the output check")

    monkeypatch.setattr(embedforge.models, "load_model", refuse)
    return loaded


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"embedforge {command}: error: ") and "Traceback" not in err, err
    return lines[0]


TEXTS = "first text\nsecond text\nthird text\n"

# command, input file name, its content, how the output is passed (the input's own path for these)
SAME_AS_INPUT = [
    ("embed", "t.npy", TEXTS, ["--output"]),
    ("mine", "t.tsv", "text\nfirst\nsecond\n", ["--output"]),
    ("dedupe", "t.txt", TEXTS, ["--output"]),
    ("dedupe", "t.jsonl", '{"text": "a"}\n{"text": "b"}\n', ["--output", "OTHER.txt", "--report"]),
    ("cluster", "t.jsonl", '{"text": "a"}\n{"text": "b"}\n', ["--output"]),
    ("cluster", "t.json", "{}", ["--output", "OTHER.jsonl", "--summary"]),
    ("map", "t.html", "<p>mine</p>\n", ["--output"]),
    ("map", "t.png", "not really a png", ["--output", "OTHER.html", "--png"]),
]


@pytest.mark.parametrize(("command", "name", "content", "how"), SAME_AS_INPUT)
def test_an_output_equal_to_the_input_is_refused_and_the_input_kept(command, name, content, how, tmp_path, capsys):  # type: ignore[no-untyped-def]
    src = tmp_path / name
    src.write_text(content)
    before = src.read_bytes()
    output = [str(tmp_path / a) if a.isupper() else a for a in how] + [str(src)]
    code, err = run(capsys, command, "--model", "minilm", "--input", str(src), *output)
    assert code == 2 and "is also an input" in _one_error_line(err, command)
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_hard_link_or_symlink_to_the_input_is_the_input(tmp_path, capsys):  # type: ignore[no-untyped-def]
    src = tmp_path / "t.txt"
    src.write_text(TEXTS)
    os.link(src, tmp_path / "hard.txt")
    os.symlink(src, tmp_path / "soft.txt")
    for alias in ("hard.txt", "soft.txt"):
        code, err = run(capsys, "dedupe", "--model", "minilm", "--input", str(src), "--output", str(tmp_path / alias))
        assert code == 2 and "is also an input" in _one_error_line(err, "dedupe")
    assert src.read_text() == TEXTS


def test_two_outputs_of_one_command_may_not_be_the_same_file(tmp_path, capsys):  # type: ignore[no-untyped-def]
    src = tmp_path / "t.txt"
    src.write_text(TEXTS)
    same = str(tmp_path / "out.jsonl")
    code, err = run(capsys, "dedupe", "--model", "minilm", "--input", str(src), "--output", same, "--report", same)
    assert code == 2 and "--report: is also an input" in _one_error_line(err, "dedupe")


def test_train_and_adapt_outputs_may_not_replace_their_inputs(tmp_path, capsys):  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    data.mkdir()
    train = data / "train.txt"
    train.write_text(TEXTS)
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text("{}")
    for argv, message in [
        (["train", "--model", str(base), "--train-file", str(train), "--output", str(train)], "is a file; expected a directory"),
        (["train", "--model", str(base), "--train-file", str(train), "--output", str(data)], "holds an input"),
        (["train", "--model", str(base), "--train-file", str(train), "--output", str(base)], "is also an input"),
        (["adapt", "--model", str(base), "--corpus", str(train), "--output", str(data)], "holds an input"),
        (["adapt", "--model", str(base), "--corpus", str(train), "--output", str(base)], "is also an input"),
        (["adapt", "--model", str(base), "--corpus", str(train), "--output", str(tmp_path / "out"), "--report", str(data)],
         "--report: holds an input"),
    ]:
        code, err = run(capsys, *argv)
        assert code == 2 and message in _one_error_line(err, argv[0])
    assert train.read_text() == TEXTS and sorted(p.name for p in base.iterdir()) == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base-model", "data"]


@pytest.mark.parametrize(
    ("command", "extra", "expected"),
    [
        ("embed", ["--output", "e.csv"], "expected .npy"),
        ("mine", ["--output", "p.csv"], "expected .tsv"),
        ("dedupe", ["--output", "d.csv"], "expected .txt or .jsonl"),
        ("dedupe", ["--output", "d.txt", "--report", "r.txt"], "--report: unsupported output type '.txt'; expected .jsonl"),
        ("cluster", ["--output", "c.json"], "expected .jsonl"),
        ("cluster", ["--output", "c.jsonl", "--summary", "s.txt"], "expected .json"),
        ("map", ["--output", "m.png"], "expected .html or .htm"),
        ("map", ["--output", "m.html", "--png", "m.jpg"], "expected .png"),
    ],
)
def test_a_wrong_suffix_is_refused_before_any_work(command, extra, expected, tmp_path, capsys):  # type: ignore[no-untyped-def]
    src = tmp_path / "t.txt"
    src.write_text(TEXTS)
    extra = [a if a.startswith("--") else str(tmp_path / a) for a in extra]
    code, err = run(capsys, command, "--model", "minilm", "--input", str(src), *extra)
    assert code == 2 and expected in _one_error_line(err, command)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_evaluate_json_suffix_is_checked_before_the_model_loads(tmp_path, capsys):  # type: ignore[no-untyped-def]
    code, err = run(capsys, "evaluate", "--model", "minilm", "--data-dir", str(tmp_path), "--json", str(tmp_path / "r.txt"))
    assert code == 2 and "--json: unsupported output type '.txt'; expected .json" in _one_error_line(err, "evaluate")


COMMANDS_WITH_A_FILE_OUTPUT = [
    ("embed", "e.npy"), ("mine", "p.tsv"), ("dedupe", "d.txt"), ("cluster", "c.jsonl"), ("map", "m.html"),
]


@pytest.mark.parametrize(("command", "name"), COMMANDS_WITH_A_FILE_OUTPUT)
def test_an_unwritable_output_fails_before_the_model_loads(command, name, tmp_path, capsys, monkeypatch, no_model_loading):  # type: ignore[no-untyped-def]
    src = tmp_path / "t.txt"
    src.write_text(TEXTS)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    code, err = run(capsys, command, "--model", "minilm", "--input", str(src), "--output", str(blocker / "sub" / name))
    assert code == 2 and "not-a-dir is not a directory" in _one_error_line(err, command)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    code, err = run(capsys, command, "--model", "minilm", "--input", str(src), "--output", str(ro / name))
    assert code == 2 and "cannot write here" in _one_error_line(err, command)
    assert no_model_loading == [] and list(ro.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_fails_before_the_model_loads(tmp_path, capsys):  # type: ignore[no-untyped-def]
    src = tmp_path / "t.txt"
    src.write_text(TEXTS)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = run(capsys, "embed", "--model", "minilm", "--input", str(src), "--output", str(ro / "e.npy"))
    finally:
        ro.chmod(0o755)
    assert code == 2 and "not writable" in _one_error_line(err, "embed")


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("t.jsonl", b'{"text": "ok"}\n{"text": "bad \\ud800"}\n', "t.jsonl:2: text holds a lone UTF-16 surrogate"),
        ("t.csv", b"text\nok\nbad \xed\xa0\x80\n", "t.csv:3: not valid UTF-8"),
        ("t.txt", b"ok\nbad \xed\xa0\x80\n", "t.txt:2: not valid UTF-8"),
    ],
)
def test_a_lone_surrogate_is_one_line_with_file_and_line(name, content, where, tmp_path, capsys):  # type: ignore[no-untyped-def]
    src = tmp_path / name
    src.write_bytes(content)
    code, err = run(capsys, "embed", "--model", "minilm", "--input", str(src), "--output", str(tmp_path / "e.npy"))
    assert code == 2 and where in _one_error_line(err, "embed")
    assert not (tmp_path / "e.npy").exists()


def test_an_overlong_csv_field_is_one_line_with_file_and_line(tmp_path, capsys):  # type: ignore[no-untyped-def]
    from embedforge.io import MAX_TEXT_CHARS

    src = tmp_path / "t.csv"
    src.write_text("text\nok\n\"" + "x" * (MAX_TEXT_CHARS + 1) + "\"\n")
    code, err = run(capsys, "dedupe", "--model", "minilm", "--input", str(src), "--output", str(tmp_path / "d.txt"))
    assert code == 2 and "t.csv:3: a field longer than 1,000,000 characters" in _one_error_line(err, "dedupe")


def test_a_full_disk_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):  # type: ignore[no-untyped-def]
    import errno

    import embedforge.cli.explore

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "e.npy"))

    monkeypatch.setattr(embedforge.cli.explore, "check_output", full)  # fails where the first write would
    src = tmp_path / "t.txt"
    src.write_text(TEXTS)
    code, err = run(capsys, "dedupe", "--model", "minilm", "--input", str(src), "--output", str(tmp_path / "e.txt"))
    assert code == 2 and "e.npy: No space left on device" in _one_error_line(err, "dedupe")
