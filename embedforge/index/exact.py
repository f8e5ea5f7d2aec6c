"""Exact inner-product search in NumPy: the reference every approximate backend is tested against.

score(q, x) = q · x; for L2-normalised vectors this is cosine similarity. The database is
scanned in blocks of :data:`BLOCK_ROWS` rows so memory stays bounded on millions of vectors;
per block the top-k is taken with ``argpartition`` and merged into a running top-k.
:func:`exact_search` is the package's one exact k-NN: collections, this backend and
:mod:`embedforge.mine` all call it.
"""

from __future__ import annotations

import numpy as np

from embedforge.errors import InputError
from embedforge.index.base import BaseIndex, empty_result, topk_from_scores

__all__ = ["ExactIndex", "exact_search"]

BLOCK_ROWS = 65_536  # database rows per matrix product (64k x 384 float32 = 100 MB)


def exact_search(
    queries: np.ndarray,
    vectors: np.ndarray,
    keys: np.ndarray,
    k: int,
    *,
    mask: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``queries @ vectors.T`` (the faiss ``knn`` shape, with keys and a row mask).

    Args:
        queries: (n, d) float32.
        vectors: (m, d) float32 (a memmap is fine; it is read block by block).
        keys: (m,) int64, the key returned for each row.
        k: results per query.
        mask: optional (m,) bool, False rows are never returned.
        exclude: optional (n,) int64, per query one key never returned for it (its own row,
            when the queries are the database itself; ``-1``: none).
    Returns:
        (scores (n, k) float32, keys (n, k) int64), -inf / -1 padded; ties by the smaller key.
    """
    n, m = queries.shape[0], vectors.shape[0]
    best_s, best_k = empty_result(n, k)
    if n == 0 or m == 0:
        return best_s, best_k
    if exclude is not None and np.shape(exclude) != (n,):
        raise InputError(f"exclude needs one key per query ({n}), got shape {np.shape(exclude)}")
    for start in range(0, m, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, m)
        block = np.asarray(vectors[start:stop], dtype=np.float32)  # (b, d)
        scores = queries @ block.T  # (n, b)
        if mask is not None:
            scores[:, ~mask[start:stop]] = -np.inf
        if exclude is not None:
            scores[np.asarray(exclude)[:, None] == keys[start:stop][None, :]] = -np.inf  # (n, b) bool
        s, kk = topk_from_scores(scores, keys[start:stop], k)
        if start == 0:
            best_s, best_k = s, kk
        else:
            best_s, best_k = _merge(best_s, best_k, s, kk, k)
    return best_s, best_k


def _merge(
    s1: np.ndarray, k1: np.ndarray, s2: np.ndarray, k2: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two (n, k) sorted top-k lists into one, score descending then key ascending."""
    s = np.concatenate([s1, s2], axis=1)  # (n, 2k)
    keys = np.concatenate([k1, k2], axis=1)
    sort_keys = np.where(keys < 0, np.iinfo(np.int64).max, keys)  # padding last among equal -inf
    order = np.lexsort((sort_keys, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(keys, order, axis=1)


class ExactIndex(BaseIndex):
    """Brute-force inner product over all stored vectors (spec ``"exact"``).

    Not persistent: a collection keeps the vectors anyway and rebuilds this index from them
    when it opens, so ``save`` writes nothing.
    """

    def __init__(self, dim: int, spec: str = "exact") -> None:
        if spec.strip() != "exact":
            raise InputError(f"'exact' takes no options, got {spec!r}")
        super().__init__(dim, "exact")
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # added since the last search
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)  # (m, dim)
        self._keys = np.zeros(0, dtype=np.int64)  # (m,)

    def _consolidate(self) -> None:
        if self._pending:
            self._vectors = np.concatenate([self._vectors] + [v for v, _ in self._pending])
            self._keys = np.concatenate([self._keys] + [k for _, k in self._pending])
            self._pending = []

    def __len__(self) -> int:
        return self._keys.shape[0] + sum(k.shape[0] for _, k in self._pending)

    def _add(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        if not self._keys.shape[0] and not self._pending:
            self._vectors, self._keys = vectors, keys  # no copy for the first (often only) batch
        else:
            self._pending.append((vectors, keys))

    def _remove(self, keys: np.ndarray) -> int:
        self._consolidate()
        gone = np.isin(self._keys, keys)
        count = int(gone.sum())
        if count:
            self._vectors = self._vectors[~gone]
            self._keys = self._keys[~gone]
        return count

    def _search(self, queries: np.ndarray, k: int, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        self._consolidate()
        mask = None if subset is None else np.isin(self._keys, subset)
        return exact_search(queries, self._vectors, self._keys, k, mask=mask)

    def drop(self) -> None:
        self._pending = []
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._keys = np.zeros(0, dtype=np.int64)
