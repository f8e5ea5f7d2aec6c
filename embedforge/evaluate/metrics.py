"""Evaluation metrics as pure functions on arrays and dicts (no models, no files).

Every function states its formula and where it comes from, so a reader can check it against
the paper or the reference implementation without running anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from embedforge.vectors import l2_normalize

__all__ = [
    "spearman",
    "pearson",
    "cosine_pairs",
    "alignment",
    "uniformity",
    "ndcg_scores",
    "recall_scores",
    "ranked_relevance",
    "binary_ideal",
    "ndcg_per_query",
    "ndcg_at_k",
    "recall_per_query",
    "recall_at_k",
    "bootstrap_means",
    "stratified_bootstrap_ci",
    "bootstrap_ci",
    "paired_bootstrap",
    "same_label_retrieval",
]

Run = Mapping[str, Mapping[str, float]]  # query id -> {doc id: retrieval score}
Qrels = Mapping[str, Mapping[str, int]]  # query id -> {doc id: graded relevance}

UNIFORMITY_MAX_POINTS = 10_000  # above this, uniformity() uses a seeded random subsample


def _paired_1d(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same length, got {a.shape[0]} and {b.shape[0]}")
    if a.shape[0] < 2:
        raise ValueError(f"a correlation needs at least 2 pairs, got {a.shape[0]}")
    return a, b


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation ρ (a fraction in [-1, 1]; the caller scales to ×100).

    ρ = Pearson correlation of the rank vectors of ``x`` and ``y``, ties given their average
    rank (Spearman 1904; ``scipy.stats.spearmanr``, which SentEval and SimCSE use).
    A constant input has no defined correlation and gives ``nan``.
    """
    a, b = _paired_1d(x, y)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson's linear correlation r (a fraction in [-1, 1]; the caller scales to ×100).

    r = Σ(xᵢ−x̄)(yᵢ−ȳ) / √(Σ(xᵢ−x̄)² Σ(yᵢ−ȳ)²) (``scipy.stats.pearsonr``). Constant input → ``nan``.
    """
    a, b = _paired_1d(x, y)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.pearsonr(a, b).statistic)


def _as_2d(name: str, x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {arr.shape}")
    return arr


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity: ``out[i] = aᵢ·bᵢ / (‖aᵢ‖ ‖bᵢ‖)``, shape ``(n,)`` float64.

    A zero row has cosine 0 with anything (its norm is clamped to 1e-12).
    """
    x, y = _as_2d("a", a), _as_2d("b", b)
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape, got {x.shape} and {y.shape}")
    return np.einsum("nd,nd->n", l2_normalize(x, dtype=np.float64), l2_normalize(y, dtype=np.float64))  # (n,)


def alignment(x: np.ndarray, y: np.ndarray, alpha: float = 2) -> float:
    """Alignment of positive pairs: ℓ_align = E_{(x,y)~p_pos} ‖f(x) − f(y)‖₂^α  (lower is better).

    Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere", ICML 2020; computed as SimCSE (Gao et al. 2021, §5) does:
    rows of ``x`` and ``y`` (shape ``(n, d)``, row i of each is one positive pair) are
    L2-normalised first, then ``mean(‖xᵢ − yᵢ‖^α)``. Range [0, 2^α].
    """
    a, b = _as_2d("x", x), _as_2d("y", y)
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same shape, got {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        raise ValueError("alignment needs at least one pair")
    dist = np.linalg.norm(l2_normalize(a, dtype=np.float64) - l2_normalize(b, dtype=np.float64), axis=1)  # (n,)
    return float(np.mean(dist**alpha))


def uniformity(
    x: np.ndarray, t: float = 2, *, max_points: int = UNIFORMITY_MAX_POINTS, seed: int = 0
) -> float:
    """Uniformity: ℓ_uniform = log E_{x,y ~ p_data, x≠y} exp(−t ‖f(x) − f(y)‖₂²)  (lower is better).

    Wang & Isola (ICML 2020), as SimCSE computes it: rows are L2-normalised, the mean runs over
    all n(n−1)/2 distinct pairs (``torch.pdist``; here ``scipy.spatial.distance.pdist`` semantics,
    computed block-wise as ‖a−b‖² = 2 − 2a·b on unit vectors to bound memory). The value is 0
    for a point mass and approaches its minimum as points spread uniformly over the sphere
    (for t=2 and large d, about −4).

    If n > ``max_points`` (10,000), a random subsample of ``max_points`` rows drawn without
    replacement with ``numpy.random.default_rng(seed)`` is used instead, so the result is
    reproducible but approximate.
    """
    a = _as_2d("x", x)
    if a.shape[0] < 2:
        raise ValueError(f"uniformity needs at least 2 points, got {a.shape[0]}")
    if a.shape[0] > max_points:
        rows = np.random.default_rng(seed).choice(a.shape[0], size=max_points, replace=False)
        a = a[np.sort(rows)]
    a = l2_normalize(a, dtype=np.float64)
    n = a.shape[0]
    total = 0.0
    block = 256  # rows per block: a (256, n) float64 slab, ~20 MB at n = 10,000
    for start in range(0, n - 1, block):
        stop = min(start + block, n)
        gram = a[start:stop] @ a[start:].T  # (b, n - start)
        sq = np.clip(2.0 - 2.0 * gram, 0.0, 4.0)  # squared distances of unit vectors
        # keep pairs (i, j) with j > i only: row r of the block is point start + r
        upper = np.triu(np.ones_like(sq, dtype=bool), k=1)
        total += float(np.exp(-t * sq[upper]).sum())
    n_pairs = n * (n - 1) / 2
    return float(math.log(total / n_pairs))


# ---------------------------------------------------------------- retrieval (IR) metrics


def _ranked(docs: Mapping[str, float]) -> list[str]:
    # trec_eval's comp_sim_docno: score descending, ties broken by doc id *descending* (strcmp).
    return [d for d, _ in sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _dcg(gains: np.ndarray, k: int) -> np.ndarray:
    """DCG@k of each row of ``gains`` (n, m): Σ_{r=1..min(k,m)} gain_r / log₂(r + 1), summed left to right."""
    g = np.asarray(gains, dtype=np.float64)[:, :k]  # (n, <=k)
    if g.shape[1] == 0:
        return np.zeros(g.shape[0], dtype=np.float64)
    log2_rank = np.array([math.log2(r + 2) for r in range(g.shape[1])])  # (<=k,) log₂(r + 1), r from 1
    return np.cumsum(g / log2_rank, axis=1)[:, -1]  # (n,) cumsum: the sequential sum, as trec_eval adds


def ndcg_scores(ranked_gains: np.ndarray, ideal_gains: np.ndarray, k: int = 10) -> np.ndarray:
    """nDCG@k of each query from arrays: the one nDCG of the package; float64 ``(n,)``.

    ``ranked_gains[i, r]`` (n, m) is the graded relevance of the document query i ranked at
    position r + 1 (0 for unjudged, non-relevant or padding); ``ideal_gains[i]`` (n, m') holds
    the grades of *all* of query i's judged documents in any order (0 padded). Then

        DCG@k = Σ_{r=1..k} gain(d_r) / log₂(r + 1),   IDCG@k = DCG@k of ideal_gains sorted descending,
        nDCG@k = DCG@k / IDCG@k  (0 when IDCG@k is 0)

    with linear gain (trec_eval ``ndcg_cut`` as BEIR reports it via pytrec_eval, not 2^rel − 1;
    Järvelin & Kekäläinen, ACM TOIS 20(4), 2002). Negative gains count as 0. Binary relevance is
    gains of 0/1.
    """
    _check_k(k)
    gains = np.clip(np.asarray(ranked_gains, dtype=np.float64), 0.0, None)
    ideal = np.clip(np.asarray(ideal_gains, dtype=np.float64), 0.0, None)
    if gains.ndim != 2 or ideal.ndim != 2 or gains.shape[0] != ideal.shape[0]:
        raise ValueError(f"need 2-D ranked and ideal gains with one row per query, got {gains.shape} and {ideal.shape}")
    dcg = _dcg(gains, k)  # (n,)
    idcg = _dcg(-np.sort(-ideal, axis=1), k)  # (n,) grades sorted descending
    out = np.zeros_like(dcg)
    np.divide(dcg, idcg, out=out, where=idcg > 0)
    return out


def recall_scores(ranked_hits: np.ndarray, n_relevant: np.ndarray, k: int = 100) -> np.ndarray:
    """Recall@k of each query from arrays; float64 ``(n,)``.

    ``ranked_hits[i, r]`` (n, m) is True when the document ranked r + 1 for query i is relevant;
    ``n_relevant[i]`` the number of relevant documents query i has. Recall@k = (relevant in the
    top k) / n_relevant (trec_eval ``recall_k``, BEIR's Recall@k); 0 for a query with none.
    """
    _check_k(k)
    hits = np.asarray(ranked_hits, dtype=bool)
    n_rel = np.asarray(n_relevant, dtype=np.float64).reshape(-1)
    if hits.ndim != 2 or hits.shape[0] != n_rel.shape[0]:
        raise ValueError(f"need 2-D ranked hits with one row per query, got {hits.shape} for {n_rel.shape[0]} queries")
    found = hits[:, :k].sum(axis=1).astype(np.float64)  # (n,)
    out = np.zeros_like(found)
    np.divide(found, n_rel, out=out, where=n_rel > 0)
    return out


def _padded(rows: Sequence[Sequence[float]], width: int) -> np.ndarray:
    out = np.zeros((len(rows), max(width, 1)), dtype=np.float64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def ndcg_per_query(run: Run, qrels: Qrels, k: int = 10) -> dict[str, float]:
    """nDCG@k of every query in ``qrels``: :func:`ndcg_scores` on dicts (trec_eval ``ndcg_cut``, BEIR's nDCG@k).

    Gain = the graded relevance in the qrels (unjudged or rel ≤ 0 → 0). Documents are ranked by
    score descending, ties by doc id descending, exactly as trec_eval sorts a run. Queries in the
    run but not in the qrels are ignored. A query in the qrels that is missing from the run scores
    0 (trec_eval ``-c``); BEIR retrieves for every query, so on BEIR data this is the same number
    BEIR prints.
    """
    _check_k(k)
    qids = list(qrels)
    ranked = [[qrels[q].get(d, 0) for d in _ranked(run.get(q, {}))[:k]] for q in qids]
    ideal = [list(qrels[q].values()) for q in qids]
    scores = ndcg_scores(
        _padded(ranked, k), _padded(ideal, max((len(g) for g in ideal), default=1)), k
    )
    return dict(zip(qids, scores.tolist(), strict=True))


def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10) -> float:
    """Mean of :func:`ndcg_per_query` over the queries in ``qrels`` (a fraction in [0, 1])."""
    per_query = ndcg_per_query(run, qrels, k)
    if not per_query:
        raise ValueError("qrels is empty: no query to evaluate")
    return float(np.mean(list(per_query.values())))


def recall_per_query(run: Run, qrels: Qrels, k: int = 100) -> dict[str, float]:
    """Recall@k of every query in ``qrels``: :func:`recall_scores` on dicts, relevant = grade ≥ 1.

    Same ranking and query rules as :func:`ndcg_per_query`; a query without relevant docs scores 0.
    """
    _check_k(k)
    qids = list(qrels)
    hits = [[qrels[q].get(d, 0) >= 1 for d in _ranked(run.get(q, {}))[:k]] for q in qids]
    n_relevant = np.array([sum(g >= 1 for g in qrels[q].values()) for q in qids], dtype=np.float64)
    scores = recall_scores(_padded(hits, k) > 0, n_relevant, k)
    return dict(zip(qids, scores.tolist(), strict=True))


def recall_at_k(run: Run, qrels: Qrels, k: int = 100) -> float:
    """Mean of :func:`recall_per_query` over the queries in ``qrels``."""
    per_query = recall_per_query(run, qrels, k)
    if not per_query:
        raise ValueError("qrels is empty: no query to evaluate")
    return float(np.mean(list(per_query.values())))


def ranked_relevance(rows: np.ndarray, relevant: Sequence[Sequence[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hits (n, k) bool, n_relevant (n,))`` of ranked ids ``rows`` (n, >= k; -1 = nothing) against
    each query's set of relevant ids: the input of :func:`ndcg_scores` / :func:`recall_scores` for
    binary relevance."""
    top = np.asarray(rows)[:, :k]  # (n, <=k)
    hits = np.zeros(top.shape, dtype=bool)
    for i, rel in enumerate(relevant):
        if len(rel):
            hits[i] = np.isin(top[i], np.asarray(rel, dtype=np.int64))
    return hits, np.array([len(r) for r in relevant], dtype=np.float64)


def binary_ideal(n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Ideal gains (n, k) of binary relevance: ``min(n_relevant[i], k)`` ones then zeros."""
    return (np.arange(k) < np.asarray(n_relevant)[:, None]).astype(np.float64)


# ---------------------------------------------------------------- bootstrap confidence intervals


def bootstrap_means(strata: Sequence[np.ndarray], n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples,)``: per resample, the mean over strata of each stratum's resampled mean.

    Each stratum (a non-empty 1-D array) is resampled with replacement to its own size,
    independently of the others; one stratum is the plain bootstrap of a mean. Draws come from
    ``numpy.random.default_rng(seed)``, stratum after stratum, in chunks that bound the index
    matrix to ~16 MB (chunking does not change the stream).
    """
    if not strata:
        raise ValueError("need at least one stratum of values")
    rng = np.random.default_rng(seed)
    total = np.zeros(n_resamples, dtype=np.float64)
    for values in strata:
        n = values.shape[0]
        chunk = max(1, 2_000_000 // max(n, 1))
        for start in range(0, n_resamples, chunk):
            stop = min(start + chunk, n_resamples)
            idx = rng.integers(0, n, size=(stop - start, n))  # (resamples, n)
            total[start:stop] += values[idx].mean(axis=1)
    return total / len(strata)


def stratified_bootstrap_ci(
    strata: Sequence[Sequence[float] | np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    confidence: float = 0.95,
    scale: float = 1.0,
) -> tuple[float, float, float]:
    """``(point, lo, hi)``: the mean over strata of each stratum's mean, and its percentile-bootstrap interval.

    The one bootstrap of the package (:func:`bootstrap_ci`, :func:`paired_bootstrap` and adapt's
    decision call it). Resample every stratum with replacement (:func:`bootstrap_means`) and report
    the (1−c)/2 and (1+c)/2 percentiles of the resampled statistic (Efron & Tibshirani 1993,
    ch. 13). One stratum of per-query differences b − a is the paired bootstrap of IR system
    comparison (Sakai 2006); several strata (e.g. query sets of different tasks) weigh each set
    equally whatever its size. All three numbers are multiplied by ``scale`` (100 for points).
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in strata]
    if not arrays or any(a.ndim != 1 or a.shape[0] == 0 for a in arrays):
        raise ValueError("need one or more non-empty 1-D sets of values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    point = 0.0
    for a in arrays:
        point += float(a.mean())
    means = bootstrap_means(arrays, n_resamples, seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return scale * point / len(arrays), scale * float(lo), scale * float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray | Mapping[str, float],
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of ``values`` and its percentile-bootstrap confidence interval.

    :func:`stratified_bootstrap_ci` with one stratum: resample the n values with replacement
    ``n_resamples`` times and take the percentiles of the resampled means. A dict (e.g. per-query
    scores) is read by its values. Seeded, so reproducible.
    """
    arr = np.asarray(list(values.values()) if isinstance(values, Mapping) else values, dtype=np.float64)
    return stratified_bootstrap_ci([arr], n_resamples, seed, confidence=confidence)


def paired_bootstrap(
    a_per_query: Mapping[str, float] | Sequence[float] | np.ndarray,
    b_per_query: Mapping[str, float] | Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(mean_diff, lo, hi)``: mean of b − a over paired items and its bootstrap CI.

    The paired bootstrap test of IR/NLP system comparison (Sakai 2006; Koehn 2004): resample
    queries with replacement, keeping each query's (a, b) scores together, and take the
    percentile interval of the resampled mean(b − a) (:func:`stratified_bootstrap_ci` of b − a).
    An interval above 0 means b is better than a at that confidence. Dicts are paired by key and
    must have the same keys; sequences are paired by position and must have the same length.
    """
    if isinstance(a_per_query, Mapping) or isinstance(b_per_query, Mapping):
        if not (isinstance(a_per_query, Mapping) and isinstance(b_per_query, Mapping)):
            raise ValueError("pass both a and b as dicts (paired by key) or both as sequences")
        if a_per_query.keys() != b_per_query.keys():
            missing = sorted(set(a_per_query) ^ set(b_per_query))[:5]
            raise ValueError(f"a and b must score the same queries; differing keys include {missing}")
        keys = list(a_per_query)
        a = np.array([a_per_query[q] for q in keys], dtype=np.float64)
        b = np.array([b_per_query[q] for q in keys], dtype=np.float64)
    else:
        a = np.asarray(a_per_query, dtype=np.float64).reshape(-1)
        b = np.asarray(b_per_query, dtype=np.float64).reshape(-1)
        if a.shape != b.shape:
            raise ValueError(f"a and b must have the same length, got {a.shape[0]} and {b.shape[0]}")
    return stratified_bootstrap_ci([b - a], n_resamples, seed, confidence=confidence)


def same_label_retrieval(emb: np.ndarray, labels: Sequence[str], k: int = 10) -> dict[str, float]:
    """Leave-one-out retrieval where every other text with the same label is relevant.

    Each row of ``emb`` (L2-normalised, so dot = cosine) queries all other rows. Returns the means of
    P@1, MAP@k (AP@k = Σ_r P@r·rel_r / min(|R|, k)) and nDCG@k (:func:`ndcg_scores`, binary gain);
    a text whose label occurs once has no relevant document and scores 0.
    """
    y = np.asarray(labels)
    sims = emb @ emb.T  # (n, n)
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]  # (n, k)
    hits = y[top] == y[:, None]  # (n, k)
    relevant = np.array([(y == label).sum() - 1 for label in y])  # (n,)
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (precision * hits).sum(axis=1) / np.minimum(relevant, k).clip(min=1)
    return {
        "P@1": float(hits[:, 0].mean()),
        f"MAP@{k}": float(ap.mean()),
        f"ndcg@{k}": float(ndcg_scores(hits, binary_ideal(relevant, k), k).mean()),
    }
