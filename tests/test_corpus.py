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


# --- text hygiene: surrogates, huge fields ------------------------------------------------------


def test_a_lone_surrogate_is_rejected_with_file_and_line(tmp_path):
    from embedforge.corpus import read_records

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "fine"}\n{"text": "bad \\ud800 text"}\n', encoding="utf-8")
    for read in (read_texts, read_documents, read_records):
        with pytest.raises(InputError, match=r"rows\.jsonl:2: text holds a lone UTF-16 surrogate"):
            read(rows)
    nested = tmp_path / "nested.jsonl"
    nested.write_text('{"text": "ok", "metadata": {"tags": ["\\udfff"]}}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"nested\.jsonl:1: .*surrogate"):
        read_documents(nested)
    pair = tmp_path / "pairs.jsonl"
    pair.write_text('{"text": "a \\ud83d\\ude00 smile"}\n', encoding="utf-8")  # a valid pair is one character
    assert read_texts(pair) == ["a \U0001f600 smile"]
    # txt / csv: a surrogate's bytes are not UTF-8, so the decoder names the line
    for name, head in (("t.txt", b"ok\n"), ("t.csv", b"text\nok\n")):
        path = tmp_path / name
        path.write_bytes(head + "x\ud800".encode("utf-8", "surrogatepass") + b"\n")
        with pytest.raises(InputError, match=rf"{name}:\d: not valid UTF-8"):
            read_texts(path)


def test_csv_fields_up_to_max_text_chars_are_read_and_longer_ones_name_the_line(tmp_path):
    from embedforge.io import MAX_TEXT_CHARS

    big = "y" * (200 * 1024)  # over Python's default csv limit of 128 KiB
    path = tmp_path / "big.csv"
    path.write_text(f"id,text\n1,short\n2,{big}\n", encoding="utf-8")
    assert read_texts(path) == ["short", big]
    path.write_text(f"id,text\n1,short\n2,\"{'z' * (MAX_TEXT_CHARS + 1)}\"\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"big\.csv:3: a field longer than 1,000,000 characters"):
        read_texts(path)
    headerless = tmp_path / "sts.csv"
    headerless.write_text(f"a,{'b' * (MAX_TEXT_CHARS + 5)},1.0\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"sts\.csv:1: a field longer than"):
        read_pairs(headerless, columns=["sentence1", "sentence2", "score"], has_header=False)
    long_line = tmp_path / "long.txt"
    long_line.write_text("ok\n" + "w" * (MAX_TEXT_CHARS + 1) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"long\.txt:2: text of 1,000,001 characters"):
        read_texts(long_line)
