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


class _CountingCollection:
    """The real collection, recording how many queries each search call received."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.manifest = inner.manifest
        self.calls: list[int] = []

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, queries: list[str], **options: Any) -> Any:
        self.calls.append(len(queries))
        return self.inner.search(queries, **options)


def test_concurrent_searches_are_batched_and_equal_the_unbatched_answers(
    collection_dir: Path, tiny_model_dir: Path, tiny_model: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    words = ["cat", "mice", "bread", "oven", "rocket", "orbit", "river", "sea", "dawn", "purr", "launch", "flow"]
    requests = [
        {"query": f"{words[i % 12]} {words[(i * 5 + 1) % 12]}", "top_k": 2 + i % 3, "mode": ("dense", "hybrid", "bm25")[i % 3]}
        for i in range(36)
    ]
    requests.append({"query": ["bread oven", "cat"], "top_k": 3, "where": {"topic": {"$in": [0, 1]}}})

    def answers(batching: bool) -> tuple[list[Any], list[int]]:
        counting = _CountingCollection(collection_module.Collection.open(collection_dir))
        config = ServeConfig(model=str(tiny_model_dir), collection=str(collection_dir), search_batching=batching)
        with running_server(create_app(config, model=tiny_model, collection=counting)) as url, \
                httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            def post(body: dict[str, Any]) -> Any:
                response = client.post("/v1/search", json=body)
                assert response.status_code == 200, response.text
                return response.json()["data"]

            if batching:
                with ThreadPoolExecutor(16) as pool:
                    out = list(pool.map(post, requests))
            else:
                out = [post(body) for body in requests]
        return out, counting.calls

    batched, batched_calls = answers(True)
    sequential, sequential_calls = answers(False)
    assert len(sequential_calls) == len(requests)
    assert len(batched_calls) < len(requests) and max(batched_calls) > 1, batched_calls  # requests shared searches
    for got, want in zip(batched, sequential, strict=True):
        for got_result, want_result in zip(got, want, strict=True):
            assert got_result["query"] == want_result["query"]
            assert [h["id"] for h in got_result["hits"]] == [h["id"] for h in want_result["hits"]]
            assert [h["score"] for h in got_result["hits"]] == pytest.approx([h["score"] for h in want_result["hits"]], abs=1e-5)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_search_never_writes_to_the_collection(collection_dir: Path, tiny_model_dir: Path, tiny_model: Any,
                                               tmp_path: Path) -> None:
    """bm25 and hybrid on a read-only copy (chmod -R a-w; as root, which ignores it, nothing may change either)."""
    import os
    import shutil
    import stat

    copy = tmp_path / "readonly"
    shutil.copytree(collection_dir, copy)
    before = _snapshot(copy)
    paths = [copy, *copy.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        config = ServeConfig(model=str(tiny_model_dir), collection=str(copy))
        with running_server(create_app(config, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=60) as client:
            for mode in ("bm25", "hybrid", "dense"):
                response = client.post("/v1/search", json={"query": ["bread in the oven", "cat"], "top_k": 3, "mode": mode})
                assert response.status_code == 200, (mode, response.text)
                assert all(result["hits"] for result in response.json()["data"])
        after = _snapshot(copy)
        assert after == before, "a search wrote into the collection" + (" (running as root)" if os.geteuid() == 0 else "")
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
