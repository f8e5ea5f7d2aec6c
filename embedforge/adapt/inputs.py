"""What ``adapt`` reads: the corpus, optional labelled (query, document) pairs, and text helpers.

Labelled pairs come from a table (any header :func:`embedforge.corpus.read_pairs` knows, e.g.
``query,document``) or a BEIR folder (``queries.jsonl`` + ``qrels/train.tsv``, documents looked up
by id in the folder's ``corpus.jsonl`` or in the corpus being adapted to). Labelled *texts* — a
table with ``text`` and ``label`` columns, a few examples per class, the way a user labels data —
are read as :class:`LabelledTexts`: two texts with the same label are relevant to each other.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embedforge.corpus import Document, PairData, join_title, read_documents, read_pairs, read_records
from embedforge.errors import InputError

__all__ = [
    "QueryPairs",
    "LabelledTexts",
    "same_label_pairs",
    "load_corpus",
    "load_query_pairs",
    "doc_text",
    "normalize",
    "sentences",
    "digest",
]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class QueryPairs:
    """Labelled relevance: ``queries[i]`` is answered by ``docs[i]``; ``doc_ids[i]`` is its corpus id or ""."""

    queries: list[str]
    docs: list[str]
    doc_ids: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.queries)


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with class labels; texts that share a label are relevant to each other."""

    texts: list[str]
    labels: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def groups(self) -> dict[str, list[str]]:
        """Label -> its distinct texts, in first-seen order."""
        by_label: dict[str, list[str]] = {}
        for text, label in zip(self.texts, self.labels, strict=True):
            group = by_label.setdefault(label, [])
            if text not in group:
                group.append(text)
        return by_label


MAX_PAIRS_PER_TEXT = 10  # same-label pairs kept per text (a seeded sample), so large classes stay linear


def same_label_pairs(data: LabelledTexts, seed: int) -> QueryPairs:
    """Every pair of distinct texts that share a label, as (query, document) — at most
    ``MAX_PAIRS_PER_TEXT`` per text of a label (a seeded sample); shuffled, seeded."""
    import itertools
    import random

    rng = random.Random(seed)
    by_label = data.groups()
    pairs: list[tuple[str, str]] = []
    for label in sorted(by_label):
        group = by_label[label]
        combos = list(itertools.combinations(group, 2))
        cap = MAX_PAIRS_PER_TEXT * len(group)
        pairs += rng.sample(combos, cap) if len(combos) > cap else combos
    rng.shuffle(pairs)
    return QueryPairs([q for q, _ in pairs], [d for _, d in pairs], [""] * len(pairs), source=data.source)


def _labelled_texts(path: Path) -> LabelledTexts | None:
    """A ``text,label`` table as :class:`LabelledTexts`; None when the table has other columns."""
    if path.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".parquet"):
        return None
    rows = read_records(path)
    if not rows or not {"text", "label"} <= set(rows[0][1]):
        return None
    texts, labels = [], []
    for line, row in rows:
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str) or not text.strip():
            raise InputError("empty or non-text 'text'", path, line)
        if label is None or (isinstance(label, float) and label != label) or not str(label).strip():
            raise InputError("missing 'label'; every labelled text needs its class", path, line)
        texts.append(normalize(text))
        labels.append(str(label).strip())
    return LabelledTexts(texts, labels, source=str(path))


def normalize(text: str) -> str:
    """Whitespace collapsed to single spaces (training files hold one text per line)."""
    return " ".join(text.split())


def doc_text(doc: Document) -> str:
    """``"Title. body"`` as retrieval sees a document (BEIR's convention), whitespace-normalised."""
    return normalize(join_title(doc.title.strip(), doc.text.strip()))


def sentences(text: str) -> list[str]:
    """Split at ``.``/``!``/``?`` followed by a space and an upper-case letter or digit (no model, no abbreviations list)."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(normalize(text))) if s]


def digest(parts: Sequence[str]) -> str:
    """A short, stable fingerprint of a list of strings."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def load_corpus(corpus: str | os.PathLike[str] | Sequence[Document]) -> list[Document]:
    """Documents from a path (any format :func:`read_documents` reads) or a list, empty ones dropped.

    An empty corpus is an :class:`InputError` naming the source.
    """
    if isinstance(corpus, str | os.PathLike):
        path = Path(corpus)
        if not path.exists():
            raise InputError("no such corpus file or folder", path)
        if path.is_file() and path.stat().st_size == 0:
            raise InputError("the corpus is empty; expected one document per line or row", path)
        docs = read_documents(path)
        where: str | None = str(path)
    else:
        docs = list(corpus)
        where = None
    kept = [Document(d.id, normalize(d.text), normalize(d.title)) for d in docs if (d.text + d.title).strip()]
    if not kept:
        raise InputError("the corpus is empty; expected documents with text", where)
    return kept


def _beir_pairs(folder: Path, corpus: Sequence[Document]) -> QueryPairs:
    qrels_file = folder / "qrels" / "train.tsv"
    queries_file = folder / "queries.jsonl"
    if not (qrels_file.is_file() and queries_file.is_file()):
        raise InputError("a BEIR folder given as --pairs needs queries.jsonl and qrels/train.tsv", folder)
    texts = {str(r.get("_id")): normalize(str(r.get("text", ""))) for _, r in read_records(queries_file)}
    by_id = {d.id: doc_text(d) for d in corpus}
    if (folder / "corpus.jsonl").is_file():
        by_id = {d.id: doc_text(d) for d in read_documents(folder)} | by_id
    q, d, ids = [], [], []
    with open(qrels_file, encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                continue  # the header or a blank line
            if int(row[2]) <= 0:
                continue
            if row[0] not in texts:
                raise InputError(f"query id {row[0]!r} is not in queries.jsonl", qrels_file, line)
            if row[1] not in by_id:
                raise InputError(f"document id {row[1]!r} is in neither corpus", qrels_file, line)
            q.append(texts[row[0]])
            d.append(by_id[row[1]])
            ids.append(row[1])
    if not q:
        raise InputError("no positive judgments in qrels/train.tsv", qrels_file)
    return QueryPairs(q, d, ids, source=str(folder))


def load_query_pairs(
    pairs: str | os.PathLike[str] | PairData | QueryPairs | LabelledTexts, corpus: Sequence[Document]
) -> QueryPairs | LabelledTexts:
    """Labelled (query, relevant document) pairs — a document that is in ``corpus`` gets its id —
    or labelled texts (a ``text,label`` table)."""
    if isinstance(pairs, QueryPairs | LabelledTexts):
        return pairs
    if isinstance(pairs, str | os.PathLike):
        path = Path(pairs)
        if not path.exists():
            raise InputError("no such file or folder of labelled pairs", path)
        if path.is_dir():
            return _beir_pairs(path, corpus)
        labelled = _labelled_texts(path)
        if labelled is not None:
            return labelled
        data = read_pairs(path)
        source = str(path)
    else:
        data, source = pairs, pairs.source
    if data.scores is not None:
        raise InputError("adapt takes relevant (query, document) pairs, not graded scores", source or None)
    ids_by_text = {doc_text(d): d.id for d in corpus} | {normalize(d.text): d.id for d in corpus}
    queries = [normalize(s) for s in data.sent0]
    docs = [normalize(s) for s in data.sent1]
    return QueryPairs(queries, docs, [ids_by_text.get(t, "") for t in docs], source=source)
