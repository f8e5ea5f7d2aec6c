"""The bad-input matrix: each case gets its documented 4xx in OpenAI's error shape, and the server keeps answering."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from embedforge.serve import ServeConfig, create_app  # noqa: E402
from embedforge.serve.server import running_server  # noqa: E402

KEY = "matrix-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "model"  # the tiny fixture's directory name, which is the served id


@pytest.fixture(scope="module")
def server(tiny_model: Any, tiny_model_dir: Path) -> Iterator[str]:
    assert tiny_model_dir.name == MODEL
    config = ServeConfig(model=str(tiny_model_dir), api_keys=(KEY,), max_body_bytes=4 * 1024 * 1024)
    with running_server(create_app(config, model=tiny_model)) as url:
        yield url


def _json(body: Any) -> dict[str, Any]:
    return {"content": json.dumps(body).encode(), "headers": {**AUTH, "Content-Type": "application/json"}}


def _big_chunks() -> Iterator[bytes]:
    yield b'{"model": "model", "input": "'
    for _ in range(5):
        yield b"a" * (1024 * 1024)
    yield b'"}'


# (id, method, path, request kwargs, status, error code, param)
CASES: list[tuple[str, str, str, dict[str, Any], int, str, str | None]] = [
    ("empty list", "POST", "/v1/embeddings", _json({"model": MODEL, "input": []}), 400, "empty_input", "input"),
    ("empty string", "POST", "/v1/embeddings", _json({"model": MODEL, "input": ""}), 400, "empty_input", "input[0]"),
    ("empty in list", "POST", "/v1/embeddings", _json({"model": MODEL, "input": ["a", ""]}), 400, "empty_input", "input[1]"),
    ("10,000 inputs", "POST", "/v1/embeddings", _json({"model": MODEL, "input": ["hi"] * 10_000}), 400, "too_many_inputs", "input"),
    ("1 MB text", "POST", "/v1/embeddings", _json({"model": MODEL, "input": "a" * 1_000_000}), 400, "text_too_long", "input[0]"),
    ("body over limit", "POST", "/v1/embeddings", _json({"model": MODEL, "input": "a" * 5_000_000}), 413, "request_too_large", None),
    ("chunked body over limit", "POST", "/v1/embeddings", {"content": _big_chunks, "headers": {**AUTH, "Content-Type": "application/json"}}, 413, "request_too_large", None),
    ("input is a number", "POST", "/v1/embeddings", _json({"model": MODEL, "input": 5}), 422, "invalid_type", "input"),
    ("input mixes types", "POST", "/v1/embeddings", _json({"model": MODEL, "input": ["a", 1]}), 422, "invalid_type", "input"),
    ("input is an object", "POST", "/v1/embeddings", _json({"model": MODEL, "input": {"text": "a"}}), 422, "invalid_type", "input"),
    ("model is a number", "POST", "/v1/embeddings", _json({"model": 3, "input": "a"}), 422, "invalid_type", "model"),
    ("dimensions is a string", "POST", "/v1/embeddings", _json({"model": MODEL, "input": "a", "dimensions": "8"}), 422, "invalid_type", "dimensions"),
    ("unknown encoding_format", "POST", "/v1/embeddings", _json({"model": MODEL, "input": "a", "encoding_format": "hex"}), 422, "invalid_type", "encoding_format"),
    ("body is a list", "POST", "/v1/embeddings", _json(["a"]), 422, "invalid_body", None),
    ("missing model", "POST", "/v1/embeddings", _json({"input": "a"}), 422, "missing_required_parameter", "model"),
    ("missing input", "POST", "/v1/embeddings", _json({"model": MODEL}), 422, "missing_required_parameter", "input"),
    ("malformed JSON", "POST", "/v1/embeddings", {"content": b'{"model": "model", "input": [', "headers": {**AUTH, "Content-Type": "application/json"}}, 400, "invalid_json", None),
    ("unknown model", "POST", "/v1/embeddings", _json({"model": "text-embedding-3-large", "input": "a"}), 404, "model_not_found", "model"),
    ("dimensions too large", "POST", "/v1/embeddings", _json({"model": MODEL, "input": "a", "dimensions": 33}), 400, "invalid_dimensions", "dimensions"),
    ("dimensions zero", "POST", "/v1/embeddings", _json({"model": MODEL, "input": "a", "dimensions": 0}), 400, "invalid_dimensions", "dimensions"),
    ("token id outside vocabulary", "POST", "/v1/embeddings", _json({"model": MODEL, "input": [[101, 99_999]]}), 400, "invalid_token_id", "input"),
    ("missing key", "POST", "/v1/embeddings", {"json": {"model": MODEL, "input": "a"}}, 401, "invalid_api_key", None),
    ("wrong key", "POST", "/v1/embeddings", {"json": {"model": MODEL, "input": "a"}, "headers": {"Authorization": "Bearer nope"}}, 401, "invalid_api_key", None),
    ("key without Bearer", "POST", "/v1/embeddings", {"json": {"model": MODEL, "input": "a"}, "headers": {"Authorization": KEY}}, 401, "invalid_api_key", None),
    ("wrong key, malformed JSON", "POST", "/v1/embeddings", {"content": b"{", "headers": {"Authorization": "Bearer nope"}}, 401, "invalid_api_key", None),
    ("unknown model id", "GET", "/v1/models/gpt-4", {"headers": AUTH}, 404, "model_not_found", "model"),
    ("unknown endpoint", "GET", "/v2/nothing", {"headers": AUTH}, 404, "not_found", None),
    ("wrong method", "GET", "/v1/embeddings", {"headers": AUTH}, 405, "method_not_allowed", None),
    ("search without collection", "POST", "/v1/search", _json({"query": "a"}), 404, "no_collection", None),
    ("search top_k zero", "POST", "/v1/search", _json({"query": "a", "top_k": 0}), 422, "invalid_type", "top_k"),
    ("rerank without documents", "POST", "/v1/rerank", _json({"query": "a", "documents": []}), 400, "empty_input", "documents"),
    ("rerank with 10,000 documents", "POST", "/v1/rerank", _json({"query": "a", "documents": ["d"] * 10_000}), 400, "too_many_inputs", "documents"),
    ("similarity texts wrong type", "POST", "/v1/similarity", _json({"texts_1": "a"}), 422, "invalid_type", "texts_1"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code", "param"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_documented_4xx(
    server: str, method: str, path: str, kwargs: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    kwargs = dict(kwargs)
    if callable(kwargs.get("content")):
        kwargs["content"] = kwargs["content"]()  # a generator: sent chunked, without Content-Length
    with httpx.Client(base_url=server, timeout=60) as client:
        response = client.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["code"] == code
        assert body["error"]["param"] == param
        assert body["error"]["message"]
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    with httpx.Client(base_url=server, timeout=60) as client:  # a fresh connection: the server still answers
        assert client.get("/health").status_code == 200


def test_server_still_embeds_after_the_matrix(server: str) -> None:
    with httpx.Client(base_url=server, headers=AUTH, timeout=60) as client:
        response = client.post("/v1/embeddings", json={"model": MODEL, "input": ["still", "alive"]})
        assert response.status_code == 200
        assert len(response.json()["data"]) == 2
        metrics = client.get("/metrics").text
        assert 'endpoint="/v1/embeddings",method="POST",status="401"' in metrics
        assert 'endpoint="/v1/embeddings",method="POST",status="413"' in metrics


class _BrokenCollection:
    manifest = {"model": "elsewhere"}

    def __len__(self) -> int:
        return 1

    def search(self, queries: list[str], *, top_k: int = 10, mode: str = "dense", model: Any = None) -> list[list[Any]]:
        raise RuntimeError("disk on fire")


def test_a_bug_is_a_500_in_the_same_shape_and_the_server_survives(tiny_model: Any) -> None:
    app = create_app(ServeConfig(model="tiny"), model=tiny_model, collection=_BrokenCollection())
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/v1/search", json={"query": "x"})
        assert response.status_code == 500
        assert response.json() == {
            "error": {
                "message": "internal server error (RuntimeError)",
                "type": "server_error",
                "param": None,
                "code": "internal_error",
            }
        }
        assert client.get("/health").status_code == 200
        assert 'endpoint="/v1/search",method="POST",status="500"' in client.get("/metrics").text
