"""Encoders besides one :class:`~embedforge.serve.batcher.MicroBatcher`: several of them, or none.

* :class:`ReplicaPool` — ``--workers N``: N batchers, each on its own thread with its own model
  replica (:func:`replicate`: the weights are shared, the modules and the tokenizer copied), in
  one process. Embedding requests go to the worker with the least work queued; other model work
  (search, reranking) goes to the first, whose replica is the served model itself. Torch releases
  the GIL in its kernels, so the workers' forward passes run in parallel on separate cores.
  One process rather than several sharing the port: one copy of the weights, one set of metrics,
  and the same tests run against it. The price is the GIL: the Python around each forward pass
  (tokenising, module calls, pooling) runs one worker at a time, so scaling flattens after a few
  workers, where processes would go on.
* :class:`DirectEncoder` — ``--no-batching``: each request its own call, under a lock.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from embedforge.serve.batcher import BatchCallback, EncodeFn, MergeFn, MicroBatcher

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["ReplicaPool", "DirectEncoder", "replicate"]

T = TypeVar("T")


def replicate(model: SentenceTransformer) -> SentenceTransformer:
    """A copy of ``model`` for another inference thread: its own modules and tokenizer, the same weight tensors.

    A Hugging Face fast tokenizer refuses use from two threads at once, so each worker needs its
    own; the weights are only read at inference, so one copy in memory serves every worker.
    """
    shared: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, shared)


class ReplicaPool:
    """Several :class:`MicroBatcher` workers behind the one-batcher interface.

    ``embed`` goes to the batcher with the least texts queued or running (the first on a tie, so
    light load stays on one worker and keeps batching); ``call`` and ``merged`` go to the first.
    """

    def __init__(self, batchers: Sequence[MicroBatcher]) -> None:
        if not batchers:
            raise ValueError("a pool needs at least one batcher")
        self.batchers = list(batchers)

    @property
    def load(self) -> int:
        """Texts queued or being encoded, all workers."""
        return sum(b.load for b in self.batchers)

    def submit(self, texts: Sequence[str], tokens: Sequence[int] | None = None) -> Future[np.ndarray]:
        """:meth:`MicroBatcher.submit` on the least-loaded worker."""
        return min(self.batchers, key=lambda b: b.load).submit(texts, tokens)

    def embed(self, texts: Sequence[str], timeout: float | None = None, tokens: Sequence[int] | None = None) -> np.ndarray:
        return min(self.batchers, key=lambda b: b.load).embed(texts, timeout, tokens)

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        return self.batchers[0].call(fn, timeout)

    def merged(self, key: Hashable, items: Sequence[Any], fn: MergeFn, timeout: float | None = None) -> list[Any]:
        return self.batchers[0].merged(key, items, fn, timeout)

    def close(self) -> None:
        for batcher in self.batchers:
            batcher.close()

class DirectEncoder:
    """The same interface as :class:`MicroBatcher` without batching: each request is its own call.

    Calls run on the caller's thread under one lock, so the model is still used by one thread at
    a time. There is no queue to bound: waiting requests hold their HTTP threads instead.
    """

    def __init__(self, fn: EncodeFn, *, on_batch: BatchCallback | None = None) -> None:
        self._fn = fn
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self.load = 0  # no queue to measure: requests wait on the lock, in their own threads

    def embed(self, texts: Sequence[str], timeout: float | None = None, tokens: Sequence[int] | None = None) -> np.ndarray:
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("timed out waiting for the model")
        try:
            out = self._fn(list(texts))
        finally:
            self._lock.release()
        if self._on_batch is not None:
            self._on_batch(len(texts), 1)
        return out

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("timed out waiting for the model")
        try:
            return fn()
        finally:
            self._lock.release()

    def merged(self, key: Hashable, items: Sequence[Any], fn: MergeFn, timeout: float | None = None) -> list[Any]:
        """``fn(items)`` under the lock: no merging without batching."""
        return self.call(lambda: list(fn(list(items))), timeout)

    def close(self) -> None:
        pass
