"""What the routes call: the loaded model behind a batcher, input checks, search and rerank.

Routes stay thin: they parse with :mod:`embedforge.serve.schemas`, call a :class:`Service` method
and wrap the result in a response model. Every check that answers a 4xx lives here and raises
:class:`~embedforge.serve.errors.ApiError`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
from starlette.concurrency import run_in_threadpool

from embedforge.encode import Precision, encode
from embedforge.errors import InputError
from embedforge.images.model import supports_images
from embedforge.models import BUNDLED_MODELS, embedding_dim, resolve_model
from embedforge.rerank.model import pair_scores, reranker_method
from embedforge.serve.batcher import Encoder, MicroBatcher, QueueFull
from embedforge.serve.config import ServeConfig
from embedforge.serve.errors import ApiError
from embedforge.serve.metrics import Metrics
from embedforge.serve.pool import DirectEncoder, ReplicaPool, replicate
from embedforge.serve.schemas import CollectionLike, HitLike, RerankMethod
from embedforge.vectors import l2_normalize

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

__all__ = ["Service", "served_names", "truncate_dimensions", "to_base64", "open_collection"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def served_names(model: str, aliases: Sequence[str] = ()) -> tuple[str, frozenset[str]]:
    """The id ``/v1/models`` reports for ``model`` and every name ``/v1/embeddings`` accepts.

    * bundled alias (``minilm``): the id is the alias; its upstream hub name
      (``sentence-transformers/all-MiniLM-L6-v2``) and that name's last part are accepted too;
    * a directory: the id is the directory's name; the path as given and its absolute form too;
    * a hub id (``org/name``): the id is the hub id; ``name`` alone too;
    * plus ``aliases`` (``--model-alias``), e.g. ``text-embedding-3-small`` to keep a client's code unchanged.
    """
    accepted = {model, *aliases}
    if model in BUNDLED_MODELS:
        upstream = BUNDLED_MODELS[model][2]
        accepted |= {upstream, upstream.rsplit("/", 1)[-1]}
        return model, frozenset(accepted)
    path = Path(model).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        accepted |= {str(resolved), resolved.name}
        return resolved.name, frozenset(accepted)
    accepted.add(model.rsplit("/", 1)[-1])
    return model, frozenset(accepted)


def truncate_dimensions(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Keep the first ``dimensions`` columns and L2-renormalise each row (Matryoshka-style).

    Meaningful for models trained with a Matryoshka loss; for others it is a lossy projection.
    """
    return l2_normalize(vectors[:, :dimensions])  # (n, dimensions)


def to_base64(vector: np.ndarray) -> str:
    """Base64 of the vector's little-endian float32 bytes, as OpenAI's ``encoding_format="base64"``."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def open_collection(path: str) -> CollectionLike:
    """Open a collection directory with :mod:`embedforge.collection` (imported only when needed)."""
    try:
        from embedforge.collection import Collection
    except ImportError as err:
        raise InputError(f"--collection needs embedforge.collection, which could not be imported: {err}") from err
    return Collection.open(path)


def _overloaded(err: QueueFull) -> ApiError:
    """A full queue: 503 ``overloaded`` with ``Retry-After``, as OpenAI answers when its engine is overloaded."""
    return ApiError(
        503,
        f"the server is overloaded ({err.queued} texts are waiting for the model); retry after {err.retry_after_s} s",
        code="overloaded",
        headers={"Retry-After": str(err.retry_after_s)},
    )


class Service:
    """The served model (used by one thread at a time), the optional collection and reranker."""

    def __init__(
        self,
        config: ServeConfig,
        model: SentenceTransformer,
        *,
        collection: CollectionLike | None = None,
        reranker: CrossEncoder | None = None,
        more_rerankers: Sequence[CrossEncoder] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.dimension = embedding_dim(model)
        self.max_seq_length = int(model.max_seq_length or 0)
        self.model_id, self.accepted_names = served_names(config.model, config.model_aliases)
        self.created = int(time.time())
        self.collection = collection
        self.collection_name = Path(config.collection).name if config.collection else "collection"
        map_file = Path(config.collection) / "map.html" if config.collection else None
        self.map_path = map_file if map_file is not None and map_file.is_file() else None
        self.images = supports_images(model)  # whether "modality": "image" inputs are accepted
        self.reranker = reranker
        self.reranker_name = (Path(config.reranker).name if config.reranker else "cross-encoder") if reranker else None
        self.more_rerankers = list(more_rerankers)  # /v1/search "rerank" only, fused after `reranker` (config.rerank_weights)
        self.more_reranker_names = [Path(r).name for r in config.more_rerankers]
        self._metrics = metrics
        self.collection_model = self._collection_model(collection)
        # A private tokenizer copy for counting and decoding on request threads: the model's own
        # tokenizer is used by the encode thread, and a fast tokenizer refuses concurrent use.
        self._tokenizer = copy.deepcopy(model.tokenizer)
        self._tokenizer_lock = threading.Lock()
        self.encoder = self._encoder(config, model, metrics)
        if metrics is not None:
            metrics.queued.set_function(lambda: self.encoder.load)

    def close(self) -> None:
        self.encoder.close()

    # ---- model work (runs on the encoder's threads) ----

    def _encoder(self, config: ServeConfig, model: SentenceTransformer, metrics: Metrics | None) -> Encoder:
        """One batcher, ``config.workers`` of them over model replicas, or none (``batching=False``)."""
        on_batch = metrics.observe_batch if metrics else None
        if not config.batching:
            return DirectEncoder(self._encode_with(model), on_batch=on_batch)
        batchers = [
            MicroBatcher(
                self._encode_with(model if k == 0 else replicate(model)),
                max_batch_size=config.max_batch_size,
                max_batch_tokens=config.max_batch_tokens,
                max_wait_ms=config.max_wait_ms,
                max_queue=config.max_queue,
                on_batch=on_batch,
                name="embedforge-batcher" if k == 0 else f"embedforge-batcher-{k + 1}",
            )
            for k in range(config.workers)
        ]
        return batchers[0] if len(batchers) == 1 else ReplicaPool(batchers)

    def _encode_with(self, model: SentenceTransformer) -> Callable[[list[str]], np.ndarray]:
        precision = cast(Precision, self.config.model_precision(str(model.device)))

        def run(texts: list[str]) -> np.ndarray:
            return encode(model, texts, batch_size=self.config.max_batch_size, normalize=self.config.normalize,
                          show_progress=False, precision=precision)

        return run

    def on_model_thread(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the model's thread (the first worker's), between batches; a 503 after the timeout."""
        try:
            return self.encoder.call(fn, timeout=self.config.request_timeout_s)
        except TimeoutError as err:
            raise ApiError(503, "timed out waiting for the model; try again", code="timeout") from err

    async def embed_async(self, texts: Sequence[str], tokens: Sequence[int] | None = None) -> np.ndarray:
        """:meth:`embed` for a coroutine: the event loop awaits the batcher's future, no thread waits on it.

        Each hand-over between threads costs a wake-up, and on a busy machine a wake-up can wait a
        whole time slice: awaiting on the event loop saves the two of a thread-pool route (to its
        thread and back). Without batching the encode runs on the caller's thread: a pool thread.
        """
        if tokens is None:
            tokens = self.count_tokens(texts)
        if not isinstance(self.encoder, MicroBatcher | ReplicaPool):
            return await run_in_threadpool(self.embed, texts, tokens)
        try:
            future = self.encoder.submit(texts, tokens)
            async with asyncio.timeout(self.config.request_timeout_s):
                return await asyncio.wrap_future(future)
        except QueueFull as err:
            raise _overloaded(err) from err
        except TimeoutError as err:  # the wrapped future was cancelled, and with it the queued request
            raise ApiError(503, "timed out waiting for the model; try again", code="timeout") from err
        except InputError as err:
            raise ApiError(400, str(err), code="invalid_input") from err

    def embed(self, texts: Sequence[str], tokens: Sequence[int] | None = None) -> np.ndarray:
        """``(len(texts), dim)`` float32 through the batcher; a 503 when its queue is full or after the timeout.

        ``tokens``: each text's token count (:meth:`count_tokens`), if the caller has them already.
        """
        if tokens is None:
            tokens = self.count_tokens(texts)
        try:
            return self.encoder.embed(texts, timeout=self.config.request_timeout_s, tokens=tokens)
        except QueueFull as err:
            raise _overloaded(err) from err
        except TimeoutError as err:
            raise ApiError(503, "timed out waiting for the model; try again", code="timeout") from err
        except InputError as err:
            raise ApiError(400, str(err), code="invalid_input") from err

    # ---- tokens ----

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model reads per text: special tokens included, truncated at max_seq_length."""
        if not texts:
            return []
        with self._tokenizer_lock:
            ids = self._tokenizer(
                list(texts), add_special_tokens=True, truncation=True, max_length=self.max_seq_length or None
            )["input_ids"]
        return [len(row) for row in ids]

    def usage_tokens(self, texts: Sequence[str], counts: Sequence[int] | None = None) -> int:
        """Total tokens for a response's ``usage`` (and the tokens counter of /metrics); ``counts``: already counted."""
        tokens = sum(self.count_tokens(texts) if counts is None else counts)
        if self._metrics is not None:
            self._metrics.tokens.inc(tokens)
        return tokens

    def decode_tokens(self, rows: Sequence[Sequence[int]]) -> list[str]:
        """Token-id inputs back to text with the model's tokenizer (ids from another tokenizer are rejected)."""
        vocab = len(self._tokenizer)
        for i, row in enumerate(rows):
            bad = next((t for t in row if not 0 <= t < vocab), None)
            if bad is not None:
                raise ApiError(
                    400,
                    f"token id {bad} is outside this model's vocabulary (0..{vocab - 1}); token ids must come "
                    "from the served model's tokenizer (LangChain: set check_embedding_ctx_length=False to send text)",
                    code="invalid_token_id",
                    param=f"input[{i}]" if len(rows) > 1 else "input",
                )
        with self._tokenizer_lock:
            return [self._tokenizer.decode(list(row), skip_special_tokens=True) for row in rows]

    # ---- checks ----

    def check_model(self, name: str) -> None:
        if name not in self.accepted_names:
            raise ApiError(
                404,
                f"the model '{name}' does not exist on this server; it serves '{self.model_id}' (see GET /v1/models)",
                code="model_not_found",
                param="model",
            )

    def check_dimensions(self, dimensions: int | None) -> int | None:
        if dimensions is None or dimensions == self.dimension:
            return None
        if not 1 <= dimensions <= self.dimension:
            raise ApiError(
                400,
                f"dimensions must be between 1 and {self.dimension} (the model's dimension), got {dimensions}",
                code="invalid_dimensions",
                param="dimensions",
            )
        return dimensions

    def check_texts(self, texts: Sequence[str], param: str, *, allow_empty_list: bool = False) -> None:
        """Count and length limits; an empty string is refused, as OpenAI does."""
        limit = self.config.max_inputs
        if not texts and not allow_empty_list:
            raise ApiError(400, f"'{param}' must not be empty", code="empty_input", param=param)
        if len(texts) > limit:
            raise ApiError(
                400, f"'{param}' has {len(texts)} items; at most {limit} per request", code="too_many_inputs", param=param
            )
        max_chars = self.config.max_text_chars
        for i, text in enumerate(texts):
            if not text:
                raise ApiError(400, f"'{param}[{i}]' is an empty string", code="empty_input", param=f"{param}[{i}]")
            if len(text) > max_chars:
                raise ApiError(
                    400,
                    f"'{param}[{i}]' has {len(text)} characters; at most {max_chars} per text",
                    code="text_too_long",
                    param=f"{param}[{i}]",
                )

    def texts_from_input(self, value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
        """OpenAI's ``input`` union as a list of checked texts."""
        if isinstance(value, str):
            texts = [value]
        elif value and isinstance(value[0], int):
            self._check_token_rows([value])  # type: ignore[list-item]
            texts = self.decode_tokens([value])  # type: ignore[list-item]
        elif value and isinstance(value[0], list):
            self._check_token_rows(value)  # type: ignore[arg-type]
            texts = self.decode_tokens(value)  # type: ignore[arg-type]
        else:
            texts = list(value)  # type: ignore[arg-type]
        # An id list that decodes to nothing (only special tokens) is an empty input too.
        self.check_texts(texts, "input")
        return texts

    def _check_token_rows(self, rows: Sequence[Sequence[int]]) -> None:
        if len(rows) > self.config.max_inputs:
            raise ApiError(
                400, f"'input' has {len(rows)} items; at most {self.config.max_inputs} per request",
                code="too_many_inputs", param="input",
            )
        for i, row in enumerate(rows):
            if not row or len(row) > self.config.max_text_chars:
                raise ApiError(
                    400, f"'input[{i}]' must hold 1 to {self.config.max_text_chars} token ids",
                    code="empty_input" if not row else "text_too_long", param=f"input[{i}]",
                )

    # ---- search and rerank ----

    def _collection_model(self, collection: CollectionLike | None) -> SentenceTransformer | None:
        """The served model when the collection was embedded with it; else ``None`` (the collection loads its own)."""
        if collection is None:
            return None
        name = str(collection.manifest.get("model", "")) if isinstance(collection.manifest, dict) else ""
        try:
            same = bool(name) and os.path.realpath(resolve_model(name)) == os.path.realpath(resolve_model(self.config.model))
        except InputError:
            same = False
        if not same:
            logger.warning(
                "the collection was embedded with %r, not the served %r: /v1/search uses the collection's model",
                name, self.config.model,
            )
            return None
        return self.model

    def served_collection(self) -> CollectionLike:
        """The collection; 404 ``no_collection`` without one."""
        if self.collection is None:
            raise ApiError(
                404,
                "this server has no collection; start it with `embedforge serve --collection DIR` to search",
                code="no_collection",
            )
        return self.collection

    def search(self, queries: list[str], *, top_k: int, mode: str, where: dict[str, Any] | None = None,
               fusion: str | None = None, rerank: bool = False) -> Sequence[Sequence[HitLike]]:
        collection = self.served_collection()
        self.check_texts(queries, "query")
        reranker = self.reranker
        if rerank and reranker is None:
            raise ApiError(400, "this server has no re-ranker; start it with `--reranker CROSS_ENCODER_DIR` to use 'rerank'",
                           code="no_reranker", param="rerank")
        # only what the request sets: a plain request works with any collection-like object
        options: dict[str, Any] = {k: v for k, v in (("where", where), ("fusion", fusion)) if v is not None}
        if rerank:
            options["rerank"] = [reranker, *self.more_rerankers] if self.more_rerankers else reranker
            options["rerank_top"] = self.config.rerank_depth  # exactly this many re-scored, the rest below
            if self.config.rerank_weights is not None:  # fused with the first stage (--rerank-weights)
                options["rerank_weights"] = list(self.config.rerank_weights)

        def run(batch: list[str]) -> Sequence[Sequence[HitLike]]:
            return collection.search(batch, top_k=top_k, mode=mode, model=self.collection_model, **options)

        try:
            if not self.config.search_batching:
                return self.on_model_thread(lambda: run(queries))
            # Concurrent requests with the same options share one search: one query encode, one index search.
            key = ("search", top_k, mode, fusion, rerank, json.dumps(where, sort_keys=True))
            return self.encoder.merged(key, queries, run, timeout=self.config.request_timeout_s)
        except QueueFull as err:
            raise _overloaded(err) from err
        except TimeoutError as err:
            raise ApiError(503, "timed out waiting for the model; try again", code="timeout") from err
        except (InputError, ValueError) as err:
            raise ApiError(400, str(err), code="invalid_search") from err

    def rerank(self, query: str, documents: list[str]) -> tuple[np.ndarray, RerankMethod]:
        """One score per document, higher is more relevant, and which scorer made them."""
        self.check_texts([query], "query")
        self.check_texts(documents, "documents")
        reranker = self.reranker
        if getattr(reranker, "needs_collection", False):
            raise ApiError(400, "this server's re-ranker is prf (Rocchio feedback): it re-scores the collection's own candidates "
                           "(/v1/search with \"rerank\": true) and cannot score free documents", code="invalid_rerank")
        if reranker is not None:  # the scorer of `embedforge search --rerank` and /v1/search: same pair, same score
            pairs = [(query, doc) for doc in documents]
            scores = self.on_model_thread(lambda: pair_scores(reranker, pairs, batch_size=self.config.max_batch_size))
            return scores, cast(RerankMethod, reranker_method(reranker))
        vectors = self.cosine_ready(self.embed([query, *documents]))  # (1 + n, dim)
        return vectors[1:] @ vectors[0], "bi-encoder-cosine"  # (n,)

    def cosine_ready(self, vectors: np.ndarray) -> np.ndarray:
        if self.config.normalize:
            return vectors
        return l2_normalize(vectors)
