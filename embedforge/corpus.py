"""Read user data: one text per line, tables of texts, labelled pairs / triplets, BEIR folders.

Every reader validates as it goes and raises :class:`~embedforge.errors.InputError` naming the
file, the line and what was expected. Formats are chosen by extension: ``.txt``; ``.jsonl``;
``.csv`` / ``.tsv``; ``.parquet``; a BEIR folder (``corpus.jsonl`` inside).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from embedforge.errors import InputError
from embedforge.io import MAX_TEXT_CHARS, check_text

__all__ = [
    "Document",
    "DocLike",
    "doc_fields",
    "join_title",
    "PairData",
    "read_texts",
    "read_records",
    "iter_records",
    "read_documents",
    "iter_documents",
    "iter_document_rows",
    "corpus_file",
    "read_pairs",
    "PAIR_COLUMNS",
]

TEXT_FIELDS = ("text", "sentence", "content", "body")

# Accepted header spellings for labelled pairs, in order of preference:
# (first text, second text, hard negative or None, score or None)
PAIR_COLUMNS: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("sent0", "sent1", "hard_neg", None),  # SimCSE's own csv format
    ("anchor", "positive", "negative", None),  # sentence-transformers' naming
    ("sentence1", "sentence2", None, "score"),  # STS-style scored pairs
    ("query", "document", "negative", None),
    ("text1", "text2", None, "score"),
)


@dataclass(frozen=True)
class Document:
    """One corpus entry; ``title`` is "" when the source has none."""

    id: str
    text: str
    title: str = ""


DocLike: TypeAlias = Document | Mapping[str, Any]  # what a collection accepts as a document


def join_title(title: str, text: str) -> str:
    """``"Title. text"`` (BEIR's title + text), without doubling the title's own final punctuation."""
    if not title:
        return text
    if not text:
        return title
    return f"{title} {text}" if title.rstrip()[-1:] in ".!?:;" else f"{title}. {text}"


def doc_fields(doc: DocLike) -> tuple[str, str, dict[str, Any]]:
    """(id, text, metadata) of a Document or a mapping with id/_id, text and optional title/metadata.

    A title is joined in front of the text (:func:`join_title`) and kept as ``metadata["title"]``.
    """
    if isinstance(doc, Document):
        meta = {"title": doc.title} if doc.title else {}
        return doc.id, join_title(doc.title, doc.text), meta
    if not isinstance(doc, Mapping):
        raise InputError(f"a document must be a Document or a mapping, got {type(doc).__name__}")
    doc_id = doc.get("id", doc.get("_id"))
    raw_text = doc.get("text")
    if doc_id is None or not isinstance(raw_text, str):
        raise InputError(f"a document needs an 'id' and a 'text' string, got keys {sorted(doc)}")
    text = raw_text
    meta = dict(doc.get("metadata") or {})
    title = doc.get("title")
    if title:
        meta.setdefault("title", title)
        text = join_title(str(title), text)
    return str(doc_id), text, meta


@dataclass(frozen=True)
class PairData:
    """Labelled training pairs: ``sent0[i]`` and ``sent1[i]`` are positives, ``hard_neg[i]`` a negative.

    ``scores`` (STS-style graded pairs) and ``hard_neg`` are mutually exclusive.
    """

    sent0: list[str]
    sent1: list[str]
    hard_neg: list[str] | None = None
    scores: list[float] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.sent0)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a directory, expected a file", path)


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline), strict UTF-8, BOM removed."""
    _check_file(path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    "expected UTF-8 text",
                    path,
                    number,
                ) from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            yield number, line.rstrip("\r\n")


def _check_strings(value: Any, path: Path, line: int) -> None:
    """Every string in a parsed row (keys and nested values) through :func:`~embedforge.io.check_text`."""
    if isinstance(value, str):
        check_text(value, path, line)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, path, line)
            _check_strings(item, path, line)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, path, line)


@contextlib.contextmanager
def _csv_errors(path: Path, fmt: str, line_num: Callable[[], int]) -> Iterator[None]:
    """Turn a csv reader's errors into an :class:`InputError` at ``path:line``.

    The field-size limit is raised to :data:`~embedforge.io.MAX_TEXT_CHARS` (the longest text any
    reader accepts; Python's default is 128 Ki characters); a longer field is reported here.
    """
    if csv.field_size_limit() < MAX_TEXT_CHARS:
        csv.field_size_limit(MAX_TEXT_CHARS)
    try:
        yield
    except csv.Error as err:
        if "field limit" in str(err):
            raise InputError(
                f"a field longer than {MAX_TEXT_CHARS:,} characters, the longest text accepted (an unclosed quote?)",
                path, line_num(),
            ) from None
        raise InputError(f"not a valid {fmt} file ({err})", path, line_num()) from None


def _decoded_text(path: Path) -> str:
    return "\n".join(line for _, line in _decoded_lines(path))


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text"):
        return "txt"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".parquet":
        return "parquet"
    raise InputError(f"unknown file type {suffix or '(none)'!r}; expected .txt, .jsonl, .csv, .tsv or .parquet", path)


def iter_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a jsonl / csv / tsv / parquet file as ``(line, row)``, read lazily; ``line`` is 1-based.

    Memory stays flat whatever the file's size: jsonl and csv are read line by line, parquet one
    record batch at a time. A bad row raises when it is reached; an empty file raises at the end.
    """
    path = Path(path)
    fmt = _format(path)
    count = 0
    if fmt == "jsonl":
        for number, line in _decoded_lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"invalid JSON ({err.msg}); expected one JSON object per line", path, number) from None
            if not isinstance(row, dict):
                raise InputError(f"expected a JSON object, found {type(row).__name__}", path, number)
            _check_strings(row, path, number)
            count += 1
            yield number, row
    elif fmt in ("csv", "tsv"):
        # csv needs the newlines back to read quoted fields that span lines
        reader = csv.DictReader((line + "\n" for _, line in _decoded_lines(path)), delimiter="," if fmt == "csv" else "\t")
        with _csv_errors(path, fmt, lambda: reader.reader.line_num):  # DictReader's own line_num lags on errors
            if not reader.fieldnames:
                raise InputError("empty file; expected a header line with column names", path)
            for row in reader:
                if None in row:
                    raise InputError(
                        f"{len(reader.fieldnames) + len(row[None])} fields, the header has {len(reader.fieldnames)}",  # type: ignore[index]
                        path,
                        reader.line_num,
                    )
                count += 1
                yield reader.line_num, dict(row)
    elif fmt == "parquet":
        _check_file(path)
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise InputError("reading parquet needs pyarrow: pip install 'embedforge[parquet]'", path) from err
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
            for batch in batches:
                for row in batch.to_pylist():
                    count += 1
                    _check_strings(row, path, count)
                    yield count, row
        except InputError:
            raise
        except Exception as err:
            raise InputError(f"not a readable parquet file ({err})", path) from None
    else:
        raise InputError("expected a table (.jsonl, .csv, .tsv or .parquet)", path)
    if not count:
        raise InputError("empty file; expected at least one row", path)


def read_records(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a jsonl / csv / tsv / parquet file as ``(line, row)``; ``line`` is 1-based."""
    return list(iter_records(path))


def _column(path: Path, names: Sequence[str], wanted: Sequence[str]) -> str:
    for name in wanted:
        if name in names:
            return name
    raise InputError(f"no text column: expected one of {', '.join(wanted)} (found: {', '.join(names)})", path)


def _text(path: Path, line: int, row: dict[str, Any], column: str, *, required: bool = True) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        value = ""
    if not isinstance(value, str):
        raise InputError(f"column {column!r} holds {type(value).__name__}, expected text", path, line)
    if required and not value.strip():
        raise InputError(f"empty {column!r}; expected a text", path, line)
    return value


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-empty lines of a ``.txt`` file, lazily. A blank line is an error unless only blank lines follow it."""
    blank = 0  # line number of the first blank line not yet followed by text
    count = 0
    for number, line in _decoded_lines(path):
        if not line.strip():
            blank = blank or number
            continue
        if blank:
            raise InputError("empty line; expected one text per line", path, blank)
        count += 1
        yield number, check_text(line, path, number)
    if not count:
        raise InputError("empty file; expected one text per line", path)


def read_texts(path: str | os.PathLike[str], *, text_field: str | None = None) -> list[str]:
    """Texts from a file: one per line (``.txt``) or one column of a table.

    An empty line in a ``.txt`` file is an error (a blank where a text is expected); trailing
    blank lines at the end of the file are ignored.
    """
    path = Path(path)
    if path.is_dir():
        return [doc.text if not doc.title else f"{doc.title}. {doc.text}" for doc in read_documents(path)]
    if _format(path) == "txt":
        return [line for _, line in _iter_lines(path)]
    rows = iter_records(path)
    first = next(rows)
    column = text_field or _column(path, list(first[1]), TEXT_FIELDS)
    if column not in first[1]:
        raise InputError(f"no column {column!r} (found: {', '.join(first[1])})", path)
    return [_text(path, line, row, column) for line, row in itertools.chain([first], rows)]


def corpus_file(path: str | os.PathLike[str]) -> Path:
    """The file a corpus path names: itself, or ``corpus.jsonl`` inside a BEIR folder."""
    path = Path(path)
    if path.is_dir():
        corpus = path / "corpus.jsonl"
        if not corpus.is_file():
            raise InputError("is a directory without corpus.jsonl; expected a BEIR folder or a file", path)
        return corpus
    return path


def iter_document_rows(
    path: str | os.PathLike[str],
    *,
    text_field: str | None = None,
    title_field: str = "title",
    id_field: str | None = None,
) -> Iterator[tuple[Document, dict[str, Any]]]:
    """``(document, its source row)`` for every entry of a corpus, read lazily (``{}`` rows for ``.txt``).

    Validation is the same as :func:`read_documents`'s and happens row by row, so a bad line is
    reported when it is reached; duplicate ids are caught by keeping the ids seen (not the texts).
    """
    path = corpus_file(path)
    if _format(path) == "txt":
        for i, (_, line) in enumerate(_iter_lines(path)):
            yield Document(id=str(i + 1), text=line), {}
        return
    rows = iter_records(path)
    first = next(rows)
    names = list(first[1])
    column = text_field or _column(path, names, TEXT_FIELDS)
    id_col = id_field or next((c for c in ("_id", "id", "doc_id", "docid") if c in names), None)
    seen: dict[str, int] = {}
    for number, row in itertools.chain([first], rows):
        title = _text(path, number, row, title_field, required=False) if title_field in row else ""
        text = _text(path, number, row, column, required=not title.strip())
        doc_id = str(row[id_col]) if id_col is not None and row.get(id_col) is not None else str(number)
        if doc_id in seen:
            raise InputError(f"duplicate id {doc_id!r} (first on line {seen[doc_id]})", path, number)
        seen[doc_id] = number
        yield Document(id=doc_id, text=text, title=title), row


def iter_documents(
    path: str | os.PathLike[str],
    *,
    text_field: str | None = None,
    title_field: str = "title",
    id_field: str | None = None,
) -> Iterator[Document]:
    """:func:`read_documents`, lazily: one document at a time, for corpora larger than memory."""
    for doc, _ in iter_document_rows(path, text_field=text_field, title_field=title_field, id_field=id_field):
        yield doc


def read_documents(
    path: str | os.PathLike[str],
    *,
    text_field: str | None = None,
    title_field: str = "title",
    id_field: str | None = None,
) -> list[Document]:
    """Documents with ids and optional titles; a BEIR folder or its ``corpus.jsonl`` keeps ``_id``.

    ``.txt`` files get ids ``"1"``, ``"2"``, … (line numbers). Duplicate ids are an error.
    """
    return list(iter_documents(path, text_field=text_field, title_field=title_field, id_field=id_field))


def read_pairs(
    path: str | os.PathLike[str], *, columns: Sequence[str] | None = None, has_header: bool = True
) -> PairData:
    """Labelled pairs or triplets from csv / tsv / jsonl / parquet.

    Recognised headers: ``sent0,sent1[,hard_neg]`` (SimCSE), ``anchor,positive[,negative]``,
    ``sentence1,sentence2[,score]`` (graded, STS-style), ``query,document[,negative]``,
    ``text1,text2[,score]``. ``columns`` names them explicitly; with ``has_header=False`` the
    columns are taken in that order (e.g. STS-B's headerless ``sentence1,sentence2,score``).
    """
    path = Path(path)
    if not has_header:
        if not columns:
            raise InputError("has_header=False needs the column names", path)
        fmt = _format(path)
        if fmt not in ("csv", "tsv"):
            raise InputError("has_header=False applies only to .csv and .tsv files", path)
        text = _decoded_text(path)
        rows = []
        reader = csv.reader(io.StringIO(text), delimiter="," if fmt == "csv" else "\t")
        with _csv_errors(path, fmt, lambda: reader.line_num):
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(columns):
                    raise InputError(
                        f"{len(fields)} fields, expected {len(columns)} ({', '.join(columns)})", path, reader.line_num
                    )
                rows.append((reader.line_num, dict(zip(columns, fields, strict=True))))
        if not rows:
            raise InputError("empty file; expected at least one row", path)
    else:
        rows = read_records(path)
    names = list(rows[0][1].keys())
    spec: tuple[str, str, str | None, str | None] | None = None
    if columns:
        cols = list(columns) + [None] * (4 - len(columns))
        spec = (str(cols[0]), str(cols[1]), None, None)
        if cols[2] is not None:
            spec = (spec[0], spec[1], None, str(cols[2])) if cols[2] == "score" else (spec[0], spec[1], str(cols[2]), None)
    else:
        for candidate in PAIR_COLUMNS:
            if candidate[0] in names and candidate[1] in names:
                spec = candidate
                break
    if spec is None:
        expected = "; ".join(",".join(c for c in cand if c) for cand in PAIR_COLUMNS)
        raise InputError(f"missing pair columns: expected one of [{expected}] (found: {', '.join(names)})", path)
    a, b, neg, score = spec
    for col in (a, b):
        if col not in names:
            raise InputError(f"missing column {col!r} (found: {', '.join(names)})", path)
    has_neg = neg is not None and neg in names
    has_score = score is not None and score in names
    s0, s1, hn, sc = [], [], [], []
    for number, row in rows:
        s0.append(_text(path, number, row, a))
        s1.append(_text(path, number, row, b))
        if has_neg:
            hn.append(_text(path, number, row, neg))  # type: ignore[arg-type]
        if has_score:
            raw = row.get(score)  # type: ignore[arg-type]
            try:
                sc.append(float(raw))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise InputError(f"column {score!r} holds {raw!r}, expected a number", path, number) from None
    return PairData(
        sent0=s0, sent1=s1, hard_neg=hn if has_neg else None, scores=sc if has_score else None, source=str(path)
    )
