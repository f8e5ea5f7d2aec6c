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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import InputError
from embedforge.fusion import fusion_weights, score_fuse
from embedforge.rerank.feedback import parse_feedback

__all__ = [
    "DEFAULT_RERANK_DEPTH",
    "MANIFEST_NAME",
    "BiEncoderReranker",
    "StoredVectorsReranker",
    "cap_max_length",
    "is_embedding_model_dir",
    "load_bi_encoder_reranker",
    "load_cross_encoder",
    "reranker_method",
    "not_recommended_reason",
    "pair_scores",
    "rerank_candidates",
    "fusion_weights",
    "rerank_scores",
]

MANIFEST_NAME = "embedforge_reranker.json"  # what ``embedforge train-reranker`` writes beside the weights
DEFAULT_RERANK_DEPTH = 30  # first-stage candidates re-scored per query (CPU time grows linearly with it)
PROGRESS_MIN_PAIRS = 2000  # re-scoring at least this many pairs shows a progress bar (on a terminal)
PROGRESS_CHUNK = 512  # pairs per predict call while a progress bar is shown
FINGERPRINT_TEXTS = ("embedforge re-rank fingerprint", "A cat sat on the mat; the sun was warm.")  # see BiEncoderReranker.fingerprint


def cap_max_length(model_dir: str | os.PathLike[str], max_length: int | None) -> int | None:
    """``max_length`` capped at the model's ``max_position_embeddings`` (read from config.json)."""
    if max_length is None:
        return None
    try:
        limit = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, json.JSONDecodeError):
        return max_length
    return min(max_length, limit) if isinstance(limit, int) else max_length


def is_embedding_model_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a sentence-transformers embedding model (its modules.json has a pooling
    module), not a cross-encoder: loaded as a CrossEncoder it would get a random head."""
    try:
        modules = json.loads((Path(path) / "modules.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(modules, list) and any(str(m.get("type", "")).endswith("Pooling") for m in modules if isinstance(m, dict))


class BiEncoderReranker:
    """An embedding model as the second stage (the issue's option c): the cosine of the query's and
    the document's vectors, with the model's own ``query`` / ``document`` prompts (e5's ``query: ``,
    ``passage: ``) when it defines them. Measured (bench/rerank_scifact.py): multilingual-e5-small
    re-scoring the hybrid top N helps off-domain (msmarco-5k +0.019, dbpedia-5k +0.062 nDCG@10) and
    not on SciFact. It has the ``predict`` of a CrossEncoder, so every caller of :func:`pair_scores`
    (search, /v1/search, /v1/rerank) takes it unchanged. Cost: here the candidates are encoded at
    query time, measured at 2.55 s per query for e5-small and 8.79 s for all-mpnet-base-v2 at depth 30
    on SciFact abstracts, 2 CPU cores (bench/rerank_bi_cost.py). A collection can store its documents'
    vectors for this model at index time (:meth:`embedforge.collection.Collection.store_rerank_vectors`,
    ``embedforge index --rerank-vectors``); searching it then costs one query encoding
    (:class:`StoredVectorsReranker`).
    """

    method = "bi-encoder-reranker"  # what /v1/rerank reports

    def __init__(self, model: Any, max_length: int | None = None) -> None:
        self.model = model
        self.max_length = max_length
        prompts = getattr(model, "prompts", None) or {}
        self.query_prompt = prompts.get("query")
        self.document_prompt = prompts.get("document", prompts.get("passage"))
        self._fingerprint: np.ndarray | None = None

    @property
    def document_max_length(self) -> int:
        """Tokens a document is cut to: ``max_length``, else the model's own ``max_seq_length``."""
        return int(self.max_length or getattr(self.model, "max_seq_length", 0) or 0)

    def encode_queries(self, queries: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit query vectors (n, dim) float32, with the model's query prompt."""
        from embedforge.encode import encode

        return encode(self.model, list(queries), batch_size=batch_size, prompt=self.query_prompt, show_progress=False)

    def encode_documents(self, docs: Sequence[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """Unit document vectors (n, dim) float32, with the model's document prompt, cut to ``max_length``."""
        from embedforge.encode import encode

        return encode(self.model, list(docs), batch_size=batch_size, prompt=self.document_prompt,
                      show_progress=show_progress, max_length=self.max_length)

    def fingerprint(self) -> np.ndarray:
        """Document vectors of :data:`FINGERPRINT_TEXTS` (2, dim): tells stored vectors of this model from another's."""
        if self._fingerprint is None:
            self._fingerprint = self.encode_documents(FINGERPRINT_TEXTS)
        return self._fingerprint

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, **_: Any) -> np.ndarray:
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        qv = self.encode_queries(queries, batch_size)
        dv = self.encode_documents(docs, batch_size)
        qi = {q: i for i, q in enumerate(queries)}
        di = {d: i for i, d in enumerate(docs)}
        rows_q = np.fromiter((qi[q] for q, _ in pairs), dtype=np.int64, count=len(pairs))
        rows_d = np.fromiter((di[d] for _, d in pairs), dtype=np.int64, count=len(pairs))
        return np.einsum("ij,ij->i", qv[rows_q], dv[rows_d]).astype(np.float32)  # (n,) cosines: unit vectors


class StoredVectorsReranker:
    """A :class:`BiEncoderReranker` over documents whose vectors a collection stored at index time.

    ``lookup(rows)`` gives ``(vectors (n, dim), found (n,) bool)`` for collection rows; only the
    queries are encoded, and any row not stored (added since, without topping the vectors up) is
    encoded here as :class:`BiEncoderReranker` would. The scores are the same as the wrapped
    re-ranker's (checked in tests/test_rerank_stored.py); the cost falls from encoding the
    candidates to encoding the query (bench/rerank_bi_cost.py). :func:`rerank_candidates` calls
    :meth:`score_rows`; ``predict`` (texts, no rows) is the wrapped re-ranker's.
    """

    method = BiEncoderReranker.method

    def __init__(self, reranker: BiEncoderReranker, lookup: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        self.reranker = reranker
        self.lookup = lookup

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, **kwargs: Any) -> np.ndarray:
        return self.reranker.predict(pairs, batch_size=batch_size, **kwargs)

    def score_rows(self, queries: Sequence[str], rows: np.ndarray, text: Callable[[int], str], *, batch_size: int = 32) -> np.ndarray:
        """Cosine of ``queries[i]`` with collection row ``rows[i]`` -> (n,) float32."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros(0, dtype=np.float32)
        unique = list(dict.fromkeys(queries))
        qi = {q: i for i, q in enumerate(unique)}
        qv = self.reranker.encode_queries(unique, batch_size)[np.fromiter((qi[q] for q in queries), dtype=np.int64, count=len(queries))]
        dv, found = self.lookup(rows)
        dv = np.array(dv, dtype=np.float32)
        if not found.all():
            missing = np.unique(rows[~found])
            fresh = self.reranker.encode_documents([text(int(r)) for r in missing], batch_size)
            at = np.searchsorted(missing, rows[~found])
            dv[~found] = fresh[at]
        return np.einsum("ij,ij->i", qv, dv).astype(np.float32)


def reranker_method(reranker: Any) -> str:
    """``cross-encoder`` or ``bi-encoder-reranker``: which kind of second stage ``reranker`` is."""
    return str(getattr(reranker, "method", "cross-encoder"))


def load_cross_encoder(path: str | os.PathLike[str], *, max_length: int | None = None, device: str = "cpu") -> Any:
    """The second stage in a local directory (on ``device``, CPU unless told), or an InputError: a
    sentence-transformers CrossEncoder, or — for an embedding model's directory — a :class:`BiEncoderReranker` on it.
    The name ``prf`` (or ``prf:K,BETA``) is Rocchio feedback with the collection's own vectors
    (:class:`embedforge.rerank.feedback.RocchioFeedback`: no model, so ``max_length`` does not apply)."""
    feedback = parse_feedback(str(path))
    if feedback is not None:
        return feedback
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as err:  # pragma: no cover - a core dependency
        raise InputError("re-ranking needs sentence-transformers") from err
    from embedforge.models import BUNDLED_MODELS, load_model, resolve_model

    p = Path(path)
    if str(path) in BUNDLED_MODELS and not p.exists():  # a bundled embedding model by name, e.g. multilingual-e5-small
        p = Path(resolve_model(str(path)))
    if not p.is_dir() or not (p / "config.json").is_file():
        raise InputError("is neither a cross-encoder nor an embedding model directory (expected config.json + weights), "
                         f"nor a bundled model name ({', '.join(sorted(BUNDLED_MODELS))})", p)
    if is_embedding_model_dir(p):
        model = load_model(p, device=device)
        own = int(getattr(model, "max_seq_length", 0) or 0)  # what the model supports: longer would overrun its positions
        return BiEncoderReranker(model, max_length=min(max_length, own) if max_length is not None and own else max_length)
    max_length = cap_max_length(p, max_length)
    try:
        return CrossEncoder(str(p), device=device, local_files_only=True, max_length=max_length)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"could not load the cross-encoder: {type(err).__name__}: {first}", p) from None


def load_bi_encoder_reranker(path: str | os.PathLike[str], *, max_length: int | None = None) -> BiEncoderReranker:
    """An embedding model as a re-ranker whose document vectors can be stored at index time
    (``index --rerank-vectors``), or an InputError: a cross-encoder reads the query and the
    document together, so nothing of it can be computed before the query comes."""
    reranker = load_cross_encoder(path, max_length=max_length)
    if getattr(reranker, "needs_collection", False):
        raise InputError("is Rocchio feedback (prf): it uses the collection's own vectors, which are stored already; "
                         "nothing to store for it", path)
    if not isinstance(reranker, BiEncoderReranker):
        raise InputError(
            "is a cross-encoder: it reads the query and the document together, so nothing can be computed at "
            "index time (only an embedding model's document vectors can be stored)", path,
        )
    return reranker


def not_recommended_reason(path: str | os.PathLike[str]) -> str | None:
    """Why the re-ranker at ``path`` should not be used, or None.

    ``embedforge train-reranker`` saves ``"recommended": false`` in the manifest when the model
    did not beat the first stage on its held-out queries (:mod:`embedforge.rerank.check`); a
    directory without a manifest (a CrossEncoder from elsewhere) or with ``true`` gives None.
    """
    file = Path(path) / MANIFEST_NAME
    if not file.is_file():
        return None
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return f"its manifest {MANIFEST_NAME} is unreadable"
    if not isinstance(info, dict) or info.get("recommended", True) is not False:
        return None
    reason = info.get("recommended_reason") or "it did not beat the first stage on its held-out queries"
    return str(reason)


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


def _scores_with_progress(cross_encoder: Any, pairs: list[tuple[str, str]], batch_size: int) -> np.ndarray:
    """:func:`pair_scores` of many pairs in chunks, with a tqdm bar (hidden when stderr is not a terminal)."""
    if len(pairs) < PROGRESS_MIN_PAIRS:
        return pair_scores(cross_encoder, pairs, batch_size=batch_size)
    from tqdm.auto import tqdm

    out = np.empty(len(pairs), dtype=np.float32)
    with tqdm(total=len(pairs), unit="pair", desc="re-ranking", disable=None) as bar:
        for start in range(0, len(pairs), PROGRESS_CHUNK):
            chunk = pairs[start : start + PROGRESS_CHUNK]
            out[start : start + len(chunk)] = pair_scores(cross_encoder, chunk, batch_size=batch_size)
            bar.update(len(chunk))
    return out


def rerank_candidates(
    cross_encoder: Any,
    queries: Sequence[str],
    candidates: Sequence[Sequence[tuple[int, float]]],
    text: Callable[[int], str],
    depth: int,
    *,
    batch_size: int = 32,
    weights: Sequence[float] | None = None,
) -> list[list[tuple[int, float]]]:
    """Re-score exactly the top ``depth`` first-stage candidates of every query; the rest stay below.

    ``candidates[i]`` is query i's first-stage list of (row, score), best first; ``text(row)`` its
    document text. The pairs of all queries are scored together (one batched pass, a progress bar
    for many), so the cost is ``sum(min(depth, len(c)))`` pairs, whatever the caller's top-k. Per
    query the result is the re-scored candidates by descending second-stage score, then the
    candidates below ``depth`` in their first-stage order, their scores shifted to stay below the
    last re-scored one (scores fall with rank, as run files and trec_eval expect).

    ``cross_encoder`` is one scorer (anything with CrossEncoder's ``predict``) or a list of them.
    Without ``weights`` (one scorer only) its score replaces the first stage's. With ``weights``
    (first stage, then one per scorer; non-negative, not all 0) the new score is their min-max
    score fusion over the re-scored candidates (:func:`embedforge.fusion.score_fuse`):
    ``w0·first' + Σ wi·scorer_i'``. Fusion is what made a second stage help in
    ``bench/rerank_scifact.py``; a cross-encoder's score alone lowered nDCG@10 there.
    """
    if depth < 0:
        raise InputError(f"the re-rank depth must be >= 0, got {depth}")
    scorers = list(cross_encoder) if isinstance(cross_encoder, list | tuple) else [cross_encoder]
    if not scorers:
        raise InputError("no re-ranker given")
    weights = fusion_weights(weights, len(scorers))
    pair_queries = [q for q, cands in zip(queries, candidates, strict=True) for _ in cands[:depth]]
    pair_rows = np.array([r for cands in candidates for r, _ in cands[:depth]], dtype=np.int64)
    pairs = [(q, text(int(r))) for q, r in zip(pair_queries, pair_rows, strict=True)] if not all(hasattr(s, "score_rows") for s in scorers) else []
    scores = [  # each (n_pairs,); a scorer over stored document vectors looks them up by row
        s.score_rows(pair_queries, pair_rows, text, batch_size=batch_size) if hasattr(s, "score_rows") else _scores_with_progress(s, pairs, batch_size)
        for s in scorers
    ]
    out: list[list[tuple[int, float]]] = []
    at = 0
    for cands in candidates:
        top, rest = list(cands[:depth]), list(cands[depth:])
        if weights is None:
            second = scores[0][at : at + len(top)]
        else:
            runs = [{j: s for j, (_, s) in enumerate(top)}] + [dict(enumerate(x[at : at + len(top)].tolist())) for x in scores]
            fused = score_fuse(runs, weights)
            second = np.array([fused[j] for j in range(len(top))], dtype=np.float64)
        at += len(top)
        order = np.argsort(-second, kind="stable")
        ranked = [(top[j][0], float(second[j])) for j in order]
        if ranked and rest:
            shift = rest[0][1] - ranked[-1][1] + 1.0  # the first hit below the depth scores 1 under the last re-scored
            rest = [(r, s - shift) for r, s in rest]
        out.append(ranked + rest)
    return out
