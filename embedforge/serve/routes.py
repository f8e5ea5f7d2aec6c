"""The HTTP routes: parse, call :class:`~embedforge.serve.service.Service`, wrap in a response model.

Routes that wait on the model are plain ``def``: FastAPI runs them in its thread pool, where they
block on the batcher's future without holding up the event loop. ``/v1/embeddings``, the hot path,
is the exception: a coroutine that awaits the batcher's future (see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from embedforge.serve import images
from embedforge.serve.errors import ApiError
from embedforge.serve.schemas import (
    CollectionInfo,
    EmbeddingObject,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    HealthResponse,
    HitLike,
    ModelCard,
    ModelList,
    RerankRequest,
    RerankResponse,
    RerankResult,
    SearchHit,
    SearchRequest,
    SearchResponse,
    SearchResult,
    SimilarityRequest,
    SimilarityResponse,
    Usage,
)
from embedforge.serve.service import Service, to_base64, truncate_dimensions

__all__ = ["router"]

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503)}
router = APIRouter(responses=_ERRORS)  # type: ignore[arg-type]


def _service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def _usage(service: Service, texts: list[str], counts: list[int] | None = None) -> Usage:
    tokens = service.usage_tokens(texts, counts)
    return Usage(prompt_tokens=tokens, total_tokens=tokens)


@router.post("/v1/embeddings", response_model=EmbeddingResponse, tags=["openai"])
async def create_embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    """Embeddings for one text or many, as OpenAI's ``POST /v1/embeddings``; images too, with a CLIP model.

    A coroutine, unlike the other model routes: it awaits the batcher instead of blocking a pool
    thread (:meth:`Service.embed_async`). A small request's checks, token counts and response are
    built on the event loop; a large one's go to the thread pool, so the loop never stalls on them.

    Images, as infinity-emb takes them: ``"modality": "image"`` makes every item of ``input`` an
    image, a data URI (``data:image/png;base64,...``, also jpeg and webp) or, on a server started
    with ``--image-root DIR``, a path inside DIR (symlinks resolved). Without that field every
    string is a text, whatever it starts with. Image vectors are those of
    :func:`embedforge.images.model.encode_images` (L2-normalised); ``usage`` counts no tokens for them.
    Decoding and the forward pass run off the event loop (see :mod:`embedforge.serve.images`).
    """
    service = _service(request)
    service.check_model(body.model)
    dimensions = service.check_dimensions(body.dimensions)
    if body.modality == "image":
        items = _image_items(body.input)
        vectors = await run_in_threadpool(images.embed_images, service, items)  # (n, dim)
        return await run_in_threadpool(_embedding_response, service, body, [], [], vectors, dimensions)
    if _is_small(body.input):
        texts, counts = _prepare(service, body.input)
        vectors = await service.embed_async(texts, counts)  # (n, dim)
        return _embedding_response(service, body, texts, counts, vectors, dimensions)
    texts, counts = await run_in_threadpool(_prepare, service, body.input)
    vectors = await service.embed_async(texts, counts)  # (n, dim)
    return await run_in_threadpool(_embedding_response, service, body, texts, counts, vectors, dimensions)


def _image_items(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if any(not isinstance(item, str) for item in value):
        raise ApiError(422, "with 'modality': 'image', 'input' must be a string or a list of strings (data URIs or "
                       "paths under the server's --image-root)", code="invalid_type", param="input")
    return list(value)  # type: ignore[arg-type]


_SMALL_CHARS = 20_000  # input handled on the event loop up to this size (a few ms of work at most)


def _is_small(value: str | list[str] | list[int] | list[list[int]]) -> bool:
    if isinstance(value, str):
        return len(value) <= _SMALL_CHARS
    if len(value) > 64:
        return False
    size = 0
    for item in value:
        size += len(item) if isinstance(item, str | list) else 1
    return size <= _SMALL_CHARS


def _prepare(service: Service, value: str | list[str] | list[int] | list[list[int]]) -> tuple[list[str], list[int]]:
    texts = service.texts_from_input(value)
    return texts, service.count_tokens(texts)  # the batcher's token budget and `usage`, counted once


def _embedding_response(
    service: Service, body: EmbeddingRequest, texts: list[str], counts: list[int], vectors: np.ndarray, dimensions: int | None
) -> EmbeddingResponse:
    if dimensions is not None:
        vectors = truncate_dimensions(vectors, dimensions)  # (n, dimensions)
    if body.encoding_format == "base64":
        data = [EmbeddingObject(index=i, embedding=to_base64(v)) for i, v in enumerate(vectors)]
    else:
        data = [EmbeddingObject(index=i, embedding=v.tolist()) for i, v in enumerate(vectors)]
    return EmbeddingResponse(data=data, model=service.model_id, usage=_usage(service, texts, counts))


def _card(service: Service) -> ModelCard:
    return ModelCard(id=service.model_id, created=service.created)


@router.get("/v1/models", response_model=ModelList, tags=["openai"])
def list_models(request: Request) -> ModelList:
    return ModelList(data=[_card(_service(request))])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, tags=["openai"])
def get_model(model_id: str, request: Request) -> ModelCard:
    service = _service(request)
    service.check_model(model_id)
    return _card(service)


@router.post("/v1/search", response_model=SearchResponse, tags=["search"])
def search(body: SearchRequest, request: Request) -> SearchResponse:
    """Top-k hits per query from the served collection (404 ``no_collection`` without one).

    ``"modality": "image"``: each query is an image, in the forms ``/v1/embeddings`` takes; dense
    search with the image's vector (image -> image in an image collection, image -> text in a
    text collection embedded with the same CLIP model). Hits of an image collection carry
    ``metadata`` ``{"kind": "image", "path", "width", "height"}``; ``/v1/thumbnails/{id}`` shows them.
    """
    service = _service(request)
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    if body.modality == "image":
        results: Sequence[Sequence[HitLike]] = images.search_images(
            service, queries, top_k=body.top_k, mode=body.mode, where=body.where, fusion=body.fusion, rerank=body.rerank
        )
        queries = [images.describe_image(q) for q in queries]
    else:
        results = service.search(queries, top_k=body.top_k, mode=body.mode, where=body.where, fusion=body.fusion,
                                 rerank=body.rerank)
    data = [
        SearchResult(
            query=query,
            hits=[SearchHit(id=str(h.id), score=float(h.score), text=h.text, metadata=dict(h.metadata or {})) for h in hits],
        )
        for query, hits in zip(queries, results, strict=True)
    ]
    return SearchResponse(model=service.model_id, mode=body.mode, data=data)


@router.get("/v1/thumbnails/{doc_id:path}", tags=["search"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def image_thumbnail(doc_id: str, request: Request) -> Response:
    """A JPEG thumbnail (longest side 256 px) of an image document of the served image collection.

    Only documents of the collection: the file is the one its metadata names for ``doc_id``;
    any other id, or a collection of texts, is a 404. No path is ever taken from the request.
    """
    data = images.thumbnail(_service(request), doc_id)
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"})


@router.post("/v1/rerank", response_model=RerankResponse, tags=["search"])
def rerank(body: RerankRequest, request: Request) -> RerankResponse:
    """Documents ordered by relevance: the cross-encoder when one is served, else bi-encoder cosine."""
    service = _service(request)
    scores, method = service.rerank(body.query, body.documents)  # (n,)
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[: body.top_n]
    results = [
        RerankResult(
            index=i, relevance_score=float(scores[i]), document=body.documents[i] if body.return_documents else None
        )
        for i in order
    ]
    model = service.reranker_name or service.model_id
    return RerankResponse(model=model, method=method, results=results, usage=_usage(service, [body.query, *body.documents]))


@router.post("/v1/similarity", response_model=SimilarityResponse, tags=["search"])
def similarity(body: SimilarityRequest, request: Request) -> SimilarityResponse:
    """Cosine similarity matrix of ``texts_1`` × ``texts_2`` (``texts_2`` defaults to ``texts_1``)."""
    service = _service(request)
    first = list(body.texts_1)
    second = first if body.texts_2 is None else list(body.texts_2)
    service.check_texts(first, "texts_1")
    service.check_texts(second, "texts_2")
    both = first if body.texts_2 is None else first + second
    service.check_texts(both, "texts_1 + texts_2")
    vectors = service.cosine_ready(service.embed(both))  # (n1 [+ n2], dim)
    a = vectors[: len(first)]  # (n1, dim)
    b = vectors if body.texts_2 is None else vectors[len(first) :]  # (n2, dim)
    matrix = a @ b.T  # (n1, n2)
    return SimilarityResponse(model=service.model_id, data=matrix.tolist(), usage=_usage(service, both))


@router.get("/health", response_model=HealthResponse, tags=["ops"])
def health(request: Request) -> HealthResponse:
    service = _service(request)
    collection = None
    if service.collection is not None:
        collection = CollectionInfo(
            name=service.collection_name, size=len(service.collection), map_url="/map" if service.map_path else None
        )
    return HealthResponse(
        model=service.model_id,
        dimension=service.dimension,
        max_seq_length=service.max_seq_length,
        batching=service.config.batching,
        auth=bool(service.config.api_keys),
        images=service.images,
        collection=collection,
        reranker=service.reranker_name,
        more_rerankers=service.more_reranker_names or None,
        rerank_weights=list(service.config.rerank_weights) if service.config.rerank_weights else None,  # config: only with a reranker
    )


@router.get("/metrics", tags=["ops"])
def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.index_html)


@router.get("/map", response_class=HTMLResponse, include_in_schema=False)
def corpus_map(request: Request) -> HTMLResponse:
    path = _service(request).map_path
    if path is None:
        raise ApiError(404, "this server's collection has no map.html", code="no_map")
    return HTMLResponse(path.read_text(encoding="utf-8"))
