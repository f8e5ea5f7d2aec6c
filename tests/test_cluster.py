"""Clustering: every method on separable synthetic data, auto k, c-TF-IDF by hand, bad inputs."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from embedforge.cluster import (
    Clustering,
    assign_clusters,
    central_examples,
    choose_k,
    cluster_embeddings,
    cluster_texts,
    topic_keywords,
)
from embedforge.errors import InputError


def blobs(sizes: tuple[int, ...] = (60, 50, 40, 30), d: int = 24, spread: float = 0.15, seed: int = 0):
    """Well-separated unit-vector blobs and their true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[truth] + spread * rng.standard_normal((len(truth), d)) / math.sqrt(d)
    order = rng.permutation(len(truth))
    return (x / np.linalg.norm(x, axis=1, keepdims=True))[order].astype(np.float32), truth[order]


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_k_methods_find_the_blobs_and_number_by_size(method: str) -> None:
    x, truth = blobs()
    labels = assign_clusters(x, method=method, k=4)  # type: ignore[arg-type]
    assert adjusted_rand_score(truth, labels) == 1.0
    sizes = [int((labels == c).sum()) for c in range(4)]
    assert sizes == [60, 50, 40, 30]  # 0 = largest


def test_choose_k_finds_the_number_of_blobs() -> None:
    x, truth = blobs((40, 40, 40, 40, 40, 40), spread=0.3)
    assert choose_k(x) == 6
    labels = assign_clusters(x)  # kmeans with automatic k
    assert adjusted_rand_score(truth, labels) == 1.0


def test_community_matches_sentence_transformers() -> None:
    from sentence_transformers.util import community_detection

    x, _ = blobs((30, 20, 3), spread=0.6)  # the 3-point blob is below min_cluster_size: noise
    labels = assign_clusters(x, method="community", threshold=0.75, min_cluster_size=5)
    theirs = community_detection(x, threshold=0.75, min_community_size=5)
    ours = sorted(sorted(np.flatnonzero(labels == c).tolist()) for c in set(labels.tolist()) - {-1})
    assert ours == sorted(sorted(c) for c in theirs)
    assert (labels == -1).sum() == len(x) - sum(len(c) for c in theirs) >= 3


def test_hdbscan_finds_the_blobs() -> None:
    x, truth = blobs((40, 35, 30), spread=0.2)
    labels = assign_clusters(x, method="hdbscan", min_cluster_size=5)
    assert len(set(labels.tolist()) - {-1}) == 3
    core = labels >= 0
    assert core.mean() > 0.9 and adjusted_rand_score(truth[core], labels[core]) == 1.0


def _ctfidf_reference(texts: list[str], labels: list[int], top_n: int) -> dict[int, list[str]]:
    """c-TF-IDF written out by hand: W = tf(t,c) * log(1 + A / f(t))."""
    import re

    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    counts: dict[int, Counter[str]] = {}
    for text, lab in zip(texts, labels, strict=True):
        words = [w for w in re.findall(r"(?u)\b\w\w+\b", text.lower()) if w not in ENGLISH_STOP_WORDS]
        counts.setdefault(lab, Counter()).update(words)
    total = Counter[str]()
    for c in counts.values():
        total.update(c)
    avg = sum(total.values()) / len(counts)
    out = {}
    for lab, c in counts.items():
        if lab < 0:
            continue
        w = {t: n * math.log(1 + avg / total[t]) for t, n in c.items()}
        out[lab] = sorted(w, key=lambda t: (-w[t], t))[:top_n]
    return out


def test_topic_keywords_is_class_based_tfidf() -> None:
    texts = [
        "the card has not arrived", "my new card never arrived", "card delivery is slow",
        "exchange rate for euros", "what exchange rate do you use", "euros to dollars rate",
        "why was I charged a fee", "a fee on my card statement", "random unrelated words here",
    ]
    labels = [0, 0, 0, 1, 1, 1, 2, 2, -1]
    got = topic_keywords(texts, np.array(labels), top_n=4)
    assert got == _ctfidf_reference(texts, labels, 4)
    assert got[0][:2] == ["arrived", "card"] and got[1][0] in ("rate", "exchange") and "fee" in got[2]
    assert -1 not in got
    assert topic_keywords(["the a an", "of the"], np.array([0, 1])) == {0: [], 1: []}  # stop words only


def test_central_examples_are_closest_to_centroid() -> None:
    x, _ = blobs((20, 10), spread=0.5)
    labels = assign_clusters(x, k=2)
    ex = central_examples(x, labels, n=3)
    for c, idx in ex.items():
        members = np.flatnonzero(labels == c)
        centroid = x[members].mean(axis=0)
        sims = x @ (centroid / np.linalg.norm(centroid))
        expected = members[np.argsort(-sims[members])][:3]
        assert idx == expected.tolist()


def test_cluster_embeddings_result_type() -> None:
    x, _ = blobs((12, 10, 8), spread=0.3)
    words = ["alpha", "bravo", "charlie"]
    _, truth = blobs((12, 10, 8), spread=0.3)
    texts = [f"{words[t]} item {i}" for i, t in enumerate(truth.tolist())]
    result = cluster_embeddings(texts, x, k=3)
    assert isinstance(result, Clustering) and result.k == 3 and result.method == "kmeans"
    assert result.labels.dtype == np.int64 and result.labels.shape == (30,)
    assert set(result.keywords) == set(result.examples) == {0, 1, 2}
    for c in range(3):
        assert result.keywords[c][0] in words  # the blob's own word leads
        assert all(result.labels[i] == c for i in result.examples[c])
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.k = 4  # type: ignore[misc]


def test_cluster_embeddings_without_keywords_names_no_terms() -> None:
    """Items known only by name (image files): same labels and examples, every keyword list empty."""
    x, _ = blobs((12, 10, 8), spread=0.3)
    names = [f"IMG_{i:04d}.jpg" for i in range(30)]
    with_terms = cluster_embeddings(names, x, k=3)
    result = cluster_embeddings(names, x, k=3, keywords=False)
    assert np.array_equal(result.labels, with_terms.labels) and result.examples == with_terms.examples
    assert result.keywords == {0: [], 1: [], 2: []}
    assert any(with_terms.keywords.values())  # c-TF-IDF would have ranked file-name fragments


def test_cluster_texts_with_tiny_model(tiny_model) -> None:  # type: ignore[no-untyped-def]
    texts = ["card not arrived", "card still missing", "exchange rate euro", "exchange rate dollar",
             "fee on statement", "fee charged twice"]
    result = cluster_texts(tiny_model, texts, k=3)
    assert result.k == 3 and len(result.labels) == 6 and set(result.labels.tolist()) == {0, 1, 2}


@pytest.mark.parametrize(
    "texts, kwargs, message",
    [
        (["a b", "c d", "e f"], {"k": 5}, "k=5 clusters need at least 5 texts, got 3"),
        (["only one text"], {}, "at least 2 texts, got 1"),
        (["same text"] * 4, {}, "all 4 texts are identical"),
        (["fine", 42, "also fine"], {}, "text #1 is int"),
        (["fine", None], {}, "text #1 is NoneType"),
        (["fine", "   "], {}, "text #1 is empty"),
        ("a single string", {}, "single string"),
        (["a b", "c d", "e f"], {"method": "louvain"}, "unknown clustering method"),
        (["a b", "c d", "e f"], {"method": "community", "k": 2}, "finds its own number"),
        (["a b", "c d", "e f"], {"k": 0}, "k must be >= 1"),
    ],
)
def test_bad_inputs_give_clear_errors(texts, kwargs, message) -> None:  # type: ignore[no-untyped-def]
    n = len(texts) if not isinstance(texts, str) else 1
    emb = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        cluster_embeddings(texts, emb, **kwargs)


def test_identical_embeddings_and_mismatch() -> None:
    with pytest.raises(InputError, match="identical"):
        assign_clusters(np.ones((5, 4)), k=2)
    with pytest.raises(InputError, match="only 2 distinct"):
        assign_clusters(np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]]), k=3)
    with pytest.raises(InputError, match="3 texts but embeddings"):
        cluster_embeddings(["a", "b", "c"], np.eye(4), k=2)
