"""One pair scorer everywhere: `embedforge search --rerank`, /v1/search with rerank and /v1/rerank
give the same score to the same (query, document) pair, here with a two-output cross-encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import build_tiny_bert  # noqa: E402

from embedforge.cli import main  # noqa: E402
from embedforge.collection import Collection  # noqa: E402
from embedforge.errors import InputError  # noqa: E402
from embedforge.rerank.model import load_cross_encoder, pair_scores  # noqa: E402

DOCS = [
    {"id": f"d{i}", "text": text}
    for i, text in enumerate(
        [
            "cats purr and chase mice",
            "rockets launch into orbit",
            "bread rises in the oven",
            "rivers flow to the sea",
            "mice hide from the cat",
        ]
    )
]
QUERY = "where do the mice hide"


@pytest.fixture(scope="module")
def two_output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BertForSequenceClassification with num_labels=2 (e.g. a not-relevant / relevant head)."""
    return build_tiny_bert(tmp_path_factory.mktemp("ce2") / "reranker", seed=3, num_labels=2)


@pytest.fixture(scope="module")
def collection_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_model: Any) -> Path:
    path = tmp_path_factory.mktemp("rerank-coll") / "docs"
    coll = Collection.create(path, str(tiny_model_dir), model=tiny_model, index_spec="exact")
    coll.add(DOCS)
    coll.save()
    return path


def last_logits(model_dir: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The rule, computed with transformers alone: the last output of the classification head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits  # (n, 2)
    return logits[:, -1].numpy()


def test_the_scorer_takes_the_last_output(two_output_dir: Path) -> None:
    ce = load_cross_encoder(two_output_dir)
    pairs = [(QUERY, d["text"]) for d in DOCS]
    scores = pair_scores(ce, pairs, batch_size=2)
    assert scores.shape == (len(DOCS),) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, last_logits(two_output_dir, pairs), atol=1e-5)
    assert pair_scores(ce, []).shape == (0,)
    with pytest.raises(InputError, match="neither a cross-encoder nor an embedding model directory"):
        load_cross_encoder(two_output_dir / "missing")


def scores_three_ways(reranker_dir: Path, collection_dir: Path, tiny_model_dir: Path, tiny_model: Any, tmp_path: Path,
                      depth_flag: str = "--rerank-depth") -> tuple[dict[str, float], dict[str, float], dict[str, float], str]:
    """Scores by document id of every DOC for QUERY re-ranked with ``reranker_dir``: from `embedforge search
    --rerank` (its run file), /v1/search with rerank, /v1/rerank; and the method /v1/rerank reports."""
    from embedforge.serve import ServeConfig, create_app
    from embedforge.serve.server import running_server

    run = tmp_path / "run.tsv"
    argv = ["search", "--collection", str(collection_dir), "--query", QUERY, "--top-k", str(len(DOCS)),
            "--rerank", str(reranker_dir), depth_flag, str(len(DOCS)), "--output", str(run)]
    assert main(argv) == 0
    cli = {line.split("\t")[1]: float(line.split("\t")[3]) for line in run.read_text().splitlines()}
    assert set(cli) == {d["id"] for d in DOCS}

    config = ServeConfig(model=str(tiny_model_dir), collection=str(collection_dir), reranker=str(reranker_dir))
    with running_server(create_app(config, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=60) as client:
        searched = client.post("/v1/search", json={"query": QUERY, "top_k": len(DOCS), "rerank": True})
        assert searched.status_code == 200, searched.text
        ranked = client.post("/v1/rerank", json={"query": QUERY, "documents": [d["text"] for d in DOCS]})
        assert ranked.status_code == 200, ranked.text
    search_scores = {h["id"]: h["score"] for h in searched.json()["data"][0]["hits"]}
    body = ranked.json()
    assert len(body["results"]) == len(DOCS)  # one score per document
    rerank_scores = {DOCS[r["index"]]["id"]: r["relevance_score"] for r in body["results"]}
    return cli, search_scores, rerank_scores, body["method"]


def test_cli_search_and_both_endpoints_agree(
    two_output_dir: Path, collection_dir: Path, tiny_model_dir: Path, tiny_model: Any, tmp_path: Path
) -> None:
    cli, search_scores, rerank_scores, method = scores_three_ways(
        two_output_dir, collection_dir, tiny_model_dir, tiny_model, tmp_path, depth_flag="--rerank-top")
    assert method == "cross-encoder"

    ids = [d["id"] for d in DOCS]
    expected = last_logits(two_output_dir, [(QUERY, d["text"]) for d in DOCS])
    np.testing.assert_allclose([rerank_scores[i] for i in ids], expected, atol=1e-5)
    np.testing.assert_allclose([search_scores[i] for i in ids], [rerank_scores[i] for i in ids], atol=1e-6)
    np.testing.assert_allclose([cli[i] for i in ids], [rerank_scores[i] for i in ids], atol=2e-6)  # the run file keeps 6 decimals
