"""The vector-index Protocol every backend implements, and the helpers they share.

An index stores float32 vectors under caller-chosen int64 keys and answers top-k queries by
inner product (cosine similarity when the vectors are L2-normalised, as collections store them).
The one return type, as in faiss::

    scores, keys = index.search(queries, k)   # (n, k) float32, (n, k) int64, -1 padded

Rows are sorted by score descending; where fewer than ``k`` vectors exist (or pass the
``subset`` filter) the tail is padded with key ``-1`` and score ``-inf``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from embedforge.errors import InputError

__all__ = [
    "VectorIndex",
    "PAD_KEY",
    "check_vectors",
    "check_keys",
    "check_k",
    "empty_result",
    "topk_from_scores",
]

PAD_KEY = -1  # the key of an empty result slot (faiss' convention)


@runtime_checkable
class VectorIndex(Protocol):
    """What a collection needs from a vector index. Backends: exact, faiss, quantized, milvus.

    ``persistent`` says whether :meth:`save` writes the index itself (faiss, milvus) or whether
    the owner rebuilds it from the stored vectors on load (exact, quantized: building is a copy).
    """

    dim: int
    spec: str  # the spec string that :func:`embedforge.index.make_index` builds this index from
    persistent: bool

    def __len__(self) -> int:
        """Number of live (not removed) vectors."""
        ...

    def add(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        """Add ``vectors`` (n, dim) float32 under ``keys`` (n,) int64; keys must be new and >= 0."""
        ...

    def remove(self, keys: np.ndarray) -> int:
        """Remove the vectors with these keys (unknown keys are ignored); returns how many went."""
        ...

    def search(
        self, queries: np.ndarray, k: int, *, subset: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: (scores (n, k) float32, keys (n, k) int64, -1 padded).

        ``subset``: when given, only vectors whose key is in this int64 array may be returned.
        """
        ...

    def save(self, path: Path) -> None:
        """Write the index under the directory ``path`` (no-op for non-persistent indexes)."""
        ...


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (n, dim) array; a clear InputError otherwise."""
    arr = np.asarray(vectors)
    if arr.ndim == 1 and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D (n, {dim}) array, got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise InputError(f"dimension mismatch: {what} have dimension {arr.shape[1]}, the index has {dim}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what} must be floating point, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return arr


def check_keys(keys: np.ndarray, n: int) -> np.ndarray:
    """``keys`` as a contiguous int64 (n,) array of distinct non-negative values."""
    arr = np.ascontiguousarray(np.asarray(keys).reshape(-1))
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"keys must be integers, got {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.shape[0] != n:
        raise InputError(f"{arr.shape[0]} keys for {n} vectors")
    if n and arr.min() < 0:
        raise InputError("keys must be >= 0 (-1 marks an empty result slot)")
    if np.unique(arr).shape[0] != n:
        raise InputError("duplicate keys in one add() call")
    return arr


def check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise InputError(f"k must be a positive integer, got {k}")
    return int(k)


def empty_result(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All-padding result: scores -inf, keys -1."""
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), PAD_KEY, dtype=np.int64)


def topk_from_scores(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of a dense (n, m) score matrix whose columns carry ``keys`` (m,); -inf columns never win.

    Ties are broken by the smaller key first, so every backend's reference order is deterministic.
    """
    n, m = scores.shape
    out_s, out_k = empty_result(n, k)
    if m == 0:
        return out_s, out_k
    kk = min(k, m)
    if kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]  # (n, kk) unordered
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    part_scores = np.take_along_axis(scores, part, axis=1)  # (n, kk)
    part_keys = keys[part]  # (n, kk)
    order = np.lexsort((part_keys, -part_scores), axis=1)  # by score desc, then key asc
    sorted_scores = np.take_along_axis(part_scores, order, axis=1)
    sorted_keys = np.take_along_axis(part_keys, order, axis=1)
    valid = np.isfinite(sorted_scores)
    out_s[:, :kk] = np.where(valid, sorted_scores, -np.inf)
    out_k[:, :kk] = np.where(valid, sorted_keys, PAD_KEY)
    return out_s, out_k

