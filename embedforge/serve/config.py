"""The server's configuration: one frozen dataclass, a comment on every default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from embedforge.errors import InputError

__all__ = ["ServeConfig"]


@dataclass(frozen=True)
class ServeConfig:
    """Everything :func:`embedforge.serve.create_app` and ``embedforge serve`` need.

    Limits follow OpenAI's embeddings API where it has one (2,048 inputs per request); the
    character limit is ours (OpenAI counts tokens; a character bound is cheaper to check and
    stops a 1 MB text before the tokenizer sees it).
    """

    model: str = "minilm"  # a model name or directory, as embedforge.models.load_model takes it
    collection: str | None = None  # a collection directory for /v1/search and the web page; none: search is off
    reranker: str | None = None  # a sentence-transformers CrossEncoder directory for /v1/rerank; none: bi-encoder cosine
    host: str = "127.0.0.1"  # loopback only by default; 0.0.0.0 exposes the server to the network
    port: int = 8000  # the usual port of local model servers
    api_keys: tuple[str, ...] = ()  # accepted Bearer keys for every route but /health; empty: no authentication
    model_aliases: tuple[str, ...] = ()  # extra names /v1/embeddings accepts as `model` (e.g. "text-embedding-3-small")
    batching: bool = True  # dynamic micro-batching of concurrent requests; False: one encode per request
    max_batch_size: int = 64  # most texts one forward pass takes (the batcher groups requests up to this)
    max_wait_ms: float = 5.0  # longest the first request of a batch waits for company before it is encoded
    max_inputs: int = 2048  # most texts (or documents) per request; OpenAI's limit
    max_text_chars: int = 50_000  # most characters per text; far beyond any model's context, the model truncates anyway
    max_body_bytes: int = 8 * 1024 * 1024  # largest request body; larger -> 413 before it is parsed
    normalize: bool = True  # L2-normalise embeddings, as OpenAI's are (dot product = cosine)
    request_timeout_s: float = 120.0  # longest a request waits for its encode before a 503
    torch_threads: int | None = None  # torch intra-op threads, set at startup; None: leave torch's default (one per core)
    search_batching: bool = True  # concurrent /v1/search requests share one query encode and index search; False: one each
    allowed_hosts: tuple[str, ...] = ()  # accepted Host headers ("*.example.com" wildcards); empty: any (Starlette's TrustedHostMiddleware)
    max_header_bytes: int = 16 * 1024  # request line + headers; larger -> 431 and the connection closed, before any key check (h11's and Node's default)
    header_timeout_s: float = 10.0  # longest a connection may take to send a complete request head (slow-client guard); then it is closed
    keep_alive_s: int = 5  # seconds; an idle keep-alive connection is closed after this long (uvicorn's default)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_inputs", "max_text_chars", "max_body_bytes", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise InputError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be in 0..65535, got {self.port}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise InputError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if any(not key for key in self.api_keys):
            raise InputError("an API key must not be empty")
        if any(not host for host in self.allowed_hosts):
            raise InputError("an allowed host must not be empty")
        for name in ("header_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")

    def replace(self, **changes: object) -> ServeConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
