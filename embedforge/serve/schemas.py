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
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)
from pydantic_core import PydanticCustomError

from embedforge.errors import InputError
from embedforge.io import MAX_TEXT_CHARS, check_text

__all__ = [
    "HitLike",
    "CollectionLike",
    "VectorCollectionLike",
    "Modality",
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


@runtime_checkable
class VectorCollectionLike(Protocol):
    """What searching by image and serving thumbnails need besides :class:`CollectionLike` (a real Collection has it)."""

    def model(self, model: Any = None) -> Any: ...  # the collection's model, or ``model`` once checked against it
    def search_vectors(self, queries: Any, k: int, *, mask: Any = None) -> tuple[Any, Any]: ...  # (scores, rows), -1 padded
    def mask(self, where: Any) -> Any: ...
    def hit(self, row: int, score: float) -> HitLike: ...
    def get(self, doc_id: str) -> HitLike: ...  # InputError for an unknown id


# ---- requests ----

# "image": every input item (every query) is an image, a data URI or a path under --image-root
# (see embedforge.serve.images); "text" (default): every string is a text. infinity-emb's field.
Modality = Literal["text", "image"]

INVALID_TEXT = "invalid_text"  # the pydantic error type (and the API's error code) of unencodable text


def _valid_text(value: str) -> str:
    """``value`` unless it holds a lone UTF-16 surrogate (``"\\ud800"`` from a JSON escape).

    Such a string cannot be tokenised nor written back as UTF-8, so every string of a request is
    checked here, and the error handler answers 400 ``invalid_text`` naming the field. Lengths
    are checked later, with the server's own limit (``text_too_long``), hence the slices.
    """
    for start in range(0, len(value), MAX_TEXT_CHARS):
        try:
            check_text(value[start : start + MAX_TEXT_CHARS])
        except InputError as err:
            raise PydanticCustomError(INVALID_TEXT, err.message) from None
    return value


def _valid_json(value: Any) -> Any:
    """Every string (key or value) inside a JSON value through :func:`_valid_text`."""
    if isinstance(value, str):
        _valid_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _valid_text(key)
            _valid_json(item)
    elif isinstance(value, list):
        for item in value:
            _valid_json(item)
    return value


Text = Annotated[StrictStr, AfterValidator(_valid_text)]  # a JSON string that is valid Unicode


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown fields are ignored, as OpenAI does


class EmbeddingRequest(_Request):
    """``POST /v1/embeddings``: OpenAI's request body."""

    input: Text | list[Text] | list[StrictInt] | list[list[StrictInt]] = Field(
        description="a text, a list of texts, a list of token ids, or a list of token-id lists"
    )
    model: Text = Field(description="the served model's id (see /v1/models) or an accepted alias")
    encoding_format: Literal["float", "base64"] = "float"  # base64: little-endian float32 bytes
    dimensions: StrictInt | None = None  # keep the first N dimensions and renormalise
    user: Text | None = None  # accepted and ignored
    modality: Modality = "text"  # "image": each input is an image (data URI, or a path under --image-root)


class SearchRequest(_Request):
    """``POST /v1/search``: one query or several over the served collection."""

    query: Text | list[Text]
    top_k: StrictInt = Field(default=10, ge=1, le=1000)  # hits per query
    mode: Text = "dense"  # dense | bm25 | hybrid, as the collection supports
    where: dict[str, Any] | None = None  # metadata filter, e.g. {"year": {"$gte": 2020}} (see embedforge.query.match_metadata)
    fusion: Text | None = None  # hybrid only: "score" (default) or "rrf"
    rerank: StrictBool = False  # re-score the top hits with the server's cross-encoder (--reranker)
    modality: Modality = "text"  # "image": each query is an image (data URI, or a path under --image-root); dense only

    @field_validator("where")
    @classmethod
    def _where_is_valid_text(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        _valid_json(value)
        return value


# the served --reranker (a cross-encoder, or an embedding model as a second stage), or without one the served
# model's own cosine
RerankMethod = Literal["cross-encoder", "bi-encoder-reranker", "bi-encoder-cosine"]


class RerankRequest(_Request):
    """``POST /v1/rerank``: order ``documents`` by relevance to ``query``."""

    query: Text
    documents: list[Text]
    top_n: StrictInt | None = Field(default=None, ge=1)  # keep the best N; default: all
    return_documents: StrictBool = True  # include each document's text in the results
    model: Text | None = None  # accepted and ignored: the server has one reranker


class SimilarityRequest(_Request):
    """``POST /v1/similarity``: cosine similarity of every text in ``texts_1`` with every one in ``texts_2``."""

    texts_1: list[Text]
    texts_2: list[Text] | None = None  # default: texts_1 against itself
    model: Text | None = None  # accepted and ignored: the server has one model


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
    query: str  # an image query: a data URI's head and size, or the path as given
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
    method: RerankMethod  # which scorer ranked the documents
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
    images: bool = False  # whether the model embeds images ("modality": "image" inputs and queries)
    collection: CollectionInfo | None = None
    reranker: str | None = None
    more_rerankers: list[str] | None = None  # further second stages fused in /v1/search "rerank" (serve --reranker repeated)
    rerank_weights: list[float] | None = None  # the (first stage, re-ranker, *more) fusion weights of /v1/search "rerank"; none: replaced


class ErrorDetail(BaseModel):
    message: str
    type: str  # invalid_request_error for 4xx, server_error for 5xx, as OpenAI
    param: str | None = None  # the offending field, e.g. "input[3]"
    code: str | None = None  # a stable machine-readable reason, e.g. "model_not_found"


class ErrorResponse(BaseModel):
    error: ErrorDetail
