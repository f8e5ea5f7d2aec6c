"""Texts -> float32 (n, d) embeddings.

A thin wrapper over ``SentenceTransformer.encode`` (which already sorts batches by length and
shows a progress bar): it fixes one return type, validates inputs, handles ``[]`` and lets the
caller override max length and compute precision for one call without changing the model.
:func:`encode_pool` runs the encoding in several worker processes (sentence-transformers' own pool).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embedforge.errors import InputError
from embedforge.models import embedding_dim

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["encode", "encode_pool", "Precision", "CHARS_PER_TOKEN", "char_limit"]

# Texts are cut to max_seq_length * CHARS_PER_TOKEN characters before tokenising: the tokenizer
# truncates only after it has tokenised the whole text, so a 10 MB line took 2.1 GB. Subword
# tokens average 3-5 characters of English (WordPiece, BPE); 32 leaves room for long words, URLs
# and runs of spaces, so a cut never removes text the model would have read, except in texts made
# of extremely long "words" (WordPiece maps a word over 100 characters to one [UNK]).
CHARS_PER_TOKEN = 32

Precision = Literal["float32", "bfloat16", "float16"]
Pool = dict[Literal["input", "output", "processes"], Any]  # sentence-transformers' process pool


@contextlib.contextmanager
def encode_pool(model: SentenceTransformer, processes: int) -> Iterator[Pool | None]:
    """A pool of ``processes`` CPU worker processes for :func:`encode` (``None`` when ``processes <= 1``).

    Each worker gets ``cores // processes`` torch threads (at least one), so the pool does not
    oversubscribe the machine; the pool is stopped on exit. Workers hold a copy of the model as it
    is when the pool starts: per-call ``max_length`` and ``precision`` do not reach them.
    """
    if processes < 1:
        raise InputError(f"processes must be >= 1, got {processes}")
    if processes == 1:
        yield None
        return
    threads = str(max(1, (os.cpu_count() or 1) // processes))
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = threads  # read by torch in each spawned worker
    try:
        pool = model.start_multi_process_pool(["cpu"] * processes)
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    try:
        yield pool
    finally:
        model.stop_multi_process_pool(pool)


@contextlib.contextmanager
def _max_length(model: SentenceTransformer, max_length: int | None) -> Iterator[None]:
    if max_length is None:
        yield
        return
    if max_length < 1:
        raise InputError(f"max_length must be a positive number of tokens, got {max_length}")
    old = model.max_seq_length
    model.max_seq_length = max_length
    try:
        yield
    finally:
        model.max_seq_length = old


def _autocast(model: SentenceTransformer, precision: Precision) -> contextlib.AbstractContextManager[object]:
    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    if dtype is None:
        raise InputError(f"unknown precision {precision!r}; expected float32, bfloat16 or float16")
    return torch.autocast(device_type=model.device.type, dtype=dtype)


def char_limit(model: SentenceTransformer, max_length: int | None = None) -> int | None:
    """Characters of a text kept before tokenising: ``max_length`` (or the model's) x :data:`CHARS_PER_TOKEN`."""
    tokens = max_length if max_length is not None else getattr(model, "max_seq_length", None)
    if not isinstance(tokens, int) or tokens < 1:
        return None  # no known token limit: leave the texts as they are
    return tokens * CHARS_PER_TOKEN


def encode(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    normalize: bool = True,
    max_length: int | None = None,
    precision: Precision = "float32",
    show_progress: bool | None = None,
    prompt: str | None = None,
    pool: Pool | None = None,
) -> np.ndarray:
    """Embed ``texts``; returns a C-contiguous float32 array of shape ``(len(texts), dim)``.

    Args:
        model: a loaded model (:func:`embedforge.models.load_model`).
        texts: strings; ``[]`` gives shape ``(0, dim)``.
        batch_size: texts per forward pass (batches are formed after sorting by length).
        normalize: L2-normalise each row (default), so dot product = cosine similarity.
        max_length: truncate to this many tokens for this call (default: the model's own). Texts
            are first cut to ``max_length * CHARS_PER_TOKEN`` characters, so a huge text costs
            no more memory than a long one.
        precision: compute precision; the output is float32 whatever this is.
        show_progress: progress bar; default: only for more than 1,000 texts.
        prompt: a prefix prepended to every text (e.g. ``"query: "`` for asymmetric models).
        pool: worker processes from :func:`encode_pool` (then ``max_length`` and ``precision``
            must stay at their defaults: the workers' model copies do not see them).
    """
    if isinstance(texts, str):
        raise InputError("encode() takes a list of texts, not a single string; wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text #{i} is {type(text).__name__}, expected str")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    dim = embedding_dim(model)
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    if show_progress is None:
        show_progress = len(texts) > 1000
    limit = char_limit(model, max_length)
    if limit is not None and any(len(t) > limit for t in texts):
        texts = [t[:limit] for t in texts]  # bounded tokenizer memory; see CHARS_PER_TOKEN
    inputs: list[Any] = texts
    if set(getattr(model, "modalities", None) or ["text"]) - {"text"}:
        # a CLIP-style model: sentence-transformers would load a string that looks like an image (a data
        # URI, an image URL, the path of an existing image file) as that image; {"text": ...} keeps it a text
        inputs = [{"text": t} for t in texts]
    if pool is not None:
        if max_length is not None or precision != "float32":
            raise InputError("max_length and precision cannot be changed per call with a process pool")
        out = model.encode(inputs, batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True,
                           normalize_embeddings=normalize, prompt=prompt, pool=pool)
        return np.ascontiguousarray(out, dtype=np.float32)
    with _max_length(model, max_length), _autocast(model, precision):
        out = model.encode(
            inputs,
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=normalize,
            prompt=prompt,
        )
    return np.ascontiguousarray(out, dtype=np.float32)
