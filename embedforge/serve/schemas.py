"""Request and response models of the HTTP API, and the collection contract search relies on.

``/v1/embeddings`` follows OpenAI's embeddings API field for field, so its clients (the ``openai``
package, LangChain, LlamaIndex …) work unchanged. The other endpoints have no OpenAI
counterpart; their shapes follow the common practice of rerank APIs (``index`` +
``relevance_score``) and stay in the same style (``object``, ``model``, ``usage``).

Request fields use strict types: ``1`` is not a string and ``"1"`` is not a token id, so a
wrong JSON type is a 422 rather than a silent coercion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

__all__ = [
    "HitLike",
    "CollectionLike",
    "EmbeddingRequest",
    "EmbeddingObject",
    "Usage",
    "EmbeddingResponse",
    "ModelCard",
    "ModelList",
    "SearchRequest",
    "SearchHit",
    "SearchResult",
    "SearchResponse",
    "RerankRequest",
    "RerankResult",
    "RerankResponse",
    "SimilarityRequest",
    "SimilarityResponse",
    "CollectionInfo",
    "HealthResponse",
    "ErrorDetail",
    "ErrorResponse",
]


# ---- the collection contract (embedforge.collection provides it; tests use a fake) ----


class HitLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def text(self) -> str: ...
    @property
    def metadata(self) -> dict[str, Any]: ...


class CollectionLike(Protocol):
    manifest: dict[str, Any]  # includes "model"

    def search(
        self, queries: list[str], *, top_k: int = 10, mode: str = "dense", model: Any = None,
        where: Any = None, fusion: str = ..., rerank: Any = None,
    ) -> Sequence[Sequence[HitLike]]: ...  # see Collection.search

    def __len__(self) -> int: ...


# ---- requests ----


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown fields are ignored, as OpenAI does


class EmbeddingRequest(_Request):
    """``POST /v1/embeddings``: OpenAI's request body."""

    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]] = Field(
        description="a text, a list of texts, a list of token ids, or a list of token-id lists"
    )
    model: StrictStr = Field(description="the served model's id (see /v1/models) or an accepted alias")
    encoding_format: Literal["float", "base64"] = "float"  # base64: little-endian float32 bytes
    dimensions: StrictInt | None = None  # keep the first N dimensions and renormalise
    user: StrictStr | None = None  # accepted and ignored


class SearchRequest(_Request):
    """``POST /v1/search``: one query or several over the served collection."""

    query: StrictStr | list[StrictStr]
    top_k: StrictInt = Field(default=10, ge=1, le=1000)  # hits per query
    mode: StrictStr = "dense"  # dense | bm25 | hybrid, as the collection supports
    where: dict[str, Any] | None = None  # metadata filter, e.g. {"year": {"$gte": 2020}} (see embedforge.search.match_metadata)
    fusion: StrictStr | None = None  # hybrid only: "score" (default) or "rrf"
    rerank: StrictBool = False  # re-score the top hits with the server's cross-encoder (--reranker)


class RerankRequest(_Request):
    """``POST /v1/rerank``: order ``documents`` by relevance to ``query``."""

    query: StrictStr
    documents: list[StrictStr]
    top_n: StrictInt | None = Field(default=None, ge=1)  # keep the best N; default: all
    return_documents: StrictBool = True  # include each document's text in the results
    model: StrictStr | None = None  # accepted and ignored: the server has one reranker


class SimilarityRequest(_Request):
    """``POST /v1/similarity``: cosine similarity of every text in ``texts_1`` with every one in ``texts_2``."""

    texts_1: list[StrictStr]
    texts_2: list[StrictStr] | None = None  # default: texts_1 against itself
    model: StrictStr | None = None  # accepted and ignored: the server has one model


# ---- responses ----


class Usage(BaseModel):
    prompt_tokens: int  # tokens the model read, special tokens included, after truncation
    total_tokens: int


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int  # unix time the server loaded it
    owned_by: str = "embedforge"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SearchHit(BaseModel):
    id: str
    score: float
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResult(BaseModel):
    query: str
    hits: list[SearchHit]


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    mode: str
    data: list[SearchResult]  # one per query, in request order


class RerankResult(BaseModel):
    index: int  # position in the request's documents
    relevance_score: float  # cross-encoder: its score (sigmoid for one-label models); fallback: cosine
    document: str | None = None


class RerankResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    method: Literal["cross-encoder", "bi-encoder-cosine"]  # which scorer ranked the documents
    results: list[RerankResult]  # best first
    usage: Usage


class SimilarityResponse(BaseModel):
    object: Literal["similarity"] = "similarity"
    model: str
    data: list[list[float]]  # (len(texts_1), len(texts_2)) cosine similarities
    usage: Usage


class CollectionInfo(BaseModel):
    name: str
    size: int
    map_url: str | None = None  # the corpus map page, when the collection has a map.html


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    dimension: int
    max_seq_length: int
    batching: bool
    auth: bool  # whether /v1/* needs a Bearer key
    collection: CollectionInfo | None = None
    reranker: str | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str  # invalid_request_error for 4xx, server_error for 5xx, as OpenAI
    param: str | None = None  # the offending field, e.g. "input[3]"
    code: str | None = None  # a stable machine-readable reason, e.g. "model_not_found"


class ErrorResponse(BaseModel):
    error: ErrorDetail
