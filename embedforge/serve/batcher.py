"""Dynamic micro-batching: concurrent requests share one forward pass.

A transformer's forward pass on CPU or GPU costs little more for 32 short texts than for one, so a
server that encodes each request on its own wastes most of its time under concurrency. The
:class:`MicroBatcher` queues the texts of concurrent requests, groups them up to
``max_batch_size`` texts or until the first of them has waited ``max_wait_ms``, makes one call of
the encode function, and hands each request its own rows back through a
:class:`concurrent.futures.Future`.

One worker thread owns the model: every use of it (batched encodes and, through :meth:`call`,
anything else such as search or reranking) runs on that thread, one at a time. That also keeps a
Hugging Face fast tokenizer from being used by two threads at once, which it does not allow.

:class:`DirectEncoder` has the same interface without batching (one encode per request, under a
lock); it is the baseline the benchmark compares against and what ``--no-batching`` serves.

:meth:`MicroBatcher.merged` does the same for other model work whose inputs can be concatenated:
concurrent ``/v1/search`` requests with the same options become one search over all their
queries (one query encode, one index search).

Written here rather than taken from a library: sentence-transformers has multi-process encoding
for large offline jobs but nothing that merges concurrent small requests.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

__all__ = ["EncodeFn", "MergeFn", "Encoder", "MicroBatcher", "DirectEncoder", "BatchCallback"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
EncodeFn = Callable[[list[str]], np.ndarray]  # texts -> (len(texts), dim)
BatchCallback = Callable[[int, int], None]  # (texts in the forward pass, requests merged into it)
MergeFn = Callable[[list[Any]], Sequence[Any]]  # items -> one result per item, in order


class Encoder(Protocol):
    """What the app needs from a batcher: encode texts, and run other model work exclusively."""

    def embed(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray: ...

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T: ...

    def merged(self, key: Hashable, items: Sequence[Any], fn: MergeFn, timeout: float | None = None) -> list[Any]: ...

    def close(self) -> None: ...


@dataclass
class _Job:
    texts: list[str]
    future: Future[np.ndarray] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)


@dataclass
class _Merge:
    key: Hashable
    items: list[Any]
    fn: MergeFn
    future: Future[list[Any]] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


_STOP = object()


def _wait(future: Future[T], timeout: float | None) -> T:
    try:
        return future.result(timeout=timeout)
    except TimeoutError:
        future.cancel()  # still queued: the worker skips it; already running: it finishes unseen
        raise


class MicroBatcher:
    """Merge concurrent encode requests into batches on one worker thread.

    Args:
        fn: encodes a list of texts into a ``(n, dim)`` array; called only on the worker thread.
        max_batch_size: most texts merged into one call; one request larger than this is encoded
            on its own (``fn`` splits it into forward passes itself).
        max_wait_ms: longest the first request of a batch waits (counted from its arrival) for more
            before the call; requests already queued are taken without waiting, and there is no wait
            while the last call held a single request (light load).
        on_batch: called after every encode with (texts, requests), e.g. for metrics.
    """

    def __init__(
        self,
        fn: EncodeFn,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        on_batch: BatchCallback | None = None,
        name: str = "embedforge-batcher",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._last_batch_requests = 1  # requests merged into the last encode call (worker thread only)
        self._last_merge_requests = 1  # requests in the last round of merged calls (worker thread only)
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- client side (any thread) ----

    def submit(self, texts: Sequence[str]) -> Future[np.ndarray]:
        """Queue ``texts``; the future's result is their ``(len(texts), dim)`` embeddings."""
        job = _Job(list(texts))
        self._put(job)
        return job.future

    def embed(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray:
        """:meth:`submit` and wait; raises :class:`TimeoutError` after ``timeout`` seconds."""
        return _wait(self.submit(texts), timeout)

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn()`` on the worker thread, between batches, and return its result."""
        job = _Call(fn)
        self._put(job)
        return _wait(job.future, timeout)

    def merged(self, key: Hashable, items: Sequence[Any], fn: MergeFn, timeout: float | None = None) -> list[Any]:
        """``fn(items)`` on the worker thread, merged with concurrent calls of an equal ``key``.

        Calls with equal keys must mean the same ``fn``: one call runs ``fn`` over all their
        items (up to ``max_batch_size`` items, gathered as embeddings are), and each gets its own
        results back. When a merged call fails, each is retried on its own, so one request's error
        is not another's.
        """
        job = _Merge(key, list(items), fn)
        self._put(job)
        return _wait(job.future, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish what is queued, then stop the worker. Later submissions raise RuntimeError."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _put(self, job: _Job | _Call | _Merge) -> None:
        with self._close_lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.put(job)

    # ---- worker side ----

    def _run(self) -> None:
        carry: collections.deque[Any] = collections.deque()  # an item taken but left for the next round
        while True:
            item = carry.popleft() if carry else self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Call):
                self._run_call(item)
                continue
            if isinstance(item, _Merge):
                self._run_merges(self._gather_merges(item, carry))
                continue
            batch = [item]
            size = len(item.texts)
            # The wait counts from when the first request arrived: one queued while the worker was
            # busy has waited already, and takes whatever else is queued without waiting more.
            # Under light load (the last batch held one request) nobody waits: a lone client would
            # only pay the delay, with no one to share a batch with.
            wait = self.max_wait_s if self._last_batch_requests > 1 else 0.0
            deadline = item.queued_at + wait
            while size < self.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, _Job) or size + len(nxt.texts) > self.max_batch_size:
                    carry.append(nxt)
                    break
                batch.append(nxt)
                size += len(nxt.texts)
            self._run_batch(batch)

    def _gather_merges(self, first: _Merge, carry: collections.deque[Any]) -> dict[Hashable, list[_Merge]]:
        """``first`` and the merge jobs queued with it (the same wait rule as embeddings), by key."""
        groups: dict[Hashable, list[_Merge]] = {first.key: [first]}
        size = len(first.items)
        wait = self.max_wait_s if self._last_merge_requests > 1 else 0.0
        deadline = first.queued_at + wait
        while size < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(nxt, _Merge) or size + len(nxt.items) > self.max_batch_size:
                carry.append(nxt)
                break
            groups.setdefault(nxt.key, []).append(nxt)
            size += len(nxt.items)
        self._last_merge_requests = sum(len(group) for group in groups.values())
        return groups

    @staticmethod
    def _run_merges(groups: dict[Hashable, list[_Merge]]) -> None:
        for group in groups.values():
            live = [job for job in group if job.future.set_running_or_notify_cancel()]
            if not live:
                continue
            items = [item for job in live for item in job.items]
            try:
                out = list(live[0].fn(items))
                if len(out) != len(items):
                    raise RuntimeError(f"a merged call returned {len(out)} results for {len(items)} items")
            except Exception as err:
                if len(live) == 1:
                    live[0].future.set_exception(err)
                    continue
                for job in live:  # one request's error must not fail the others merged with it
                    try:
                        job.future.set_result(list(job.fn(job.items)))
                    except Exception as single_err:
                        job.future.set_exception(single_err)
                continue
            start = 0
            for job in live:
                job.future.set_result(out[start : start + len(job.items)])
                start += len(job.items)

    @staticmethod
    def _run_call(item: _Call) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            item.future.set_result(item.fn())
        except BaseException as err:  # handed to the caller, who re-raises it
            item.future.set_exception(err)

    def _run_batch(self, batch: list[_Job]) -> None:
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        texts = [text for job in live for text in job.texts]
        try:
            out = self._fn(texts)  # (len(texts), dim)
        except Exception as err:
            if len(live) == 1:
                live[0].future.set_exception(err)
                return
            # One bad request must not fail the others merged with it: retry each on its own.
            logger.warning("a batch of %d requests failed (%s); encoding them one by one", len(live), err)
            for job in live:
                try:
                    job.future.set_result(self._fn(job.texts))
                except Exception as single_err:
                    job.future.set_exception(single_err)
            return
        self._last_batch_requests = len(live)
        if self._on_batch is not None:
            self._on_batch(len(texts), len(live))
        start = 0
        for job in live:
            job.future.set_result(out[start : start + len(job.texts)])
            start += len(job.texts)


class DirectEncoder:
    """The same interface as :class:`MicroBatcher` without batching: each request is its own call.

    Calls run on the caller's thread under one lock, so the model is still used by one thread at
    a time.
    """

    def __init__(self, fn: EncodeFn, *, on_batch: BatchCallback | None = None) -> None:
        self._fn = fn
        self._on_batch = on_batch
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray:
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
