"""Hostile HTTP input: every case gets its documented 4xx (never a 500) and the server keeps answering.

Lone UTF-16 surrogates in every text field, wrong types, empty and oversize inputs, a missing or
wrong key on every route, oversize and slow request heads, idle connections, unknown hosts and
model names, and search without a collection.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from embedforge.serve import ServeConfig, create_app  # noqa: E402
from embedforge.serve.server import running_server  # noqa: E402

KEY = "badinput-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "model"  # the tiny fixture's directory name, which is the served id
BAD = "\ud800x"  # a lone high surrogate: what the JSON escape "\ud800x" decodes to


@dataclass
class Hit:
    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


class TinyCollection:
    manifest = {"model": "elsewhere"}

    def __len__(self) -> int:
        return 1

    def search(self, queries: list[str], *, top_k: int = 10, mode: str = "dense", model: Any = None,
               **options: Any) -> list[list[Hit]]:
        if mode not in ("dense", "bm25", "hybrid"):
            raise ValueError(f"unknown search mode {mode!r}")
        return [[Hit("d0", 1.0, "a document")] for _ in queries]


@pytest.fixture(scope="module")
def server(tiny_model: Any, tiny_model_dir: Path) -> Iterator[str]:
    assert tiny_model_dir.name == MODEL
    config = ServeConfig(model=str(tiny_model_dir), api_keys=(KEY,), max_inputs=16, max_text_chars=1000)
    with running_server(create_app(config, model=tiny_model, collection=TinyCollection())) as url:
        yield url


def _post(body: Any) -> dict[str, Any]:
    # json.dumps escapes the surrogate as "\ud800": the bytes a hostile client sends
    return {"content": json.dumps(body).encode("ascii"), "headers": {**AUTH, "Content-Type": "application/json"}}


E = "/v1/embeddings"
S = "/v1/search"
R = "/v1/rerank"
M = "/v1/similarity"

# (id, path, body, status, error code, param)
BODY_CASES: list[tuple[str, str, Any, int, str, str | None]] = [
    # lone surrogates, in every text field of every endpoint
    ("embeddings input", E, {"model": MODEL, "input": BAD}, 400, "invalid_text", "input"),
    ("embeddings input[1]", E, {"model": MODEL, "input": ["ok", BAD]}, 400, "invalid_text", "input[1]"),
    ("embeddings model", E, {"model": BAD, "input": "a"}, 400, "invalid_text", "model"),
    ("embeddings user", E, {"model": MODEL, "input": "a", "user": BAD}, 400, "invalid_text", "user"),
    ("similarity texts_1[0]", M, {"texts_1": [BAD]}, 400, "invalid_text", "texts_1[0]"),
    ("similarity texts_2[1]", M, {"texts_1": ["a"], "texts_2": ["b", BAD]}, 400, "invalid_text", "texts_2[1]"),
    ("similarity model", M, {"texts_1": ["a"], "model": BAD}, 400, "invalid_text", "model"),
    ("rerank query", R, {"query": BAD, "documents": ["a"]}, 400, "invalid_text", "query"),
    ("rerank documents[2]", R, {"query": "q", "documents": ["a", "b", BAD]}, 400, "invalid_text", "documents[2]"),
    ("rerank model", R, {"query": "q", "documents": ["a"], "model": BAD}, 400, "invalid_text", "model"),
    ("search query", S, {"query": BAD}, 400, "invalid_text", "query"),
    ("search query[1]", S, {"query": ["a", BAD]}, 400, "invalid_text", "query[1]"),
    ("search mode", S, {"query": "a", "mode": BAD}, 400, "invalid_text", "mode"),
    ("search fusion", S, {"query": "a", "mode": "hybrid", "fusion": BAD}, 400, "invalid_text", "fusion"),
    ("search where value", S, {"query": "a", "where": {"topic": {"$in": [BAD]}}}, 400, "invalid_text", "where"),
    ("search where key", S, {"query": "a", "where": {BAD: 1}}, 400, "invalid_text", "where"),
    ("low surrogate alone", E, {"model": MODEL, "input": "x\udfff"}, 400, "invalid_text", "input"),
    # wrong types
    ("similarity texts_1 a string", M, {"texts_1": "a"}, 422, "invalid_type", "texts_1"),
    ("similarity texts_2 numbers", M, {"texts_1": ["a"], "texts_2": [1]}, 422, "invalid_type", "texts_2[0]"),
    ("rerank documents a string", R, {"query": "q", "documents": "a"}, 422, "invalid_type", "documents"),
    ("rerank top_n a string", R, {"query": "q", "documents": ["a"], "top_n": "1"}, 422, "invalid_type", "top_n"),
    ("search query a number", S, {"query": 7}, 422, "invalid_type", "query"),
    ("search where a list", S, {"query": "a", "where": ["topic"]}, 422, "invalid_type", "where"),
    ("search rerank a string", S, {"query": "a", "rerank": "yes"}, 422, "invalid_type", "rerank"),
    ("search unknown mode", S, {"query": "a", "mode": "magic"}, 400, "invalid_search", None),
    # empty and oversize
    ("similarity empty", M, {"texts_1": []}, 400, "empty_input", "texts_1"),
    ("similarity empty string", M, {"texts_1": ["a", ""]}, 400, "empty_input", "texts_1[1]"),
    ("search empty list", S, {"query": []}, 400, "empty_input", "query"),
    ("search empty string", S, {"query": ""}, 400, "empty_input", "query[0]"),
    ("rerank empty query", R, {"query": "", "documents": ["a"]}, 400, "empty_input", "query[0]"),
    ("embeddings too many", E, {"model": MODEL, "input": ["a"] * 17}, 400, "too_many_inputs", "input"),
    ("similarity too many", M, {"texts_1": ["a"] * 9, "texts_2": ["b"] * 9}, 400, "too_many_inputs", "texts_1 + texts_2"),
    ("search too many", S, {"query": ["a"] * 17}, 400, "too_many_inputs", "query"),
    ("rerank too many", R, {"query": "q", "documents": ["a"] * 17}, 400, "too_many_inputs", "documents"),
    ("embeddings text too long", E, {"model": MODEL, "input": "a" * 1001}, 400, "text_too_long", "input[0]"),
    ("search text too long", S, {"query": "a" * 1001}, 400, "text_too_long", "query[0]"),
    ("rerank document too long", R, {"query": "q", "documents": ["a" * 1001]}, 400, "text_too_long", "documents[0]"),
    ("search top_k too large", S, {"query": "a", "top_k": 10_000}, 422, "invalid_type", "top_k"),
    # unknown model name
    ("unknown model", E, {"model": "text-embedding-3-large", "input": "a"}, 404, "model_not_found", "model"),
]


def _check_error(response: Any, status: int, code: str, param: str | None = None, *, check_param: bool = True) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == code and body["error"]["message"]
    if check_param:
        assert body["error"]["param"] == param


@pytest.mark.parametrize(("path", "body", "status", "code", "param"), [c[1:] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES])
def test_bad_body_gets_its_4xx(server: str, path: str, body: Any, status: int, code: str, param: str | None) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        response = client.post(path, **_post(body))
        _check_error(response, status, code, param)
        if code == "invalid_text":
            assert "surrogate" in response.json()["error"]["message"]
        assert client.get("/health").status_code == 200


def test_valid_unicode_is_not_refused(server: str) -> None:
    """Astral characters arrive as surrogate *pairs* in JSON and are valid: only lone halves are refused."""
    with httpx.Client(base_url=server, headers=AUTH, timeout=60) as client:
        response = client.post(E, content=b'{"model": "model", "input": ["\\ud83d\\ude00 ok", "caf\\u00e9"]}')
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 2


# every route but /health needs the key
ROUTES = [
    ("POST", E, {"model": MODEL, "input": "a"}),
    ("POST", S, {"query": "a"}),
    ("POST", R, {"query": "q", "documents": ["a"]}),
    ("POST", M, {"texts_1": ["a"]}),
    ("GET", "/v1/models", None),
    ("GET", f"/v1/models/{MODEL}", None),
    ("GET", "/metrics", None),
    ("GET", "/", None),
    ("GET", "/map", None),
    ("GET", "/docs", None),
    ("GET", "/redoc", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs/oauth2-redirect", None),
    ("GET", "/nowhere", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic d3Jvbmc6d3Jvbmc=", "Basic !!!", KEY], ids=["missing", "wrong", "wrong-basic", "bad-basic", "no-scheme"])
def test_every_route_but_health_needs_the_key(server: str, method: str, path: str, body: Any, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    with httpx.Client(base_url=server, timeout=60) as client:
        response = client.request(method, path, json=body, headers=headers)
        _check_error(response, 401, "invalid_api_key", None)
        challenge = response.headers["www-authenticate"]
        assert challenge == "Bearer" if path.startswith("/v1/") else challenge.startswith("Basic ")
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), ROUTES[:-2], ids=[f"{m} {p}" for m, p, _ in ROUTES[:-2]])
def test_the_key_opens_every_route(server: str, method: str, path: str, body: Any) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        bearer = client.request(method, path, json=body, headers=AUTH)
        basic = client.request(method, path, json=body, auth=("anyone", KEY))  # what a browser sends after its login prompt
    for response in (bearer, basic):
        if path == "/map":
            _check_error(response, 404, "no_map", None)  # past the key check: this collection has no map
        else:
            assert response.status_code == 200, (path, response.text)


def _raw(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return data


def test_a_huge_header_is_refused_before_the_app(server: str) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        big = client.request("PATCH", E, headers={**AUTH, "X-Filler": "a" * 100_000})
        assert big.status_code == 431
        assert big.json()["error"]["code"] == "headers_too_large"
        many = client.request("PATCH", E, headers={**AUTH, **{f"X-H{i}": "b" * 100 for i in range(400)}})
        assert many.status_code == 431
        long_url = client.request("PATCH", E + "?q=" + "c" * 30_000, headers=AUTH)
        assert long_url.status_code == 431
    # a head streamed without end: refused once over the limit, without buffering the rest
    sock = socket.create_connection(_raw(server))
    sent = 0
    try:
        sock.sendall(b"PATCH /v1/embeddings HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        for _ in range(64):  # up to 4 MB
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass  # the server closed the connection under us: refused
    reply = _read_all(sock, 10)
    sock.close()
    assert sent < 4 * 1024 * 1024 or reply.startswith(b"HTTP/1.1 431"), "the server kept reading an endless head"
    assert not reply or reply.startswith(b"HTTP/1.1 431")
    with httpx.Client(base_url=server, headers=AUTH, timeout=60) as client:
        metrics = client.get("/metrics").text
        assert 'method="PATCH"' not in metrics, "a refused head reached the app"
        assert client.post(E, json={"model": MODEL, "input": "still here"}).status_code == 200


def test_idle_and_slow_connections_are_closed(tiny_model: Any) -> None:
    config = ServeConfig(model="tiny", header_timeout_s=0.5, keep_alive_s=1)
    with running_server(create_app(config, model=tiny_model)) as url:
        silent = socket.create_connection(_raw(url))  # connects and sends nothing
        slow = socket.create_connection(_raw(url))
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # a head never finished
        start = time.monotonic()
        assert _read_all(silent, 10) == b""
        assert _read_all(slow, 10) == b""
        assert time.monotonic() - start < 5
        idle = socket.create_connection(_raw(url))
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        reply = _read_all(idle, 10)  # the answer, then the keep-alive connection closes when idle
        assert reply.startswith(b"HTTP/1.1 200") and time.monotonic() - start < 5
        for sock in (silent, slow, idle):
            sock.close()
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/health").status_code == 200


def test_unknown_hosts_are_refused_when_hosts_are_set(tiny_model: Any) -> None:
    config = ServeConfig(model="tiny", allowed_hosts=("127.0.0.1", "api.example.com"))
    with running_server(create_app(config, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health", headers={"Host": "api.example.com"}).status_code == 200
        refused = client.get("/health", headers={"Host": "evil.example.net"})
        assert refused.status_code == 400


def test_search_without_a_collection_and_unknown_model_id(tiny_model: Any) -> None:
    with running_server(create_app(ServeConfig(model="tiny"), model=tiny_model)) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        _check_error(client.post(S, json={"query": "a"}), 404, "no_collection", None)
        _check_error(client.post(S, content=json.dumps({"query": BAD})), 400, "invalid_text", "query")
        _check_error(client.get("/v1/models/gpt-4"), 404, "model_not_found", "model")
        _check_error(client.get("/map"), 404, "no_map", None)
        assert client.get("/health").status_code == 200
