"""int8 and binary embeddings for the first pass, float32 for the final ranking (spec ``int8`` / ``binary``).

Spec grammar: ``int8`` or ``binary``, optionally ``;rescore=R`` (default 4 for int8, 10 for
binary): the first pass keeps ``k * R`` candidates, which are then re-scored with the float32
vectors (``q · x``) and cut to ``k`` — the retrieve-then-rescore recipe of sentence-transformers'
``quantize_embeddings`` (which we call for the codes).

First-pass scores:

* int8: per-dimension calibration ranges ``[lo_j, hi_j]`` from the first vectors added, codes
  ``c_j ∈ [-128, 127]`` with ``x_j ≈ lo_j + (c_j + 128) · s_j``, ``s_j = (hi_j - lo_j) / 255``.
  Then ``q · x ≈ Σ_j (q_j s_j) c_j + const(q)``, so ranking by ``(q ⊙ s) · c`` is ranking by the
  dequantised dot product, without dequantising the database. 4× smaller than float32.
* binary: bit ``b_j = [x_j > 0]``, packed 8 per byte; the first pass ranks by Hamming distance
  between the query's bits and the document's (32× smaller than float32), computed by FAISS's
  popcount kernels (``faiss.knn_hamming``).

The float vectors stay where the caller keeps them (a collection passes a read-only memmap of its
``vectors.npy``), so memory holds only the codes plus the few rows read for rescoring.
"""

from __future__ import annotations

import numpy as np

from embedforge.errors import InputError
from embedforge.index.base import BaseIndex, check_vectors, empty_result, topk_from_scores

__all__ = ["QuantizedIndex", "parse_quantized_spec"]

DEFAULT_RESCORE = {"int8": 4, "binary": 10}  # candidates per result kept by the first pass
BLOCK_ROWS = 65_536  # database rows scored per block in the first pass


def parse_quantized_spec(spec: str) -> tuple[str, int]:
    kind, *rest = [p.strip() for p in spec.split(";")]
    if kind not in DEFAULT_RESCORE:
        raise InputError(f"unknown quantized index {kind!r}; expected int8 or binary")
    rescore = DEFAULT_RESCORE[kind]
    for item in rest:
        name, sep, value = item.partition("=")
        if name != "rescore" or not sep or not value.isdigit() or int(value) < 1:
            raise InputError(f"bad option {item!r} in {spec!r}; expected rescore=N with N >= 1")
        rescore = int(value)
    return kind, rescore


class QuantizedIndex(BaseIndex):
    """First pass on int8 or binary codes, exact float rescoring of the candidates."""

    def __init__(self, dim: int, spec: str = "int8") -> None:
        super().__init__(dim, spec)
        self.kind, self.rescore = parse_quantized_spec(spec)
        self._ranges: np.ndarray | None = None  # (2, dim) float32, int8 only
        self._codes: list[np.ndarray] = []  # blocks of int8 (n, dim) or uint8 (n, dim/8)
        self._floats: list[np.ndarray] = []  # matching float32 blocks (memmaps are kept as is)
        self._keys: list[np.ndarray] = []
        self._live: list[np.ndarray] = []  # bool per row; False once removed

    def __len__(self) -> int:
        return int(sum(int(m.sum()) for m in self._live))

    def _quantize(self, vectors: np.ndarray) -> np.ndarray:
        from sentence_transformers.util import quantize_embeddings

        if self.kind == "binary":
            return np.asarray(quantize_embeddings(vectors, precision="ubinary"), dtype=np.uint8)
        if self._ranges is None:
            if vectors.shape[0] < 2:
                raise InputError("int8 calibration needs at least 2 vectors in the first batch")
            self._ranges = np.stack([vectors.min(axis=0), vectors.max(axis=0)]).astype(np.float32)
        return np.asarray(quantize_embeddings(vectors, precision="int8", ranges=self._ranges), dtype=np.int8)

    def _vectors_to_add(self, vectors: np.ndarray) -> np.ndarray:
        if isinstance(vectors, np.memmap) and vectors.dtype == np.float32 and vectors.ndim == 2:
            if vectors.shape[1] != self.dim:
                raise InputError(f"dimension mismatch: vectors have dimension {vectors.shape[1]}, the index has {self.dim}")
            return vectors  # keep it on disk
        return check_vectors(vectors, self.dim)

    def _add(self, floats: np.ndarray, keys: np.ndarray) -> None:
        codes = [self._quantize(np.asarray(floats[i : i + BLOCK_ROWS])) for i in range(0, floats.shape[0], BLOCK_ROWS)]
        self._codes.append(np.concatenate(codes))
        self._floats.append(floats)
        self._keys.append(keys)
        self._live.append(np.ones(keys.shape[0], dtype=bool))

    def _remove(self, keys: np.ndarray) -> int:
        count = 0
        for block_keys, live in zip(self._keys, self._live, strict=True):
            hit = np.isin(block_keys, keys) & live
            live[hit] = False
            count += int(hit.sum())
        return count

    def _first_pass(self, queries: np.ndarray, block: int, start: int, stop: int) -> np.ndarray:
        codes = self._codes[block][start:stop]
        assert self._ranges is not None
        step = (self._ranges[1] - self._ranges[0]) / 255.0  # (dim,)
        return (queries * step[None, :]) @ codes.astype(np.float32).T  # (n, b)

    def _hamming_pass(self, qbits: np.ndarray, block: int, mask: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
        """Binary first pass over one block with FAISS's Hamming k-NN (popcount kernels): the
        ``want`` nearest live rows to the packed query bits ``qbits`` by Hamming distance ->
        (-distance, row in block), -1 padded."""
        import faiss

        n = qbits.shape[0]
        rows = np.flatnonzero(mask)
        if not rows.size:
            return empty_result(n, want)
        codes = self._codes[block] if rows.size == mask.size else self._codes[block][rows]
        kk = min(want, rows.size)
        dist, idx = faiss.knn_hamming(qbits, np.ascontiguousarray(codes), kk)
        out_s, out_p = empty_result(n, want)
        out_s[:, :kk] = -dist.astype(np.float32)
        out_p[:, :kk] = rows[idx]
        return out_s, out_p

    def _search(self, queries: np.ndarray, k: int, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = queries.shape[0]
        if not len(self):
            return empty_result(n, k)
        want = k * self.rescore
        # First pass: candidates as (block, row) positions, encoded in one int64 "position key".
        cand_s, cand_p = empty_result(n, want)
        qbits = np.ascontiguousarray(np.packbits(queries > 0, axis=1)) if self.kind == "binary" else None  # (n, dim/8)
        offset = 0
        for b, (keys, live) in enumerate(zip(self._keys, self._live, strict=True)):
            mask = live if subset is None else live & np.isin(keys, subset)
            if qbits is not None:
                s, p = self._hamming_pass(qbits, b, mask, want)
                p[p >= 0] += offset
                cand_s, cand_p = topk_from_scores_rows(np.concatenate([cand_s, s], axis=1), np.concatenate([cand_p, p], axis=1), want)
                offset += keys.shape[0]
                continue
            for start in range(0, keys.shape[0], BLOCK_ROWS):
                stop = min(start + BLOCK_ROWS, keys.shape[0])
                scores = self._first_pass(queries, b, start, stop)
                scores[:, ~mask[start:stop]] = -np.inf
                s, p = topk_from_scores(scores, np.arange(offset + start, offset + stop, dtype=np.int64), want)
                both_s = np.concatenate([cand_s, s], axis=1)
                both_p = np.concatenate([cand_p, p], axis=1)
                cand_s, cand_p = topk_from_scores_rows(both_s, both_p, want)
            offset += keys.shape[0]
        return self._rescore(queries, cand_p, k)

    def _rescore(self, queries: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact float scores of the candidate positions; top-k of them, as keys."""
        bounds = np.cumsum([0] + [keys.shape[0] for keys in self._keys])
        all_keys = np.concatenate(self._keys)
        n = queries.shape[0]
        out_s, out_k = empty_result(n, k)
        for i in range(n):
            pos = positions[i][positions[i] >= 0]
            if not pos.size:
                continue
            block = np.searchsorted(bounds, pos, side="right") - 1
            rows = np.empty((pos.size, self.dim), dtype=np.float32)
            for b in np.unique(block):
                sel = block == b
                local = pos[sel] - bounds[b]
                order = np.argsort(local)  # sorted reads from a memmap
                fetched = np.asarray(self._floats[b][local[order]], dtype=np.float32)
                rows[np.flatnonzero(sel)[order]] = fetched
            s, kk = topk_from_scores((rows @ queries[i])[None, :], all_keys[pos], k)
            out_s[i], out_k[i] = s[0], kk[0]
        return out_s, out_k

    def drop(self) -> None:
        self._ranges = None
        self._codes, self._floats, self._keys, self._live = [], [], [], []


def topk_from_scores_rows(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row where every row has its own ids (n, m); -1 ids never win."""
    scores = np.where(ids < 0, -np.inf, scores)
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -scores), axis=1)[:, :k]
    out_s = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    out_i = np.take_along_axis(ids, order, axis=1)
    out_i[~np.isfinite(out_s)] = -1
    return out_s, out_i
