"""Dense Rocchio pseudo-relevance feedback as a second stage: nothing to train, load or encode.

The query's vector plus ``beta`` × the mean vector of its first ``k`` first-stage documents,
renormalised, re-scores the first stage's candidates by cosine (Rocchio 1971; as a dense
retriever's second stage in Li et al. 2022, "Pseudo relevance feedback with deep language models
and dense retrievers: successes and pitfalls"; pyserini's ``--prf-method rocchio``). It uses the
collection's own model and stored document vectors, so its cost is one weighted mean and N dot
products per query.

Ours because the field's implementation (pyserini) needs Java and its own index format; this is a
few lines over what a collection already holds. The defaults (k = 1, beta = 0.5; fused with the
first stage at 0.3 in the README's recipe) were picked on SciFact's held-out train queries in
``bench/rerank_scifact.py --prf`` (section ``rerank_scifact_rerank-prf`` of BENCHMARKS.md): fused,
it was never worse than the adapted hybrid first stage on SciFact, msmarco-5k or dbpedia-5k, +0.006
nDCG@10 on SciFact at depth 50 (beyond noise, small) and +0.014 on msmarco-5k at depth 30; alone it
was slightly worse on SciFact (within noise) and better off-domain.

Use it by name wherever a re-ranker is named: ``search --rerank prf`` (or ``prf:K,BETA``),
``serve --reranker prf`` for ``/v1/search``. It scores a collection's candidates, not free
(query, document) pairs, so ``/v1/rerank`` refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import InputError
from embedforge.vectors import l2_normalize

__all__ = ["PRF_NAME", "BoundFeedback", "RocchioFeedback", "parse_feedback", "rocchio_queries"]

PRF_NAME = "prf"
DEFAULT_K = 1  # feedback documents (picked on SciFact held-out train queries, see the module docstring)
DEFAULT_BETA = 0.5  # their weight against the query's own vector


def rocchio_queries(queries: np.ndarray, feedback: Sequence[np.ndarray], beta: float) -> np.ndarray:
    """Unit Rocchio query vectors: ``queries[i]`` (unit) + ``beta`` × the mean of the unit vectors in
    ``feedback[i]`` (``(k_i, dim)``, possibly empty), renormalised -> ``(n, dim)`` float32."""
    out = l2_normalize(queries, dtype=np.float64)
    for i, docs in enumerate(feedback):
        if len(docs):
            out[i] += beta * l2_normalize(docs, dtype=np.float64).mean(axis=0)
    return l2_normalize(out)


class RocchioFeedback:
    """The ``prf`` second stage before it meets a collection: its ``k`` and ``beta``.

    :func:`embedforge.query.search_collection` binds it (:meth:`bind`) to the collection's query
    and document vectors; its feedback documents are the first ``k`` re-scored candidates, so the
    re-rank depth must be at least ``k`` (refused there otherwise). On its own it cannot score (query, document) texts (:meth:`predict`
    refuses), which is why ``/v1/rerank`` cannot use it.
    """

    method = "rocchio-feedback"
    needs_collection = True

    def __init__(self, k: int = DEFAULT_K, beta: float = DEFAULT_BETA) -> None:
        if isinstance(k, bool) or not isinstance(k, int | float) or not math.isfinite(k) or int(k) != k or k < 1:
            raise InputError(f"prf: k (feedback documents) must be a positive integer, got {k}")
        if not math.isfinite(beta) or beta < 0:
            raise InputError(f"prf: beta (the feedback's weight) must be a finite number >= 0, got {beta}")
        self.k = int(k)
        self.beta = float(beta)

    @property
    def name(self) -> str:
        return PRF_NAME if (self.k, self.beta) == (DEFAULT_K, DEFAULT_BETA) else f"{PRF_NAME}:{self.k},{self.beta:g}"

    def __repr__(self) -> str:
        return f"RocchioFeedback(k={self.k}, beta={self.beta:g})"

    def predict(self, pairs: Any, **kwargs: Any) -> np.ndarray:
        raise InputError("prf (Rocchio feedback) re-scores a collection's own candidates with its stored vectors; it cannot "
                         "score free (query, document) pairs: use it to search a collection (search --rerank prf, /v1/search), "
                         "not for /v1/rerank")

    def bind(self, query_vectors: Callable[[Sequence[str]], np.ndarray],
             row_vectors: Callable[[np.ndarray], np.ndarray]) -> BoundFeedback:
        """Ready to score rows: ``query_vectors(texts)`` gives the first stage's (unit) query vectors,
        ``row_vectors(rows)`` the collection's stored document vectors."""
        return BoundFeedback(self, query_vectors, row_vectors)


class BoundFeedback:
    """:class:`RocchioFeedback` bound to a collection; :func:`embedforge.rerank.model.rerank_candidates`
    calls :meth:`score_rows` with every query's candidates in first-stage order, so each query's
    feedback documents are its first ``k`` rows there."""

    method = RocchioFeedback.method
    needs_collection = True

    def __init__(self, feedback: RocchioFeedback, query_vectors: Callable[[Sequence[str]], np.ndarray],
                 row_vectors: Callable[[np.ndarray], np.ndarray]) -> None:
        self.feedback = feedback
        self.query_vectors = query_vectors
        self.row_vectors = row_vectors

    def predict(self, pairs: Any, **kwargs: Any) -> np.ndarray:
        return self.feedback.predict(pairs, **kwargs)

    def score_rows(self, queries: Sequence[str], rows: np.ndarray, text: Callable[[int], str], *, batch_size: int = 32) -> np.ndarray:
        """Cosine of ``queries[i]``'s Rocchio vector with collection row ``rows[i]`` -> (n,) float32.

        A query's feedback rows are the first ``k`` of its pairs (the first stage's best); the same
        query text twice has the same candidates, so its pairs can be pooled."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros(0, dtype=np.float32)
        unique = list(dict.fromkeys(queries))
        at = {q: i for i, q in enumerate(unique)}
        firsts: dict[str, list[int]] = {q: [] for q in unique}
        for q, r in zip(queries, rows.tolist(), strict=True):
            if len(firsts[q]) < self.feedback.k:
                firsts[q].append(r)
        needed = np.unique(np.concatenate([rows, np.array([r for q in unique for r in firsts[q]], dtype=np.int64)]))
        vectors = np.asarray(self.row_vectors(needed), dtype=np.float32)
        where = {int(r): i for i, r in enumerate(needed)}
        qv = rocchio_queries(self.query_vectors(unique), [vectors[[where[r] for r in firsts[q]]] for q in unique], self.feedback.beta)
        dv = l2_normalize(vectors[[where[int(r)] for r in rows]], dtype=np.float64)
        return np.einsum("ij,ij->i", qv[[at[q] for q in queries]].astype(np.float64), dv).astype(np.float32)


def parse_feedback(name: str) -> RocchioFeedback | None:
    """``prf`` or ``prf:K,BETA`` as a re-ranker name -> :class:`RocchioFeedback`; anything else -> None
    (a model). A file or folder of that name in the working directory is a model, not this."""
    name = str(name)
    if name != PRF_NAME and not name.startswith(PRF_NAME + ":"):
        return None
    if Path(name).exists():
        return None
    if name == PRF_NAME:
        return RocchioFeedback()
    parts = name[len(PRF_NAME) + 1 :].split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        k, beta = float(parts[0]), float(parts[1])
    except ValueError:
        raise InputError(f"re-ranker {name!r}: expected 'prf' or 'prf:K,BETA' (feedback documents, their weight), "
                         f"e.g. 'prf:{DEFAULT_K},{DEFAULT_BETA:g}'") from None
    return RocchioFeedback(int(k) if k.is_integer() else k, beta)  # type: ignore[arg-type]  # a fractional k is refused there
