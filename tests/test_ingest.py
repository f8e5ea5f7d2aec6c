"""Streaming ingestion: lazy corpus readers, validation before encoding, chunked and resumable indexing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedforge.collection import Collection
from embedforge.corpus import iter_documents, iter_records, read_documents, read_texts
from embedforge.errors import InputError
from embedforge.ingest import index_corpus, index_documents, iter_corpus, read_corpus

TOPICS = ["cats purr and chase mice", "rockets launch into orbit", "bread rises in the oven", "rivers flow to the sea"]


def write_corpus(path: Path, n: int, *, bad_last: str | None = None) -> Path:
    lines = [json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"{TOPICS[i % 4]} (note {i})", "year": 2000 + i}) for i in range(n)]
    if bad_last is not None:
        lines.append(bad_last)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_readers_are_lazy_and_report_the_bad_line_when_reached(tmp_path: Path) -> None:
    file = write_corpus(tmp_path / "c.jsonl", 3, bad_last='{"_id": "x", "text": ')
    docs = iter_documents(file)
    assert next(docs).id == "d0", "the first document comes before the broken last line is read"
    with pytest.raises(InputError, match=r"c\.jsonl:4: invalid JSON"):
        list(docs)
    with pytest.raises(InputError, match=r"c\.jsonl:4: invalid JSON"):
        read_documents(file)


def test_lazy_csv_keeps_multiline_fields_and_line_numbers(tmp_path: Path) -> None:
    file = tmp_path / "c.csv"
    file.write_text('id,text\n1,"first\nspans two lines"\n2,second\n3,"a, b",extra\n', encoding="utf-8")
    rows = iter_records(file)
    assert next(rows) == (3, {"id": "1", "text": "first\nspans two lines"})
    assert next(rows) == (4, {"id": "2", "text": "second"})
    with pytest.raises(InputError, match=r"c\.csv:5: 3 fields, the header has 2"):
        next(rows)


def test_txt_blank_lines_inside_are_errors_at_the_end_are_not(tmp_path: Path) -> None:
    ok = tmp_path / "ok.txt"
    ok.write_text("one\ntwo\n\n\n", encoding="utf-8")
    assert read_texts(ok) == ["one", "two"]
    assert [d.id for d in iter_documents(ok)] == ["1", "2"]
    bad = tmp_path / "bad.txt"
    bad.write_text("one\n\nthree\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.txt:2: empty line"):
        read_texts(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty file"):
        list(iter_documents(empty))


def test_parquet_is_read_in_batches_with_row_numbers(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    file = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(9000)], "text": [f"text {i}" for i in range(9000)]}), file, row_group_size=2000)
    rows = list(iter_records(file))
    assert len(rows) == 9000 and rows[0] == (1, {"id": "p0", "text": "text 0"}) and rows[-1][0] == 9000
    assert [d.id for d in iter_documents(file)][-1] == "p8999"


def test_iter_corpus_limit_and_metadata(tmp_path: Path) -> None:
    file = write_corpus(tmp_path / "c.jsonl", 10)
    docs = list(iter_corpus(file, limit=3))
    assert [d["id"] for d in docs] == ["d0", "d1", "d2"]
    assert docs[1] == {"id": "d1", "title": "T1", "text": "rockets launch into orbit (note 1)", "metadata": {"year": 2001}}
    assert read_corpus(file)[:3] == docs


def _recording(monkeypatch: pytest.MonkeyPatch, fail_on: int | None = None) -> list[int]:
    real = Collection.encode_docs
    calls: list[int] = []

    def record(self, texts, batch_size, show_progress, pool=None):
        calls.append(len(texts))
        if fail_on is not None and len(calls) == fail_on:
            raise KeyboardInterrupt
        return real(self, texts, batch_size, show_progress, pool)

    monkeypatch.setattr(Collection, "encode_docs", record)
    return calls


def test_index_corpus_streams_in_chunks_and_equals_the_in_memory_path(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import embedforge.ingest as ingest

    file = write_corpus(tmp_path / "c.jsonl", 50)
    read: list[int] = []  # documents the current reader has handed out
    real = ingest.iter_corpus

    def counting(path, limit=None):  # type: ignore[no-untyped-def]
        read.append(0)
        for doc in real(path, limit):
            read[-1] += 1
            yield doc

    monkeypatch.setattr(ingest, "iter_corpus", counting)
    calls = _recording(monkeypatch)
    seen_at_encode: list[int] = []
    recorded = Collection.encode_docs

    def spy(self, texts, batch_size, show_progress, pool=None):  # type: ignore[no-untyped-def]
        seen_at_encode.append(read[-1])
        return recorded(self, texts, batch_size, show_progress, pool)

    monkeypatch.setattr(Collection, "encode_docs", spy)
    streamed = index_corpus(tmp_path / "s", str(tiny_model_dir), file, chunk_size=16, show_progress=False)
    assert calls == [16, 16, 16, 2], "never more than one chunk of texts is encoded at once"
    assert seen_at_encode == [16, 32, 48, 50], "each chunk is encoded as soon as it is read, not after the whole file"
    assert len(read) == 3, "three passes over the file: validate, encode, add"
    monkeypatch.undo()
    memory = index_documents(tmp_path / "m", str(tiny_model_dir), read_corpus(file), chunk_size=16, show_progress=False)
    assert streamed._ids == memory._ids
    np.testing.assert_allclose(np.asarray(streamed._vectors), np.asarray(memory._vectors), atol=1e-6)
    again = Collection.open(tmp_path / "s")
    assert again.get("d7").metadata == {"title": "T7", "year": 2007}
    hits = again.search(["bread oven"], top_k=3, mode="bm25")[0]
    assert hits and "bread" in hits[0].text


def test_a_bad_line_anywhere_fails_before_encoding_and_keeps_the_collection(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_corpus(tmp_path / "a.jsonl", 20)
    index_corpus(tmp_path / "s", str(tiny_model_dir), first, show_progress=False)
    before = sorted((tmp_path / "s").rglob("*"))
    calls = _recording(monkeypatch)
    lines = [json.dumps({"_id": f"n{i}", "text": f"new text {i}"}) for i in range(30)] + ['{"_id": "n99", "text": 5}']
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"b\.jsonl:31: column 'text' holds int"):
        index_corpus(tmp_path / "s", str(tiny_model_dir), tmp_path / "b.jsonl", chunk_size=8, show_progress=False)
    dup = [json.dumps({"_id": f"m{i}", "text": f"more {i}"}) for i in range(30)] + [json.dumps({"_id": "d3", "text": "clash"})]
    (tmp_path / "c.jsonl").write_text("\n".join(dup) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="duplicate id 'd3'"):
        index_corpus(tmp_path / "s", str(tiny_model_dir), tmp_path / "c.jsonl", chunk_size=8, show_progress=False)
    assert calls == [], "nothing was encoded"
    assert sorted((tmp_path / "s").rglob("*")) == before and len(Collection.open(tmp_path / "s")) == 20
    with pytest.raises(InputError, match="no documents"):
        index_corpus(tmp_path / "e", str(tiny_model_dir), first, limit=0, show_progress=False)
    assert not (tmp_path / "e").exists()


def test_index_corpus_resumes_after_interruption(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write_corpus(tmp_path / "c.jsonl", 50)
    calls = _recording(monkeypatch, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        index_corpus(tmp_path / "s", str(tiny_model_dir), file, chunk_size=16, show_progress=False)
    assert len(Collection.open(tmp_path / "s")) == 0, "the interrupted run saved no documents"
    calls.clear()
    monkeypatch.undo()
    calls = _recording(monkeypatch)
    coll = index_corpus(tmp_path / "s", str(tiny_model_dir), file, chunk_size=16, show_progress=False)
    assert calls == [16, 2], "only the unfinished chunks are encoded again"
    assert len(coll) == 50 and not (tmp_path / "s" / ".staging").exists()
    # the file edited between an interrupted run and its re-run: the checkpoint no longer matches
    monkeypatch.undo()
    calls = _recording(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        index_corpus(tmp_path / "u", str(tiny_model_dir), file, chunk_size=16, show_progress=False)
    write_corpus(file, 40)
    monkeypatch.undo()
    calls = _recording(monkeypatch)
    edited = index_corpus(tmp_path / "u", str(tiny_model_dir), file, chunk_size=16, show_progress=False)
    assert len(edited) == 40 and calls == [16, 16, 8]


def test_index_documents_takes_a_generator_and_a_file_that_changes_midway_saves_nothing(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = read_corpus(write_corpus(tmp_path / "c.jsonl", 20))
    assert len(index_documents(tmp_path / "g", str(tiny_model_dir), (d for d in docs), chunk_size=8, show_progress=False)) == 20
    assert len(index_documents(tmp_path / "empty", str(tiny_model_dir), [], show_progress=False)) == 0
    import embedforge.ingest as ingest

    real = ingest.iter_corpus

    def editing(after: int, edit):  # type: ignore[no-untyped-def]
        opened: list[int] = []

        def reader(path, limit=None):  # type: ignore[no-untyped-def]
            opened.append(1)
            rows = list(real(path, limit))
            return iter(edit(rows) if len(opened) > after else rows)

        return reader

    shrink = lambda rows: rows[:-5]  # noqa: E731
    retext = lambda rows: rows[:3] + [{**rows[3], "text": "an edited text"}] + rows[4:]  # noqa: E731 - same count, new text
    for after, edit in ((1, shrink), (1, retext), (2, retext)):  # edited before pass 2, or before pass 3
        monkeypatch.setattr(ingest, "iter_corpus", editing(after, edit))
        with pytest.raises(InputError, match="changed while it was being indexed"):
            index_corpus(tmp_path / "x", str(tiny_model_dir), tmp_path / "c.jsonl", chunk_size=8, show_progress=False)
        assert len(Collection.open(tmp_path / "x")) == 0 and not (tmp_path / "x" / ".staging").exists()
