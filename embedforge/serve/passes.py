"""Pure helpers of the micro-batcher: token estimates, splitting a request into passes, joining the parts.

Kept apart from :mod:`embedforge.serve.batcher` (threads and queues) so they can be tested alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError

import numpy as np

__all__ = ["MAX_PADDING", "estimate_tokens", "plan_passes", "joined"]

# A request joins a pass only if the pass's padded tokens (texts x longest) stay within this
# factor of the tokens it really holds: sentences of 8 to 24 words pad by ~1.5x and still share a
# pass, a 256-token text and sentences of 20 do not (their separate passes cost a fraction).
MAX_PADDING = 2.0


def estimate_tokens(text: str) -> int:
    """A tokenizer-free guess (about 4 characters a token, plus the 2 special tokens) for callers without counts."""
    return len(text) // 4 + 2


def plan_passes(tokens: Sequence[int], max_texts: int, max_tokens: int) -> list[list[int]]:
    """Split one request's texts (their token counts) into passes: index lists, each sorted by length.

    Texts are sorted by length and cut greedily, so each pass holds at most ``max_texts`` texts
    and ``max_tokens`` padded tokens (``texts x longest``; a text longer than that goes alone).
    A request that fits one pass is one pass, in its own order.
    """
    n = len(tokens)
    if n <= max_texts and n * max(tokens, default=0) <= max_tokens:
        return [list(range(n))]
    passes: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(n), key=lambda i: tokens[i]):  # ascending: the newest text is the longest
        if current and (len(current) + 1 > max_texts or (len(current) + 1) * tokens[i] > max_tokens):
            passes.append(current)
            current = []
        current.append(i)
    if current:
        passes.append(current)
    return passes


def joined(pieces: list[Future[np.ndarray]], index: list[list[int]], n: int) -> Future[np.ndarray]:
    """One future for a request split into ``pieces``: its rows in the request's order once all are done.

    The first failure fails it; cancelling it (a timeout) cancels the pieces still queued.
    """
    whole: Future[np.ndarray] = Future()
    lock = threading.Lock()
    parts: dict[int, np.ndarray] = {}

    def piece_done(k: int, piece: Future[np.ndarray]) -> None:
        if piece.cancelled():
            return
        err = piece.exception()
        with lock:
            if whole.done():
                return
            if err is not None:
                with contextlib.suppress(InvalidStateError):  # cancelled meanwhile: nobody waits for it
                    whole.set_exception(err)
                return
            parts[k] = piece.result()
            if len(parts) < len(pieces):
                return
            first = parts[0]
            out = np.empty((n, *first.shape[1:]), dtype=first.dtype)  # (n, dim)
            for j, rows in parts.items():
                out[index[j]] = rows
            with contextlib.suppress(InvalidStateError):
                whole.set_result(out)

    def whole_done(future: Future[np.ndarray]) -> None:
        if future.cancelled():
            for piece in pieces:
                piece.cancel()

    for k, piece in enumerate(pieces):
        piece.add_done_callback(lambda f, k=k: piece_done(k, f))  # type: ignore[misc]
    whole.add_done_callback(whole_done)
    return whole


