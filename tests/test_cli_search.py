"""The CLI as users and the acceptance checks call it: index, search (run file / one query), train-reranker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedforge.cli import main

TEXTS = [
    ("Cats", "Cats purr and chase mice in the garden."),
    ("Rockets", "Rockets launch satellites into orbit."),
    ("Bread", "Bread dough rises in a warm oven."),
    ("Rivers", "Rivers flow into the sea."),
    ("Dogs", "Dogs bark at the postman every morning."),
    ("Volcanoes", "Volcanoes erupt with lava and ash."),
]


@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("beir") / "tiny"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i, (title, text) in enumerate(TEXTS):
            f.write(json.dumps({"_id": f"doc{i}", "title": title, "text": text, "metadata": {"n": i}}) + "\n")
    queries = ["why do cats purr", "satellite orbit launch", "how bread rises", "where rivers flow"]
    with open(root / "queries.jsonl", "w") as f:
        for i, q in enumerate(queries):
            f.write(json.dumps({"_id": f"q{i}", "text": q, "metadata": {}}) + "\n")
    for split in ("train", "test"):
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\tdoc{i}\t1\n" for i in range(4))
        )
    return root


@pytest.fixture(scope="module")
def collection(beir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coll") / "c"
    assert main(["index", "--model", str(tiny_model_dir), "--input", str(beir / "corpus.jsonl"), "--collection", str(out)]) == 0
    return out


def read_run(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_index_keeps_ids_and_titles(collection: Path) -> None:
    from embedforge.collection import Collection

    coll = Collection.open(collection)
    assert len(coll) == len(TEXTS)
    assert coll.get("doc0").text == "Cats. Cats purr and chase mice in the garden."
    assert coll.get("doc0").metadata == {"n": 0, "title": "Cats"}


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_writes_a_trec_run(mode: str, collection: Path, beir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.tsv"
    argv = ["search", "--collection", str(collection), "--queries", str(beir / "queries.jsonl"),
            "--top-k", "3", "--output", str(run), "--mode", mode]
    assert main(argv) == 0
    rows = read_run(run)
    assert {r[0] for r in rows} <= {"q0", "q1", "q2", "q3"}
    assert all(len(r) == 4 for r in rows)
    for qid in {r[0] for r in rows}:
        mine = [r for r in rows if r[0] == qid]
        assert [int(r[2]) for r in mine] == list(range(1, len(mine) + 1)) and len(mine) <= 3
        assert [float(r[3]) for r in mine] == sorted((float(r[3]) for r in mine), reverse=True)
    if mode == "bm25":
        firsts = {r[0]: r[1] for r in rows if r[2] == "1"}
        assert firsts["q0"] == "doc0" and firsts["q1"] == "doc1"


def test_single_query_prints_a_list(collection: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--collection", str(collection), "--query", "cats purr", "--top-k", "2", "--mode", "hybrid"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].lstrip().startswith("1.") and "doc0" in out[0]


def test_errors_exit_2_with_one_line(collection: Path, beir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--collection", str(tmp_path / "nope"), "--query", "x"]) == 2
    assert "not a collection" in capsys.readouterr().err
    assert main(["search", "--collection", str(collection), "--queries", str(beir / "queries.jsonl")]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["search", "--collection", str(collection), "--query", "x", "--where", "[1"]) == 2
    assert main(["index", "--model", "x", "--input", str(beir), "--collection", str(tmp_path / "c"), "--index", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") >= 1


def test_train_reranker_then_rerank(beir: Path, collection: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query,document,label\n" + "".join(
        f"q{i},{t},{int(i % 2 == 0)}\n" for i, (_, t) in enumerate(TEXTS)
    ))
    out = tmp_path / "ce"
    assert main(["train-reranker", "--model", str(tiny_model_dir), "--train-file", str(pairs), "--output", str(out),
                 "--max-steps", "2", "--batch-size", "4", "--max-length", "32"]) == 0
    assert (out / "config.json").is_file() and (out / "embedforge_reranker.json").is_file()
    mined = tmp_path / "ce2"
    assert main(["train-reranker", "--model", str(tiny_model_dir), "--train-file", str(beir), "--output", str(mined),
                 "--max-steps", "1", "--batch-size", "4", "--max-length", "32", "--negatives", "2"]) == 0
    info = json.loads((mined / "embedforge_reranker.json").read_text())
    assert info["pairs"] == 4 * 3 and info["positives"] == 4
    run = tmp_path / "run.tsv"
    assert main(["search", "--collection", str(collection), "--queries", str(beir / "queries.jsonl"), "--top-k", "2",
                 "--output", str(run), "--mode", "hybrid", "--rerank", str(out), "--rerank-top", "4"]) == 0
    assert len(read_run(run)) == 8
