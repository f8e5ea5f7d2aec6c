"""Mine a corpus for pairs: paraphrases, near-duplicates, translations (bitext).

Everything here works on embedding arrays; the model-taking functions at the bottom only encode
and call them. Scores are cosine similarities (rows are L2-normalised here, so any embeddings
work). Pairs come back as three parallel arrays ``(i, j, score)`` sorted by score, highest first.

Two search paths, one contract (:func:`knn`, shaped like faiss's ``knn``), both from
:mod:`embedforge.index` (this module builds no index of its own):

* ``"exact"`` — :func:`embedforge.index.exact_search` over chunks of query rows: the reference,
  used up to :data:`EXACT_LIMIT` vectors. Unlike sentence-transformers' ``paraphrase_mining_embeddings``
  (a Python heap over every candidate pair) the de-duplication of pairs is vectorised in numpy,
  and the threshold mode computes only the upper triangle of the similarity matrix.
* ``"faiss"`` — an inverted-file :class:`embedforge.index.faiss.FaissIndex` (``IVF{nlist},Flat``,
  inner product; ``nlist = 4·√n`` lists trained on a seeded sample, ``nprobe = 16`` of them
  searched): approximate, tested against the exact path for recall. Needs ``faiss-cpu``
  (``pip install 'embedforge[search]'``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from embedforge.errors import InputError
from embedforge.index import exact_search
from embedforge.vectors import as_embeddings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedforge.index.faiss import FaissIndex

__all__ = [
    "EXACT_LIMIT",
    "Method",
    "Margin",
    "knn",
    "paraphrase_mining_embeddings",
    "mine_bitext",
    "dedupe",
    "paraphrase_mining",
    "bitext_mining",
]

logger = logging.getLogger(__name__)

Method = Literal["auto", "exact", "faiss"]
Margin = Literal["ratio", "distance", "absolute"]
Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # i (m,) int64, j (m,) int64, score (m,) float32

EXACT_LIMIT = 100_000  # "auto" searches exactly up to this many vectors, with faiss IVF above
BLOCK_ELEMENTS = 1 << 25  # default chunk: rows x columns of one score block (128 MB of float32)
IVF_LISTS_PER_SQRT_N = 4  # nlist = 4·√n inverted lists (faiss' usual 4–16·√n)
IVF_TRAIN_PER_LIST = 40  # k-means trains on 40 points per list (a seeded sample; faiss wants >= 39)
IVF_TRAIN_ITERATIONS = 10  # k-means iterations (faiss' default 25 costs 2.5x for no recall here)
IVF_NPROBE = 16  # lists visited per query: recall 0.999 of exact top-10 pairs on 30k clustered vectors


def _use_faiss(method: Method, n: int) -> bool:
    if method not in ("auto", "exact", "faiss"):
        raise InputError(f"unknown method {method!r}; expected auto, exact or faiss")
    if method == "exact" or (method == "auto" and n <= EXACT_LIMIT):
        return False
    from embedforge.index.faiss import import_faiss

    try:
        import_faiss()
    except InputError:
        if method == "faiss":
            raise
        logger.info("faiss is not installed; searching %d vectors exactly", n)
        return False
    return True


def _chunk_rows(n_cols: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    return max(16, BLOCK_ELEMENTS // max(n_cols, 1))


def _progress(total: int, show: bool | None, desc: str):  # type: ignore[no-untyped-def]
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=not (total > 20_000 if show is None else show))


def _exact_chunked(xq: np.ndarray, xb: np.ndarray, k: int, exclude_self: bool, rows: int, show: bool | None):
    """:func:`embedforge.index.exact_search` over ``rows`` queries at a time (bounded memory, a progress bar)."""
    keys = np.arange(len(xb), dtype=np.int64)  # (n_base,) the ids are row numbers
    scores = np.empty((len(xq), k), dtype=np.float32)
    ids = np.empty((len(xq), k), dtype=np.int64)
    with _progress(len(xq), show, "nearest neighbours") as bar:
        for start in range(0, len(xq), rows):
            stop = min(start + rows, len(xq))
            own = keys[start:stop] if exclude_self else None  # each query's own row is never its neighbour
            scores[start:stop], ids[start:stop] = exact_search(xq[start:stop], xb, keys, k, exclude=own)
            bar.update(stop - start)
    return scores, ids


def _faiss_ivf(xb: np.ndarray) -> FaissIndex:
    """An ``IVF{nlist},Flat`` :class:`~embedforge.index.faiss.FaissIndex` over ``xb`` (ids = row numbers),
    trained on a seeded sample of :data:`IVF_TRAIN_PER_LIST` points per list."""
    from embedforge.index.faiss import FaissIndex

    n, d = xb.shape
    nlist = max(1, min(int(IVF_LISTS_PER_SQRT_N * math.sqrt(n)), n // IVF_TRAIN_PER_LIST))
    index = FaissIndex(d, f"IVF{nlist},Flat;nprobe={min(nlist, IVF_NPROBE)}")
    rng = np.random.default_rng(0)
    sample = xb[np.sort(rng.choice(n, size=min(n, IVF_TRAIN_PER_LIST * nlist), replace=False))]
    index.train(sample, iterations=IVF_TRAIN_ITERATIONS, seed=0)
    index.add(xb, np.arange(n, dtype=np.int64))
    return index


def _faiss_knn(xq: np.ndarray, xb: np.ndarray, k: int, exclude_self: bool):
    index = _faiss_ivf(xb)
    extra = 1 if exclude_self else 0
    scores, ids = index.search(xq, k + extra)  # (nq, k+extra), -inf / -1 padded
    if exclude_self:
        scores[ids == np.arange(len(xq))[:, None]] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    ids = np.where(np.isfinite(scores), ids, -1)
    return np.ascontiguousarray(scores), np.ascontiguousarray(ids, dtype=np.int64)


def knn(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    *,
    exclude_self: bool = False,
    method: Method = "auto",
    chunk_size: int | None = None,
    show_progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar rows of ``base`` for each query row.

    Returns ``(scores (nq, k) float32, ids (nq, k) int64)``, best first; where fewer than ``k``
    neighbours exist the row is padded with score ``-inf`` and id ``-1``. ``exclude_self`` says
    ``queries`` *is* ``base`` and drops each row's own index (not merely identical vectors).
    """
    xq, xb = as_embeddings(queries, "queries", normalize=True), as_embeddings(base, "base", normalize=True)
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if xq.shape[1] != xb.shape[1]:
        raise InputError(f"queries have dimension {xq.shape[1]}, base has {xb.shape[1]}")
    if exclude_self and len(xq) != len(xb):
        raise InputError("exclude_self needs queries and base to be the same rows")
    available = len(xb) - (1 if exclude_self else 0)
    kk = min(k, available)
    scores = np.full((len(xq), k), -np.inf, dtype=np.float32)
    ids = np.full((len(xq), k), -1, dtype=np.int64)
    if kk <= 0 or len(xq) == 0:
        return scores, ids
    if _use_faiss(method, len(xb)):
        s, i = _faiss_knn(xq, xb, kk, exclude_self)
    else:
        s, i = _exact_chunked(xq, xb, kk, exclude_self, _chunk_rows(len(xb), chunk_size), show_progress)
    scores[:, :kk], ids[:, :kk] = s, i
    return scores, ids


def _unique_pairs(i: np.ndarray, j: np.ndarray, score: np.ndarray, n: int) -> Pairs:
    """Canonical ``i < j`` pairs, each once with its highest score, sorted by score desc then (i, j)."""
    keep = (j >= 0) & (i != j) & np.isfinite(score)
    a, b = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    s = score[keep].astype(np.float32)
    order = np.lexsort((b, a, -s))
    a, b, s = a[order], b[order], s[order]
    _, first = np.unique(a.astype(np.int64) * n + b, return_index=True)
    first.sort()  # keeps the sorted order; the first occurrence of a pair is its best score
    return a[first].astype(np.int64), b[first].astype(np.int64), s[first]


def _threshold_pairs_exact(x: np.ndarray, threshold: float, rows: int, show: bool | None) -> Pairs:
    import torch

    t = torch.from_numpy(x)
    out_i, out_j, out_s = [], [], []
    with torch.inference_mode(), _progress(len(x), show, "pairs above threshold") as bar:
        for start in range(0, len(x), rows):
            stop = min(start + rows, len(x))
            block = t[start:stop] @ t[start:].T  # (rows, n - start): columns before `start` are done
            local_row = torch.arange(block.shape[0])[:, None]  # global row = start + local_row
            block.masked_fill_(torch.arange(block.shape[1])[None, :] <= local_row, -2.0)  # keep col > row
            r, c = torch.nonzero(block >= threshold, as_tuple=True)
            out_i.append(r.numpy() + start)
            out_j.append(c.numpy() + start)
            out_s.append(block[r, c].numpy())
            bar.update(stop - start)
    return _unique_pairs(np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s), len(x))


def _threshold_pairs_faiss(x: np.ndarray, threshold: float) -> Pairs:
    lims, scores, ids = _faiss_ivf(x).range_search(x, float(threshold) - 1e-6)
    rows = np.repeat(np.arange(len(x), dtype=np.int64), np.diff(lims).astype(np.int64))
    keep = scores >= threshold
    return _unique_pairs(rows[keep], ids[keep].astype(np.int64), scores[keep], len(x))


def paraphrase_mining_embeddings(
    emb: np.ndarray,
    *,
    top_k: int | None = 10,
    threshold: float | None = None,
    max_pairs: int | None = None,
    method: Method = "auto",
    chunk_size: int | None = None,
    show_progress: bool | None = None,
) -> Pairs:
    """Similar pairs among the rows of ``emb`` (n, dim).

    * ``top_k=K`` (default 10): the union of every row's K nearest other rows — the pairs
      sentence-transformers' ``paraphrase_mining_embeddings(top_k=K)`` returns.
    * ``top_k=None, threshold=T``: every pair with cosine ≥ T (for dedupe; a low T on a large
      corpus means ~n²/2 pairs). With faiss this is a range search over the IVF index, so pairs
      in unvisited lists can be missed.
    * both: the top-K pairs that also score ≥ T.

    Returns ``(i, j, score)``: int64, int64, float32 arrays of length m, ``i < j``, each pair
    once, sorted by score (highest first; ties by ``i`` then ``j``); ``max_pairs`` keeps the best
    that many. ``method``: ``"exact"``, ``"faiss"`` (approximate) or ``"auto"`` (faiss above
    :data:`EXACT_LIMIT` rows when installed). ``chunk_size``: query rows per score block.
    """
    x = as_embeddings(emb, normalize=True)
    if top_k is None and threshold is None:
        raise InputError("give top_k, threshold or both")
    if top_k is not None and top_k < 1:
        raise InputError(f"top_k must be >= 1, got {top_k}")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise InputError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    if max_pairs is not None and max_pairs < 0:
        raise InputError(f"max_pairs must be >= 0, got {max_pairs}")
    n = len(x)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    if top_k is None:
        assert threshold is not None
        if _use_faiss(method, n):
            pairs = _threshold_pairs_faiss(x, threshold)
        else:
            pairs = _threshold_pairs_exact(x, threshold, _chunk_rows(n, chunk_size), show_progress)
    else:
        scores, ids = knn(
            x, x, top_k, exclude_self=True, method=method, chunk_size=chunk_size, show_progress=show_progress
        )
        rows = np.repeat(np.arange(n, dtype=np.int64), scores.shape[1])
        pairs = _unique_pairs(rows, ids.reshape(-1), scores.reshape(-1), n)
        if threshold is not None:
            keep = pairs[2] >= threshold
            pairs = (pairs[0][keep], pairs[1][keep], pairs[2][keep])
    if max_pairs is not None:
        pairs = (pairs[0][:max_pairs], pairs[1][:max_pairs], pairs[2][:max_pairs])
    return pairs


def mine_bitext(
    src_emb: np.ndarray,
    tgt_emb: np.ndarray,
    *,
    k: int = 4,
    margin: Margin = "ratio",
    threshold: float | None = None,
    method: Method = "auto",
) -> Pairs:
    """Translation pairs between two embedded lists by margin-based scoring (Artetxe & Schwenk 2019).

    With NN_k(x) the k nearest targets of source x (and NN_k(y) the k nearest sources of target y)::

        denom(x, y) = Σ_{z ∈ NN_k(x)} cos(x, z) / 2k  +  Σ_{z ∈ NN_k(y)} cos(y, z) / 2k
        ratio:    margin = cos(x, y) / denom(x, y)
        distance: margin = cos(x, y) − denom(x, y)
        absolute: margin = cos(x, y)

    The margin discounts "hub" vectors that are close to everything. Candidates are each
    source's best target among its k nearest and each target's best source among its k nearest
    (the paper's "max" strategy); taken by margin, highest first, keeping a pair only while
    neither side is used yet, so the result is one-to-one. ``threshold`` drops pairs whose
    margin is below it (ratio margins near 1 are ambiguous; LASER filters around 1.06).

    Returns ``(src_index, tgt_index, margin)`` arrays sorted by margin, highest first.
    """
    if margin not in ("ratio", "distance", "absolute"):
        raise InputError(f"unknown margin {margin!r}; expected ratio, distance or absolute")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    x = as_embeddings(src_emb, "source embeddings", normalize=True)
    y = as_embeddings(tgt_emb, "target embeddings", normalize=True)
    if x.shape[1] != y.shape[1]:
        raise InputError(f"source embeddings have dimension {x.shape[1]}, target {y.shape[1]}")
    if len(x) == 0 or len(y) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    fwd_s, fwd_i = knn(x, y, min(k, len(y)), method=method)  # (n_src, k)
    bwd_s, bwd_i = knn(y, x, min(k, len(x)), method=method)  # (n_tgt, k)
    mean_x, mean_y = fwd_s.mean(axis=1), bwd_s.mean(axis=1)  # (n_src,), (n_tgt,)

    def score(cos: np.ndarray, xi: np.ndarray, yi: np.ndarray) -> np.ndarray:
        denom = (mean_x[xi] + mean_y[yi]) / 2
        if margin == "ratio":
            return cos / np.where(np.abs(denom) < 1e-12, 1e-12, denom)
        return cos - denom if margin == "distance" else cos

    src_rows = np.arange(len(x))[:, None]
    fwd_m = score(fwd_s, np.broadcast_to(src_rows, fwd_i.shape), fwd_i)  # (n_src, k)
    tgt_rows = np.arange(len(y))[:, None]
    bwd_m = score(bwd_s, bwd_i, np.broadcast_to(tgt_rows, bwd_i.shape))  # (n_tgt, k)
    best_f, best_b = fwd_m.argmax(axis=1), bwd_m.argmax(axis=1)
    cand_src = np.concatenate([np.arange(len(x)), bwd_i[np.arange(len(y)), best_b]])
    cand_tgt = np.concatenate([fwd_i[np.arange(len(x)), best_f], np.arange(len(y))])
    cand_m = np.concatenate([fwd_m[np.arange(len(x)), best_f], bwd_m[np.arange(len(y)), best_b]])
    order = np.lexsort((cand_tgt, cand_src, -cand_m))
    used_src, used_tgt = np.zeros(len(x), bool), np.zeros(len(y), bool)
    keep: list[int] = []
    for c in order:
        s, t = cand_src[c], cand_tgt[c]
        if used_src[s] or used_tgt[t] or (threshold is not None and cand_m[c] < threshold):
            continue
        used_src[s] = used_tgt[t] = True
        keep.append(int(c))
    idx = np.asarray(keep, dtype=np.int64)
    return cand_src[idx].astype(np.int64), cand_tgt[idx].astype(np.int64), cand_m[idx].astype(np.float32)


def dedupe(
    texts: Sequence[str], emb: np.ndarray, threshold: float = 0.95, *, method: Method = "auto"
) -> tuple[np.ndarray, list[list[int]]]:
    """Near-duplicate groups: connected components of the graph whose edges are pairs with cosine
    ≥ ``threshold``, plus identical strings (merged whatever their embeddings).

    Grouping is transitive (a≈b and b≈c put a, b, c together even if a and c score lower).
    Returns ``(kept, groups)``: ``kept`` the ascending int64 indices that remain (the first text
    of every group, and every text in no group); ``groups`` each merged group (≥ 2 members) as
    ascending indices, its first member the one kept, groups ordered by that first member.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(texts)
    if np.asarray(emb).ndim != 2 or len(emb) != n:
        raise InputError(f"got {n} texts but embeddings of shape {np.asarray(emb).shape}")
    i, j, _ = paraphrase_mining_embeddings(emb, top_k=None, threshold=threshold, method=method)
    first_seen: dict[str, int] = {}
    same_i, same_j = [], []
    for idx, text in enumerate(texts):
        if text in first_seen:
            same_i.append(first_seen[text])
            same_j.append(idx)
        else:
            first_seen[text] = idx
    rows = np.concatenate([i, np.asarray(same_i, dtype=np.int64)])
    cols = np.concatenate([j, np.asarray(same_j, dtype=np.int64)])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    _, first = np.unique(component, return_index=True)  # the first index of each component
    kept = np.sort(first).astype(np.int64)
    members: dict[int, list[int]] = {}
    for idx, comp in enumerate(component.tolist()):
        members.setdefault(comp, []).append(idx)
    groups = sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])
    return kept, groups


def _encode(model: SentenceTransformer, texts: Sequence[str], batch_size: int) -> np.ndarray:
    from embedforge.encode import encode

    return encode(model, texts, batch_size=batch_size, normalize=True)


def paraphrase_mining(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    top_k: int | None = 10,
    threshold: float | None = None,
    max_pairs: int | None = None,
    method: Method = "auto",
    batch_size: int = 32,
) -> Pairs:
    """Encode ``texts`` and call :func:`paraphrase_mining_embeddings` (same return value)."""
    emb = _encode(model, texts, batch_size)
    return paraphrase_mining_embeddings(emb, top_k=top_k, threshold=threshold, max_pairs=max_pairs, method=method)


def bitext_mining(
    model: SentenceTransformer,
    src_texts: Sequence[str],
    tgt_texts: Sequence[str],
    *,
    k: int = 4,
    margin: Margin = "ratio",
    threshold: float | None = None,
    batch_size: int = 32,
) -> Pairs:
    """Encode both lists with one (multilingual) model and call :func:`mine_bitext`."""
    return mine_bitext(
        _encode(model, src_texts, batch_size), _encode(model, tgt_texts, batch_size), k=k, margin=margin,
        threshold=threshold,
    )

