"""Load a cross-encoder and score ``(query, document)`` pairs: the one scorer of the package.

``embedforge search --rerank``, :meth:`embedforge.collection.Collection.search` with ``rerank``,
the server's ``/v1/search`` (with ``rerank``) and ``/v1/rerank`` all score through
:func:`pair_scores`, so the same pair gets the same score everywhere.

The score of a pair is the **last column** of sentence-transformers' ``CrossEncoder.predict``:

- one output (``num_labels == 1``, what ``embedforge train-reranker`` writes): the model's own
  activation of its logit — σ(logit) with sentence-transformers' default for one label;
- several outputs (``num_labels > 1``, e.g. a (not relevant, relevant) classification head):
  the last output, i.e. the "relevant" logit (sentence-transformers applies no activation there).

Higher is more relevant in both cases; the scores of different models are not comparable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import InputError

__all__ = ["cap_max_length", "load_cross_encoder", "pair_scores", "rerank_scores"]


def cap_max_length(model_dir: str | os.PathLike[str], max_length: int | None) -> int | None:
    """``max_length`` capped at the model's ``max_position_embeddings`` (read from config.json)."""
    if max_length is None:
        return None
    try:
        limit = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, json.JSONDecodeError):
        return max_length
    return min(max_length, limit) if isinstance(limit, int) else max_length


def load_cross_encoder(path: str | os.PathLike[str], *, max_length: int | None = None) -> Any:
    """A sentence-transformers CrossEncoder from a local directory (CPU), or an InputError."""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as err:  # pragma: no cover - a core dependency
        raise InputError("re-ranking needs sentence-transformers") from err
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise InputError("is not a cross-encoder directory (expected config.json + weights)", p)
    max_length = cap_max_length(p, max_length)
    try:
        return CrossEncoder(str(p), device="cpu", local_files_only=True, max_length=max_length)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"could not load the cross-encoder: {type(err).__name__}: {first}", p) from None


def pair_scores(cross_encoder: Any, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> np.ndarray:
    """Relevance of each ``(first, second)`` pair -> (len(pairs),) float32: the last output column
    of ``cross_encoder.predict`` (see the module docstring for one- and multi-output heads)."""
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    scores = cross_encoder.predict(list(pairs), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(scores, dtype=np.float32).reshape(len(pairs), -1)[:, -1]  # (n, labels) -> (n,)


def rerank_scores(cross_encoder: Any, query: str, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """Relevance of each ``(query, text)`` pair -> (len(texts),) float32 (:func:`pair_scores`)."""
    return pair_scores(cross_encoder, [(query, t) for t in texts], batch_size=batch_size)
