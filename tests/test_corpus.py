from __future__ import annotations

import json

import pytest

from embedforge.corpus import read_documents, read_pairs, read_texts
from embedforge.errors import InputError


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_txt_one_text_per_line_trailing_blank_lines_ignored(tmp_path):
    f = write(tmp_path / "a.txt", "\ufefffirst\nsecond\r\nthird\n\n")
    assert read_texts(f) == ["first", "second", "third"]


def test_txt_empty_line_names_the_line(tmp_path):
    f = write(tmp_path / "a.txt", "first\n\nthird\n")
    with pytest.raises(InputError, match=r"a\.txt:2: empty line"):
        read_texts(f)


def test_undecodable_bytes_name_line_and_byte(tmp_path):
    f = write(tmp_path / "a.txt", b"ok\nbad \xff here\n")
    with pytest.raises(InputError, match=r"a\.txt:2: not valid UTF-8 \(byte 0xff at column 5\)"):
        read_texts(f)


@pytest.mark.parametrize("name", ["missing.txt", "dir"])
def test_missing_file_or_directory(tmp_path, name):
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError):
        read_texts(tmp_path / name)


def test_empty_file(tmp_path):
    with pytest.raises(InputError, match="empty file"):
        read_texts(write(tmp_path / "a.txt", ""))


def test_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="unknown file type"):
        read_texts(write(tmp_path / "a.docx", "x"))


def test_jsonl_csv_tsv_parquet_text_columns(tmp_path):
    rows = [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}]
    j = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    c = write(tmp_path / "a.csv", 'id,text\na,alpha\nb,"beta"\n')
    t = write(tmp_path / "a.tsv", "id\ttext\na\talpha\nb\tbeta\n")
    assert read_texts(j) == read_texts(c) == read_texts(t) == ["alpha", "beta"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    assert read_texts(tmp_path / "a.parquet") == ["alpha", "beta"]


def test_jsonl_errors_name_the_line(tmp_path):
    with pytest.raises(InputError, match=r"a\.jsonl:2: invalid JSON"):
        read_texts(write(tmp_path / "a.jsonl", '{"text": "x"}\n{"text": \n'))
    with pytest.raises(InputError, match=r"b\.jsonl:1: expected a JSON object"):
        read_texts(write(tmp_path / "b.jsonl", '["x"]\n'))
    with pytest.raises(InputError, match=r"c\.jsonl:2: column 'text' holds int"):
        read_texts(write(tmp_path / "c.jsonl", '{"text": "x"}\n{"text": 5}\n'))


def test_missing_text_column_lists_what_was_found(tmp_path):
    with pytest.raises(InputError, match=r"no text column: expected one of text.*\(found: id, words\)"):
        read_texts(write(tmp_path / "a.csv", "id,words\n1,x\n"))


def test_csv_row_with_too_many_fields(tmp_path):
    with pytest.raises(InputError, match=r"a\.csv:3: 3 fields, the header has 2"):
        read_texts(write(tmp_path / "a.csv", "id,text\n1,x\n2,y,z\n"))


def test_documents_beir_folder_keeps_ids_and_titles(tmp_path):
    (tmp_path / "beir").mkdir()
    write(tmp_path / "beir" / "corpus.jsonl",
          '{"_id": "d1", "title": "T1", "text": "body one"}\n{"_id": "d2", "title": "", "text": "body two"}\n')
    docs = read_documents(tmp_path / "beir")
    assert [(d.id, d.title, d.text) for d in docs] == [("d1", "T1", "body one"), ("d2", "", "body two")]
    assert read_texts(tmp_path / "beir") == ["T1. body one", "body two"]


def test_documents_duplicate_id(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"_id": "x", "text": "a"}\n{"_id": "x", "text": "b"}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:2: duplicate id 'x' \(first on line 1\)"):
        read_documents(f)


def test_pairs_simcse_triplets(tmp_path):
    f = write(tmp_path / "t.csv", "sent0,sent1,hard_neg\na,b,c\nd,e,f\n")
    pairs = read_pairs(f)
    assert pairs.sent0 == ["a", "d"] and pairs.sent1 == ["b", "e"] and pairs.hard_neg == ["c", "f"]
    assert pairs.scores is None and len(pairs) == 2


def test_pairs_scored_and_headerless(tmp_path):
    f = write(tmp_path / "s.csv", "sentence1,sentence2,score\na,b,4.5\n")
    assert read_pairs(f).scores == [4.5]
    g = write(tmp_path / "h.csv", "a,b,1.0\nc,d,2.0\n")
    p = read_pairs(g, columns=["sentence1", "sentence2", "score"], has_header=False)
    assert p.sent0 == ["a", "c"] and p.scores == [1.0, 2.0]


def test_pairs_bad_score_and_empty_cell(tmp_path):
    with pytest.raises(InputError, match=r"s\.csv:3: column 'score' holds 'high'"):
        read_pairs(write(tmp_path / "s.csv", "sentence1,sentence2,score\na,b,1\nc,d,high\n"))
    with pytest.raises(InputError, match=r"e\.csv:2: empty 'sent1'"):
        read_pairs(write(tmp_path / "e.csv", "sent0,sent1\na,\n"))


def test_pairs_wrong_columns_say_what_is_expected(tmp_path):
    with pytest.raises(InputError, match=r"missing pair columns: expected one of \[sent0,sent1,hard_neg;"):
        read_pairs(write(tmp_path / "w.csv", "left,right\na,b\n"))
