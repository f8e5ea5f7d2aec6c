"""Fusing ranked lists on the ground floor: reciprocal-rank fusion and min-max score fusion.

Hybrid retrieval (:func:`embedforge.query.fuse`) and a fused second stage
(:func:`embedforge.rerank.model.rerank_candidates` with ``weights``) both call these; nothing else
in the package normalises scores across runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from embedforge.errors import InputError

__all__ = ["RRF_K", "rrf_fuse", "score_fuse"]

RRF_K = 60  # Cormack, Clarke & Büttcher (SIGIR 2009): the constant in 1 / (k + rank)


def rrf_fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion: score(d) = Σ_lists 1 / (k + rank(d)), rank 1-based (Cormack et al. 2009).

    ``rankings``: lists of row ids, best first (``-1`` entries are skipped).
    """
    fused: dict[int, float] = {}
    for ranking in rankings:
        rank = 0
        for row in ranking:
            if row < 0:
                continue
            rank += 1
            fused[int(row)] = fused.get(int(row), 0.0) + 1.0 / (k + rank)
    return fused


def score_fuse(runs: Sequence[Mapping[int, float]], weights: Sequence[float] | None = None) -> dict[int, float]:
    """Min-max normalised score fusion (CombSUM of normalised scores; Fox & Shaw 1994, Lee 1997).

    Per run, s' = (s − min) / (max − min) over that run's returned candidates (all 1.0 if
    max = min); score(d) = Σ_runs w_run · s'(d), a document missing from a run adding 0.
    """
    weights = list(weights) if weights is not None else [1.0] * len(runs)
    if len(weights) != len(runs):
        raise InputError(f"{len(weights)} weights for {len(runs)} runs")
    fused: dict[int, float] = {}
    for run, weight in zip(runs, weights, strict=True):
        if not run:
            continue
        values = np.fromiter(run.values(), dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        for row, score in run.items():
            norm = 1.0 if hi == lo else (score - lo) / (hi - lo)
            fused[row] = fused.get(row, 0.0) + weight * norm
    return fused
