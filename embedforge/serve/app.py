"""``create_app(config)``: the FastAPI application of ``embedforge serve``.

The model (and the collection and reranker, when configured) load once, in the lifespan, before
the server accepts requests; the batcher's worker thread starts with them and stops at shutdown.

    from embedforge.serve import ServeConfig, create_app
    app = create_app(ServeConfig(model="minilm"))     # then: uvicorn.run(app, host="127.0.0.1")
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
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


def load_reranker(path: str) -> CrossEncoder:
    """A sentence-transformers CrossEncoder from a local directory, on CPU (:func:`embedforge.rerank.model.load_cross_encoder`)."""
    from embedforge.rerank.model import load_cross_encoder

    reranker: CrossEncoder = load_cross_encoder(path)
    return reranker


def create_app(
    config: ServeConfig,
    *,
    model: SentenceTransformer | None = None,
    collection: CollectionLike | None = None,
    reranker: CrossEncoder | None = None,
) -> FastAPI:
    """Build the app; nothing heavy happens until its lifespan starts.

    ``model``, ``collection`` and ``reranker`` replace what ``config`` names with objects already
    loaded (tests, or an app embedding this one); ``config.collection`` still locates ``map.html``.
    """
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.torch_threads is not None:
            import torch

            # Process-wide; a server owns its process. Fewer threads than cores leaves CPU for HTTP work,
            # and avoids the stalls of a thread team waiting on a descheduled member on a busy machine.
            torch.set_num_threads(config.torch_threads)
        loaded = model if model is not None else load_model(config.model)
        coll = collection
        if coll is None and config.collection:
            coll = open_collection(config.collection)
        ranker = reranker
        if ranker is None and config.reranker:
            ranker = load_reranker(config.reranker)
        service = Service(config, loaded, collection=coll, reranker=ranker, metrics=metrics)
        app.state.service = service
        logger.info("serving %s (dimension %d, batching %s)", service.model_id, service.dimension, config.batching)
        try:
            yield
        finally:
            service.close()

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


def _lenient_json() -> dict[str, Any]:
    """Parse a body sent without a Content-Type header as JSON, where this FastAPI has that switch."""
    import inspect

    if "strict_content_type" in inspect.signature(FastAPI.__init__).parameters:
        return {"strict_content_type": False}
    return {}
