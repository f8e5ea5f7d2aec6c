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


def _weights(path: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return dict(load_file(str(path / "model.safetensors")))


def test_head_lr_moves_the_head_and_lr_the_encoder(tiny_hf_dir: Path, tmp_path: Path) -> None:
    """``head_lr`` reaches exactly the fresh head (pooler + classifier): with the encoder's rate at 0 the
    encoder's weights come out as they went in while the head has moved."""
    import torch

    config = RerankerConfig(max_steps=3, batch_size=8, max_length=16, lr=0.0, head_lr=1e-2, warmup_ratio=0.0,
                            holdout=0.0, seed=0)
    start = train_reranker(str(tiny_hf_dir), marker_task(8, seed=0), tmp_path / "start",
                           RerankerConfig(**{**config.__dict__, "head_lr": 0.0}))
    moved = train_reranker(str(tiny_hf_dir), marker_task(8, seed=0), tmp_path / "ce", config)
    before, after = _weights(start), _weights(moved)
    head = [k for k in before if k.split(".")[0] == "classifier" or ".pooler." in f".{k}"]
    body = [k for k in before if k not in head]
    assert head and body
    assert all(torch.equal(before[k], after[k]) for k in body)  # type: ignore[arg-type]
    assert any(not torch.equal(before[k], after[k]) for k in head)  # type: ignore[arg-type]


def test_a_new_head_gets_the_fresh_head_rate_and_a_trained_one_the_encoders(tiny_hf_dir: Path, tmp_path: Path) -> None:
    import json

    from embedforge.rerank.train import FRESH_HEAD_LR

    config = RerankerConfig(max_steps=1, batch_size=8, max_length=16, lr=3e-5, holdout=0.0, seed=0)
    first = train_reranker(str(tiny_hf_dir), marker_task(8, seed=0), tmp_path / "first", config)
    info = json.loads((first / "embedforge_reranker.json").read_text())
    assert info["fresh_head"] is True and info["head_lr"] == FRESH_HEAD_LR
    again = train_reranker(str(first), marker_task(8, seed=0), tmp_path / "again", config)  # a cross-encoder: its head is trained
    info = json.loads((again / "embedforge_reranker.json").read_text())
    assert info["fresh_head"] is False and info["head_lr"] == 3e-5
