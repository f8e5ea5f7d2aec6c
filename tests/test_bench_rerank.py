"""The re-rank benchmark's own arithmetic (bench/rerank_scifact.py): the verdict words, the cache identities
that let scores computed on another machine be found, and the fusion that re-orders only the top N."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
rerank_scifact = pytest.importorskip("rerank_scifact")


def test_verdict_reads_the_interval() -> None:
    assert rerank_scifact.verdict(0.001, 0.03) == "better beyond noise"
    assert rerank_scifact.verdict(-0.03, -0.001) == "worse beyond noise"
    assert rerank_scifact.verdict(-0.01, 0.02) == "within noise"


def test_cross_encoder_identity_ignores_where_the_folder_is(tmp_path: Path) -> None:
    a, b, c = tmp_path / "x" / "ce", tmp_path / "y" / "ce", tmp_path / "z" / "ce"
    for d, lr in ((a, 5e-5), (b, 5e-5), (c, 2e-5)):
        d.mkdir(parents=True)
        (d / "embedforge_reranker.json").write_text(json.dumps({"config": {"lr": lr}}))
    assert rerank_scifact.ce_identity(str(a)) == rerank_scifact.ce_identity(str(b))  # same folder name and manifest
    assert rerank_scifact.ce_identity(str(a)) != rerank_scifact.ce_identity(str(c))  # another training
    assert rerank_scifact.ce_identity("") == ""


def test_bi_encoder_identity_includes_prefixes_and_length() -> None:
    args = argparse.Namespace(bi_max_length=256)
    plain = rerank_scifact.BiEncoder(None, "e5")
    prefixed = rerank_scifact.BiEncoder(None, "e5", "query: ", "passage: ")
    assert rerank_scifact.bi_identity(plain, args) != rerank_scifact.bi_identity(prefixed, args)
    assert rerank_scifact.bi_identity(prefixed, args) != rerank_scifact.bi_identity(prefixed, argparse.Namespace(bi_max_length=128))


def split(n_rows: int = 6) -> SimpleNamespace:
    rows = np.array([[5, 3, 1, 0, 2, 4][:n_rows]], dtype=np.int64)
    scores = np.linspace(1.0, 0.5, n_rows, dtype=np.float32)[None, :]  # first stage: descending
    return SimpleNamespace(rows=rows, scores=scores)


def test_reorder_moves_only_the_top_depth() -> None:
    s = split()
    second = np.array([[0.1, 0.9, 0.5, 0.7, 0.0, 0.0]], dtype=np.float32)  # prefers rows 3, then 0, then 1
    _, rows = rerank_scifact.reorder(s, second, 4, None)
    assert rows[0].tolist() == [3, 0, 1, 5, 2, 4]  # the top 4 by the second stage, the rest in first-stage order
    _, rows = rerank_scifact.reorder(s, second, 4, 0.0)  # all weight on the first stage: unchanged
    assert rows[0].tolist() == [5, 3, 1, 0, 2, 4]


def test_combine_is_the_weighted_sum_of_min_max_scores() -> None:
    s = split()
    a = np.array([[0.1, 0.9, 0.5, 0.7, 0.2, 0.3]], dtype=np.float32)
    b = np.array([[4.0, 0.0, 2.0, 1.0, 3.0, 5.0]], dtype=np.float32)
    got = rerank_scifact.combine(s, [a, b], 4, (0.2, 0.5, 0.3))

    def mm(x: np.ndarray) -> np.ndarray:
        return (x - x.min()) / (x.max() - x.min())

    want = 0.2 * mm(s.scores[0, :4].astype(np.float64)) + 0.5 * mm(a[0, :4].astype(np.float64)) + 0.3 * mm(b[0, :4].astype(np.float64))
    assert got[0] == pytest.approx(want)


def test_bi_models_take_their_prefixes_in_order() -> None:
    def args(models: list[str] | None, q: list[str] | None = None, d: list[str] | None = None, note: str | None = None) -> argparse.Namespace:
        return argparse.Namespace(bi_model=models, bi_query_prefix=q, bi_doc_prefix=d, bi_note=note)

    assert rerank_scifact.bi_specs(args(None)) == []
    assert rerank_scifact.bi_specs(args(["e5", "mpnet"])) == [("e5", "", ""), ("mpnet", "", "")]
    assert rerank_scifact.bi_specs(args(["e5", "mpnet"], ["q: "], ["p: "])) == [("e5", "q: ", "p: "), ("mpnet", "q: ", "p: ")]
    assert rerank_scifact.bi_specs(args(["e5", "mpnet"], ["query: ", ""], ["passage: ", ""])) == [
        ("e5", "query: ", "passage: "), ("mpnet", "", "")]
    with pytest.raises(ValueError, match="--bi-doc-prefix given 2 times for 3 --bi-model"):
        rerank_scifact.bi_specs(args(["a", "b", "c"], None, ["x", "y"]))
    with pytest.raises(ValueError, match="--bi-note describes one --bi-model; 2 given"):
        rerank_scifact.bi_specs(args(["a", "b"], note="adapt candidate"))


def test_rocchio_adds_the_mean_of_the_first_k_documents_and_renormalises() -> None:
    rng = np.random.default_rng(0)
    dvec = rng.normal(size=(6, 4)).astype(np.float32)
    dvec /= np.linalg.norm(dvec, axis=1, keepdims=True)
    qvec = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=np.float32)
    rows = np.array([[5, 3, 1, 0], [2, -1, -1, -1]], dtype=np.int64)  # the second query has one candidate only
    got = rerank_scifact.rocchio_queries(qvec, dvec, rows, 2, 0.5)
    for i, top in enumerate(([5, 3], [2])):
        want = qvec[i] + 0.5 * dvec[top].mean(axis=0)
        assert got[i] == pytest.approx(want / np.linalg.norm(want), abs=1e-6)
    assert rerank_scifact.rocchio_queries(qvec, dvec, rows, 2, 0.0) == pytest.approx(qvec)  # beta 0: the query itself


def test_vector_options_cost_one_pass_whatever_the_depth() -> None:
    assert rerank_scifact.vector_option("bi-multilingual-e5-small")
    assert rerank_scifact.vector_option("prf-k1-b0.5")
    assert not rerank_scifact.vector_option("ce-minilm")
