"""The foundation commands as a user calls them: exit codes, one-line errors, no partial output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedforge.cli import main
from embedforge.encode import encode
from embedforge.models import load_model


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_writes_the_same_vectors_as_encode(capsys, tmp_path, tiny_model_dir):
    texts = tmp_path / "t.txt"
    texts.write_text("first text\nsecond text\n")
    code, out, _ = run(capsys, "embed", "--model", str(tiny_model_dir), "--input", str(texts),
                       "--output", str(tmp_path / "e.npy"))
    assert code == 0 and "embedded 2 texts" in out
    saved = np.load(tmp_path / "e.npy")
    assert saved.dtype == np.float32 and saved.shape == (2, 32)
    np.testing.assert_allclose(saved, encode(load_model(tiny_model_dir), ["first text", "second text"]), atol=1e-6)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "t.txt: no such file"),
        (b"", "t.txt: empty file"),
        (b"ok\n\nok\n", "t.txt:2: empty line"),
        (b"ok\n\xfe\n", "t.txt:2: not valid UTF-8"),
    ],
)
def test_embed_bad_input_exits_2_with_one_line_and_no_output(capsys, tmp_path, tiny_model_dir, content, expected):
    texts = tmp_path / "t.txt"
    if content is not None:
        texts.write_bytes(content)
    code, _, err = run(capsys, "embed", "--model", str(tiny_model_dir), "--input", str(texts),
                       "--output", str(tmp_path / "e.npy"))
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "e.npy").exists()


def test_not_a_model_directory(capsys, tmp_path):
    (tmp_path / "t.txt").write_text("x\n")
    (tmp_path / "notmodel").mkdir()
    code, _, err = run(capsys, "embed", "--model", str(tmp_path / "notmodel"), "--input", str(tmp_path / "t.txt"),
                       "--output", str(tmp_path / "e.npy"))
    assert code == 2 and "is not a model directory" in err


def test_train_sup_wrong_columns_exit_2_and_nothing_written(capsys, tmp_path, tiny_hf_dir):
    f = tmp_path / "p.csv"
    f.write_text("a,b\nx,y\n")
    code, _, err = run(capsys, "train", "--model", str(tiny_hf_dir), "--mode", "sup", "--train-file", str(f),
                       "--output", str(tmp_path / "out"))
    assert code == 2 and "p.csv: missing pair columns" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_train_bad_hyperparameter_is_a_clear_error(capsys, tmp_path, tiny_hf_dir):
    f = tmp_path / "t.txt"
    f.write_text("a\nb\n")
    code, _, err = run(capsys, "train", "--model", str(tiny_hf_dir), "--train-file", str(f), "--output",
                       str(tmp_path / "o"), "--batch-size", "1")
    assert code == 2 and "batch_size" in err


def test_train_unsup_as_written_in_the_issue(capsys, tmp_path, tiny_hf_dir):
    f = tmp_path / "t.txt"
    f.write_text("\n".join(f"text number {i}" for i in range(20)) + "\n")
    code, out, _ = run(capsys, "train", "--model", str(tiny_hf_dir), "--mode", "unsup", "--train-file", str(f),
                       "--output", str(tmp_path / "o"), "--max-steps", "2", "--batch-size", "8", "--lr", "1e-4",
                       "--max-length", "16", "--pooler", "mean", "--no-progress")
    assert code == 0 and "trained simcse-unsup (mean pooling) for 2 steps" in out
    manifest = json.loads((tmp_path / "o" / "embedforge.json").read_text())
    assert manifest["training"]["max_length"] == 16 and manifest["max_seq_length"] == 16


def test_evaluate_writes_the_ten_keys(capsys, tmp_path, tiny_model_dir, data_dir):
    code, out, _ = run(capsys, "evaluate", "--model", str(tiny_model_dir), "--data-dir", str(data_dir),
                       "--json", str(tmp_path / "r.json"))
    assert code == 0 and "STS evaluation" in out
    results = json.loads((tmp_path / "r.json").read_text())
    assert list(results) == ["sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr", "avg", "alignment",
                             "uniformity"]


def test_evaluate_missing_data_dir(capsys, tmp_path, tiny_model_dir):
    code, _, err = run(capsys, "evaluate", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path / "nope"))
    assert code == 2 and "nope" in err


def test_no_command_prints_help(capsys):
    assert main([]) == 2


def _defaults(*argv: str):  # type: ignore[no-untyped-def]
    from embedforge.cli import build_parser

    return build_parser().parse_args(list(argv))


def test_every_train_option_defaults_to_the_config_default():
    import dataclasses

    from embedforge import config as config_module
    from embedforge.cli.core import TRAIN_FIELDS

    train_config = getattr(config_module, "TrainConfig", None) or config_module.SimCSEConfig
    args = _defaults("train", "--model", "m", "--train-file", "f", "--output", "o")
    defaults = train_config()
    for dest, field in TRAIN_FIELDS:
        assert getattr(args, dest) == getattr(defaults, field), (dest, field)
    assert args.allow_duplicates is not defaults.no_duplicates
    # every field a user might want to set from the command line is mapped (the rest are library-only)
    mapped = {field for _, field in TRAIN_FIELDS} | {"no_duplicates"}
    library_only = {"weight_decay", "gather_across_processes"}
    assert {f.name for f in dataclasses.fields(train_config)} - mapped <= library_only
    parser_choices = {a.dest: a.choices for a in _train_actions()}
    assert tuple(parser_choices["mode"]) == config_module.MODES
    assert tuple(parser_choices["pooler"]) == config_module.POOLERS


def _train_actions():  # type: ignore[no-untyped-def]
    from embedforge.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]._actions  # type: ignore[union-attr]


def test_every_adapt_option_defaults_to_the_config_default():
    from embedforge.adapt import AdaptConfig, parse_budget
    from embedforge.cli.adapt import ADAPT_FIELDS, format_budget

    args = _defaults("adapt", "--model", "m", "--corpus", "c", "--output", "o")
    defaults = AdaptConfig()
    for dest, field in ADAPT_FIELDS:
        assert getattr(args, dest) == getattr(defaults, field), (dest, field)
    assert parse_budget(args.budget) == defaults.budget_seconds
    assert args.candidates is None  # None = every candidate in AdaptConfig().candidates
    for seconds in (1200.0, 90.0, 5400.0, 3600.0, 61.0):
        assert parse_budget(format_budget(seconds)) == seconds


def test_help_texts_show_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.05)" in text and "default: 3e-05)" in text and "EMBEDFORGE_DATA" not in text
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "$EMBEDFORGE_DATA" in capsys.readouterr().out


def test_evaluate_without_a_data_dir_names_the_variable(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared/data beside it
    monkeypatch.delenv("EMBEDFORGE_DATA", raising=False)
    code, _, err = run(capsys, "evaluate", "--model", "minilm")
    assert code == 2 and "EMBEDFORGE_DATA" in err and err.count("\n") == 1
