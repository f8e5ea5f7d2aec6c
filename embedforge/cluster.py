"""Cluster embedded texts into topics, name each topic by its keywords, show its most central texts.

The algorithms are scikit-learn's (k-means, agglomerative/Ward, HDBSCAN) and sentence-transformers'
``util.community_detection`` (threshold-based "fast clustering"), called as they are. Ours:
the automatic number of clusters (:func:`choose_k`), class-based TF-IDF keywords
(:func:`topic_keywords`, the c-TF-IDF of BERTopic), central examples, input checks, and one
result type, :class:`Clustering`, whatever the method.

Labels are renumbered by cluster size (0 = largest; ties by first appearance); ``-1`` marks
texts that community detection or HDBSCAN leave unassigned ("noise").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from embedforge.errors import InputError
from embedforge.vectors import as_embeddings, l2_normalize

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "METHODS",
    "ClusterMethod",
    "Clustering",
    "assign_clusters",
    "choose_k",
    "topic_keywords",
    "central_examples",
    "cluster_embeddings",
    "cluster_texts",
    "validate_texts",
]

ClusterMethod = Literal["kmeans", "agglomerative", "community", "hdbscan"]
METHODS: tuple[str, ...] = ("kmeans", "agglomerative", "community", "hdbscan")

AUTO_K_SAMPLE = 3000  # choose_k scores silhouettes on a seeded sample of at most this many texts
AUTO_K_CANDIDATES = 16  # number of k values tried (geometric grid from 2 to k_max)
AGGLOMERATIVE_LIMIT = 30_000  # Ward clustering needs O(n²) memory; above this, use k-means
COMMUNITY_THRESHOLD = 0.75  # cosine similarity to a community's centre (sentence-transformers' default)
MIN_CLUSTER_SIZE = 5  # smallest community / HDBSCAN cluster


@dataclass(frozen=True)
class Clustering:
    """One clustering of ``n`` texts.

    ``labels`` (n,) int64, cluster ids ``0 … k-1`` by size, ``-1`` for noise; ``k`` the number of
    clusters (noise excluded); ``method`` the algorithm; ``keywords[c]`` the top c-TF-IDF terms of
    cluster ``c``; ``examples[c]`` the indices of its texts closest to its centroid, closest first.
    """

    labels: np.ndarray
    k: int
    method: str
    keywords: dict[int, list[str]]
    examples: dict[int, list[int]]


def _distinct_rows(x: np.ndarray) -> int:
    return len(np.unique(np.round(x, 5), axis=0))


def validate_texts(texts: Sequence[object], k: int | None = None) -> list[str]:
    """The texts as a list, or :class:`InputError` if they cannot be clustered (into ``k`` clusters):
    fewer than 2, a non-string or empty text, all identical, or fewer than ``k``. Cheap: the CLI
    calls it before loading a model."""
    if isinstance(texts, str):
        raise InputError("expected a list of texts, got a single string")
    out: list[str] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text #{i} is {type(text).__name__}, expected a string")
        if not text.strip():
            raise InputError(f"text #{i} is empty")
        out.append(text)
    if len(out) < 2:
        raise InputError(f"clustering needs at least 2 texts, got {len(out)}")
    if len(set(t.strip() for t in out)) == 1:
        raise InputError(f"all {len(out)} texts are identical; there is nothing to cluster")
    if k is not None:
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        if k > len(out):
            raise InputError(f"k={k} clusters need at least {k} texts, got {len(out)}")
    return out


def _relabel(raw: np.ndarray) -> np.ndarray:
    """Renumber clusters 0 … k-1 by size (largest first, ties by first appearance); keep -1."""
    raw = np.asarray(raw, dtype=np.int64)
    ids = [c for c in dict.fromkeys(raw.tolist()) if c >= 0]
    sizes = {c: int((raw == c).sum()) for c in ids}
    order = sorted(ids, key=lambda c: -sizes[c])  # stable: first appearance breaks ties
    mapping = {c: new for new, c in enumerate(order)}
    return np.array([mapping.get(c, -1) for c in raw.tolist()], dtype=np.int64)


def choose_k(emb: np.ndarray, *, k_min: int = 2, k_max: int | None = None, seed: int = 0) -> int:
    """The number of clusters with the best silhouette, computed on a sample.

    Exactly: take a seeded random sample of at most :data:`AUTO_K_SAMPLE` rows (L2-normalised);
    ``k_max`` defaults to ``clamp(round(2·√n), k_min, 200)``, capped at ``distinct rows − 1``;
    try :data:`AUTO_K_CANDIDATES` values of k on a geometric grid from ``k_min`` to ``k_max``;
    for each run k-means (``n_init=3``, seeded) on the sample and score the silhouette with
    cosine distance; return the k with the highest score (the smaller k on a tie).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = as_embeddings(emb, normalize=True)  # (n, dim) float32, unit rows
    rng = np.random.default_rng(seed)
    if len(x) > AUTO_K_SAMPLE:
        x = x[np.sort(rng.choice(len(x), AUTO_K_SAMPLE, replace=False))]
    distinct = _distinct_rows(x)
    if distinct < 3:
        raise InputError(f"only {distinct} distinct embeddings; cannot choose a number of clusters")
    upper = k_max if k_max is not None else int(np.clip(round(2 * math.sqrt(len(emb))), k_min, 200))
    upper = min(upper, distinct - 1)
    lower = min(max(2, k_min), upper)
    grid = sorted(set(np.round(np.geomspace(lower, upper, AUTO_K_CANDIDATES)).astype(int).tolist()))
    best_k, best = grid[0], -math.inf
    for k in grid:
        labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
        if len(set(labels.tolist())) < 2:
            continue
        score = float(silhouette_score(x, labels, metric="cosine"))
        if score > best + 1e-9:
            best_k, best = k, score
    return int(best_k)


def assign_clusters(
    emb: np.ndarray,
    *,
    method: ClusterMethod = "kmeans",
    k: int | None = None,
    threshold: float = COMMUNITY_THRESHOLD,
    min_cluster_size: int = MIN_CLUSTER_SIZE,
    seed: int = 0,
) -> np.ndarray:
    """Cluster labels (n,) int64 for L2-normalised ``emb``, renumbered by size, ``-1`` = noise.

    * ``kmeans``: ``sklearn.cluster.KMeans(k, n_init=10)`` on unit vectors (spherical-ish k-means).
    * ``agglomerative``: ``AgglomerativeClustering(k, linkage="ward")`` on unit vectors
      (Euclidean distance on the sphere is monotone in cosine); at most :data:`AGGLOMERATIVE_LIMIT` texts.
    * ``community``: ``sentence_transformers.util.community_detection(threshold, min_cluster_size)``
      — every member has cosine ≥ ``threshold`` to its community's centre; the rest is noise.
    * ``hdbscan``: ``sklearn.cluster.HDBSCAN(min_cluster_size)`` on unit vectors; low-density texts are noise.

    ``k`` (k-means, agglomerative) defaults to :func:`choose_k`; the other two find their own number.
    """
    if method not in METHODS:
        raise InputError(f"unknown clustering method {method!r}; expected one of {', '.join(METHODS)}")
    x = as_embeddings(emb, normalize=True)  # (n, dim) float32, unit rows
    n = len(x)
    if n < 2:
        raise InputError(f"clustering needs at least 2 texts, got {n}")
    distinct = _distinct_rows(x)
    if distinct == 1:
        raise InputError(f"all {n} embeddings are identical; there is nothing to cluster")
    if method in ("community", "hdbscan"):
        if k is not None:
            raise InputError(f"method {method!r} finds its own number of clusters; leave k unset (or use kmeans)")
        if min_cluster_size < 2:
            raise InputError(f"min_cluster_size must be >= 2, got {min_cluster_size}")
        if method == "community":
            from sentence_transformers.util import community_detection

            raw = np.full(n, -1, dtype=np.int64)
            communities = community_detection(x, threshold=threshold, min_community_size=min_cluster_size)
            for c, members in enumerate(communities):
                raw[np.asarray(members, dtype=np.int64)] = c
            return _relabel(raw)
        from sklearn.cluster import HDBSCAN

        size = min(min_cluster_size, n)
        return _relabel(HDBSCAN(min_cluster_size=size, copy=True).fit_predict(x))
    if k is None:
        k = 2 if distinct < 3 else choose_k(x, seed=seed)
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if k > n:
        raise InputError(f"k={k} clusters need at least {k} texts, got {n}")
    if k > distinct:
        raise InputError(f"k={k} clusters but only {distinct} distinct texts; use a smaller k")
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return _relabel(KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x))
    if n > AGGLOMERATIVE_LIMIT:
        raise InputError(f"agglomerative clustering of {n} texts needs O(n²) memory (limit {AGGLOMERATIVE_LIMIT}); use kmeans")
    from sklearn.cluster import AgglomerativeClustering

    return _relabel(AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x))


def topic_keywords(texts: Sequence[str], labels: np.ndarray, top_n: int = 8) -> dict[int, list[str]]:
    """The ``top_n`` most distinctive terms of each cluster by class-based TF-IDF (c-TF-IDF, BERTopic).

    The texts of each label (noise ``-1`` included, as its own class) are joined into one
    document and counted with ``CountVectorizer(stop_words="english")``; then for term t and class c::

        W(t, c) = tf(t, c) · log(1 + A / f(t))

    with tf(t, c) the count of t in class c, f(t) the count of t over all classes and A the
    average number of words per class. Returns ``{cluster: [term, …]}`` for clusters ≥ 0, best
    first; a cluster whose texts are all stop words gets ``[]``.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    labels = np.asarray(labels)
    if len(texts) != len(labels):
        raise InputError(f"got {len(texts)} texts but {len(labels)} labels")
    classes = sorted(set(labels.tolist()))
    docs = [" ".join(t for t, lab in zip(texts, labels.tolist(), strict=True) if lab == c) for c in classes]
    try:
        vectorizer = CountVectorizer(stop_words="english")
        counts = vectorizer.fit_transform(docs).toarray().astype(np.float64)  # (classes, terms)
    except ValueError:  # empty vocabulary: nothing but stop words / punctuation
        return {c: [] for c in classes if c >= 0}
    terms = vectorizer.get_feature_names_out()
    tf_all = counts.sum(axis=0)  # f(t), (terms,)
    avg_words = counts.sum() / len(classes)  # A
    weights = counts * np.log1p(avg_words / np.maximum(tf_all, 1e-12))  # (classes, terms)
    out: dict[int, list[str]] = {}
    for row, c in enumerate(classes):
        if c < 0:
            continue
        order = np.lexsort((terms, -weights[row]))  # weight desc, then alphabetical
        out[c] = [str(terms[t]) for t in order[:top_n] if counts[row, t] > 0]
    return out


def central_examples(emb: np.ndarray, labels: np.ndarray, n: int = 3) -> dict[int, list[int]]:
    """For each cluster ≥ 0, the indices of its ``n`` members with the highest cosine to the
    cluster's centroid (mean of the unit vectors), closest first."""
    x = as_embeddings(emb, normalize=True)  # (n, dim) float32, unit rows
    labels = np.asarray(labels)
    out: dict[int, list[int]] = {}
    for c in sorted(set(labels.tolist()) - {-1}):
        members = np.flatnonzero(labels == c)
        centroid = x[members].mean(axis=0)
        sims = x[members] @ l2_normalize(centroid[None, :])[0]  # (members,)
        order = np.lexsort((members, -sims))
        out[c] = members[order[:n]].astype(int).tolist()
    return out


def cluster_embeddings(
    texts: Sequence[str],
    emb: np.ndarray,
    *,
    method: ClusterMethod = "kmeans",
    k: int | None = None,
    threshold: float = COMMUNITY_THRESHOLD,
    min_cluster_size: int = MIN_CLUSTER_SIZE,
    seed: int = 0,
    keywords: bool = True,
) -> Clustering:
    """Cluster already-embedded texts: :func:`assign_clusters`, then :func:`topic_keywords`
    (8 terms) and :func:`central_examples` (3 texts) per cluster.

    ``keywords=False`` leaves every cluster's keyword list empty: for items whose "texts" are only
    names (images: their file names), where c-TF-IDF would rank file-name fragments.

    Raises :class:`InputError` for fewer than 2 texts, non-string or empty texts, all-identical
    texts, ``k`` larger than the number of (distinct) texts, or a length mismatch.
    """
    texts = validate_texts(texts, k)
    if np.asarray(emb).ndim != 2 or len(emb) != len(texts):
        raise InputError(f"got {len(texts)} texts but embeddings of shape {np.asarray(emb).shape}")
    labels = assign_clusters(
        emb, method=method, k=k, threshold=threshold, min_cluster_size=min_cluster_size, seed=seed
    )
    k_found = len(set(labels.tolist()) - {-1})
    return Clustering(
        labels=labels,
        k=k_found,
        method=method,
        keywords=topic_keywords(texts, labels) if keywords else {c: [] for c in sorted(set(labels.tolist()) - {-1})},
        examples=central_examples(emb, labels),
    )


def cluster_texts(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    method: ClusterMethod = "kmeans",
    k: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> Clustering:
    """Encode ``texts`` with ``model`` and call :func:`cluster_embeddings`."""
    from embedforge.encode import encode

    texts = validate_texts(texts, k)
    return cluster_embeddings(texts, encode(model, texts, batch_size=batch_size), method=method, k=k, seed=seed)
