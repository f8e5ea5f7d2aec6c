"""The server's configuration: one frozen dataclass, a comment on every default."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import get_args

from embedforge.encode import Precision
from embedforge.errors import InputError
from embedforge.fusion import fusion_weights
from embedforge.rerank.feedback import parse_feedback
from embedforge.rerank.model import DEFAULT_RERANK_DEPTH

__all__ = ["ServeConfig", "available_cores", "default_torch_threads", "default_workers"]

# Most torch threads the automatic choice gives one worker. A single short text's forward pass
# gains little past a few threads, and a team of T threads stalls whenever any one of them is
# descheduled, which on a busy machine grows more likely with T. More throughput on a big machine
# comes from --workers (independent batchers that do not wait on each other), not from wider teams.
MAX_AUTO_THREADS = 4

# Most workers the automatic choice starts. The workers are threads of one process: the Python
# around each forward pass (tokenising, module calls, pooling) holds the GIL, so past a few workers
# requests/s stops growing; wider machines get wider torch teams per worker instead.
MAX_AUTO_WORKERS = 4


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_workers(cores: int | None = None) -> int:
    """Workers when ``--workers`` is not given: one per usable core, 1 to 4.

    Measured on 2 cores against infinity-emb (BENCHMARKS.md, serving): one worker with one torch
    thread levels off at ~160 requests/s from concurrency 32 on, as infinity does, while two
    workers of one thread each reach ~270 with a lower p99, idle, and stay ahead on a busy machine.
    The replicas share the weight tensors, so a worker costs a tokenizer and module copies, not a
    second model in memory.
    """
    cores = available_cores() if cores is None else cores
    return max(1, min(MAX_AUTO_WORKERS, cores))


def default_torch_threads(workers: int = 1, cores: int | None = None) -> int:
    """Torch threads per worker when ``--torch-threads`` is not given: ``(cores - 1) // workers``, 1 to 4.

    One core is left to everything that is not the forward pass: the event loop, HTTP parsing and
    JSON, tokenising, base64 (and, when benchmarked, the load client). On 2 cores that means one
    thread: torch's default there (one per core) shares both cores with the HTTP work, and on a
    busy machine its 2-thread team waits for a descheduled member at every parallel region; the
    issue-16 measurement fell to 2-8 requests/s at concurrency 1 that way (~70 with 1 thread, idle).
    """
    cores = available_cores() if cores is None else cores
    return max(1, min(MAX_AUTO_THREADS, (cores - 1) // max(1, workers)))


PRECISIONS = ("auto", *get_args(Precision))  # "auto" and what embedforge.encode's autocast takes


def _is_cuda(device: str) -> bool:
    """``cuda`` or ``cuda:N``."""
    name, _, index = device.partition(":")
    return name == "cuda" and (not index or index.isdigit())


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
    rerank_depth: int = DEFAULT_RERANK_DEPTH  # /v1/search "rerank": first-stage candidates re-scored per query (search --rerank-depth; its default)
    more_rerankers: tuple[str, ...] = ()  # /v1/search "rerank" only: further second stages fused with the first stage and `reranker` (needs rerank_weights)
    rerank_weights: tuple[float, ...] | None = None  # /v1/search "rerank": min-max fuse (first stage, reranker, *more_rerankers) scores with these weights; none: the re-ranker's order replaces the first stage's
    rerank_max_length: int | None = None  # max tokens each re-ranker reads (search --rerank-max-length); none: the model's own
    host: str = "127.0.0.1"  # loopback only by default; 0.0.0.0 exposes the server to the network
    port: int = 8000  # the usual port of local model servers
    api_keys: tuple[str, ...] = ()  # accepted Bearer keys for every route but /health; empty: no authentication
    model_aliases: tuple[str, ...] = ()  # extra names /v1/embeddings accepts as `model` (e.g. "text-embedding-3-small")
    batching: bool = True  # dynamic micro-batching of concurrent requests; False: one encode per request
    max_batch_size: int = 64  # most texts one forward pass takes (the batcher groups requests up to this)
    max_wait_ms: float = 5.0  # longest the oldest request waits for company (never under light load; it ends once as many requests as the last pass held are back)
    max_inputs: int = 2048  # most texts (or documents) per request; OpenAI's limit
    max_text_chars: int = 50_000  # most characters per text; far beyond any model's context, the model truncates anyway
    max_body_bytes: int = 8 * 1024 * 1024  # largest request body; larger -> 413 before it is parsed
    normalize: bool = True  # L2-normalise embeddings, as OpenAI's are (dot product = cosine)
    request_timeout_s: float = 120.0  # longest a request waits for its encode before a 503
    torch_threads: int | None = None  # torch threads per worker; None: default_torch_threads() (cores - 1 spread over the workers, 1..4); 0: torch's own (one per core)
    workers: int = dataclasses.field(default_factory=default_workers)  # inference threads, each with its own model replica (weights shared) and batcher; default: one per usable core, 1..4
    max_batch_tokens: int = 4096  # padded tokens (texts x longest) per forward pass: 64 sentences fit, 16 texts of 256 tokens (as fast per text as 64: measured); long texts go in passes of their own
    max_queue: int = 4096  # texts waiting per worker; past it a request gets 503 `overloaded` + Retry-After (~20 s of MiniLM work on one core)
    search_batching: bool = True  # concurrent /v1/search requests share one query encode and index search; False: one each
    allowed_hosts: tuple[str, ...] = ()  # accepted Host headers ("*.example.com" wildcards); empty: any (Starlette's TrustedHostMiddleware)
    max_header_bytes: int = 16 * 1024  # request line + headers; larger -> 431 and the connection closed, before any key check (h11's and Node's default)
    header_timeout_s: float = 10.0  # longest a connection may take to send a complete request head (slow-client guard); then it is closed
    keep_alive_s: int = 5  # seconds; an idle keep-alive connection is closed after this long (uvicorn's default)
    image_root: str | None = None  # a folder whose images `"modality": "image"` inputs may name by path; none: data URIs only
    max_images: int = 64  # most images per request: each is held decoded (up to 3 MB at 1024 px) until the model has it
    max_image_bytes: int = 16 * 1024 * 1024  # largest encoded image (a data URI's decoded bytes, or a file under image_root)
    device: str = "auto"  # where the served model runs: "auto" (the first CUDA GPU when torch sees one, else the CPU), "cpu", "cuda", "cuda:N"
    precision: str = "auto"  # forward passes under autocast: "auto" (float16 on a GPU, float32 on the CPU), "float32", "bfloat16", "float16"

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_inputs", "max_text_chars", "max_body_bytes", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise InputError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be in 0..65535, got {self.port}")
        if self.torch_threads is not None and self.torch_threads < 0:
            raise InputError(f"torch_threads must be >= 0 (0: torch's own choice), got {self.torch_threads}")
        for name in ("workers", "max_batch_tokens", "max_queue", "max_images", "max_image_bytes", "rerank_depth"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.rerank_max_length is not None and self.rerank_max_length < 1:
            raise InputError(f"rerank_max_length must be >= 1, got {self.rerank_max_length}")
        if any(not key for key in self.api_keys):
            raise InputError("an API key must not be empty")
        if self.image_root is not None and not self.image_root:
            raise InputError("image_root must not be empty (None: no image paths)")
        if any(not host for host in self.allowed_hosts):
            raise InputError("an allowed host must not be empty")
        if self.device != "auto" and self.device != "cpu" and not _is_cuda(self.device):
            raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.more_rerankers and self.reranker is None:
            raise InputError("more_rerankers need a reranker first (the one /v1/rerank uses)")
        if any(not r for r in self.more_rerankers):
            raise InputError("a re-ranker must not be empty")
        if self.rerank_max_length is not None and self.reranker is None:
            raise InputError("rerank_max_length needs a reranker (it is the length the re-rankers read)")
        if self.rerank_weights is not None and self.reranker is None:
            raise InputError("rerank_weights needs a reranker (the first stage's weight, then the re-ranker's)")
        named = [r for r in (self.reranker, *self.more_rerankers) if r]
        if named and all(parse_feedback(r) is not None for r in named) and self.rerank_max_length is not None:
            raise InputError("rerank_max_length is the length the re-rankers read; prf reads no text, so it does nothing")
        if self.collection is None and any(parse_feedback(r) is not None for r in named):
            raise InputError("the re-ranker prf (Rocchio feedback) re-scores a collection's candidates: it needs a collection")
        if self.reranker is not None:  # one weight per second stage after the first stage's; several need weights
            fusion_weights(self.rerank_weights, 1 + len(self.more_rerankers))
        for name in ("header_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")

    def threads_per_worker(self) -> int | None:
        """The torch thread count to set at startup; ``None``: leave torch's own (``torch_threads=0``)."""
        if self.torch_threads is None:
            return default_torch_threads(self.workers)
        return self.torch_threads or None

    def model_device(self) -> str:
        """The device the model is loaded on: ``device``, with ``auto`` resolved (CUDA when torch sees a GPU)."""
        if self.device == "cpu":
            return self.device
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if not torch.cuda.is_available():
            raise InputError(f"device {self.device!r}: torch sees no CUDA GPU here; use --device cpu or auto")
        return self.device

    def model_precision(self, device: str) -> str:
        """The autocast precision on ``device``: ``precision``, with ``auto`` as float16 on a GPU, float32 on a CPU
        (CPUs without bf16/fp16 units, such as AVX2-only ones, run half precision slower than float32)."""
        if self.precision != "auto":
            return self.precision
        return "float16" if _is_cuda(device) else "float32"

    def replace(self, **changes: object) -> ServeConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
