"""Vector primitives on the ground floor: one L2 normalisation and one embedding-array check.

Every module that normalises rows or validates an (n, dim) embedding array calls these; nothing
else in the package divides by a norm.
"""

from __future__ import annotations

import numpy as np

from embedforge.errors import InputError

__all__ = ["l2_normalize", "as_embeddings"]

EPS = 1e-12  # rows with a smaller norm (all-zero rows) stay zero instead of dividing by 0


def l2_normalize(x: np.ndarray, *, dtype: type | np.dtype = np.float32) -> np.ndarray:
    """Each row of ``x`` (n, d) divided by its Euclidean norm (zero rows stay zero); a new array of ``dtype``."""
    arr = np.asarray(x, dtype=dtype)  # (n, d)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)  # (n, 1)
    return arr / np.maximum(norms, EPS)


def as_embeddings(emb: object, name: str = "embeddings", *, normalize: bool = False) -> np.ndarray:
    """``emb`` as a contiguous float32 (n, dim) array; a wrong shape, dtype or a NaN is an InputError.

    With ``normalize`` the rows are L2-normalised (cosine similarity becomes a dot product).
    """
    arr = np.asarray(emb)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D (n, dim) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} holds NaN or infinite values")
    return l2_normalize(arr) if normalize else arr
