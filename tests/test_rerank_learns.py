"""The trainer learns: a tiny random cross-encoder, trained by ``train_reranker`` on a separable toy
task, orders held-out pairs it never saw correctly. Guards the whole path — labels aligned with
their pairs, the document reaching the model, the loss's sign, sentence-transformers' trainer and
data collator, the held-out scorer — against the failure the SciFact re-ranker showed (chance)."""

from __future__ import annotations

import random
from pathlib import Path

from embedforge.rerank.check import ranking_agreement
from embedforge.rerank.model import load_cross_encoder, pair_scores
from embedforge.rerank.train import LabelledPairs, RerankerConfig, train_reranker

FILLER = ["cats", "rocket", "bread", "river", "orbit", "oven", "boat", "planet", "flour", "rain", "kitten", "launch"]


def marker_task(queries: int, seed: int) -> LabelledPairs:
    """Per random query, one document with the word 'relevant' (label 1) and one with 'unrelated'
    (label 0), both padded with random filler words: separable only by reading the document."""
    rng = random.Random(seed)
    first, second, labels = [], [], []
    for _ in range(queries):
        query = " ".join(rng.sample(FILLER, 2))
        for label, word in ((1.0, "relevant"), (0.0, "unrelated")):
            words = rng.sample(FILLER, 2)
            words.insert(rng.randrange(3), word)
            first.append(query)
            second.append(" ".join(words))
            labels.append(label)
    return LabelledPairs(first, second, labels, "toy")


def test_a_tiny_cross_encoder_learns_a_separable_toy_task(tiny_hf_dir: Path, tmp_path: Path) -> None:
    held = marker_task(30, seed=1)  # new queries and documents
    pairs = list(zip(held.first, held.second, strict=True))
    config = RerankerConfig(epochs=4, batch_size=16, max_length=16, lr=1e-3, holdout=0.0, seed=0)
    untrained = train_reranker(str(tiny_hf_dir), marker_task(64, seed=0), tmp_path / "start",
                               RerankerConfig(**{**config.__dict__, "max_steps": 1, "lr": 1e-9}))
    trained = train_reranker(str(tiny_hf_dir), marker_task(64, seed=0), tmp_path / "ce", config)
    before = ranking_agreement(held, pair_scores(load_cross_encoder(untrained), pairs))
    after = ranking_agreement(held, pair_scores(load_cross_encoder(trained), pairs))
    assert after[0] == "pairwise_accuracy"
    assert after[1] >= 0.9, f"held-out pairwise accuracy {after[1]:.3f} (untrained {before[1]:.3f}); chance is 0.5"
    assert after[1] > before[1] + 0.2
