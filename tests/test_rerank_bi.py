"""An embedding model's directory as the second stage (option c): ``--rerank``/``--reranker`` given a
sentence-transformers embedding model re-score with its cosine (and its query/document prompts) instead of
loading it as a cross-encoder with a random head; the CLI and both endpoints give the same scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from test_rerank_model import DOCS, QUERY, collection_dir, scores_three_ways  # noqa: E402,F401  (a module fixture, reused)

from embedforge.encode import encode  # noqa: E402
from embedforge.rerank.model import BiEncoderReranker, load_cross_encoder, pair_scores  # noqa: E402


@pytest.fixture(scope="module")
def prompted_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny embedding model saved with e5-style prompts."""
    from embedforge.models import load_model, save_model

    model = load_model(tiny_model_dir)
    model.prompts = {"query": "query: ", "document": "passage: "}
    out = tmp_path_factory.mktemp("prompted") / "model"
    save_model(model, out, base_model="tiny-random-bert")
    return out


def test_an_embedding_model_rescores_by_cosine_with_its_prompts(prompted_dir: Path, tiny_model: Any) -> None:
    reranker = load_cross_encoder(prompted_dir)
    assert isinstance(reranker, BiEncoderReranker)
    pairs = [(QUERY, d["text"]) for d in DOCS] + [("rockets", DOCS[1]["text"])]
    got = pair_scores(reranker, pairs)
    q = encode(tiny_model, [f"query: {a}" for a, _ in pairs])
    d = encode(tiny_model, [f"passage: {b}" for _, b in pairs])
    np.testing.assert_allclose(got, np.sum(q * d, axis=1), atol=1e-5)
    plain = encode(tiny_model, [a for a, _ in pairs])
    assert not np.allclose(got, np.sum(plain * encode(tiny_model, [b for _, b in pairs]), axis=1), atol=1e-4)


def test_cli_search_and_both_endpoints_agree_with_a_bi_encoder(
    prompted_dir: Path, collection_dir: Path, tiny_model_dir: Path, tiny_model: Any, tmp_path: Path  # noqa: F811
) -> None:
    cli, search_scores, rerank_scores, method = scores_three_ways(
        prompted_dir, collection_dir, tiny_model_dir, tiny_model, tmp_path)
    assert method == "bi-encoder-reranker"
    ids = [d["id"] for d in DOCS]
    expected = pair_scores(load_cross_encoder(prompted_dir), [(QUERY, d["text"]) for d in DOCS])
    np.testing.assert_allclose([rerank_scores[i] for i in ids], expected, atol=1e-5)
    np.testing.assert_allclose([search_scores[i] for i in ids], expected, atol=1e-5)
    np.testing.assert_allclose([cli[i] for i in ids], expected, atol=2e-6)


def test_a_bundled_model_name_is_an_embedding_model_reranker() -> None:
    reranker = load_cross_encoder("minilm")
    assert isinstance(reranker, BiEncoderReranker)
    scores = pair_scores(reranker, [("a cat on a mat", "a kitten sits on a rug"), ("a cat on a mat", "stock prices fell")])
    assert scores[0] > scores[1]
