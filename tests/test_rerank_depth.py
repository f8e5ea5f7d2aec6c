"""--rerank-depth N: exactly the top N first-stage candidates are re-scored (whatever top-k), the
rest keep their first-stage order below them, and the pairs of all queries are scored together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedforge.errors import InputError
from embedforge.rerank.model import rerank_candidates


class CountingCE:
    """A stand-in cross-encoder: score = number of shared words, counts the pairs and calls."""

    def __init__(self, inner: Any = None) -> None:
        self.inner, self.pairs, self.calls = inner, 0, 0

    def predict(self, pairs: list[tuple[str, str]], **kwargs: Any) -> np.ndarray:
        self.calls += 1
        self.pairs += len(pairs)
        if self.inner is not None:
            return np.asarray(self.inner.predict(pairs, **kwargs))
        return np.array([len(set(q.split()) & set(d.split())) + 0.01 * len(d) for q, d in pairs], dtype=np.float32)


TEXTS = [f"doc {i} " + " ".join(f"w{j}" for j in range(i % 5)) for i in range(40)]


def first_stage(n_queries: int, n: int) -> list[list[tuple[int, float]]]:
    rng = np.random.default_rng(0)
    return [[(int(r), float(n - k)) for k, r in enumerate(rng.permutation(len(TEXTS))[:n])] for _ in range(n_queries)]


def test_exactly_depth_pairs_are_scored_and_the_rest_keep_their_order() -> None:
    ce = CountingCE()
    queries = ["w1 w2", "w3", "doc w4"]
    cands = first_stage(len(queries), 10)
    out = rerank_candidates(ce, queries, cands, TEXTS.__getitem__, depth=4)
    assert ce.pairs == 3 * 4 and ce.calls == 1  # one batched pass over every query's top 4
    for q, before, after in zip(queries, cands, out, strict=True):
        assert sorted(r for r, _ in after[:4]) == sorted(r for r, _ in before[:4])  # the same top 4, re-ordered
        expected = sorted(before[:4], key=lambda c: -len(set(q.split()) & set(TEXTS[c[0]].split())) - 0.01 * len(TEXTS[c[0]]))
        assert [r for r, _ in after[:4]] == [r for r, _ in expected]
        assert [r for r, _ in after[4:]] == [r for r, _ in before[4:]]  # below the depth: first-stage order
        scores = [s for _, s in after]
        assert all(a >= b for a, b in zip(scores, scores[1:], strict=False))  # scores fall with rank (run files)
    deeper = CountingCE()
    rerank_candidates(deeper, queries, first_stage(3, 3), TEXTS.__getitem__, depth=100)
    assert deeper.pairs == 3 * 3  # never more than the candidates there are
    with pytest.raises(InputError, match="depth"):
        rerank_candidates(ce, queries, cands, TEXTS.__getitem__, depth=-1)


def test_batched_equals_one_query_at_a_time(tiny_hf_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(tiny_hf_dir), num_labels=1, device="cpu")
    queries = ["w1 w2", "w3 doc", "doc 7", "w0"]
    cands = first_stage(len(queries), 6)
    together = rerank_candidates(model, queries, cands, TEXTS.__getitem__, depth=5)
    for i, q in enumerate(queries):
        alone = rerank_candidates(model, [q], [cands[i]], TEXTS.__getitem__, depth=5)[0]
        assert [r for r, _ in alone] == [r for r, _ in together[i]]
        np.testing.assert_allclose([s for _, s in alone], [s for _, s in together[i]], rtol=1e-5, atol=1e-6)


def test_search_rescoring_is_independent_of_top_k(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, tiny_hf_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    from embedforge.collection import Collection

    coll = Collection.create(tmp_path / "c", str(tiny_model_dir), model=tiny_model)
    coll.add([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    queries = ["w1 w2", "doc w3"]
    plain = coll.search(queries, top_k=12, mode="hybrid", model=tiny_model)
    ce = CountingCE(CrossEncoder(str(tiny_hf_dir), num_labels=1, device="cpu"))
    reranked = coll.search(queries, top_k=12, mode="hybrid", model=tiny_model, rerank=ce, rerank_top=3)
    assert ce.pairs == 2 * 3  # depth 3, not max(top_k, depth) = 12
    for p, r in zip(plain, reranked, strict=True):
        assert len(r) == 12
        assert {h.id for h in r[:3]} == {h.id for h in p[:3]}
        assert [h.id for h in r[3:]] == [h.id for h in p[3:]]
