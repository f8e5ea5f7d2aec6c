"""/v1/search over a real :class:`embedforge.collection.Collection` opened by the server from its directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
collection_module = pytest.importorskip("embedforge.collection")

from conftest import build_tiny_bert  # noqa: E402

from embedforge.serve import ServeConfig, create_app  # noqa: E402
from embedforge.serve.server import running_server  # noqa: E402

DOCS = [
    {"id": f"d{i}", "text": text, "metadata": {"topic": i % 3}}
    for i, text in enumerate(
        [
            "cats purr and chase mice",
            "rockets launch into orbit",
            "bread rises in the oven",
            "rivers flow to the sea",
            "mice hide from the cat",
            "the oven bakes bread at dawn",
        ]
    )
]


@pytest.fixture(scope="module")
def collection_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_model: Any) -> Path:
    path = tmp_path_factory.mktemp("serve-coll") / "docs"
    coll = collection_module.Collection.create(path, str(tiny_model_dir), model=tiny_model, index_spec="exact")
    coll.add(DOCS)
    coll.save()
    return path


@pytest.fixture(scope="module")
def server(collection_dir: Path, tiny_model_dir: Path, tiny_model: Any) -> Iterator[str]:
    config = ServeConfig(model=str(tiny_model_dir), collection=str(collection_dir))
    with running_server(create_app(config, model=tiny_model)) as url:  # the app opens the collection itself
        yield url


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_matches_the_collection(server: str, collection_dir: Path, tiny_model: Any, mode: str) -> None:
    queries = ["bread in the oven", "cat and mice"]
    with httpx.Client(base_url=server, timeout=60) as client:
        response = client.post("/v1/search", json={"query": queries, "top_k": 3, "mode": mode})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == mode
    expected = collection_module.Collection.open(collection_dir).search(queries, top_k=3, mode=mode, model=tiny_model)
    for result, hits in zip(body["data"], expected, strict=True):
        assert [h["id"] for h in result["hits"]] == [h.id for h in hits]
        assert [h["score"] for h in result["hits"]] == pytest.approx([h.score for h in hits], abs=1e-5)
        assert all(h["text"] and "topic" in h["metadata"] for h in result["hits"])


def test_search_errors_and_health(server: str) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        bad = client.post("/v1/search", json={"query": "x", "mode": "magic"})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_search" and "magic" in bad.json()["error"]["message"]
        health = client.get("/health").json()
        assert health["collection"] == {"name": "docs", "size": len(DOCS), "map_url": None}


def test_search_filters_fusion_and_rerank(server: str, collection_dir: Path, tiny_model: Any, tmp_path: Path,
                                          tiny_model_dir: Path) -> None:
    coll = collection_module.Collection.open(collection_dir)
    query = ["bread in the oven"]
    with httpx.Client(base_url=server, timeout=60) as client:
        filtered = client.post("/v1/search", json={"query": query, "top_k": 5, "where": {"topic": {"$in": [0, 2]}}})
        assert filtered.status_code == 200, filtered.text
        hits = filtered.json()["data"][0]["hits"]
        expected = coll.search(query, top_k=5, model=tiny_model, where={"topic": {"$in": [0, 2]}})[0]
        assert [h["id"] for h in hits] == [h.id for h in expected] and len(hits) == 4
        assert all(h["metadata"]["topic"] in (0, 2) for h in hits)
        rrf = client.post("/v1/search", json={"query": query, "top_k": 3, "mode": "hybrid", "fusion": "rrf"}).json()
        want = coll.search(query, top_k=3, mode="hybrid", fusion="rrf", model=tiny_model)[0]
        assert [h["id"] for h in rrf["data"][0]["hits"]] == [h.id for h in want]
        bad_op = client.post("/v1/search", json={"query": "x", "where": {"topic": {"$near": 1}}})
        assert bad_op.status_code == 400 and "$near" in bad_op.json()["error"]["message"]
        no_ce = client.post("/v1/search", json={"query": "x", "rerank": True})
        assert no_ce.status_code == 400 and no_ce.json()["error"]["code"] == "no_reranker"
        assert client.get("/health").status_code == 200, "the server keeps answering"

    from sentence_transformers import CrossEncoder

    ce_dir = build_tiny_bert(tmp_path / "ce", seed=1, num_labels=1)
    config = ServeConfig(model=str(tiny_model_dir), collection=str(collection_dir), reranker=str(ce_dir))
    with running_server(create_app(config, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=60) as client:
        reranked = client.post("/v1/search", json={"query": query, "top_k": 3, "rerank": True})
        assert reranked.status_code == 200, reranked.text
    ce = CrossEncoder(str(ce_dir), local_files_only=True, device="cpu")
    want = coll.search(query, top_k=3, model=tiny_model, rerank=ce)[0]
    assert [h["id"] for h in reranked.json()["data"][0]["hits"]] == [h.id for h in want]
