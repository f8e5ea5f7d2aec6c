"""The guardrail: a re-ranker that does not beat the first stage on its held-out queries (paired
bootstrap, 95%) is saved as not recommended; search warns about it in one line; serve refuses it
unless forced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import build_tiny_bert

from embedforge.cli import main
from embedforge.rerank.check import decide
from embedforge.rerank.model import MANIFEST_NAME, not_recommended_reason
from embedforge.rerank.train import LabelledPairs, RerankerConfig, train_reranker


def graded_pairs(queries: int, per_query: int = 4) -> LabelledPairs:
    first, second, labels = [], [], []
    for q in range(queries):
        for d in range(per_query):
            first.append(f"query {q}")
            second.append(f"doc {q}-{d}")
            labels.append(1.0 if d == 0 else 0.0)
    return LabelledPairs(first, second, labels, "test")


def test_the_rule_needs_the_interval_above_zero() -> None:
    pairs = graded_pairs(30)
    perfect = np.asarray(pairs.labels)
    noise = np.random.default_rng(0).standard_normal(len(pairs))
    better = decide(pairs, perfect, noise)
    assert better["recommended"] is True and better["ci95"][0] > 0 and "reason" not in better
    worse = decide(pairs, noise, perfect)
    assert worse["recommended"] is False and worse["ci95"][1] < 0 and "worse than" in worse["reason"]
    tie = decide(pairs, perfect, perfect)
    assert tie["recommended"] is False and "not better" in tie["reason"]
    few = decide(graded_pairs(5), perfect[:20], noise[:20])
    assert few["recommended"] is False and "only 5" in few["reason"]


def make_pairs(queries: int, per_query: int = 3) -> LabelledPairs:
    first, second, labels = [], [], []
    for q in range(queries):
        for d in range(per_query):
            first.append(f"question number {q}")
            second.append(f"document {d} about topic {q}")
            labels.append(1.0 if d == 0 else 0.0)
    return LabelledPairs(first, second, labels, "test")


def test_a_reranker_that_loses_is_saved_not_recommended(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = train_reranker(str(tiny_model_dir), make_pairs(60), tmp_path / "ce",
                         RerankerConfig(max_steps=2, batch_size=4, max_length=32, holdout=0.2))
    info = json.loads((out / MANIFEST_NAME).read_text())
    held = info["heldout"]
    # two steps of a random tiny model do not beat the starting model's cosine (0.8 here) beyond noise
    assert info["recommended"] is False and held["recommended"] is False
    assert held["queries_compared"] == 12 and len(held["ci95"]) == 2
    assert info["recommended_reason"] == held["reason"] and "cosine" in held["reason"]
    assert not_recommended_reason(out) == held["reason"]
    assert info["device"] in ("cpu", "cuda") and info["train_seconds"] >= 0
    none_held = train_reranker(str(tiny_model_dir), make_pairs(20), tmp_path / "ce0",
                               RerankerConfig(max_steps=1, batch_size=4, max_length=32, holdout=0.0))
    assert "holdout 0" in (not_recommended_reason(none_held) or "")


@pytest.fixture(scope="module")
def flagged_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cross-encoder with a manifest that says it lost to the first stage."""
    path = build_tiny_bert(tmp_path_factory.mktemp("flagged") / "ce", num_labels=1, seed=5)
    (path / MANIFEST_NAME).write_text(json.dumps({
        "format": "embedforge-reranker/1", "recommended": False,
        "recommended_reason": "on 12 held-out queries its pairwise accuracy is worse than the starting model's cosine "
                              "(-0.310, 95% CI [-0.400, -0.220])",
    }))
    return path


@pytest.fixture(scope="module")
def collection_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_model: Any) -> Path:
    from embedforge.collection import Collection

    path = tmp_path_factory.mktemp("guard-coll") / "docs"
    coll = Collection.create(path, str(tiny_model_dir), model=tiny_model, index_spec="exact")
    coll.add([{"id": f"d{i}", "text": t} for i, t in enumerate(["cats purr", "rockets fly", "bread rises", "rivers flow"])])
    coll.save()
    return path


def test_search_warns_once_naming_the_loss(flagged_dir: Path, collection_dir: Path, tiny_hf_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--collection", str(collection_dir), "--query", "cats", "--rerank", str(flagged_dir),
                 "--rerank-depth", "3"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    warnings = [line for line in err if "warning" in line]
    assert len(warnings) == 1 and "not a recommended re-ranker" in warnings[0] and "-0.310" in warnings[0]
    plain = build_tiny_bert(tiny_hf_dir.parent / "plain-ce", num_labels=1, seed=6)  # no manifest: no warning
    assert main(["search", "--collection", str(collection_dir), "--query", "cats", "--rerank", str(plain)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["search", "--collection", str(collection_dir), "--query", "cats", "--rerank", str(plain),
                 "--rerank-top", "2"]) == 0
    assert "--rerank-top is deprecated" in capsys.readouterr().err


def test_serve_refuses_it_unless_forced(flagged_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fastapi")
    import embedforge.serve.server as server

    started: list[Any] = []
    monkeypatch.setattr(server, "serve", lambda config, **kwargs: started.append(config))
    assert main(["serve", "--model", "minilm", "--reranker", str(flagged_dir)]) == 2
    err = capsys.readouterr().err
    assert "not recommended" in err and "--force-reranker" in err and "-0.310" in err and not started
    assert main(["serve", "--model", "minilm", "--reranker", str(flagged_dir), "--force-reranker"]) == 0
    assert len(started) == 1 and started[0].reranker == str(flagged_dir)
