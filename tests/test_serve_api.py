"""The API against a live uvicorn server on 127.0.0.1: OpenAI's client, LangChain, search, rerank, batching."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import build_tiny_bert  # noqa: E402

from embedforge.encode import encode  # noqa: E402
from embedforge.serve import ServeConfig, create_app  # noqa: E402
from embedforge.serve.server import running_server  # noqa: E402

KEY = "test-key-123"
TEXTS = [
    "The cat sat on the mat.",
    "Stock markets fell sharply on Monday.",
    "A recipe for lemon cake with poppy seeds.",
    "Neural networks learn representations of text.",
    "x",
]
DOCS = [
    "Proteins fold into three-dimensional structures.",
    "The football match ended in a draw.",
    "Vaccines train the immune system to recognise pathogens.",
    "Interest rates rose for the third time this year.",
    "A quiet lake surrounded by pine trees.",
]


@dataclass
class FakeHit:
    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


class FakeCollection:
    """Exact dense search over a few documents: satisfies the collection contract of issue 3."""

    def __init__(self, model: Any, model_name: str, docs: list[str]) -> None:
        self.manifest = {"model": model_name}
        self.docs = docs
        self.vectors = encode(model, docs)  # (n, dim)
        self.calls: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.docs)

    def search(self, queries: list[str], *, top_k: int = 10, mode: str = "dense", model: Any = None) -> list[list[FakeHit]]:
        self.calls.append({"queries": queries, "top_k": top_k, "mode": mode, "model": model})
        if mode != "dense":
            raise ValueError(f"unknown mode {mode!r}; expected dense")
        scores = encode(model, queries) @ self.vectors.T  # (q, n)
        out = []
        for row in scores:
            order = np.argsort(-row)[:top_k]
            out.append([FakeHit(f"doc{i}", float(row[i]), self.docs[i], {"n": int(i)}) for i in order])
        return out


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-ce") / "reranker", seed=1, num_labels=1)


@pytest.fixture(scope="module")
def collection(tiny_model: Any, tiny_model_dir: Path) -> FakeCollection:
    return FakeCollection(tiny_model, str(tiny_model_dir), DOCS)


@pytest.fixture(scope="module")
def server(tiny_model: Any, tiny_model_dir: Path, collection: FakeCollection, reranker_dir: Path) -> Iterator[str]:
    """The full server: API key, collection, cross-encoder reranker, batching with a generous wait."""
    config = ServeConfig(
        model=str(tiny_model_dir), reranker=str(reranker_dir), api_keys=(KEY,), max_wait_ms=30, model_aliases=("text-embedding-3-small",)
    )
    with running_server(create_app(config, model=tiny_model, collection=collection)) as url:
        yield url


@pytest.fixture(scope="module")
def plain_server(tiny_model: Any, tiny_model_dir: Path) -> Iterator[str]:
    """No key, no collection, no reranker, no batching."""
    config = ServeConfig(model=str(tiny_model_dir), batching=False)
    with running_server(create_app(config, model=tiny_model)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Any]:
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def _openai(url: str) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_openai_client_float_matches_local_encode(server: str, tiny_model: Any, tiny_model_dir: Path) -> None:
    response = _openai(server).embeddings.create(model=tiny_model_dir.name, input=TEXTS, encoding_format="float")
    got = np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)], dtype=np.float32)
    np.testing.assert_allclose(got, encode(tiny_model, TEXTS), atol=1e-5)
    assert response.model == tiny_model_dir.name
    expected_tokens = sum(len(ids) for ids in tiny_model.tokenizer(TEXTS, truncation=True, max_length=64)["input_ids"])
    assert response.usage.prompt_tokens == response.usage.total_tokens == expected_tokens


def test_openai_client_base64_matches_local_encode(server: str, tiny_model: Any, tiny_model_dir: Path) -> None:
    client = _openai(server)
    expected = encode(tiny_model, TEXTS)
    # Explicit base64: the client hands back the strings as they came.
    raw = client.embeddings.create(model=tiny_model_dir.name, input=TEXTS, encoding_format="base64")
    got = np.stack([np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") for item in raw.data])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # No format given: current clients ask for base64 and decode it themselves.
    default = client.embeddings.create(model="text-embedding-3-small", input=TEXTS[0])
    np.testing.assert_allclose(np.array(default.data[0].embedding), expected[0], atol=1e-6)


def test_openai_client_dimensions_and_token_ids(server: str, tiny_model: Any, tiny_model_dir: Path) -> None:
    client = _openai(server)
    full = encode(tiny_model, TEXTS[:2])
    short = client.embeddings.create(model=tiny_model_dir.name, input=TEXTS[:2], dimensions=8, encoding_format="float")
    got = np.array([item.embedding for item in short.data])
    assert got.shape == (2, 8)
    np.testing.assert_allclose(got, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-5)
    ids = [tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("hello world", "the cat")]
    by_ids = client.embeddings.create(model=tiny_model_dir.name, input=ids, encoding_format="float")
    np.testing.assert_allclose(
        np.array([item.embedding for item in by_ids.data]), encode(tiny_model, ["hello world", "the cat"]), atol=1e-5
    )
    models = client.models.list()
    assert [m.id for m in models.data] == [tiny_model_dir.name]


def test_langchain_openai_embeddings(server: str, tiny_model: Any, tiny_model_dir: Path) -> None:
    lc = pytest.importorskip("langchain_openai")
    embeddings = lc.OpenAIEmbeddings(
        model=tiny_model_dir.name,
        base_url=f"{server}/v1",
        api_key=KEY,
        check_embedding_ctx_length=False,  # send the texts, not tiktoken ids (they mean nothing to this model)
        max_retries=0,
    )
    docs = embeddings.embed_documents(TEXTS)
    np.testing.assert_allclose(np.array(docs), encode(tiny_model, TEXTS), atol=1e-5)
    query = embeddings.embed_query("Where did the cat sit?")
    np.testing.assert_allclose(np.array(query), encode(tiny_model, ["Where did the cat sit?"])[0], atol=1e-5)


def test_search_over_the_collection(client: Any, collection: FakeCollection, tiny_model: Any) -> None:
    response = client.post("/v1/search", json={"query": [DOCS[2], DOCS[4]], "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["query"] for r in body["data"]] == [DOCS[2], DOCS[4]]
    assert [r["hits"][0]["id"] for r in body["data"]] == ["doc2", "doc4"]
    assert all(len(r["hits"]) == 3 for r in body["data"])
    assert body["data"][0]["hits"][0]["metadata"] == {"n": 2}
    assert body["data"][0]["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert collection.calls[-1]["model"] is tiny_model  # embedded with the served model: it is reused
    bad = client.post("/v1/search", json={"query": "x", "mode": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_search"


def test_rerank_with_the_cross_encoder(client: Any, reranker_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    query = "how do vaccines work"
    response = client.post("/v1/rerank", json={"query": query, "documents": DOCS, "top_n": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "cross-encoder"
    expected = CrossEncoder(str(reranker_dir), local_files_only=True, device="cpu").predict([(query, d) for d in DOCS])
    order = list(np.argsort(-np.asarray(expected))[:3])
    assert [r["index"] for r in body["results"]] == order
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], np.asarray(expected)[order], atol=1e-5)
    assert body["results"][0]["document"] == DOCS[order[0]]


def test_rerank_falls_back_to_cosine_and_similarity(plain_server: str, tiny_model: Any) -> None:
    with httpx.Client(base_url=plain_server, timeout=60) as c:
        response = c.post("/v1/rerank", json={"query": DOCS[1], "documents": DOCS, "return_documents": False})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["method"] == "bi-encoder-cosine"
        vectors = encode(tiny_model, [DOCS[1], *DOCS])
        cosine = vectors[1:] @ vectors[0]
        assert [r["index"] for r in body["results"]] == list(np.argsort(-cosine))
        assert body["results"][0]["document"] is None
        sim = c.post("/v1/similarity", json={"texts_1": TEXTS[:2], "texts_2": DOCS}).json()
        a, b = encode(tiny_model, TEXTS[:2]), encode(tiny_model, DOCS)
        np.testing.assert_allclose(np.array(sim["data"]), a @ b.T, atol=1e-5)
        square = c.post("/v1/similarity", json={"texts_1": TEXTS}).json()
        assert np.array(square["data"]).shape == (len(TEXTS), len(TEXTS))
        no_search = c.post("/v1/search", json={"query": "x"})
        assert no_search.status_code == 404 and no_search.json()["error"]["code"] == "no_collection"
        health = c.get("/health").json()
        assert health["batching"] is False and health["collection"] is None and health["auth"] is False


def test_concurrent_requests_get_their_own_vectors(server: str, client: Any, tiny_model: Any, tiny_model_dir: Path) -> None:
    requests = [[f"request number {i} " + "word " * (i % 7)] + (["extra"] if i % 4 == 0 else []) for i in range(24)]
    expected = [encode(tiny_model, texts) for texts in requests]
    before = _metric(client.get("/metrics").text, "embedforge_batch_requests_count")
    barrier = threading.Barrier(len(requests))
    results: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            barrier.wait(30)
            results[i] = c.post("/v1/embeddings", json={"model": tiny_model_dir.name, "input": requests[i]})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, response in enumerate(results):
        assert response is not None and response.status_code == 200, i
        got = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, expected[i], atol=1e-5)
    batches = _metric(client.get("/metrics").text, "embedforge_batch_requests_count") - before
    assert 1 <= batches < len(requests)  # some requests shared a forward pass


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_metrics_and_open_paths(server: str, tiny_model_dir: Path) -> None:
    with httpx.Client(base_url=server, timeout=30) as anonymous:  # no key: only /health stays open
        health = anonymous.get("/health").json()
        assert health["model"] == tiny_model_dir.name and health["dimension"] == 32 and health["auth"] is True
        assert health["collection"] == {"name": "collection", "size": len(DOCS), "map_url": None}
        assert health["reranker"] == "reranker"
        for path in ("/metrics", "/", "/docs", "/openapi.json", "/v1/models"):
            assert anonymous.get(path).status_code == 401, path
    with httpx.Client(base_url=server, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as client:
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert 'embedforge_requests_total{endpoint="/health",method="GET",status="200"}' in text
        assert "embedforge_request_duration_seconds_bucket" in text and "embedforge_batch_size_bucket" in text
    with httpx.Client(base_url=server, timeout=30, auth=("any-user", KEY)) as browser:  # HTTP Basic, as a browser sends it
        page = browser.get("/")
        assert page.status_code == 200 and 'id="search-form"' in page.text
