"""``create_app(config)``: the FastAPI application of ``embedforge serve``.

The model (and the collection and reranker, when configured) load once, in the lifespan, before
the server accepts requests; the batcher's worker thread starts with them and stops at shutdown.

    from embedforge.serve import ServeConfig, create_app
    app = create_app(ServeConfig(model="minilm"))     # then: uvicorn.run(app, host="127.0.0.1")
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from embedforge.models import load_model
from embedforge.serve.config import ServeConfig
from embedforge.serve.errors import install_error_handlers
from embedforge.serve.metrics import Metrics
from embedforge.serve.middleware import ApiMiddleware
from embedforge.serve.routes import router
from embedforge.serve.schemas import CollectionLike
from embedforge.serve.service import Service, open_collection

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

__all__ = ["create_app", "load_reranker"]

logger = logging.getLogger(__name__)


def load_reranker(path: str, max_length: int | None = None) -> CrossEncoder:
    """A sentence-transformers CrossEncoder from a local directory, on CPU (:func:`embedforge.rerank.model.load_cross_encoder`).

    One saved as not recommended is logged here; ``embedforge serve`` refuses it unless ``--force-reranker``."""
    from embedforge.rerank.model import load_cross_encoder, not_recommended_reason

    reranker: CrossEncoder = load_cross_encoder(path, max_length=max_length)
    reason = not_recommended_reason(path)
    if reason:
        logger.warning("serving a re-ranker that is not recommended (%s): %s", path, reason)
    return reranker


def create_app(
    config: ServeConfig,
    *,
    model: SentenceTransformer | None = None,
    collection: CollectionLike | None = None,
    reranker: CrossEncoder | None = None,
    more_rerankers: list[CrossEncoder] | None = None,
) -> FastAPI:
    """Build the app; nothing heavy happens until its lifespan starts.

    ``model``, ``collection``, ``reranker`` and ``more_rerankers`` replace what ``config`` names with objects already
    loaded (tests, or an app embedding this one); ``config.collection`` still locates ``map.html``.
    """
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        restore_threads = _set_threads(config)
        loaded = model if model is not None else load_model(config.model, device=config.model_device())
        coll = collection
        if coll is None and config.collection:
            coll = open_collection(config.collection)
        ranker = reranker
        if ranker is None and config.reranker:
            ranker = load_reranker(config.reranker, config.rerank_max_length)
        more = more_rerankers if more_rerankers is not None else [load_reranker(r, config.rerank_max_length) for r in config.more_rerankers]
        service = Service(config, loaded, collection=coll, reranker=ranker, more_rerankers=more, metrics=metrics)
        app.state.service = service
        logger.info("serving %s (dimension %d, batching %s)", service.model_id, service.dimension, config.batching)
        try:
            yield
        finally:
            service.close()
            restore_threads()

    app = FastAPI(
        title="embedforge",
        summary="An OpenAI-compatible embeddings API for your own model, with search, rerank and similarity.",
        lifespan=lifespan,
        **_lenient_json(),
    )
    app.state.config = config
    app.state.metrics = metrics
    app.state.index_html = resources.files("embedforge.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    install_error_handlers(app)
    app.include_router(router)
    endpoints = frozenset(path for route in router.routes if "{" not in (path := getattr(route, "path", "{")))
    if config.allowed_hosts:  # inside ApiMiddleware: a refused Host is counted in /metrics like any request
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))
    app.add_middleware(
        ApiMiddleware,
        metrics=metrics,
        api_keys=config.api_keys,
        max_body_bytes=config.max_body_bytes,
        endpoints=endpoints,
    )
    return app


def _set_threads(config: ServeConfig) -> Callable[[], None]:
    """Set torch's threads (``config.threads_per_worker()``) and the route thread pool; returns what undoes both.

    Torch's count is process-wide (each worker thread takes it up); it is put back at shutdown for
    an app embedded in a bigger process (tests). Fewer threads than cores leaves CPU for the HTTP
    work and avoids the stalls of a thread team waiting on a descheduled member on a busy machine.
    The blocking routes (search, rerank, similarity; ``/v1/embeddings`` is a coroutine) run in
    AnyIO's thread pool, 40 threads by default: past 40 concurrent searches the rest would wait for
    a thread before reaching the batcher, and a full batch of 64 would never form.
    """
    import anyio.to_thread

    limiter = anyio.to_thread.current_default_thread_limiter()
    old_tokens = limiter.total_tokens
    limiter.total_tokens = max(old_tokens, 2 * config.workers * config.max_batch_size)
    threads = config.threads_per_worker()
    old_threads: int | None = None
    if threads is not None:
        import torch

        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads)

    def restore() -> None:
        limiter.total_tokens = old_tokens
        if old_threads is not None:
            import torch

            torch.set_num_threads(old_threads)

    return restore


def _lenient_json() -> dict[str, Any]:
    """Parse a body sent without a Content-Type header as JSON, where this FastAPI has that switch."""
    import inspect

    if "strict_content_type" in inspect.signature(FastAPI.__init__).parameters:
        return {"strict_content_type": False}
    return {}
