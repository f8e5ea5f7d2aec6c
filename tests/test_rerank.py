"""train-reranker's held-out check: query-disjoint split, the ordering metric, the manifest record."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from embedforge.errors import InputError
from embedforge.rerank.train import (
    LabelledPairs,
    RerankerConfig,
    ranking_agreement,
    split_by_query,
    train_reranker,
)


def make_pairs(queries: int, per_query: int = 3) -> LabelledPairs:
    first, second, labels = [], [], []
    for q in range(queries):
        for d in range(per_query):
            first.append(f"question number {q}")
            second.append(f"document {d} about topic {q}")
            labels.append(1.0 if d == 0 else 0.0)
    return LabelledPairs(first, second, labels, "test")


def test_split_holds_out_whole_queries() -> None:
    pairs = make_pairs(40)
    train, held = split_by_query(pairs, 0.1, seed=1)
    assert len(set(held.first)) == 4 and len(held) == 12 and len(train) == len(pairs) - 12
    assert not set(train.first) & set(held.first)
    assert split_by_query(pairs, 0.1, seed=1)[1].first == held.first  # seeded
    assert len(split_by_query(make_pairs(9), 0.5, seed=1)[1]) == 0  # too few queries: none held out
    assert len(split_by_query(pairs, 0.0, seed=1)[1]) == 0


def brute_force_pairwise(pairs: LabelledPairs, scores: np.ndarray) -> float:
    right = total = 0.0
    for i, j in itertools.permutations(range(len(pairs)), 2):
        if pairs.first[i] == pairs.first[j] and pairs.labels[i] > pairs.labels[j]:
            total += 1
            right += 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
    return right / total


def test_ranking_agreement_against_brute_force() -> None:
    pairs = make_pairs(12, per_query=4)
    labels = np.asarray(pairs.labels)
    assert ranking_agreement(pairs, labels) == ("pairwise_accuracy", 1.0)
    assert ranking_agreement(pairs, -labels) == ("pairwise_accuracy", 0.0)
    assert ranking_agreement(pairs, np.zeros(len(pairs)))[1] == 0.5  # all ties count half
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(len(pairs))
    metric, value = ranking_agreement(pairs, scores)
    assert metric == "pairwise_accuracy" and value == pytest.approx(brute_force_pairwise(pairs, scores))
    # one pair per query (STS style): Spearman over all pairs
    sts = LabelledPairs([f"s{i}" for i in range(8)], [f"t{i}" for i in range(8)], [i / 7 for i in range(8)])
    assert ranking_agreement(sts, np.arange(8.0)) == ("spearman", pytest.approx(1.0))


def test_train_reranker_records_the_heldout_check(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = make_pairs(60)
    out = train_reranker(str(tiny_model_dir), pairs, tmp_path / "ce",
                         RerankerConfig(max_steps=2, batch_size=4, max_length=32, holdout=0.2))
    info = json.loads((out / "embedforge_reranker.json").read_text())
    held = info["heldout"]
    assert held["queries"] == 12 and held["pairs"] == 36 and info["pairs"] == len(pairs) - 36
    assert held["metric"] == "pairwise_accuracy"
    assert 0.0 <= held["reranker"] <= 1.0 and 0.0 <= held["bi_encoder"] <= 1.0
    assert held["beats_bi_encoder"] == (held["reranker"] > held["bi_encoder"])


def test_bad_holdout_is_refused_before_anything_is_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holdout"):
        train_reranker(str(tiny_model_dir), make_pairs(20), tmp_path / "ce", RerankerConfig(holdout=1.0))
    assert not (tmp_path / "ce").exists()
