"""The guardrail of ``embedforge train-reranker``: does the trained re-ranker beat the first stage?

On the held-out queries (never trained on), the cross-encoder's scores and the starting model's
cosine (what dense search ranks by) both order each query's labelled documents. The per-query
pairwise accuracy of the two is compared with the package's paired bootstrap
(:func:`embedforge.evaluate.metrics.paired_bootstrap`, 95%): the re-ranker is ``recommended``
only when the whole interval of (re-ranker − cosine) lies above 0. Anything else — worse, a tie
within noise, or no comparison possible — is saved as ``"recommended": false``, and search warns
about it, serve refuses it (see :func:`embedforge.rerank.model.not_recommended_reason`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["BASELINE_NAME", "per_query_pairwise", "ranking_agreement", "check_reranker", "decide"]

BASELINE_NAME = "the starting model's cosine"
CONFIDENCE = 0.95  # the paired bootstrap's interval
MIN_QUERIES = 10  # fewer held-out queries with mixed labels: Spearman over pairs, no per-query test


def per_query_pairwise(first: Sequence[str], labels: Sequence[float], scores: Any) -> dict[str, tuple[float, float]]:
    """Per query with mixed labels: (right, total) over its (more relevant, less relevant) pairs
    of documents that ``scores`` order correctly; ties count half."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(first):
        groups.setdefault(q, []).append(i)
    out: dict[str, tuple[float, float]] = {}
    for q, g in groups.items():
        gy, gs = y[g], s[g]
        better = gy[:, None] > gy[None, :]  # (m, m): i more relevant than j
        if not better.any():
            continue
        right = (gs[:, None] > gs[None, :]) + 0.5 * (gs[:, None] == gs[None, :])  # (m, m)
        out[q] = (float(right[better].sum()), float(better.sum()))
    return out


def ranking_agreement(pairs: Any, scores: Any) -> tuple[str, float]:
    """How well ``scores`` order ``pairs`` (a LabelledPairs) by label: (metric name, value).

    When at least 10 queries have pairs with different labels: the share of (more relevant, less
    relevant) pairs of the same query that the scores put in the right order (ties count half) —
    what re-ranking one query's candidates needs. Otherwise (e.g. STS-style pairs, one per query):
    Spearman's ρ between scores and labels over all pairs.
    """
    per_query = per_query_pairwise(pairs.first, pairs.labels, scores)
    if len(per_query) >= MIN_QUERIES:
        right = sum(r for r, _ in per_query.values())
        total = sum(t for _, t in per_query.values())
        return "pairwise_accuracy", right / total
    from scipy.stats import spearmanr

    rho = spearmanr(np.asarray(scores, dtype=np.float64), np.asarray(pairs.labels)).statistic
    return "spearman", float(rho) if rho == rho else 0.0


def _bi_encoder_scores(model_name: str, pairs: Any) -> Any:
    """Cosine of the starting model used as a bi-encoder: what search ranks by without re-ranking."""
    from embedforge.encode import encode
    from embedforge.evaluate.metrics import cosine_pairs
    from embedforge.models import load_model

    model = load_model(model_name)
    return cosine_pairs(encode(model, pairs.first, show_progress=False), encode(model, pairs.second, show_progress=False))


def decide(pairs: Any, reranker: Any, baseline: Any, seed: int = 0) -> dict[str, Any]:
    """The rule on held-out ``pairs``: paired bootstrap of per-query pairwise accuracy, re-ranker
    minus baseline; ``recommended`` when the 95% interval lies above 0."""
    from embedforge.evaluate.metrics import paired_bootstrap

    ce = per_query_pairwise(pairs.first, pairs.labels, reranker)
    base = per_query_pairwise(pairs.first, pairs.labels, baseline)
    if len(ce) < MIN_QUERIES:
        return {"recommended": False, "reason": f"only {len(ce)} held-out queries with relevant and non-relevant "
                f"documents (need {MIN_QUERIES}) — no per-query comparison with {BASELINE_NAME}"}
    a = {q: base[q][0] / base[q][1] for q in ce}
    b = {q: ce[q][0] / ce[q][1] for q in ce}
    diff, lo, hi = paired_bootstrap(a, b, seed=seed, confidence=CONFIDENCE)
    out: dict[str, Any] = {"recommended": bool(lo > 0), "diff": round(diff, 4), "ci95": [round(lo, 4), round(hi, 4)],
                           "queries_compared": len(ce)}
    if not out["recommended"]:
        verdict = "worse than" if hi < 0 else "not better, beyond noise, than"
        out["reason"] = (f"on {len(ce)} held-out queries its pairwise accuracy is {verdict} {BASELINE_NAME} "
                         f"({diff:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}])")
    return out


def check_reranker(model_name: str, cross_encoder: Any, held: Any, batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Score the held-out pairs with the trained cross-encoder and with the starting model's cosine,
    and apply the rule (:func:`decide`)."""
    from embedforge.rerank.model import pair_scores

    ce = pair_scores(cross_encoder, list(zip(held.first, held.second, strict=True)), batch_size=batch_size)
    metric, value = ranking_agreement(held, ce)
    out: dict[str, Any] = {"pairs": len(held), "queries": len(set(held.first)), "metric": metric, "reranker": round(value, 4)}
    try:
        base_scores = _bi_encoder_scores(model_name, held)
    except Exception as err:  # the start is not usable as a bi-encoder: no comparison, say why
        out["bi_encoder"] = None
        out["bi_encoder_error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        out["beats_bi_encoder"] = None
        out.update(recommended=False, reason=f"no comparison with {BASELINE_NAME} ({out['bi_encoder_error']})")
        return out
    out["bi_encoder"] = round(ranking_agreement(held, base_scores)[1], 4)
    out["beats_bi_encoder"] = bool(out["reranker"] > out["bi_encoder"])
    out.update(decide(held, ce, base_scores, seed=seed))
    if metric == "spearman" and "reason" in out:
        out["reason"] = f"{out['reason']} (Spearman {value:.3f} vs {out['bi_encoder']:.3f})"
    return out
