"""Dynamic micro-batching: concurrent requests share one forward pass.

A transformer's forward pass on CPU or GPU costs little more for 32 short texts than for one, so a
server that encodes each request on its own wastes most of its time under concurrency. The
:class:`MicroBatcher` queues the texts of concurrent requests and makes one call of the encode
function for a group of them, handing each request its own rows back through a
:class:`concurrent.futures.Future`.

How a forward pass is formed:

* **by tokens, not only by count.** A padded pass costs about ``texts x longest text`` tokens, so
  one 256-token text merged with 63 sentences makes all 64 as slow as it is. A pass holds at most
  ``max_batch_size`` texts and ``max_batch_tokens`` padded tokens, and a request is only merged
  into a pass whose padding it would not more than double (:data:`MAX_PADDING`). Requests of
  similar length are merged first; the oldest queued request is always in the next pass, so
  nothing waits forever. A request larger than one pass is split into passes of similar lengths
  that are queued like any others, so a 2,048-text request does not hold up the sentences sent
  after it for the whole of its encode.
* **length-sorted.** The texts of a pass are handed to the encode function sorted by length.
* **waiting, briefly.** The oldest request waits at most ``max_wait_ms`` (counted from its
  arrival) and no longer than the last pass took, for company, and not at all while the last
  pass held a single request (light load).
  The wait ends early once as many requests are queued as the last pass held: under steady load
  the clients of the last pass are back, and waiting longer only adds latency. The wait is what
  keeps them together: 32 clients need ~20 ms of HTTP work on 2 cores to come back, and a pass
  started before then splits them into two groups that each wait for the other's pass too (the
  cause of a p99 twice the p50 at 32 clients, issue 16).
* **a bounded queue.** At most ``max_queue`` texts wait; past that :meth:`MicroBatcher.submit`
  raises :class:`QueueFull` with a Retry-After estimate (the server answers 503), rather than
  letting every request's latency grow without bound.

One worker thread owns the model: every use of it (batched encodes and, through :meth:`call`,
anything else such as search or reranking) runs on that thread, one at a time. That also keeps a
Hugging Face fast tokenizer from being used by two threads at once, which it does not allow.
Several workers (``--workers``) are several batchers over model replicas:
:class:`embedforge.serve.pool.ReplicaPool`.

:class:`~embedforge.serve.pool.DirectEncoder` has the same interface without batching (one encode
per request, under a lock); it is the baseline the benchmark compares against and what
``--no-batching`` serves.

:meth:`MicroBatcher.merged` does the same for other model work whose inputs can be concatenated:
concurrent ``/v1/search`` requests with the same options become one search over all their
queries (one query encode, one index search).

Written here rather than taken from a library: sentence-transformers has multi-process encoding
for large offline jobs but nothing that merges concurrent small requests; the token budget and
length grouping follow text-embeddings-inference's ``max_batch_tokens`` and infinity-emb's
length-sorted queue.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from embedforge.serve.passes import MAX_PADDING, estimate_tokens, joined, plan_passes

__all__ = ["EncodeFn", "MergeFn", "Encoder", "MicroBatcher", "BatchCallback", "QueueFull"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
EncodeFn = Callable[[list[str]], np.ndarray]  # texts -> (len(texts), dim)
BatchCallback = Callable[[int, int], None]  # (texts in the forward pass, requests merged into it)
MergeFn = Callable[[list[Any]], Sequence[Any]]  # items -> one result per item, in order

class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` texts already; try again after ``retry_after_s``."""

    def __init__(self, queued: int, retry_after_s: int) -> None:
        super().__init__(f"{queued} texts are waiting for the model; try again in {retry_after_s} s")
        self.queued = queued
        self.retry_after_s = retry_after_s


class Encoder(Protocol):
    """What the app needs from a batcher: encode texts, and run other model work exclusively."""

    def embed(self, texts: Sequence[str], timeout: float | None = None, tokens: Sequence[int] | None = None) -> np.ndarray: ...

    @property
    def load(self) -> int: ...  # texts queued or being encoded

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T: ...

    def merged(self, key: Hashable, items: Sequence[Any], fn: MergeFn, timeout: float | None = None) -> list[Any]: ...

    def close(self) -> None: ...


@dataclass
class _Job:
    texts: list[str]
    tokens: list[int]  # per text, as the model reads it (or an estimate)
    future: Future[np.ndarray] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)
    longest: int = 0

    def __post_init__(self) -> None:
        self.longest = max(self.tokens, default=1)


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
_LOOKAHEAD = 4  # queued jobs are taken into the worker's view up to this many passes of texts, to choose among


def _wait(future: Future[T], timeout: float | None) -> T:
    try:
        return future.result(timeout=timeout)
    except TimeoutError:
        future.cancel()  # still queued: the worker skips it; already running: it finishes unseen
        raise


class MicroBatcher:
    """Merge concurrent encode requests into token-budgeted, length-sorted passes on one worker thread.

    Args:
        fn: encodes a list of texts into a ``(n, dim)`` array; called only on the worker thread,
            with at most ``max_batch_size`` texts sorted by length.
        max_batch_size: most texts in one call of ``fn``; larger requests are split.
        max_batch_tokens: most padded tokens (texts x longest) in one call; a single text longer
            than this still goes, alone.
        max_wait_ms: longest the oldest request waits (counted from its arrival) for more before
            the call, and never longer than the last call took; requests already queued are taken
            without waiting, and there is no wait while the last call held a single request (light
            load) or once as many requests are pending as it held.
        max_queue: most texts (and merged items) waiting; past it :meth:`submit` raises
            :class:`QueueFull`. One request larger than this is still taken when nothing waits.
        on_batch: called after every encode with (texts, requests), e.g. for metrics.
    """

    def __init__(
        self,
        fn: EncodeFn,
        *,
        max_batch_size: int = 64,
        max_batch_tokens: int = 4096,
        max_wait_ms: float = 5.0,
        max_queue: int = 4096,
        on_batch: BatchCallback | None = None,
        name: str = "embedforge-batcher",
    ) -> None:
        for label, value in (("max_batch_size", max_batch_size), ("max_batch_tokens", max_batch_tokens), ("max_queue", max_queue)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._last_batch_requests = 1  # requests merged into the last encode call (worker thread only)
        self._last_merge_requests = 1  # requests in the last round of merged calls (worker thread only)
        self._queued = 0  # texts and merge items submitted but not yet taken into a call (under _close_lock)
        self._running = 0  # texts in the call running now (worker thread writes, any reads)
        self._texts_per_s = 0.0  # moving average of the encode rate, for Retry-After (worker thread writes)
        self._last_pass_s = self.max_wait_s  # how long the last encode call took (worker thread only)
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- client side (any thread) ----

    @property
    def load(self) -> int:
        """Texts queued or being encoded now: what a pool of batchers balances on."""
        return self._queued + self._running

    def submit(self, texts: Sequence[str], tokens: Sequence[int] | None = None) -> Future[np.ndarray]:
        """Queue ``texts``; the future's result is their ``(len(texts), dim)`` embeddings.

        ``tokens``: each text's token count as the model reads it (the token budget's unit);
        default: :func:`estimate_tokens`. Raises :class:`QueueFull` when the queue is full.
        """
        texts = list(texts)
        counts = [max(1, int(t)) for t in tokens] if tokens is not None else [estimate_tokens(t) for t in texts]
        if len(counts) != len(texts):
            raise ValueError(f"{len(counts)} token counts for {len(texts)} texts")
        passes = plan_passes(counts, self.max_batch_size, self.max_batch_tokens)
        if len(passes) == 1:
            job = _Job(texts, counts)
            self._put([job], len(texts))
            return job.future
        pieces = [_Job([texts[i] for i in idx], [counts[i] for i in idx]) for idx in passes]
        whole = joined([job.future for job in pieces], passes, len(texts))
        self._put(pieces, len(texts))
        return whole

    def embed(self, texts: Sequence[str], timeout: float | None = None, tokens: Sequence[int] | None = None) -> np.ndarray:
        """:meth:`submit` and wait; raises :class:`TimeoutError` after ``timeout`` seconds."""
        return _wait(self.submit(texts, tokens), timeout)

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn()`` on the worker thread, between batches, and return its result."""
        job = _Call(fn)
        self._put([job], 0)
        return _wait(job.future, timeout)

    def merged(self, key: Hashable, items: Sequence[Any], fn: MergeFn, timeout: float | None = None) -> list[Any]:
        """``fn(items)`` on the worker thread, merged with concurrent calls of an equal ``key``.

        Calls with equal keys must mean the same ``fn``: one call runs ``fn`` over all their
        items (up to ``max_batch_size`` items, gathered as embeddings are), and each gets its own
        results back. When a merged call fails, each is retried on its own, so one request's error
        is not another's. Raises :class:`QueueFull` as :meth:`submit` does.
        """
        job = _Merge(key, list(items), fn)
        self._put([job], len(job.items))
        return _wait(job.future, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish what is queued, then stop the worker. Later submissions raise RuntimeError."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _put(self, jobs: Sequence[_Job | _Call | _Merge], size: int) -> None:
        with self._close_lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if size and self._queued and self._queued + size > self.max_queue:
                raise QueueFull(self._queued, self._retry_after(self._queued + size))
            self._queued += size
            for job in jobs:
                self._queue.put(job)

    def _retry_after(self, texts: int) -> int:
        """Seconds until ``texts`` are likely encoded at the recent rate (1 to 60; 1 before any measurement)."""
        rate = self._texts_per_s
        return 1 if rate <= 0 else min(60, max(1, math.ceil(texts / rate)))

    def _taken(self, size: int) -> None:
        with self._close_lock:
            self._queued -= size

    # ---- worker side ----

    def _run(self) -> None:
        carry: collections.deque[Any] = collections.deque()  # items taken but left for the next round
        pending: list[_Job] = []  # jobs taken from the queue but not yet encoded, oldest first
        stopping = False
        while True:
            if carry:
                item = carry.popleft()
            elif pending:
                item = None
            elif stopping:
                return
            else:
                item = self._queue.get()
            if item is _STOP:
                stopping = True  # everything submitted before close() is in carry or pending: finish it
                continue
            if isinstance(item, _Call):
                self._run_call(item)
                continue
            if isinstance(item, _Merge):
                self._run_merges(self._gather_merges(item, carry))
                continue
            if item is not None:
                pending.append(item)
            if not stopping:
                self._gather_jobs(pending, carry)
            self._run_batch(self._select(pending))

    def _gather_jobs(self, pending: list[_Job], carry: collections.deque[Any]) -> None:
        """Take queued jobs into ``pending``: waiting until one pass is full or the wait is over, then what is queued."""
        # The wait counts from when the oldest request arrived: one queued while the worker was
        # busy has waited already. Under light load (the last batch held one request) nobody
        # waits: a lone client would only pay the delay. And once as many requests are pending as
        # the last pass merged, the clients of that pass are back: the rest is taken if already
        # queued, not waited for.
        expected = self._last_batch_requests
        deadline = pending[0].queued_at + self._wait_s(expected)
        # Queued jobs are taken up to a few passes' worth (not only one), so a pass can be picked
        # among them by length; waiting stops as soon as one pass is full.
        texts = sum(len(job.texts) for job in pending)
        tokens = sum(sum(job.tokens) for job in pending)
        while texts < _LOOKAHEAD * self.max_batch_size:
            full = texts >= self.max_batch_size or tokens >= self.max_batch_tokens
            remaining = deadline - time.monotonic()
            try:
                if not full and remaining > 0 and len(pending) < expected:
                    nxt = self._queue.get(timeout=remaining)
                else:
                    nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(nxt, _Job):
                carry.append(nxt)
                break
            pending.append(nxt)
            texts += len(nxt.texts)
            tokens += sum(nxt.tokens)

    def _wait_s(self, expected: int) -> float:
        """How long the oldest request may wait: nothing under light load, and never longer than a pass takes.

        Waiting longer than the last pass took is never worth it: that pass could have run
        meanwhile. On fast hardware (a GPU, a tiny model) that keeps the wait to milliseconds.
        """
        return 0.0 if expected <= 1 else min(self.max_wait_s, self._last_pass_s)

    def _select(self, pending: list[_Job]) -> list[_Job]:
        """The next pass, removed from ``pending``: the oldest job and those of the most similar length that fit.

        A job fits while the pass keeps to ``max_batch_size`` texts, ``max_batch_tokens`` padded
        tokens and :data:`MAX_PADDING`. Jobs left out stay pending, in their order.
        """
        first = pending[0]
        chosen = [0]
        n, longest, total = len(first.texts), first.longest, sum(first.tokens)
        by_closeness = sorted(range(1, len(pending)), key=lambda i: abs(pending[i].longest - first.longest))
        for i in by_closeness:
            job = pending[i]
            m, L, s = n + len(job.texts), max(longest, job.longest), total + sum(job.tokens)
            if m > self.max_batch_size or m * L > self.max_batch_tokens or m * L > MAX_PADDING * s:
                continue
            chosen.append(i)
            n, longest, total = m, L, s
        taken = set(chosen)
        batch = [pending[i] for i in sorted(chosen)]
        pending[:] = [job for i, job in enumerate(pending) if i not in taken]
        self._taken(n)
        return batch

    def _gather_merges(self, first: _Merge, carry: collections.deque[Any]) -> dict[Hashable, list[_Merge]]:
        """``first`` and the merge jobs queued with it (the same wait rules as embeddings), by key."""
        groups: dict[Hashable, list[_Merge]] = {first.key: [first]}
        size, count = len(first.items), 1
        expected = self._last_merge_requests
        deadline = first.queued_at + self._wait_s(expected)
        while size < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0 and count < expected:
                    nxt = self._queue.get(timeout=remaining)
                else:
                    nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(nxt, _Merge) or size + len(nxt.items) > self.max_batch_size:
                carry.append(nxt)
                break
            groups.setdefault(nxt.key, []).append(nxt)
            size, count = size + len(nxt.items), count + 1
        self._last_merge_requests = sum(len(group) for group in groups.values())
        # counted out of the queue now; one left in carry is counted when a later round gathers it
        self._taken(sum(len(job.items) for group in groups.values() for job in group))
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
        tokens = [t for job in live for t in job.tokens]
        order = sorted(range(len(texts)), key=lambda i: -tokens[i])  # longest first, as sentence-transformers sorts
        self._running = len(texts)
        start_time = time.perf_counter()
        try:
            sorted_out = self._fn([texts[i] for i in order])  # (len(texts), dim), rows in `order`
            out = np.empty_like(sorted_out)
            out[order] = sorted_out
        except Exception as err:
            self._running = 0
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
        self._running = 0
        seconds = time.perf_counter() - start_time
        self._last_pass_s = seconds
        if seconds > 0:
            rate = len(texts) / seconds
            self._texts_per_s = rate if self._texts_per_s <= 0 else 0.8 * self._texts_per_s + 0.2 * rate
        self._last_batch_requests = len(live)
        if self._on_batch is not None:
            self._on_batch(len(texts), len(live))
        start = 0
        for job in live:
            job.future.set_result(out[start : start + len(job.texts)])
            start += len(job.texts)


