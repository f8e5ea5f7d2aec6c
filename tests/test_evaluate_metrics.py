"""The metrics against independent references: scipy, scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist, pdist
from sklearn.metrics import ndcg_score

from embedforge.evaluate.metrics import (
    alignment,
    bootstrap_ci,
    cosine_pairs,
    ndcg_at_k,
    ndcg_per_query,
    paired_bootstrap,
    pearson,
    recall_at_k,
    recall_per_query,
    spearman,
    uniformity,
)


def _sphere(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------- correlations


def test_spearman_and_pearson_match_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, size=200).astype(float)  # many ties
    y = x + rng.normal(0, 2, size=200)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_spearman_hand_cases() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # monotone but not linear: rank correlation 1, Pearson below 1
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 10, 100, 1000]) < 0.9
    # a fraction, not ×100
    assert -1.0 <= spearman([3, 1, 2], [1, 2, 3]) <= 1.0


def test_correlations_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        pearson([1], [1])
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(pearson([1, 2, 3], [5, 5, 5]))


# ---------------------------------------------------------------- cosine, alignment, uniformity


def test_cosine_pairs_hand_and_scipy() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosine_pairs(a, b), [0.0, 1.0, -1.0], atol=1e-12)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    expected = 1.0 - np.diag(cdist(x, y, metric="cosine"))
    np.testing.assert_allclose(cosine_pairs(x, y), expected, atol=1e-12)
    with pytest.raises(ValueError):
        cosine_pairs(x, y[:10])


def test_alignment_hand_cases() -> None:
    x = _sphere(20, 8)
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, 3.0 * x) == pytest.approx(0.0, abs=1e-12)  # rows are normalised first
    assert alignment(x, -x) == pytest.approx(4.0)  # ‖2u‖² for antipodal unit vectors
    assert alignment(x, -x, alpha=1) == pytest.approx(2.0)
    e = np.eye(4)
    assert alignment(e[:2], e[2:]) == pytest.approx(2.0)  # orthogonal: ‖u − v‖² = 2


def test_alignment_matches_direct_formula() -> None:
    x, y = _sphere(100, 16, seed=3), _sphere(100, 16, seed=4)
    expected = np.mean(np.linalg.norm(x - y, axis=1) ** 2)
    assert alignment(x, y) == pytest.approx(expected, rel=1e-12)


def _uniformity_reference(x: np.ndarray, t: float = 2.0) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return float(np.log(np.mean(np.exp(-t * pdist(x, metric="sqeuclidean")))))


@pytest.mark.parametrize(("n", "d", "t"), [(2, 3, 2.0), (257, 8, 2.0), (600, 16, 1.0)])
def test_uniformity_matches_pdist_reference(n: int, d: int, t: float) -> None:
    x = np.random.default_rng(n).normal(size=(n, d)) * 5.0  # not unit length: normalised inside
    assert uniformity(x, t=t) == pytest.approx(_uniformity_reference(x, t), abs=1e-10)


def test_uniformity_properties() -> None:
    point_mass = np.tile([[0.6, 0.8, 0.0]], (50, 1))
    assert uniformity(point_mass) == pytest.approx(0.0, abs=1e-12)
    spread = uniformity(_sphere(2000, 32))
    assert spread < -3.5
    # a tight cluster is less uniform than points spread over the sphere
    cluster = np.tile(_sphere(1, 32), (200, 1)) + 0.05 * np.random.default_rng(5).normal(size=(200, 32))
    assert uniformity(cluster) > spread
    with pytest.raises(ValueError):
        uniformity(np.ones((1, 4)))


def test_uniformity_subsamples_above_max_points_reproducibly() -> None:
    x = _sphere(150, 8, seed=6)
    got = uniformity(x, max_points=100, seed=7)
    rows = np.sort(np.random.default_rng(7).choice(150, size=100, replace=False))
    assert got == pytest.approx(_uniformity_reference(x[rows]), abs=1e-10)
    assert uniformity(x, max_points=100, seed=7) == got
    assert uniformity(x, max_points=150) == pytest.approx(_uniformity_reference(x), abs=1e-10)


# ---------------------------------------------------------------- retrieval metrics


def test_ndcg_hand_example_linear_gain() -> None:
    qrels = {"q1": {"d1": 2, "d2": 1, "d3": 0}}
    run = {"q1": {"d1": 0.5, "d2": 0.9, "d4": 0.7}}  # ranking: d2, d4, d1
    idcg = 2.0 + 1.0 / math.log2(3)
    assert ndcg_at_k(run, qrels, k=10) == pytest.approx((1.0 + 2.0 / math.log2(4)) / idcg)
    assert ndcg_at_k(run, qrels, k=1) == pytest.approx(1.0 / 2.0)
    assert ndcg_at_k(run, qrels, k=2) == pytest.approx(1.0 / idcg)
    # gain = rel, not 2^rel − 1: with exponential gain this would be (1 + 3/log2 3) / (3 + 1/log2 3)
    qrels2 = {"q": {"a": 2, "b": 1}}
    run2 = {"q": {"b": 2.0, "a": 1.0}}
    assert ndcg_at_k(run2, qrels2) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_ndcg_ties_broken_by_doc_id_descending_like_trec_eval() -> None:
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0}}  # tie: trec_eval ranks "b" before "a"
    assert ndcg_at_k(run, qrels, k=1) == 0.0
    assert ndcg_at_k(run, qrels, k=2) == pytest.approx(1.0 / math.log2(3))


def test_ndcg_query_set_rules() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d9": 1}}
    run = {"q1": {"d1": 1.0}, "q_unjudged": {"x": 1.0}}  # q2 missing from the run
    per_query = ndcg_per_query(run, qrels)
    assert per_query == {"q1": 1.0, "q2": 0.0}  # q_unjudged ignored, q2 scores 0
    assert ndcg_at_k(run, qrels) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ndcg_at_k(run, {})
    with pytest.raises(ValueError):
        ndcg_at_k(run, qrels, k=0)


def test_ndcg_matches_sklearn_on_random_runs() -> None:
    """sklearn's ndcg_score uses linear gain and log2(rank + 1) too (no ties in continuous scores)."""
    rng = np.random.default_rng(8)
    n_docs = 40
    run, qrels, y_true, y_score = {}, {}, [], []
    for q in range(30):
        rel = rng.choice([0, 0, 0, 1, 2, 3], size=n_docs)
        rel[rng.integers(n_docs)] = 1  # at least one relevant document
        score = rng.random(n_docs)
        run[f"q{q}"] = {f"d{i}": float(s) for i, s in enumerate(score)}
        qrels[f"q{q}"] = {f"d{i}": int(r) for i, r in enumerate(rel) if r > 0 or rng.random() < 0.3}
        y_true.append(rel)
        y_score.append(score)
    for k in (1, 5, 10, 40):
        assert ndcg_at_k(run, qrels, k=k) == pytest.approx(
            ndcg_score(np.array(y_true), np.array(y_score), k=k), abs=1e-12
        )


def test_recall_hand_example() -> None:
    qrels = {"q1": {"a": 1, "b": 2, "c": 0}, "q2": {"z": 0}}
    run = {"q1": {"a": 0.9, "x": 0.8, "b": 0.1, "c": 0.95}}  # ranking: c, a, x, b
    assert recall_per_query(run, qrels, k=1) == {"q1": 0.0, "q2": 0.0}
    assert recall_per_query(run, qrels, k=2) == {"q1": 0.5, "q2": 0.0}
    assert recall_per_query(run, qrels, k=4)["q1"] == 1.0
    assert recall_at_k(run, qrels, k=4) == pytest.approx(0.5)  # q2 has no relevant doc: counts 0


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_basic_properties() -> None:
    assert bootstrap_ci([2.0] * 10) == (2.0, 2.0, 2.0)
    values = np.random.default_rng(9).normal(1.0, 2.0, size=400)
    mean, lo, hi = bootstrap_ci(values, n_resamples=2000, seed=1)
    assert mean == pytest.approx(values.mean())
    assert lo < mean < hi
    assert bootstrap_ci(values, n_resamples=2000, seed=1) == (mean, lo, hi)  # seeded
    # the normal-theory interval mean ± 1.96 s/√n as an independent reference
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    ref = stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile", random_state=0)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.05)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.05)
    assert bootstrap_ci({"a": 1.0, "b": 3.0})[0] == 2.0
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(10)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.random(200))}
    shifted = {q: v + 0.1 for q, v in a.items()}
    assert paired_bootstrap(a, shifted) == pytest.approx((0.1, 0.1, 0.1))
    # pairing by key: the order of the dict does not matter
    noisy = {q: v + 0.05 + float(rng.normal(0, 0.1)) for q, v in a.items()}
    reordered = dict(reversed(list(noisy.items())))
    result = paired_bootstrap(a, noisy, seed=3)
    assert paired_bootstrap(a, reordered, seed=3) == pytest.approx(result)
    mean, lo, hi = result
    assert 0.0 < lo < mean < hi  # a clear improvement: the interval excludes 0
    seq = paired_bootstrap(list(a.values()), list(noisy.values()), seed=3)
    assert seq == pytest.approx(result)
    with pytest.raises(ValueError):
        paired_bootstrap(a, {"q0": 1.0})
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_same_label_retrieval_matches_a_loop():
    from embedforge.evaluate.metrics import same_label_retrieval

    rng = np.random.default_rng(3)
    emb = rng.normal(size=(40, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = [str(i % 6) for i in range(39)] + ["lonely"]
    p1, ap, nd = [], [], []
    for i in range(40):
        order = [j for j in np.argsort(-(emb @ emb[i])) if j != i][:5]
        rel = [labels[j] == labels[i] for j in order]
        n_rel = sum(labels[j] == labels[i] for j in range(40) if j != i)
        p1.append(float(rel[0]))
        ap.append(sum(sum(rel[: r + 1]) / (r + 1) for r in range(5) if rel[r]) / max(min(n_rel, 5), 1))
        ideal = sum(1 / np.log2(r + 2) for r in range(min(n_rel, 5)))
        nd.append(sum(1 / np.log2(r + 2) for r in range(5) if rel[r]) / ideal if ideal else 0.0)
    got = same_label_retrieval(emb, labels, k=5)
    assert got["P@1"] == pytest.approx(np.mean(p1))
    assert got["MAP@5"] == pytest.approx(np.mean(ap))
    assert got["ndcg@5"] == pytest.approx(np.mean(nd))


def test_bootstraps_give_the_numbers_they_gave_before_they_shared_one_implementation() -> None:
    """Regression: outputs captured from the two separate bootstraps (metrics and adapt.choose)
    before they were merged into one; same seeds must keep giving exactly these numbers."""
    from embedforge.adapt.choose import stratified_paired_bootstrap

    rng = np.random.default_rng(7)
    v, w = rng.random(37), rng.random(37)
    s1 = [rng.random(23), rng.random(41), rng.random(5)]
    s2 = [x + rng.normal(0, 0.1, x.shape) for x in s1]
    assert bootstrap_ci(v, n_resamples=500, seed=3) == (0.4823572954411704, 0.40005815111121906, 0.574314211067021)
    # n = 3000 draws its resamples in chunks (bounded memory): the chunking must not change the stream
    assert bootstrap_ci(rng.random(3000), n_resamples=1500, seed=11) == (
        0.5029373736428918, 0.4926155454794437, 0.5129056806513244)
    assert paired_bootstrap(v, w, n_resamples=700, seed=5, confidence=0.9) == (
        0.016862332528142936, -0.10409044318226131, 0.14955401253675424)
    assert stratified_paired_bootstrap(s1, s2, n_resamples=900, seed=2) == (
        -2.2815712063354883, -5.226994530386323, 0.42510146877610905)
    assert stratified_paired_bootstrap([v], [w], n_resamples=2000, seed=3) == (
        1.6862332528142936, -12.141479624078782, 15.782110842788077)


def _reference_ndcg(ranked: list[float], grades: list[float], k: int) -> float:
    """nDCG@k written out by hand: linear gain, log2(rank + 1) discount, negative grades count 0."""
    dcg = sum(max(g, 0) / math.log2(r + 2) for r, g in enumerate(ranked[:k]))
    ideal = sorted((g for g in grades if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


@pytest.mark.parametrize("k", [1, 3, 10, 25])
def test_array_ndcg_and_recall_match_a_reference_on_random_data(k: int) -> None:
    from embedforge.evaluate.metrics import binary_ideal, ndcg_scores, ranked_relevance, recall_scores

    rng = np.random.default_rng(k)
    n, m = 200, 30
    grades = rng.choice([-1, 0, 0, 1, 2, 3], size=(n, m)).astype(float)  # grade of doc j for query i
    grades[:5] = 0  # queries without a relevant document
    order = np.argsort(rng.random((n, m)), axis=1)[:, :20]  # (n, 20) a ranking of 20 of the docs
    ranked = np.take_along_axis(grades, order, axis=1)
    got = ndcg_scores(ranked, grades, k)
    ref = [_reference_ndcg(ranked[i].tolist(), grades[i].tolist(), k) for i in range(n)]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert (got[:5] == 0).all()
    # binary relevance from ranked ids (-1 = nothing), as adapt's held-out sets produce them
    relevant = [tuple(np.flatnonzero(grades[i] >= 1).tolist()) for i in range(n)]
    rows = order.copy()
    rows[:, -3:] = -1
    hits, n_rel = ranked_relevance(rows, relevant, k)
    binary = [[1.0 if r in relevant[i] else 0.0 for r in rows[i]] for i in range(n)]
    ref_bin = [_reference_ndcg(binary[i], [1.0] * len(relevant[i]), k) for i in range(n)]
    np.testing.assert_allclose(ndcg_scores(hits, binary_ideal(n_rel, k), k), ref_bin, rtol=0, atol=1e-12)
    ref_recall = [sum(binary[i][:k]) / len(relevant[i]) if relevant[i] else 0.0 for i in range(n)]
    np.testing.assert_allclose(recall_scores(hits, n_rel, k), ref_recall, rtol=0, atol=1e-15)


def test_dict_ndcg_is_bit_identical_to_the_trec_style_loop() -> None:
    """ndcg_per_query keeps the exact numbers of the loop it replaced (sequential sums, g / log2)."""
    rng = np.random.default_rng(4)
    run = {f"q{q}": {f"d{i}": float(rng.integers(0, 4)) for i in range(int(rng.integers(1, 40)))} for q in range(100)}
    qrels = {q: {f"d{i}": int(rng.choice([-1, 0, 1, 2])) for i in rng.choice(60, size=8, replace=False)} for q in run}
    for k in (1, 10, 100):
        got = ndcg_per_query(run, qrels, k)
        for q, judged in qrels.items():
            ranking = [d for d, _ in sorted(run[q].items(), key=lambda kv: (kv[1], kv[0]), reverse=True)][:k]
            assert got[q] == _reference_ndcg([judged.get(d, 0) for d in ranking], list(judged.values()), k)
