r"""The candidates ``adapt`` tries, each a SimCSE-loss run from the same base on different pairs.

All train with :func:`embedforge.train.train`: InfoNCE with in-batch negatives,
ℓᵢ = −log e^{s(qᵢ,pᵢ)/τ} / Σⱼ (e^{s(qᵢ,pⱼ)/τ} + e^{s(qᵢ,nⱼ)/τ}) (the n-term only with hard negatives).
What differs is where the pairs come from, all from the *training* documents only:

* ``simcse`` — a document and itself, two dropout masks (Gao et al. 2021). Unsupervised.
* ``title`` — (title, body) of documents that have titles.
* ``crops`` — two independent random crops of one document, each 10–50 % of its words
  (Izacard et al., "Contriever", TMLR 2022).
* ``ict`` — the inverse cloze task: a random sentence and the rest of its document, the sentence
  removed from the rest 90 % of the time (Lee, Chang & Toutanova, ACL 2019).
* ``tsdae`` — rebuild the document from its vector after deleting 60 % of its words (Wang, Reimers
  & Gurevych 2021; :mod:`embedforge.train.tsdae`), only where the decoder's LM head comes from a
  checkpoint: the base's own, or one given (``--tsdae-decoder``). The bundled MiniLM has none, and
  with a random head TSDAE lost 15 nDCG points on SciFact (issue 6), so there it is skipped, saying why.
* ``supervised`` — the user's (query, document) pairs, each with one hard negative taken from the
  top of BM25 or of the base model, after false-negative filtering (:func:`mine_hard_negatives`).

"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.adapt.inputs import QueryPairs, doc_text, sentences
from embedforge.corpus import Document

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "CandidateSpec",
    "SPECS",
    "Prepared",
    "simcse_texts",
    "title_pairs",
    "crop_pairs",
    "ict_pairs",
    "mine_hard_negatives",
    "supervised_triplets",
    "prepare_candidate",
]

MIN_ROWS = 16  # fewer training rows than this is not worth a run
MAX_WORDS = 400  # documents are cut to this many words in training files (max_length truncates further)
CROP_RATIO = (0.1, 0.5)  # Contriever's crop length, as a fraction of the document's words
CROP_MIN_WORDS = 8
ICT_KEEP = 0.1  # Lee et al.: keep the sentence in its context 10 % of the time
SAMPLE_FROM = 10  # a hard negative is drawn uniformly from the first 10 survivors (not always the hardest)


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate's objective and settings."""

    name: str
    mode: str  # "unsup" (text file) or "sup" (pairs / triplets csv)
    learning_rate: float
    epochs: float  # at most this many passes over its rows; the planner may stop earlier
    weight: float  # relative share of the training budget
    formats: tuple[str, ...]  # label-free tasks built like its training pairs: it is not judged on them
    about: str


SPECS: dict[str, CandidateSpec] = {
    # 1e-5: on SciFact unsup SimCSE gained 0.7 points at 1e-5 and lost 2.2 at 3e-5 (issue 6).
    "simcse": CandidateSpec("simcse", "unsup", 1e-5, 1.0, 1.0, (), "unsupervised SimCSE (dropout)"),
    "title": CandidateSpec("title", "sup", 1e-5, 1.0, 1.0, ("title",), "title <-> body pairs"),
    "crops": CandidateSpec("crops", "sup", 1e-5, 1.0, 1.0, ("span",), "independent random crops"),
    # A title is the sentence-before-the-rest of "Title. body": title -> body is ICT's format too.
    "ict": CandidateSpec("ict", "sup", 1e-5, 1.0, 1.0, ("span", "title"), "sentence <-> rest of document (ICT)"),
    # The paper's lr; its input (40 % of the words, in order) is what a keyword query looks like.
    "tsdae": CandidateSpec("tsdae", "tsdae", 3e-5, 1.0, 1.0, ("keywords",), "TSDAE (denoising auto-encoder)"),
    # Real labels are the signal that measurably helps (+2.8 nDCG@10 on SciFact): twice the share, 2 epochs.
    "supervised": CandidateSpec(
        "supervised", "sup", 2e-5, 2.0, 2.0, (), "your labelled pairs + mined hard negatives"
    ),
}


@dataclass(frozen=True)
class Prepared:
    """A candidate's training file, or why it was skipped (``path`` None)."""

    name: str
    path: Path | None
    rows: int
    note: str
    stats: dict[str, Any] = field(default_factory=dict)


def _cut(text: str) -> str:
    words = text.split()
    return " ".join(words[:MAX_WORDS])


def simcse_texts(docs: Sequence[Document]) -> list[str]:
    """One training text per document: ``"Title. body"``, cut to :data:`MAX_WORDS` words."""
    return [_cut(doc_text(d)) for d in docs if doc_text(d)]


def title_pairs(docs: Sequence[Document]) -> list[tuple[str, str]]:
    """(title, body) for documents with a title of 2+ words and a body of 8+ words."""
    return [(d.title, _cut(d.text)) for d in docs if len(d.title.split()) >= 2 and len(d.text.split()) >= 8]


def _crop(words: list[str], rng: random.Random) -> str:
    length = max(CROP_MIN_WORDS, round(rng.uniform(*CROP_RATIO) * len(words)))
    start = rng.randint(0, len(words) - length)
    return " ".join(words[start : start + length][:MAX_WORDS])


def crop_pairs(docs: Sequence[Document], seed: int) -> list[tuple[str, str]]:
    """Two independent random crops per document of 2 x :data:`CROP_MIN_WORDS`+ words."""
    rng = random.Random(seed)
    out = []
    for d in docs:
        words = doc_text(d).split()
        if len(words) >= 2 * CROP_MIN_WORDS:
            out.append((_crop(words, rng), _crop(words, rng)))
    return out


def ict_pairs(docs: Sequence[Document], seed: int) -> list[tuple[str, str]]:
    """(sentence, rest of the document) for documents of 3+ sentences; sentences of 5+ words."""
    rng = random.Random(seed)
    out = []
    for d in docs:
        sents = sentences(d.text)
        usable = [i for i, s in enumerate(sents) if len(s.split()) >= 5]
        if len(sents) < 3 or not usable:
            continue
        i = rng.choice(usable)
        rest = sents if rng.random() < ICT_KEEP else sents[:i] + sents[i + 1 :]
        context = " ".join(rest)
        out.append((sents[i], _cut(f"{d.title}. {context}" if d.title else context)))
    return out


def mine_hard_negatives(
    query_emb: np.ndarray,
    positive_emb: np.ndarray,
    pool_emb: np.ndarray,
    bm25_rows: np.ndarray,
    exclude: Sequence[set[int]],
    *,
    depth: int = 30,
    margin: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One hard negative per (query, positive) from BM25's and the base model's top ``depth``.

    Candidates from the two sources are interleaved (BM25 1st, dense 1st, BM25 2nd, …). A
    candidate is dropped when it is a labelled positive of that query (``exclude[i]``, pool rows)
    or when the base model finds it nearly as similar as the positive,
    s(q, n) ≥ s(q, p) − (1 − margin)·|s(q, p)| (i.e. ≥ 95 % of s(q, p) for margin 0.95): such
    documents are often unlabelled positives (Moreira et al., "NV-Retriever", 2024, "TopK-PercPos").
    The negative is drawn uniformly from the first :data:`SAMPLE_FROM` survivors.

    Args:
        query_emb (n, d), positive_emb (n, d), pool_emb (m, d): L2-normalised embeddings.
        bm25_rows: (n, >=depth) int pool rows from BM25, -1 padded.
        exclude: per query, pool rows that must not be negatives.
    Returns:
        (rows (n,) int64, -1 where nothing survived; source (n,) int8: 0 none, 1 BM25, 2 base model).
    """
    from embedforge.index import exact_search

    n = query_emb.shape[0]
    rng = np.random.default_rng(seed)
    pos_sim = np.einsum("nd,nd->n", query_emb, positive_emb)  # (n,)
    _, dense_rows = exact_search(query_emb, pool_emb, np.arange(pool_emb.shape[0], dtype=np.int64), depth)
    rows = np.full(n, -1, dtype=np.int64)
    source = np.zeros(n, dtype=np.int8)
    for i in range(n):
        limit = pos_sim[i] - (1.0 - margin) * abs(pos_sim[i])
        seen: set[int] = set()
        survivors: list[tuple[int, int]] = []
        for j in range(depth):
            for src, ranked in ((1, bm25_rows[i]), (2, dense_rows[i])):
                row = int(ranked[j]) if j < ranked.shape[0] else -1
                if row < 0 or row in seen:
                    continue
                seen.add(row)
                if row in exclude[i] or float(query_emb[i] @ pool_emb[row]) >= limit:
                    continue
                survivors.append((row, src))
        if survivors:
            row, src = survivors[int(rng.integers(0, min(SAMPLE_FROM, len(survivors))))]
            rows[i], source[i] = row, src
    return rows, source


def supervised_triplets(
    model: SentenceTransformer, pairs: QueryPairs, pool_texts: Sequence[str], *,
    depth: int, margin: float, max_length: int, batch_size: int, seed: int,
) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """(query, positive, hard negative) rows mined from ``pool_texts`` with ``model``; and counts per source."""
    from embedforge.encode import encode
    from embedforge.query import BM25Index

    pool_texts = list(pool_texts)
    row_of = {t: i for i, t in enumerate(pool_texts)}
    positives: dict[str, set[int]] = {}
    for q, d in zip(pairs.queries, pairs.docs, strict=True):
        if d in row_of:
            positives.setdefault(q, set()).add(row_of[d])
    pool_emb = encode(model, pool_texts, batch_size=batch_size, max_length=max_length, show_progress=len(pool_texts) > 1000)
    outside = sorted({d for d in pairs.docs if d not in row_of})
    outside_emb = encode(model, outside, batch_size=batch_size, max_length=max_length)
    outside_row = {t: i for i, t in enumerate(outside)}
    positive_emb = np.stack([pool_emb[row_of[d]] if d in row_of else outside_emb[outside_row[d]] for d in pairs.docs])
    query_emb = encode(model, pairs.queries, batch_size=batch_size, max_length=max_length)
    _, bm25_rows = BM25Index.build(pool_texts).search(pairs.queries, depth)
    exclude = [positives.get(q, set()) for q in pairs.queries]
    rows, source = mine_hard_negatives(query_emb, positive_emb, pool_emb, bm25_rows, exclude, depth=depth, margin=margin, seed=seed)
    rng = random.Random(seed)
    out = []
    for i, (q, d) in enumerate(zip(pairs.queries, pairs.docs, strict=True)):
        if rows[i] >= 0:
            neg = pool_texts[rows[i]]
        else:  # nothing survived the filter: a random document that is not a positive
            choices = [r for r in rng.sample(range(len(pool_texts)), min(20, len(pool_texts))) if r not in exclude[i]]
            neg = pool_texts[choices[0]] if choices else pool_texts[rng.randrange(len(pool_texts))]
        out.append((q, _cut(d), _cut(neg)))
    counts = {"bm25": int((source == 1).sum()), "base_model": int((source == 2).sum()), "random": int((source == 0).sum())}
    return out, counts


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from embedforge.io import atomic_write

    with atomic_write(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def prepare_candidate(
    name: str, train_docs: Sequence[Document], folder: Path, *, seed: int,
    pairs: QueryPairs | None = None, model: SentenceTransformer | None = None, mining: dict[str, Any] | None = None,
    decoder: str | None = None,
) -> Prepared:
    """Write candidate ``name``'s training file under ``folder`` (or say why it does not apply)."""
    from embedforge.io import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {}
    if name in ("simcse", "tsdae"):
        note = ""
        if name == "tsdae":
            from embedforge.train.tsdae import decoder_source

            hf = model.transformers_model if model is not None else None
            encoder = hf.config._name_or_path if hf is not None else None
            source, note = decoder_source(encoder, decoder) if encoder else (None, "no base model")
            if source is None:
                return Prepared(name, None, 0, note)
        texts = simcse_texts(train_docs)
        if len(texts) < MIN_ROWS:
            return Prepared(name, None, len(texts), f"only {len(texts)} texts (needs {MIN_ROWS})")
        path = folder / f"{name}.txt"
        with atomic_write(path) as f:
            f.write("\n".join(texts) + "\n")
        return Prepared(name, path, len(texts), f"{len(texts):,} documents" + (f"; {note}" if note else ""))
    if name == "supervised":
        if pairs is None or model is None:
            return Prepared(name, None, 0, "no labelled pairs given (--pairs)")
        pool = [doc_text(d) for d in train_docs]
        triplets, stats = supervised_triplets(model, pairs, pool, seed=seed, **(mining or {}))
        rows: list[tuple[str, ...]] = list(triplets)
        header: tuple[str, ...] = ("sent0", "sent1", "hard_neg")
        note = f"{len(rows):,} labelled pairs, hard negatives: {stats['bm25']} BM25, {stats['base_model']} base model, {stats['random']} random"
    else:
        made = {"title": lambda: title_pairs(train_docs), "crops": lambda: crop_pairs(train_docs, seed),
                "ict": lambda: ict_pairs(train_docs, seed)}[name]()
        rows, header = list(made), ("sent0", "sent1")
        what = {"title": "documents with a title", "crops": "documents of 16+ words", "ict": "documents of 3+ sentences"}[name]
        if len(rows) < MIN_ROWS:
            return Prepared(name, None, len(rows), f"only {len(rows)} {what} (needs {MIN_ROWS})")
        note = f"{len(rows):,} pairs from {what}"
    path = folder / f"{name}.csv"
    _write_csv(path, header, rows)
    return Prepared(name, path, len(rows), note, stats)
