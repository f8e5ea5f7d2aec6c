"""Fusing ranked lists on the ground floor: reciprocal-rank fusion and min-max score fusion.

Hybrid retrieval (:func:`embedforge.query.fuse`) and a fused second stage
(:func:`embedforge.rerank.model.rerank_candidates` with ``weights``) both call these; nothing else
in the package normalises scores across runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np

from embedforge.errors import InputError

__all__ = ["RRF_K", "fusion_weights", "parse_fusion_weights", "rrf_fuse", "score_fuse", "weights_from_flags"]

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


def fusion_weights(weights: Sequence[float] | None, n_scorers: int) -> list[float] | None:
    """Checked fusion weights of a second stage: the first stage's, then one per scorer (finite, >= 0,
    not all 0); None (replace the first stage's score) is allowed for one scorer only."""
    if weights is None:
        if n_scorers > 1:
            raise InputError(f"{n_scorers} re-rankers need fusion weights: the first stage's, then one per re-ranker")
        return None
    out = [float(w) for w in weights]
    if len(out) != n_scorers + 1:
        raise InputError(f"{len(out)} fusion weights for the first stage and {n_scorers} re-ranker(s); "
                         f"expected {n_scorers + 1} (the first stage's, then one per re-ranker)")
    if any(not np.isfinite(w) or w < 0 for w in out) or sum(out) <= 0:
        raise InputError(f"fusion weights must be finite, >= 0 and not all 0, got {out}")
    return out


def parse_fusion_weights(text: str, n_scorers: int, flag: str = "--rerank-weights") -> list[float]:
    """``"W0,W1,..."`` (a command line's ``flag``) as checked :func:`fusion_weights`."""
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise InputError(f"{flag} expects comma-separated numbers such as 0.5,0.5, got {text!r}") from None
    return cast("list[float]", fusion_weights(weights, n_scorers))  # never None: weights were given


def weights_from_flags(text: str | None, n_scorers: int, scorer_flag: str, flag: str = "--rerank-weights") -> list[float] | None:
    """A command line's ``flag`` for ``n_scorers`` re-rankers given with ``scorer_flag`` (``search --rerank``,
    ``serve --reranker``): checked weights, or None when not given (allowed with at most one re-ranker)."""
    if not text:
        if n_scorers > 1:
            raise InputError(f"{n_scorers} {scorer_flag} need {flag} W0,W1,... (the first stage's weight, then one per {scorer_flag})")
        return None
    if n_scorers == 0:
        raise InputError(f"{flag} needs {scorer_flag} DIR (the first stage's weight, then one per {scorer_flag})")
    return parse_fusion_weights(text, n_scorers, flag)
