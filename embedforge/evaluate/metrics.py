"""Evaluation metrics as pure functions on arrays and dicts (no models, no files).

Every function states its formula and where it comes from, so a reader can check it against
the paper or the reference implementation without running anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "spearman",
    "pearson",
    "cosine_pairs",
    "alignment",
    "uniformity",
    "ndcg_per_query",
    "ndcg_at_k",
    "recall_per_query",
    "recall_at_k",
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


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (n, 1)
    return x / np.maximum(norms, 1e-12)


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
    return np.einsum("nd,nd->n", _l2_normalize(x), _l2_normalize(y))  # (n,)


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
    dist = np.linalg.norm(_l2_normalize(a) - _l2_normalize(b), axis=1)  # (n,)
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
    a = _l2_normalize(a)
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


def ndcg_per_query(run: Run, qrels: Qrels, k: int = 10) -> dict[str, float]:
    """nDCG@k of every query in ``qrels`` (trec_eval ``ndcg_cut``, as BEIR reports via pytrec_eval).

    DCG@k = Σ_{r=1..k} gain(d_r) / log₂(r + 1) with gain = the graded relevance in the qrels
    (not 2^rel − 1; unjudged or rel ≤ 0 → 0); IDCG@k is the DCG of the qrels' own positive
    grades sorted descending; nDCG@k = DCG@k / IDCG@k (0 when IDCG is 0). Järvelin & Kekäläinen,
    ACM TOIS 20(4), 2002. Documents are ranked by score descending, ties by doc id descending,
    exactly as trec_eval sorts a run.

    Queries in the run but not in the qrels are ignored. A query in the qrels that is missing
    from the run scores 0 (trec_eval ``-c``); BEIR retrieves for every query, so on BEIR
    data this is the same number BEIR prints.
    """
    _check_k(k)
    out: dict[str, float] = {}
    for qid, judged in qrels.items():
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        ranking = _ranked(run.get(qid, {}))[:k]
        dcg = sum(max(judged.get(d, 0), 0) / math.log2(r + 2) for r, d in enumerate(ranking))
        out[qid] = dcg / idcg if idcg > 0 else 0.0
    return out


def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10) -> float:
    """Mean of :func:`ndcg_per_query` over the queries in ``qrels`` (a fraction in [0, 1])."""
    per_query = ndcg_per_query(run, qrels, k)
    if not per_query:
        raise ValueError("qrels is empty: no query to evaluate")
    return float(np.mean(list(per_query.values())))


def recall_per_query(run: Run, qrels: Qrels, k: int = 100) -> dict[str, float]:
    """Recall@k of every query in ``qrels`` (trec_eval ``recall_k``, BEIR's Recall@k).

    Recall@k = |{relevant docs in the top k}| / |{relevant docs}|, relevant = grade ≥ 1.
    Same ranking and query rules as :func:`ndcg_per_query`; a query without relevant docs scores 0.
    """
    _check_k(k)
    out: dict[str, float] = {}
    for qid, judged in qrels.items():
        relevant = {d for d, g in judged.items() if g >= 1}
        top = _ranked(run.get(qid, {}))[:k]
        out[qid] = len(relevant.intersection(top)) / len(relevant) if relevant else 0.0
    return out


def recall_at_k(run: Run, qrels: Qrels, k: int = 100) -> float:
    """Mean of :func:`recall_per_query` over the queries in ``qrels``."""
    per_query = recall_per_query(run, qrels, k)
    if not per_query:
        raise ValueError("qrels is empty: no query to evaluate")
    return float(np.mean(list(per_query.values())))


# ---------------------------------------------------------------- bootstrap confidence intervals


def _bootstrap_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement, same size) of ``values``."""
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // max(n, 1))  # bound the index matrix to ~16 MB
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))  # (resamples, n)
        means[start:stop] = values[idx].mean(axis=1)
    return means


def _percentile_ci(
    values: np.ndarray, n_resamples: int, seed: int, confidence: float
) -> tuple[float, float, float]:
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError("need a non-empty 1-D set of values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    means = _bootstrap_means(values, n_resamples, seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(values.mean()), float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray | Mapping[str, float],
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of ``values`` and its percentile-bootstrap confidence interval.

    Resample the n values with replacement ``n_resamples`` times, take each resample's mean, and
    report the (1−c)/2 and (1+c)/2 percentiles of those means (Efron & Tibshirani 1993, ch. 13).
    A dict (e.g. per-query scores) is read by its values. Seeded, so reproducible.
    """
    arr = np.asarray(list(values.values()) if isinstance(values, Mapping) else values, dtype=np.float64)
    return _percentile_ci(arr, n_resamples, seed, confidence)


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
    percentile interval of the resampled mean(b − a). An interval above 0 means b is better
    than a at that confidence. Dicts are paired by key and must have the same keys;
    sequences are paired by position and must have the same length.
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
    return _percentile_ci(b - a, n_resamples, seed, confidence)


def same_label_retrieval(emb: np.ndarray, labels: Sequence[str], k: int = 10) -> dict[str, float]:
    """Leave-one-out retrieval where every other text with the same label is relevant.

    Each row of ``emb`` (L2-normalised, so dot = cosine) queries all other rows. Returns the means of
    P@1, MAP@k (AP@k = Σ_r P@r·rel_r / min(|R|, k)) and nDCG@k (binary gain, log₂(r+1) discount);
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
    discounts = 1 / np.log2(np.arange(2, k + 2))  # (k,)
    ideal = np.array([discounts[: min(r, k)].sum() for r in relevant]).clip(min=1e-12)
    return {
        "P@1": float(hits[:, 0].mean()),
        f"MAP@{k}": float(ap.mean()),
        f"ndcg@{k}": float(((hits * discounts).sum(axis=1) / ideal).mean()),
    }
