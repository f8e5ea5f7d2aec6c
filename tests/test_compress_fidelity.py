"""Label-free fidelity: array functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedforge.compress.fidelity import fidelity, knn_ids, knn_overlap, mean_cosine
from embedforge.compress.pca import fit_pca, pca_transform
from embedforge.errors import InputError


def test_mean_cosine_by_hand() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[3.0, 0.0], [1.0, 1.0]])
    assert mean_cosine(a, b) == pytest.approx((1.0 + 1.0 / math.sqrt(2.0)) / 2.0)


def test_mean_cosine_shapes_must_match() -> None:
    with pytest.raises(InputError):
        mean_cosine(np.zeros((2, 3)), np.zeros((2, 4)))


def test_knn_ids_excludes_self_and_breaks_ties_by_id() -> None:
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert knn_ids(x, 1).ravel().tolist() == [1, 0, 3, 2]
    tie = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # all orthogonal: every neighbour ties
    assert knn_ids(tie, 2).tolist() == [[1, 2], [0, 2], [0, 1]]


def test_knn_overlap_by_hand() -> None:
    a = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])  # 1-NN: 1, 0, 3, 2
    b = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # 1-NN: 1, 0, 1, 0
    assert knn_overlap(a, b, k=1) == pytest.approx(0.5)
    assert knn_overlap(a, a, k=2) == pytest.approx(1.0)


def test_knn_needs_k_below_n() -> None:
    with pytest.raises(InputError):
        knn_ids(np.eye(3), 3)


def test_fidelity_identical_is_perfect() -> None:
    x = np.random.default_rng(0).normal(size=(30, 8))
    out = fidelity(x, x * 2.0, k=10)
    assert out["mean_cosine"] == pytest.approx(1.0)
    assert out["knn_overlap@10"] == pytest.approx(1.0)
    assert out["holdout_texts"] == 30


def test_fidelity_small_holdout_lowers_k_but_keeps_the_name() -> None:
    x = np.random.default_rng(1).normal(size=(5, 4))
    assert fidelity(x, x, k=10)["knn_overlap@10"] == pytest.approx(1.0)


def test_fidelity_with_projection_is_the_kept_share_of_length() -> None:
    rng = np.random.default_rng(2)
    t = rng.normal(size=(40, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    full = fit_pca(t, 6)
    s_full = pca_transform(t, full)
    assert fidelity(s_full, t, projection=full.components, mean=full.mean)["mean_cosine"] == pytest.approx(1.0)
    part = fit_pca(t, 2)
    s = pca_transform(t, part)
    centred = t - part.mean
    expected = np.mean(np.linalg.norm(s, axis=1) / np.linalg.norm(centred, axis=1))  # cos(proj(v), v) = |proj v| / |v|
    got = fidelity(s / np.linalg.norm(s, axis=1, keepdims=True), t, projection=part.components, mean=part.mean)
    assert got["mean_cosine"] == pytest.approx(expected)


def test_fidelity_other_dimension_needs_projection() -> None:
    with pytest.raises(InputError, match="projection"):
        fidelity(np.zeros((4, 2)), np.ones((4, 3)))
