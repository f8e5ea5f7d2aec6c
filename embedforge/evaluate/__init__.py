"""Evaluation: pure metric functions (:mod:`.metrics`) and evaluators returning ``dict[str, float]``."""

from __future__ import annotations

from embedforge.evaluate.metrics import (
    alignment,
    bootstrap_ci,
    cosine_pairs,
    ndcg_at_k,
    ndcg_per_query,
    ndcg_scores,
    paired_bootstrap,
    pearson,
    recall_at_k,
    recall_per_query,
    recall_scores,
    spearman,
    stratified_bootstrap_ci,
    uniformity,
)
from embedforge.evaluate.sts import (
    STS_TASKS,
    StsData,
    evaluate_sts,
    format_sts_table,
    load_semeval_sts,
    load_semeval_sts_subsets,
    load_sickr,
    load_sts_task,
    load_stsb,
    sts_spearman,
)

__all__ = [
    "STS_TASKS",
    "StsData",
    "alignment",
    "bootstrap_ci",
    "cosine_pairs",
    "evaluate_sts",
    "format_sts_table",
    "load_semeval_sts",
    "load_semeval_sts_subsets",
    "load_sickr",
    "load_sts_task",
    "load_stsb",
    "ndcg_at_k",
    "ndcg_per_query",
    "ndcg_scores",
    "paired_bootstrap",
    "pearson",
    "recall_at_k",
    "recall_per_query",
    "recall_scores",
    "spearman",
    "stratified_bootstrap_ci",
    "sts_spearman",
    "uniformity",
]
