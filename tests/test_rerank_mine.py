"""Hard negatives for ``train-reranker`` from a BEIR folder: from BM25's top N, or (``--mine-model``) from the
hybrid first stage's top N — the candidates the re-ranker will have to order at search time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedforge.cli import main
from embedforge.errors import InputError
from embedforge.models import load_model
from embedforge.query import BM25Index
from embedforge.rerank.train import RerankerConfig, mine_beir_pairs

WORDS = ["protein", "cell", "gene", "virus", "cancer", "brain", "heart", "lung", "blood", "bone", "skin", "liver"]


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    """40 documents, 10 judged queries (one relevant document each) that share words with many documents."""
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(WORDS[(i * j) % len(WORDS)] for j in range(1, 6)) + f" note {i}"}
            for i in range(40)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": f"q{q}", "text": f"{WORDS[q % len(WORDS)]} {WORDS[(q + 3) % len(WORDS)]} note"} for q in range(10)]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{q}\td{3 * q}\t1\n" for q in range(10)))
    return folder


def texts_and_queries(folder: Path) -> tuple[list[str], list[str], list[str]]:
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())}
    qids = sorted(queries)
    return [d["text"] for d in docs], qids, [queries[q] for q in qids]


def pools(rows: np.ndarray, qids: list[str], depth: int) -> dict[str, set[str]]:
    """Per query text's id: the top ``depth`` non-relevant rows' texts' ids (relevant: d{3q})."""
    out = {}
    for qid, r in zip(qids, rows, strict=True):
        relevant = f"d{3 * int(qid[1:])}"
        out[qid] = set(list(dict.fromkeys(f"d{int(x)}" for x in r if x >= 0 and f"d{int(x)}" != relevant))[:depth])
    return out


def negatives_by_query(folder: Path, pairs_first: list[str], pairs_second: list[str], labels: list[float]) -> dict[str, set[str]]:
    texts, qids, qtexts = texts_and_queries(folder)
    doc_id = {t: f"d{i}" for i, t in enumerate(texts)}
    qid_of = dict(zip(qtexts, qids, strict=True))
    out: dict[str, set[str]] = {}
    for q, d, y in zip(pairs_first, pairs_second, labels, strict=True):
        if y == 0.0:
            out.setdefault(qid_of[q], set()).add(doc_id[d.strip()])
    return out


def test_bm25_negatives_come_from_bm25_s_top_n(beir: Path) -> None:
    config = RerankerConfig(negatives=3, mine_depth=5)
    pairs = mine_beir_pairs(beir, "train", config)
    texts, qids, qtexts = texts_and_queries(beir)
    _, rows = BM25Index.build(texts).search(qtexts, 15)
    allowed = pools(rows, qids, 5)
    got = negatives_by_query(beir, pairs.first, pairs.second, pairs.labels)
    assert sum(pairs.labels) == 10 and len(pairs) == 40  # one positive and three negatives per query
    for qid, negs in got.items():
        assert len(negs) == 3 and negs <= allowed[qid], qid
    assert "BM25" in pairs.source


def test_hybrid_negatives_come_from_what_search_mode_hybrid_ranks(beir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The reference is the real search path: the corpus indexed with the model, searched with --mode hybrid."""
    from embedforge.collection import Collection

    config = RerankerConfig(negatives=3, mine_depth=5)
    pairs = mine_beir_pairs(beir, "train", config, str(tiny_model_dir))
    texts, qids, qtexts = texts_and_queries(beir)
    coll_dir = tmp_path / "coll"
    assert main(["index", "--model", str(tiny_model_dir), "--input", str(beir / "corpus.jsonl"), "--collection", str(coll_dir)]) == 0
    hits = Collection.open(coll_dir).search(qtexts, top_k=15, mode="hybrid", model=load_model(tiny_model_dir))
    hybrid = pools(np.array([[int(h.id[1:]) for h in q] for q in hits]), qids, 5)
    bm25 = pools(BM25Index.build(texts).search(qtexts, 15)[1], qids, 5)
    got = negatives_by_query(beir, pairs.first, pairs.second, pairs.labels)
    assert len(pairs) == 40 and sum(pairs.labels) == 10 and set(got) == set(qids)  # every query: one positive, three negatives
    for qid, negs in got.items():
        assert len(negs) == 3 and negs <= hybrid[qid], qid
    assert hybrid != bm25  # the dense half changes which documents are hard: the option is not a no-op here
    assert "hybrid" in pairs.source and str(tiny_model_dir) in pairs.source


def test_cli_mines_hybrid_negatives_from_a_beir_folder(beir: Path, tiny_model_dir: Path, tiny_hf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ce"
    assert main(["train-reranker", "--model", str(tiny_hf_dir), "--train-file", str(beir), "--output", str(out),
                 "--mine-model", str(tiny_model_dir), "--negatives", "2", "--mine-depth", "6", "--max-steps", "1",
                 "--holdout", "0"]) == 0
    manifest = json.loads((out / "embedforge_reranker.json").read_text())
    assert "hybrid" in manifest["source"] and str(tiny_model_dir) in manifest["source"]
    assert manifest["config"]["negatives"] == 2 and manifest["config"]["mine_depth"] == 6 and manifest["pairs"] == 30


def test_a_model_that_cannot_load_is_named(beir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot load the model to mine negatives with"):
        mine_beir_pairs(beir, "train", RerankerConfig(), str(tmp_path / "no-such-model"))


@pytest.mark.parametrize("negatives, depth", [(0, 5), (3, 0)])
def test_bad_counts_are_refused(beir: Path, negatives: int, depth: int) -> None:
    with pytest.raises(InputError, match="at least 1"):
        mine_beir_pairs(beir, "train", RerankerConfig(negatives=negatives, mine_depth=depth))


def test_cli_refuses_mine_model_with_a_pairs_file(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query,document,label\na,b,1\na,c,0\n")
    out = tmp_path / "ce"
    rc = main(["train-reranker", "--model", str(tiny_model_dir), "--train-file", str(pairs), "--output", str(out),
               "--mine-model", str(tiny_model_dir)])
    assert rc != 0 and not out.exists()
    assert "--mine-model mines negatives from a BEIR folder" in capsys.readouterr().err
