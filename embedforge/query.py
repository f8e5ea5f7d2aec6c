"""Query building blocks: the ``Hit`` type, BM25, rank fusion, metadata filters, the query pipeline.

These work on arrays and lists. :func:`search_collection` is handed a collection (anything with
the public methods of :class:`embedforge.collection.Collection` it calls) and never imports it:
the collection imports this module, not the other way round. BM25 is bm25s (with the PyStemmer
English stemmer); re-ranking scores through :func:`embedforge.rerank.model.pair_scores`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedforge.errors import InputError
from embedforge.fusion import RRF_K, rrf_fuse, score_fuse
from embedforge.rerank.model import DEFAULT_RERANK_DEPTH, load_cross_encoder, rerank_candidates

__all__ = [
    "Hit",
    "MODES",
    "FUSIONS",
    "DEFAULT_FUSION",
    "RRF_K",
    "BM25Index",
    "rrf_fuse",
    "score_fuse",
    "fuse",
    "match_metadata",
    "where_from_json",
    "Searchable",
    "search_collection",
]

logger = logging.getLogger(__name__)

MODES = ("dense", "bm25", "hybrid")
FUSIONS = ("rrf", "score")
# Min-max score fusion is the default: bench/search_scifact.py (bundled MiniLM + bm25s stemmed) measured
# nDCG@10 score / RRF: SciFact 0.729 / 0.718, msmarco-5k 0.794 / 0.790, dbpedia-5k 0.467 / 0.473.
DEFAULT_FUSION = "score"
CANDIDATES = 100  # per-retriever candidates fused in hybrid mode (at least top_k)


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, its score under the chosen mode, text and metadata."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- BM25


def _stemmer() -> Any:
    try:
        import Stemmer
    except ImportError as err:
        raise InputError("BM25 needs PyStemmer: pip install 'embedforge[search]'") from err
    return Stemmer.Stemmer("english")


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError as err:
        raise InputError("BM25 needs bm25s: pip install 'embedforge[search]'") from err
    return bm25s


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    tokens = _bm25s().tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)
    return [list(t) for t in tokens]


class BM25Index:
    """Okapi BM25 (bm25s, Lucene variant, k1 = 1.5, b = 0.75) over English-stemmed, stop-worded tokens.

    score(q, d) = Σ_{t ∈ q} idf(t) · tf(t, d) (k1 + 1) / (tf(t, d) + k1 (1 − b + b |d| / avgdl)),
    idf(t) = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5)) (Robertson & Zaragoza 2009; bm25s docs).
    """

    def __init__(self, retriever: Any, size: int) -> None:
        self._retriever = retriever
        self.size = size

    @classmethod
    def build(cls, texts: Sequence[str]) -> BM25Index:
        bm25s = _bm25s()
        retriever = bm25s.BM25()
        tokens = _tokenize(texts)
        retriever.index(tokens, show_progress=False)
        return cls(retriever, len(texts))

    def search(
        self, queries: Sequence[str], k: int, *, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: (scores (n, k) float32, rows (n, k) int64), -1 padded.

        Documents sharing no term with the query (score 0) are not returned. ``mask`` (bool per
        row) restricts the results to the rows where it is True.
        """
        n = len(queries)
        out_s = np.full((n, k), -np.inf, dtype=np.float32)
        out_r = np.full((n, k), -1, dtype=np.int64)
        for i, tokens in enumerate(_tokenize(queries)):
            ids = self._retriever.get_tokens_ids(tokens)
            if not ids:
                continue
            scores = np.asarray(self._retriever.get_scores_from_ids(ids), dtype=np.float32)  # (size,)
            if mask is not None:
                scores = np.where(mask, scores, 0.0)
            kk = min(k, int((scores > 0).sum()))
            if not kk:
                continue
            top = np.argpartition(-scores, kk - 1)[:kk]
            top = top[np.lexsort((top, -scores[top]))]
            out_s[i, :kk], out_r[i, :kk] = scores[top], top
        return out_s, out_r

    def save(self, path: str | os.PathLike[str]) -> None:
        self._retriever.save(str(path), show_progress=False)
        (Path(path) / "embedforge_bm25.json").write_text(json.dumps({"size": self.size}) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BM25Index:
        info = json.loads((Path(path) / "embedforge_bm25.json").read_text())
        return cls(_bm25s().BM25.load(str(path), show_progress=False), int(info["size"]))


# ---------------------------------------------------------------- fusion


def fuse(
    dense: tuple[np.ndarray, np.ndarray], sparse: tuple[np.ndarray, np.ndarray], k: int, method: str = DEFAULT_FUSION
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse two (scores, rows) results row by row; returns the fused top-``k`` in the same shape."""
    if method not in FUSIONS:
        raise InputError(f"unknown fusion {method!r}; expected one of {', '.join(FUSIONS)}")
    n = dense[1].shape[0]
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_r = np.full((n, k), -1, dtype=np.int64)
    for i in range(n):
        if method == "rrf":
            fused = rrf_fuse([dense[1][i], sparse[1][i]])
        else:
            runs = [
                {int(r): float(s) for s, r in zip(scores[i], rows[i], strict=True) if r >= 0}
                for scores, rows in (dense, sparse)
            ]
            fused = score_fuse(runs)
        best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        for j, (row, score) in enumerate(best):
            out_s[i, j], out_r[i, j] = score, row
    return out_s, out_r


# ---------------------------------------------------------------- metadata filters

_OPS = {
    "$eq": lambda v, a: v == a,
    "$ne": lambda v, a: v != a,
    "$gt": lambda v, a: v is not None and v > a,
    "$gte": lambda v, a: v is not None and v >= a,
    "$lt": lambda v, a: v is not None and v < a,
    "$lte": lambda v, a: v is not None and v <= a,
    "$in": lambda v, a: v in a,
    "$nin": lambda v, a: v not in a,
}


def where_from_json(text: str | None, example: str = '{"lang": "en"}', option: str = "--where") -> dict[str, Any] | None:
    """A metadata filter given as JSON text (``--where``), or None; one clear InputError otherwise."""
    if not text:
        return None
    try:
        where = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{option} is not valid JSON: {err.msg}") from None
    if not isinstance(where, dict):
        raise InputError(f"{option} must be a JSON object, e.g. '{example}'")
    return where


def match_metadata(metadata: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` satisfies every condition in ``where`` (all must hold).

    ``{"lang": "en"}`` equality; ``{"lang": ["en", "de"]}`` membership; ``{"year": {"$gte": 2000,
    "$lt": 2010}}`` with operators ``$eq $ne $gt $gte $lt $lte $in $nin``. A missing field
    matches only ``$ne`` / ``$nin``.
    """
    for name, cond in where.items():
        value = metadata.get(name)
        if isinstance(cond, Mapping):
            for op, arg in cond.items():
                if op not in _OPS:
                    raise InputError(f"unknown filter operator {op!r} on {name!r}; expected one of {', '.join(_OPS)}")
                try:
                    if not _OPS[op](value, arg):
                        return False
                except TypeError:
                    return False  # e.g. comparing a string with a number: no match
        elif isinstance(cond, list | tuple | set):
            if value not in cond:
                return False
        elif value != cond:
            return False
    return True


# ---------------------------------------------------------------- the query pipeline


class Searchable(Protocol):
    """What :func:`search_collection` needs of a collection (:class:`embedforge.collection.Collection` has it)."""

    path: Any

    def __len__(self) -> int: ...

    def mask(self, where: Mapping[str, Any] | None) -> np.ndarray | None: ...

    def bm25(self) -> BM25Index: ...

    def encode_queries(self, queries: Sequence[str], model: Any = None) -> np.ndarray: ...

    def search_vectors(
        self, queries: np.ndarray, k: int, *, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def text(self, row: int) -> str: ...

    def hit(self, row: int, score: float) -> Hit: ...

    # optional, for rerank="prf" only: ``row_vectors(rows)``, the stored document vectors of these rows



def _bind_feedback(feedback: Any, collection: Searchable, queries: list[str], qvec: np.ndarray | None, model: Any) -> Any:
    """Rocchio feedback (``prf``) bound to ``collection``: the first stage's query vectors (encoded
    here for a BM25 first stage) and the collection's stored document vectors (``collection.row_vectors``)."""
    if not hasattr(collection, "row_vectors"):
        raise InputError("prf (Rocchio feedback) needs the collection's stored document vectors, which this collection does not give")
    at = {q: i for i, q in enumerate(queries)}

    def query_vectors(texts: Sequence[str]) -> np.ndarray:
        if qvec is not None:
            return qvec[[at[t] for t in texts]]
        return collection.encode_queries(list(texts), model)

    return feedback.bind(query_vectors, collection.row_vectors)


def search_collection(
    collection: Searchable,
    queries: Sequence[str],
    *,
    top_k: int = 10,
    mode: str = "dense",
    model: Any = None,
    where: Mapping[str, Any] | None = None,
    fusion: str = DEFAULT_FUSION,
    rerank: Any = None,
    rerank_top: int = DEFAULT_RERANK_DEPTH,
    rerank_depth: int | None = None,
    rerank_weights: Sequence[float] | None = None,
) -> list[list[Hit]]:
    """Retrieve (dense / BM25 / hybrid), filter by metadata, optionally re-rank; ``top_k`` hits per query.

    Hybrid takes the top ``max(CANDIDATES, depth)`` of each retriever and fuses them. With a
    cross-encoder, exactly the top ``rerank_depth`` first-stage candidates are re-scored (all
    queries' pairs in one batched pass) and re-sorted by the cross-encoder's score, which becomes
    their hit score; candidates below the depth keep the first stage's order under them
    (:func:`embedforge.rerank.model.rerank_candidates`). ``rerank_top`` is the older name of
    ``rerank_depth``, used when ``rerank_depth`` is None. ``rerank`` may be a list of scorers, and
    ``rerank_weights`` (the first stage's, then one per scorer) fuses their scores with the first
    stage's instead of replacing it (min-max score fusion over the re-scored candidates). An
    embedding model as re-ranker uses the document vectors the collection stored for it, if any
    (``collection.stored_reranker``), and encodes only the queries.
    """
    if isinstance(queries, str):
        raise InputError("search() takes a list of queries, not a single string; wrap it in a list")
    if mode not in MODES:
        raise InputError(f"unknown search mode {mode!r}; expected one of {', '.join(MODES)}")
    if fusion not in FUSIONS:
        raise InputError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
    if int(top_k) != top_k or top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k}")
    if not len(collection):
        raise InputError("the collection is empty; add documents first", collection.path)
    queries = list(queries)
    if not queries:
        return []
    if rerank is not None:
        rerank = [r if hasattr(r, "predict") else load_cross_encoder(r) for r in (rerank if isinstance(rerank, list | tuple) else [rerank])]
        stored = getattr(collection, "stored_reranker", None)  # a collection that stored a bi-encoder re-ranker's document vectors
        if stored is not None:
            rerank = [stored(r) for r in rerank]
    rerank_depth = rerank_top if rerank_depth is None else rerank_depth
    if rerank is not None and (int(rerank_depth) != rerank_depth or rerank_depth < 1):
        raise InputError(f"the re-rank depth must be a positive integer, got {rerank_depth}")
    depth = max(top_k, rerank_depth) if rerank is not None else top_k
    mask = collection.mask(where)
    qvec: np.ndarray | None = None
    if mode == "bm25":
        scores, rows = collection.bm25().search(queries, depth, mask=mask)
    else:
        wide = max(depth, CANDIDATES) if mode == "hybrid" else depth
        qvec = collection.encode_queries(queries, model)
        dense = collection.search_vectors(qvec, wide, mask=mask)
        if mode == "dense":
            scores, rows = dense
        else:
            sparse = collection.bm25().search(queries, wide, mask=mask)
            scores, rows = fuse(dense, sparse, depth, fusion)
    candidates = [[(int(r), float(s)) for r, s in zip(rows[i], scores[i], strict=True) if r >= 0] for i in range(len(queries))]
    if rerank is not None:
        feedback = [r for r in rerank if getattr(r, "needs_collection", False)]  # Rocchio feedback: this collection's vectors
        if feedback:
            k = max(r.k for r in feedback)
            if k > rerank_depth:  # its feedback documents are among the re-scored candidates
                raise InputError(f"prf takes its {k} feedback documents from the re-scored candidates; the re-rank depth "
                                 f"({rerank_depth}) must be at least {k}")
            rerank = [_bind_feedback(r, collection, queries, qvec, model) if getattr(r, "needs_collection", False) else r for r in rerank]
        candidates = rerank_candidates(rerank, queries, candidates, collection.text, rerank_depth, weights=rerank_weights)
    return [[collection.hit(r, s) for r, s in cands[:top_k]] for cands in candidates]
