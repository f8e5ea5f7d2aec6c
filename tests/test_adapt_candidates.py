"""adapt's candidate pair generators and hard-negative mining (on arrays)."""

from __future__ import annotations

import csv

import numpy as np

from embedforge.adapt.candidates import (
    SPECS,
    crop_pairs,
    ict_pairs,
    mine_hard_negatives,
    prepare_candidate,
    simcse_texts,
    title_pairs,
)
from embedforge.corpus import Document, read_pairs

DOCS = [
    Document("a", "First sentence is here. Second sentence follows it now. Third one ends the text here.", "A title"),
    Document("b", "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"),
    Document("c", "too short", "Lonely title"),
]


def test_generators_use_the_documents_they_are_given():
    assert simcse_texts(DOCS)[0].startswith("A title. First sentence")
    assert title_pairs(DOCS) == [("A title", DOCS[0].text)]  # "c" has too short a body
    crops = crop_pairs(DOCS, seed=0)
    assert len(crops) == 2  # "a" (title + text) and "b" have 16+ words, "c" does not
    for (a, b), doc in zip(crops, DOCS[:2], strict=True):
        full = f"{doc.title}. {doc.text}" if doc.title else doc.text
        assert a in full and b in full and len(a.split()) >= 8
    ict = ict_pairs(DOCS, seed=0)
    assert len(ict) == 1
    sentence, rest = ict[0]
    assert sentence in DOCS[0].text and rest.startswith("A title.")


def test_crops_are_seeded_and_independent():
    docs = [Document(str(i), " ".join(f"w{j}" for j in range(100))) for i in range(20)]
    first, again = crop_pairs(docs, 1), crop_pairs(docs, 1)
    assert first == again and any(a != b for a, b in first)


def test_mining_filters_positives_and_likely_false_negatives():
    rng = np.random.default_rng(0)
    dim = 16
    pool = rng.normal(size=(40, dim)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = pool[:5] + 0.05 * rng.normal(size=(5, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    positives = pool[:5]
    # row 10 is a near-copy of query 0 (an unlabelled positive): it must be filtered by the margin
    pool[10] = queries[0] * 0.999 + 0.001
    pool[10] /= np.linalg.norm(pool[10])
    bm25 = np.tile(np.arange(40), (5, 1))[:, :30]  # BM25 "ranks" rows 0..29 for every query
    exclude = [{i} for i in range(5)]
    rows, source = mine_hard_negatives(queries, positives, pool, bm25, exclude, depth=30, margin=0.95, seed=0)
    assert rows.shape == (5,) and source.shape == (5,)
    for i in range(5):
        assert rows[i] >= 0 and rows[i] != i
        sim = float(queries[i] @ pool[rows[i]])
        assert sim < 0.95 * float(queries[i] @ positives[i])
    assert rows[0] != 10
    assert set(source.tolist()) <= {1, 2}


def test_mining_reports_none_when_everything_is_filtered():
    q = np.eye(3, dtype=np.float32)
    rows, source = mine_hard_negatives(q, q, q, np.array([[0, 1, 2]] * 3), [{0, 1, 2}] * 3, depth=3)
    assert (rows == -1).all() and (source == 0).all()


def test_prepare_writes_readable_training_files(tmp_path):
    docs = [Document(str(i), f"Sentence {i} starts here. Then another sentence comes {i}. And a third one closes {i}.",
                     f"Title number {i}") for i in range(30)]
    prep = prepare_candidate("title", docs, tmp_path, seed=0)
    assert prep.rows == 30 and prep.path is not None
    pairs = read_pairs(prep.path)
    assert pairs.sent0[0] == "Title number 0" and pairs.hard_neg is None
    simcse = prepare_candidate("simcse", docs, tmp_path, seed=0)
    assert simcse.path is not None and len(simcse.path.read_text().splitlines()) == 30
    skipped = prepare_candidate("title", docs[:5], tmp_path / "x", seed=0)
    assert skipped.path is None and "needs 16" in skipped.note
    assert prepare_candidate("supervised", docs, tmp_path, seed=0).path is None
    with open(prep.path, newline="") as f:
        assert next(csv.reader(f)) == ["sent0", "sent1"]


def test_every_candidate_declares_its_own_format_tasks():
    assert SPECS["simcse"].formats == () and SPECS["supervised"].formats == ()
    assert "span" in SPECS["crops"].formats and "span" in SPECS["ict"].formats and SPECS["title"].formats == ("title",)
    assert SPECS["tsdae"].formats == ("keywords",), "TSDAE's damaged input is a bag of the document's own words"
