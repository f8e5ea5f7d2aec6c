"""Query building blocks (embedforge.query): fusion arithmetic, metadata filters, BM25, hybrid and re-ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedforge.errors import InputError
from embedforge.query import BM25Index, fuse, match_metadata, rrf_fuse, score_fuse
from embedforge.rerank.model import rerank_scores

DOCS = [
    "The cat runs after the mouse in the garden.",
    "Rockets launched into orbit carry satellites.",
    "Bread dough rises slowly in a warm oven.",
    "A running cat is faster than a walking dog.",
    "The river flows into the sea near the old harbour.",
]


def test_rrf_matches_the_formula() -> None:
    fused = rrf_fuse([[3, 1, -1], [1, 7]], k=60)
    assert fused[1] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[3] == pytest.approx(1 / 61)
    assert fused[7] == pytest.approx(1 / 62)
    assert -1 not in fused


def test_score_fusion_min_max() -> None:
    fused = score_fuse([{1: 10.0, 2: 5.0, 3: 0.0}, {2: 0.9, 4: 0.1}])
    assert fused == pytest.approx({1: 1.0, 2: 0.5 + 1.0, 3: 0.0, 4: 0.0})
    assert score_fuse([{5: 2.0}]) == {5: 1.0}, "a single candidate normalises to 1"
    with pytest.raises(InputError):
        score_fuse([{1: 1.0}], weights=[1.0, 2.0])


@pytest.mark.parametrize("method", ["rrf", "score"])
def test_fuse_shapes_and_order(method: str) -> None:
    dense = (np.array([[0.9, 0.8, 0.1]], np.float32), np.array([[0, 1, 2]]))
    sparse = (np.array([[7.0, 3.0, -np.inf]], np.float32), np.array([[1, 4, -1]]))
    scores, rows = fuse(dense, sparse, 5, method)
    assert scores.shape == rows.shape == (1, 5)
    assert rows[0, 0] == 1, "found by both retrievers -> first"
    assert set(rows[0, :4]) == {0, 1, 2, 4} and rows[0, 4] == -1
    assert np.all(np.diff(scores[0, :4]) <= 0)
    with pytest.raises(InputError, match="unknown fusion"):
        fuse(dense, sparse, 5, "max")


def test_match_metadata_operators() -> None:
    meta = {"lang": "en", "year": 2015, "tags": "x"}
    assert match_metadata(meta, {"lang": "en"})
    assert not match_metadata(meta, {"lang": "de"})
    assert match_metadata(meta, {"lang": ["de", "en"]})
    assert match_metadata(meta, {"year": {"$gte": 2010, "$lt": 2020}})
    assert not match_metadata(meta, {"year": {"$gt": 2015}})
    assert match_metadata(meta, {"missing": {"$ne": 1}})
    assert not match_metadata(meta, {"missing": 1})
    assert not match_metadata(meta, {"lang": {"$gt": 3}}), "type mismatch is no match, not a crash"
    assert match_metadata(meta, {"year": {"$nin": [1, 2]}, "lang": {"$in": ["en"]}})
    with pytest.raises(InputError, match="unknown filter operator"):
        match_metadata(meta, {"year": {"$near": 1}})


def test_bm25_stems_ranks_masks_and_roundtrips(tmp_path: Path) -> None:
    index = BM25Index.build(DOCS)
    scores, rows = index.search(["running cats", "orbit", "zebra"], 3)
    assert set(rows[0, :2]) == {0, 3}, "stemming: running/runs, cats/cat"
    assert rows[1, 0] == 1 and rows[1, 1] == -1, "only documents sharing a term"
    assert (rows[2] == -1).all() and np.isneginf(scores[2]).all()
    mask = np.array([False, True, True, True, True])
    assert set(index.search(["running cats"], 3, mask=mask)[1][0]) == {3, -1}
    index.save(tmp_path / "bm25")
    again = BM25Index.load(tmp_path / "bm25")
    np.testing.assert_array_equal(again.search(["running cats"], 3)[1], rows[:1])


@pytest.fixture(scope="module")
def cross_encoder(tiny_hf_dir: Path):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_hf_dir), num_labels=1, device="cpu")


def test_rerank_reorders_by_cross_encoder_scores(tmp_path: Path, tiny_model_dir: Path, tiny_model, cross_encoder) -> None:
    from embedforge.collection import Collection

    coll = Collection.create(tmp_path / "c", str(tiny_model_dir), model=tiny_model)
    coll.add([{"id": f"d{i}", "text": t} for i, t in enumerate(DOCS)])
    query = "cat and mouse"
    plain = coll.search([query], top_k=5, mode="hybrid", model=tiny_model)[0]
    reranked = coll.search([query], top_k=3, mode="hybrid", model=tiny_model, rerank=cross_encoder, rerank_top=5)[0]
    ce = rerank_scores(cross_encoder, query, [h.text for h in plain])
    expected = [plain[i].id for i in np.argsort(-ce, kind="stable")[:3]]
    assert [h.id for h in reranked] == expected
    np.testing.assert_allclose([h.score for h in reranked], np.sort(ce)[::-1][:3], rtol=1e-5)
    assert rerank_scores(cross_encoder, query, []).shape == (0,)


def test_hybrid_uses_both_retrievers(tmp_path: Path, tiny_model_dir: Path, tiny_model) -> None:
    from embedforge.collection import Collection

    coll = Collection.create(tmp_path / "c", str(tiny_model_dir), model=tiny_model)
    coll.add([{"id": f"d{i}", "text": t} for i, t in enumerate(DOCS)])
    bm25 = coll.search(["satellites orbit"], top_k=1, mode="bm25")[0]
    assert bm25[0].id == "d1"
    for fusion in ("rrf", "score"):
        hybrid = coll.search(["satellites orbit"], top_k=5, mode="hybrid", fusion=fusion, model=tiny_model)[0]
        assert len(hybrid) == 5 and "d1" in [h.id for h in hybrid[:2]]
    coll.save()
    again = Collection.open(coll.path)  # BM25 cached with the saved version
    assert (again._version_dir / "bm25").is_dir()
    assert again.search(["satellites orbit"], top_k=1, mode="bm25")[0][0].id == "d1"
