r"""Held-out evaluation that needs no labels, and the held-out split of labelled pairs.

**The split.** A slice of the corpus is held out and never trained on by any candidate. It is
built from *neighbourhoods*: a random seed document plus its ``neighbourhood`` nearest BM25
neighbours, repeated until the slice is full. A random slice of a topically varied corpus is too
easy (every model finds the right document among unrelated ones, so the candidates tie); with
neighbourhoods every pseudo-query has topically close distractors in the pool.

**The pseudo-queries.** Each held-out document gives one *target* and up to three queries, each
retrieved against all held-out targets (one relevant target per query, nDCG@10):

* ``span``: 4–10 consecutive words (at most a third of the document, at least 3) cut at a random
  position; the target is the document with that span *removed* (otherwise exact string
  overlap decides).
* ``keywords``: 3–5 distinct content words of the target drawn with probability ∝ tf·idf (idf over
  the whole corpus), in random order — a keyword query, a form no candidate trains on.
* ``title``: the title (documents that have one) against the same target, which carries no title.

Why these and how they are used: a pseudo-query built the way a candidate builds its training
pairs rewards that candidate whether or not real relevance improves (issue 6 measured exactly
that: sentence → rest-of-document ranked ICT, which lost on the real queries, first). So every
candidate declares the constructions that share its training format (crops: ``span``; ICT:
``span`` and ``title``, a title being the sentence before the rest of "Title. body"; title↔body:
``title``) and is judged only on the others (:mod:`embedforge.adapt.choose`). The
keyword construction is foreign to every candidate. The bench measures how well this ranking
agrees with SciFact's real judgments (Kendall τ), per construction and combined.

Measured on SciFact (400 held-out documents, bundled MiniLM, base nDCG@10 title / keywords /
span: 95.6 / 68.6 / 45.1; BM25: 96.4 / 98.8 / 58.8): titles sit near the ceiling (small gains
only), keywords test lexical matching of domain terms (BM25 is near-perfect on them by
construction, as it leads dense retrieval on SciFact's real queries), spans are the hardest.

**Labelled pairs.** A fraction of the *queries* is held out; they search a pool of their relevant
documents, BM25's top documents for each of them (hard distractors) and random corpus documents.

**Labelled texts** (``text,label``). A stratified fraction of each label's texts is held out; each
held-out text searches the other held-out texts (itself excluded), and those with its label are
relevant — same-label retrieval, as a user who labelled classes means it. (Turning such texts into
pairs and asking a query to find its one partner counts its other same-label texts as wrong: in
one ``make demo`` run on Banking77 that estimate could not separate the supervised candidate from
the base, +0.2 points with a 95% interval of −0.6 … +1.1.)

Reference: inverse-cloze pseudo-queries, Lee, Chang & Toutanova (ACL 2019); independent crops,
Izacard et al., "Contriever" (TMLR 2022); nDCG, Järvelin & Kekäläinen (TOIS 2002).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embedforge.adapt.config import AdaptConfig
from embedforge.adapt.inputs import LabelledTexts, QueryPairs, doc_text
from embedforge.corpus import Document
from embedforge.errors import InputError
from embedforge.evaluate.metrics import binary_ideal, ndcg_scores, ranked_relevance

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "RetrievalTask",
    "EvalSet",
    "Split",
    "heldout_size",
    "split_corpus",
    "split_pairs",
    "label_free_set",
    "labelled_set",
    "split_labelled_texts",
    "same_label_set",
    "ndcg_from_rows",
    "dense_scores",
    "bm25_scores",
    "evaluate_model",
]

K = 10  # nDCG@10, the metric the real benchmark reports
SPAN_WORDS = (4, 10)  # span query length, inclusive, and at most a third of the document
SPAN_MIN_DOC_WORDS = 9  # a span of 3+ words leaves 6+ for the target (short texts: questions, chat lines)
KEYWORDS = (3, 5)  # keyword query length, inclusive
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]{2,}")


@dataclass(frozen=True)
class RetrievalTask:
    """Queries against an :class:`EvalSet`'s documents; ``relevant[i]`` are the pool rows answering query i."""

    name: str
    queries: list[str]
    relevant: list[tuple[int, ...]]
    exclude: tuple[int, ...] | None = None  # per query, a pool row never ranked (the query itself); -1 none


@dataclass(frozen=True)
class EvalSet:
    """A retrieval pool and the tasks searching it."""

    name: str  # "label-free" or "labelled"
    docs: list[str]
    tasks: tuple[RetrievalTask, ...]


@dataclass(frozen=True)
class Split:
    """Row numbers into the corpus: documents candidates may train on, and the held-out slice."""

    train: list[int]
    heldout: list[int]


# ---------------------------------------------------------------- splits


def heldout_size(n_docs: int, config: AdaptConfig) -> int:
    """Held-out documents for a corpus of ``n_docs``; an InputError when the corpus is too small."""
    need = config.heldout_min + config.train_min
    if n_docs < need:
        raise InputError(
            f"the corpus has {n_docs} document(s); adapt needs at least {need} "
            f"({config.heldout_min} held out for evaluation + {config.train_min} to train on)"
        )
    size = round(config.heldout_fraction * n_docs)
    return int(min(config.heldout_max, max(config.heldout_min, size), n_docs - config.train_min))


def split_corpus(docs: Sequence[Document], config: AdaptConfig, *, protected: set[str] | frozenset[str] = frozenset()) -> Split:
    """Hold out BM25 neighbourhoods (seed + ``config.neighbourhood`` nearest documents) until full.

    ``protected`` ids (documents labelled pairs point to) are never held out, so the supervised
    candidate keeps all its pairs.
    """
    from embedforge.query import BM25Index

    size = heldout_size(len(docs), config)
    eligible = [i for i, d in enumerate(docs) if d.id not in protected]
    if len(eligible) < size:
        raise InputError(
            f"only {len(eligible)} document(s) are not referenced by the labelled pairs; "
            f"the held-out slice needs {size}"
        )
    rng = random.Random(config.seed)
    order = eligible[:]
    rng.shuffle(order)
    allowed = np.zeros(len(docs), dtype=bool)
    allowed[eligible] = True
    texts = [doc_text(d) for d in docs]
    index = BM25Index.build(texts) if config.neighbourhood > 0 else None
    taken: list[int] = []
    chosen = np.zeros(len(docs), dtype=bool)
    for seed_row in order:
        if len(taken) >= size:
            break
        if chosen[seed_row]:
            continue
        group = [seed_row]
        if index is not None:
            query = " ".join(texts[seed_row].split()[:64])
            _, rows = index.search([query], config.neighbourhood + 1, mask=allowed & ~chosen)
            group += [int(r) for r in rows[0] if r >= 0 and r != seed_row][: config.neighbourhood]
        for row in group[: size - len(taken)]:
            chosen[row] = True
            taken.append(row)
    heldout = sorted(taken)
    train = [i for i in range(len(docs)) if not chosen[i]]
    return Split(train=train, heldout=heldout)


def split_pairs(pairs: QueryPairs, config: AdaptConfig) -> tuple[QueryPairs, QueryPairs]:
    """(train, held-out) by query: every pair of a held-out query is held out."""
    unique = sorted(set(pairs.queries))
    need = 2 * config.pairs_heldout_min
    if len(unique) < need:
        raise InputError(
            f"the labelled pairs have {len(unique)} distinct queries; adapt needs at least {need} "
            f"({config.pairs_heldout_min} held out to measure, the rest to train on)",
            pairs.source or None,
        )
    random.Random(config.seed).shuffle(unique)
    n_held = max(config.pairs_heldout_min, round(config.pairs_heldout_fraction * len(unique)))
    held = set(unique[:n_held])

    def pick(keep: bool) -> QueryPairs:
        rows = [i for i, q in enumerate(pairs.queries) if (q in held) == keep]
        return QueryPairs(
            [pairs.queries[i] for i in rows], [pairs.docs[i] for i in rows], [pairs.doc_ids[i] for i in rows],
            source=pairs.source,
        )

    return pick(False), pick(True)


def split_labelled_texts(data: LabelledTexts, config: AdaptConfig) -> tuple[LabelledTexts, LabelledTexts]:
    """(train, held-out), stratified by label: ``pairs_heldout_fraction`` of each label's distinct
    texts (at least 2, so each held-out text has a relevant partner) when the label has 4 or more;
    smaller labels train only. An InputError when fewer than ``pairs_heldout_min`` are held out."""
    rng = random.Random(config.seed)
    by_label = data.groups()
    if len(by_label) < 2:
        raise InputError(f"the labelled texts have {len(by_label)} label(s); adapt needs at least 2", data.source or None)
    train: list[tuple[str, str]] = []
    held: list[tuple[str, str]] = []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n_held = max(2, round(config.pairs_heldout_fraction * len(group))) if len(group) >= 4 else 0
        held += [(t, label) for t in group[:n_held]]
        train += [(t, label) for t in group[n_held:]]
    if len(held) < config.pairs_heldout_min:
        raise InputError(
            f"the labelled texts allow only {len(held)} held-out texts; adapt needs at least {config.pairs_heldout_min} "
            "(labels with 4 or more texts give up a share of them)", data.source or None)

    def pack(rows: list[tuple[str, str]]) -> LabelledTexts:
        return LabelledTexts([t for t, _ in rows], [y for _, y in rows], data.source)

    return pack(train), pack(held)


def same_label_set(heldout: LabelledTexts) -> EvalSet:
    """Each held-out text searches all held-out texts but itself; the same label is relevant."""
    rows_of: dict[str, list[int]] = {}
    for row, label in enumerate(heldout.labels):
        rows_of.setdefault(label, []).append(row)
    relevant = [tuple(r for r in rows_of[label] if r != i) for i, label in enumerate(heldout.labels)]
    task = RetrievalTask("labelled", list(heldout.texts), relevant, exclude=tuple(range(len(heldout))))
    return EvalSet("labelled", list(heldout.texts), (task,))


# ---------------------------------------------------------------- pseudo-queries


def _idf(texts: Sequence[str]) -> dict[str, float]:
    df: Counter[str] = Counter()
    for text in texts:
        df.update({w.lower() for w in _WORD.findall(text)})
    n = len(texts)
    return {w: math.log((n + 1) / (c + 0.5)) for w, c in df.items()}


def _keywords(text: str, idf: dict[str, float], rng: np.random.Generator) -> str | None:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for word in _WORD.findall(text):
        low = word.lower()
        if low in ENGLISH_STOP_WORDS:
            continue
        counts[low] += 1
        spelling.setdefault(low, word)
    if len(counts) < KEYWORDS[0]:
        return None
    words = sorted(counts)
    weight = np.array([counts[w] * max(idf.get(w, 0.0), 1e-3) for w in words])  # tf * idf
    k = min(len(words), int(rng.integers(KEYWORDS[0], KEYWORDS[1] + 1)))
    picked = rng.choice(len(words), size=k, replace=False, p=weight / weight.sum())
    return " ".join(spelling[words[i]] for i in picked)  # random order: no phrase survives


def label_free_set(docs: Sequence[Document], heldout: Sequence[int], *, idf_texts: Sequence[str], seed: int) -> EvalSet:
    """The ``span`` / ``keywords`` / ``title`` tasks over the held-out documents (module docstring)."""
    rng = np.random.default_rng(seed)
    idf = _idf(idf_texts)
    targets: list[str] = []
    spans: list[tuple[str, int]] = []
    keywords: list[tuple[str, int]] = []
    titles: list[tuple[str, int]] = []
    for row, i in enumerate(heldout):
        doc = docs[i]
        words = doc.text.split() or doc.title.split()
        if len(words) >= SPAN_MIN_DOC_WORDS:
            longest = min(SPAN_WORDS[1], len(words) // 3)
            length = int(rng.integers(min(SPAN_WORDS[0], longest), longest + 1))
            start = int(rng.integers(0, len(words) - length + 1))
            spans.append((" ".join(words[start : start + length]), row))
            words = words[:start] + words[start + length :]
        target = " ".join(words)
        targets.append(target)
        kw = _keywords(target, idf, rng)
        if kw is not None:
            keywords.append((kw, row))
        if doc.title and doc.text and len(doc.title.split()) >= 2:
            titles.append((doc.title, row))
    tasks = [
        RetrievalTask(name, [q for q, _ in items], [(r,) for _, r in items])
        for name, items in (("title", titles), ("keywords", keywords), ("span", spans))
        if len(items) >= 2
    ]
    if not tasks:
        raise InputError("no pseudo-queries could be built from the held-out documents (texts too short?)")
    return EvalSet("label-free", targets, tuple(tasks))


def labelled_set(heldout: QueryPairs, corpus_texts: Sequence[str], config: AdaptConfig) -> EvalSet:
    """Held-out labelled queries against their positives + BM25 top-``labelled_bm25_depth`` + random fill."""
    from embedforge.query import BM25Index

    queries = sorted(set(heldout.queries))
    pool: dict[str, int] = {}
    for text in heldout.docs:
        pool.setdefault(text, len(pool))
    if corpus_texts:
        _, rows = BM25Index.build(corpus_texts).search(queries, config.labelled_bm25_depth)
        for depth in range(rows.shape[1]):  # round-robin over queries so the cap cuts evenly
            for row in rows[:, depth]:
                if row >= 0 and len(pool) < config.labelled_pool:
                    pool.setdefault(corpus_texts[row], len(pool))
        fill = list(range(len(corpus_texts)))
        random.Random(config.seed).shuffle(fill)
        for row in fill:
            if len(pool) >= config.labelled_pool:
                break
            pool.setdefault(corpus_texts[row], len(pool))
    relevant: dict[str, set[int]] = {q: set() for q in queries}
    for q, d in zip(heldout.queries, heldout.docs, strict=True):
        relevant[q].add(pool[d])
    task = RetrievalTask("labelled", queries, [tuple(sorted(relevant[q])) for q in queries])
    return EvalSet("labelled", list(pool), (task,))


# ---------------------------------------------------------------- scoring


def ndcg_from_rows(rows: np.ndarray, relevant: Sequence[tuple[int, ...]], k: int = K) -> np.ndarray:
    """nDCG@k per query with binary relevance from ranked pool rows ``(n, >=k)`` (-1 = nothing).

    :func:`embedforge.evaluate.metrics.ndcg_scores` on pool rows: ``relevant[i]`` are the rows
    answering query i (gain 1). Returns float64 ``(n,)``.
    """
    hits, n_relevant = ranked_relevance(rows, relevant, k)  # (n, k), (n,)
    return ndcg_scores(hits, binary_ideal(n_relevant, k), k)


def drop_excluded(rows: np.ndarray, exclude: Sequence[int] | None, k: int) -> np.ndarray:
    """Ranked rows ``(n, >= k)`` without each query's excluded row, cut to ``k`` (-1 padded)."""
    if exclude is None:
        return rows[:, :k]
    out = np.full((rows.shape[0], k), -1, dtype=np.int64)
    for i, (ranked, skip) in enumerate(zip(rows, exclude, strict=True)):
        kept = ranked[ranked != skip][:k]
        out[i, : kept.shape[0]] = kept
    return out


def dense_scores(
    query_emb: np.ndarray, doc_emb: np.ndarray, relevant: Sequence[tuple[int, ...]], k: int = K,
    exclude: Sequence[int] | None = None,
) -> np.ndarray:
    """nDCG@k per query of exact inner-product search of ``query_emb (n, d)`` over ``doc_emb (m, d)``;
    ``exclude[i]`` is a pool row query i never sees (itself, in same-label retrieval)."""
    from embedforge.index import exact_search

    depth = k + (exclude is not None)
    _, rows = exact_search(query_emb, doc_emb, np.arange(doc_emb.shape[0], dtype=np.int64), depth)  # (n, depth)
    return ndcg_from_rows(drop_excluded(rows, exclude, k), relevant, k)


def bm25_scores(eval_set: EvalSet, k: int = K) -> dict[str, np.ndarray]:
    """The same tasks answered by BM25 over the pool (a lexical reference row for the report)."""
    from embedforge.query import BM25Index

    index = BM25Index.build(eval_set.docs)
    return {
        t.name: ndcg_from_rows(drop_excluded(index.search(t.queries, k + (t.exclude is not None))[1], t.exclude, k), t.relevant, k)
        for t in eval_set.tasks
    }


def evaluate_model(
    model: SentenceTransformer, eval_set: EvalSet, *, batch_size: int = 32, max_length: int | None = None
) -> dict[str, np.ndarray]:
    """Per-query nDCG@10 of every task in ``eval_set``: ``{task name: (n_queries,) float64}``."""
    from embedforge.encode import encode

    doc_emb = encode(model, eval_set.docs, batch_size=batch_size, max_length=max_length)
    out: dict[str, np.ndarray] = {}
    for task in eval_set.tasks:
        query_emb = encode(model, task.queries, batch_size=batch_size, max_length=max_length)
        out[task.name] = dense_scores(query_emb, doc_emb, task.relevant, exclude=task.exclude)
    return out
