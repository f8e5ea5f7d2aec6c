"""``embedforge mine | dedupe | cluster | map`` end to end with the tiny random model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from embedforge.cli import main

TEXTS = [
    "my card has not arrived yet",
    "the exchange rate for euros is wrong",
    "why was I charged a fee on my statement",
    "my card has not arrived yet",  # exact duplicate of line 1
    "cash withdrawal still pending at the atm",
    "how do I top up my account",
    "the exchange rate for euros is wrong",  # exact duplicate of line 2
    "I want to close my account",
]


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_mine_top_k_writes_the_core_pairs(tiny_model_dir, tiny_model, corpus, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from embedforge.encode import encode
    from embedforge.mine import paraphrase_mining_embeddings

    out = tmp_path / "pairs.tsv"
    code, stdout, _ = run(capsys, "mine", "--model", str(tiny_model_dir), "--input", str(corpus), "--output", str(out),
                          "--top-k", "2")
    assert code == 0 and "pairs among 8 texts" in stdout
    rows = list(csv.reader(out.open(encoding="utf-8"), delimiter="\t"))
    assert rows[0] == ["score", "i", "j", "text_i", "text_j"]
    i, j, s = paraphrase_mining_embeddings(encode(tiny_model, TEXTS), top_k=2)
    assert [(int(r[1]), int(r[2])) for r in rows[1:]] == list(zip(i.tolist(), j.tolist(), strict=True))
    assert np.allclose([float(r[0]) for r in rows[1:]], s, atol=1e-4)
    assert all(r[3] == TEXTS[int(r[1])] and r[4] == TEXTS[int(r[2])] for r in rows[1:])
    assert rows[1][1:3] in (["0", "3"], ["1", "6"])  # identical texts score 1.0, first


def test_mine_threshold(tiny_model_dir, corpus, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "pairs.tsv"
    code, _, _ = run(capsys, "mine", "--model", str(tiny_model_dir), "--input", str(corpus), "--output", str(out),
                     "--threshold", "0.9999")
    assert code == 0
    rows = list(csv.reader(out.open(encoding="utf-8"), delimiter="\t"))[1:]
    assert {(r[1], r[2]) for r in rows} == {("0", "3"), ("1", "6")}
    with pytest.raises(SystemExit) as exc:  # --threshold and --top-k exclude each other
        main(["mine", "--model", "x", "--input", str(corpus), "--output", str(out), "--threshold", "0.5", "--top-k", "3"])
    assert exc.value.code == 2


def test_dedupe_writes_corpus_and_report(tiny_model_dir, corpus, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out, report = tmp_path / "deduped.txt", tmp_path / "report.jsonl"
    code, stdout, _ = run(capsys, "dedupe", "--model", str(tiny_model_dir), "--input", str(corpus), "--output", str(out),
                          "--report", str(report))
    assert code == 0 and "kept 6 of 8 texts; removed 2 in 2 groups" in stdout
    assert out.read_text(encoding="utf-8").splitlines() == [t for i, t in enumerate(TEXTS) if i not in (3, 6)]
    groups = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    assert [(g["kept"], g["removed"]) for g in groups] == [(0, [3]), (1, [6])]
    assert groups[0]["kept_text"] == TEXTS[0] and groups[0]["scores"] == [1.0]


def test_cluster_writes_one_line_per_text(tiny_model_dir, corpus, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out, summary = tmp_path / "clusters.jsonl", tmp_path / "summary.json"
    code, stdout, _ = run(capsys, "cluster", "--model", str(tiny_model_dir), "--input", str(corpus), "--output",
                          str(out), "--k", "3", "--summary", str(summary))
    assert code == 0 and "8 texts in 3 clusters" in stdout
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in rows] == list(range(8)) and [r["text"] for r in rows] == TEXTS
    assert {r["cluster"] for r in rows} == {0, 1, 2}
    assert rows[0]["cluster"] == rows[3]["cluster"] and rows[1]["cluster"] == rows[6]["cluster"]
    info = json.loads(summary.read_text())
    assert info["k"] == 3 and sum(c["size"] for c in info["clusters"]) == 8
    assert all(c["keywords"] and c["examples"] for c in info["clusters"])


def test_map_writes_html_and_png(tiny_model_dir, corpus, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    html, png = tmp_path / "map.html", tmp_path / "map.png"
    code, stdout, _ = run(capsys, "map", "--model", str(tiny_model_dir), "--input", str(corpus), "--output", str(html),
                          "--png", str(png), "--k", "2", "--projection", "pca")
    assert code == 0 and "PCA projection" in stdout
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and TEXTS[4] in page
    assert png.read_bytes()[:4] == b"\x89PNG"


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "command, name, content, extra, message",
    [
        ("cluster", "few.txt", "a b\nc d\ne f\n", ["--k", "5"], "k=5 clusters need at least 5 texts, got 3"),
        ("cluster", "one.txt", "just one text\n", [], "at least 2 texts, got 1"),
        ("map", "same.txt", "same\nsame\nsame\n", [], "all 3 texts are identical"),
        ("cluster", "rows.jsonl", '{"text": "fine"}\n{"text": 42}\n', [], "rows.jsonl:2: column 'text' holds int"),
        ("dedupe", "blank.txt", "one\n\nthree\n", [], "blank.txt:2: empty line"),
        ("mine", "missing.txt", None, [], "missing.txt: no such file"),
        ("mine", "ok.txt", "a\nb\n", ["--top-k", "0"], "--top-k must be >= 1"),
        ("cluster", "ok.txt", "a\nb\nc\n", ["--method", "community", "--k", "2"], "finds its own number"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(  # type: ignore[no-untyped-def]
    command, name, content, extra, message, tiny_model_dir, tmp_path, capsys
) -> None:
    path = tmp_path / name if content is None else _write(tmp_path, name, content)
    suffix = {"mine": ".tsv", "dedupe": ".txt", "cluster": ".jsonl", "map": ".html"}[command]
    out = tmp_path / "out" / f"result{suffix}"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, command, "--model", str(tiny_model_dir), "--input", str(path), "--output", str(out), *extra)
    assert code == 2
    error_lines = [line for line in err.splitlines() if "error" in line]
    assert len(error_lines) == 1 and error_lines[0].startswith(f"embedforge {command}: error: ")
    assert message in error_lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before


def test_wrong_output_type_fails_before_work(corpus, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "mine", "--model", "no-such-model-dir/", "--input", str(corpus), "--output",
                       str(tmp_path / "pairs.csv"))
    assert code == 2 and "expected .tsv" in err and err.count("\n") == 1
