"""The vector primitives: one L2 normalisation, one embedding-array check."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import normalize

from embedforge.errors import InputError
from embedforge.vectors import as_embeddings, l2_normalize


def test_l2_normalize_matches_sklearn_and_keeps_zero_rows() -> None:
    x = np.random.default_rng(0).standard_normal((50, 7))
    x[3] = 0.0
    before = x.copy()
    got = l2_normalize(x)
    assert np.array_equal(x, before)  # the input is not modified in place
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, normalize(x), rtol=1e-6, atol=1e-7)
    assert (got[3] == 0).all()  # a zero row stays zero instead of becoming NaN
    norms = np.linalg.norm(np.delete(got, 3, axis=0), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    assert l2_normalize(x, dtype=np.float64).dtype == np.float64


def test_l2_normalize_is_scale_invariant() -> None:
    x = np.random.default_rng(1).standard_normal((20, 5))
    np.testing.assert_allclose(l2_normalize(x * 1e3, dtype=np.float64), l2_normalize(x * 1e-3, dtype=np.float64))


def test_as_embeddings_returns_contiguous_float32() -> None:
    x = np.asfortranarray(np.arange(12, dtype=np.int64).reshape(4, 3))
    arr = as_embeddings(x)
    assert arr.dtype == np.float32 and arr.flags.c_contiguous
    np.testing.assert_array_equal(arr, x.astype(np.float32))
    unit = as_embeddings(x, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit[1:], axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros(4), "2-D"),
        (np.zeros((2, 2, 2)), "2-D"),
        (np.array([["a", "b"]]), "numeric"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([[1.0, np.inf]]), "infinite"),
    ],
)
def test_as_embeddings_rejects_bad_arrays(value: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        as_embeddings(value, "vectors")
