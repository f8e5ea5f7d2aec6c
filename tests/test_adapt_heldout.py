"""adapt's held-out split and label-free pseudo-queries: disjointness, formats, scoring vs the reference metric."""

from __future__ import annotations

import random

import numpy as np
import pytest

from embedforge.adapt.config import AdaptConfig
from embedforge.adapt.heldout import (
    dense_scores,
    heldout_size,
    label_free_set,
    labelled_set,
    ndcg_from_rows,
    same_label_set,
    split_corpus,
    split_labelled_texts,
    split_pairs,
)
from embedforge.adapt.inputs import LabelledTexts, QueryPairs, doc_text, load_query_pairs, same_label_pairs
from embedforge.corpus import Document
from embedforge.errors import InputError
from embedforge.evaluate.metrics import ndcg_per_query

TOPICS = {
    "cells": ["cell", "membrane", "protein", "receptor", "signal", "kinase", "mitochondria", "nucleus", "division", "apoptosis"],
    "ships": ["ship", "harbour", "sail", "anchor", "captain", "voyage", "ocean", "cargo", "crew", "storm"],
    "cats": ["cat", "whisker", "kitten", "purr", "fur", "mouse", "claw", "feline", "tail", "nap"],
    "code": ["code", "compiler", "function", "variable", "loop", "debug", "software", "program", "syntax", "module"],
}
COMMON = ["the", "a", "of", "and", "in", "to", "with", "for", "on", "is", "was", "study", "results", "show", "that"]


def make_docs(n: int, seed: int = 0, titles: bool = True) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        vocab = list(TOPICS.values())[i % len(TOPICS)]
        sents = [
            " ".join(rng.choice(vocab if rng.random() < 0.5 else COMMON) for _ in range(rng.randint(7, 12))).capitalize() + "."
            for _ in range(rng.randint(3, 5))
        ]
        title = " ".join(rng.choice(vocab) for _ in range(4)).capitalize() if titles else ""
        docs.append(Document(id=f"d{i}", text=" ".join(sents), title=title))
    return docs


SMALL = AdaptConfig(heldout_min=10, heldout_max=20, train_min=10, heldout_fraction=0.2, pairs_heldout_min=3)


def test_split_is_disjoint_sized_and_respects_protected_ids():
    docs = make_docs(60)
    protected = {"d0", "d1", "d2"}
    split = split_corpus(docs, SMALL, protected=protected)
    assert len(split.heldout) == heldout_size(60, SMALL) == 12
    assert set(split.train).isdisjoint(split.heldout) and sorted(split.train + split.heldout) == list(range(60))
    assert not {docs[i].id for i in split.heldout} & protected
    assert split_corpus(docs, SMALL, protected=protected) == split  # seeded


def test_neighbourhoods_make_the_heldout_slice_topically_clustered():
    docs = make_docs(200)
    config = AdaptConfig(heldout_min=20, heldout_max=20, train_min=10, neighbourhood=4)
    held = split_corpus(docs, config).heldout
    topics = [i % len(TOPICS) for i in held]
    # 20 documents in ~4 neighbourhoods of 5: far fewer distinct topics per group than random picks
    assert max(np.bincount(topics)) >= 10


def test_too_small_a_corpus_names_the_minimum():
    with pytest.raises(InputError, match=r"has 30 document\(s\); adapt needs at least 100 \(50 held out"):
        heldout_size(30, AdaptConfig())


def test_pseudo_queries_are_not_training_formats():
    docs = make_docs(40)
    held = list(range(20))
    es = label_free_set(docs, held, idf_texts=[doc_text(d) for d in docs], seed=1)
    tasks = {t.name: t for t in es.tasks}
    assert set(tasks) == {"title", "keywords", "span"} and len(es.docs) == 20
    for q, (row,) in zip(tasks["span"].queries, tasks["span"].relevant, strict=True):
        assert 3 <= len(q.split()) <= 10
        assert q in docs[held[row]].text and q not in es.docs[row]  # the span is cut out of its target
    for q, (row,) in zip(tasks["keywords"].queries, tasks["keywords"].relevant, strict=True):
        words = q.split()
        assert 3 <= len(words) <= 5 and len(set(words)) == len(words)
        assert all(w.lower() in es.docs[row].lower() for w in words)
        assert not any(w.lower() in {"the", "and", "with"} for w in words)  # no stop words
    for q, (row,) in zip(tasks["title"].queries, tasks["title"].relevant, strict=True):
        assert q == docs[held[row]].title and q not in es.docs[row]  # targets carry no title
    again = label_free_set(docs, held, idf_texts=[doc_text(d) for d in docs], seed=1)
    assert again == es


def test_documents_without_titles_get_no_title_task():
    docs = make_docs(30, titles=False)
    es = label_free_set(docs, list(range(15)), idf_texts=[doc_text(d) for d in docs], seed=0)
    assert [t.name for t in es.tasks] == ["keywords", "span"]


def test_ndcg_matches_the_reference_metric():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(30, 8)).astype(np.float32)
    d = rng.normal(size=(50, 8)).astype(np.float32)
    relevant = [tuple(sorted(rng.choice(50, size=rng.integers(1, 4), replace=False).tolist())) for _ in range(30)]
    ours = dense_scores(q, d, relevant)
    scores = q @ d.T
    run = {str(i): {str(j): float(scores[i, j]) for j in range(50)} for i in range(30)}
    qrels = {str(i): {str(j): 1 for j in rel} for i, rel in enumerate(relevant)}
    ref = ndcg_per_query(run, qrels, 10)
    np.testing.assert_allclose(ours, [ref[str(i)] for i in range(30)], atol=1e-9)


def test_ndcg_from_rows_edge_cases():
    rows = np.array([[3, 1, -1], [0, 2, 1]])
    out = ndcg_from_rows(rows, [(3,), (9,)], k=3)
    assert out[0] == pytest.approx(1.0) and out[1] == 0.0


def test_labelled_split_and_pool():
    docs = make_docs(50)
    texts = [doc_text(d) for d in docs]
    pairs = QueryPairs([f"query {i}" for i in range(20)], texts[:20], [d.id for d in docs[:20]])
    train, held = split_pairs(pairs, SMALL)
    assert set(train.queries).isdisjoint(held.queries) and len(train) + len(held) == 20 and len(held) == 4
    es = labelled_set(held, texts, AdaptConfig(labelled_pool=30, labelled_bm25_depth=5))
    task = es.tasks[0]
    assert len(es.docs) == 30 and len(set(es.docs)) == 30
    for q, rel in zip(task.queries, task.relevant, strict=True):
        assert es.docs[rel[0]] == held.docs[held.queries.index(q)]
    with pytest.raises(InputError, match="at least 6"):
        split_pairs(QueryPairs(["a", "b"], ["x", "y"], ["", ""]), SMALL)


# ---------------------------------------------------------------- labelled texts (text,label)


def make_labelled(per_label: int, labels: int = 6) -> LabelledTexts:
    texts = [f"example {j} of class {c}" for c in range(labels) for j in range(per_label)]
    return LabelledTexts(texts, [f"c{c}" for c in range(labels) for _ in range(per_label)], "test")


def test_labelled_texts_split_is_stratified_and_disjoint():
    data = make_labelled(10, labels=4)
    small_class = LabelledTexts(data.texts + ["lonely a", "lonely b"], data.labels + ["tiny", "tiny"])
    train, held = split_labelled_texts(small_class, SMALL)
    assert set(train.texts).isdisjoint(held.texts) and len(train) + len(held) == len(small_class)
    per_label = {y: held.labels.count(y) for y in set(held.labels)}
    assert per_label == {f"c{c}": 2 for c in range(4)}  # 20% of 10, and at least 2 for a partner
    assert train.labels.count("tiny") == 2  # a label with < 4 texts only trains
    assert split_labelled_texts(small_class, SMALL) == (train, held)  # seeded
    with pytest.raises(InputError, match="at least 2"):
        split_labelled_texts(LabelledTexts(["a", "b", "c", "d"], ["x"] * 4), SMALL)
    with pytest.raises(InputError, match="held-out texts"):
        split_labelled_texts(make_labelled(3), SMALL)  # no label has 4 texts: nothing to hold out


def test_same_label_pairs_cover_each_label_and_never_cross():
    data = make_labelled(5, labels=3)
    pairs = same_label_pairs(data, seed=0)
    label_of = dict(zip(data.texts, data.labels, strict=True))
    assert len(pairs) == 3 * 10  # C(5, 2) per label
    assert all(label_of[q] == label_of[d] and q != d for q, d in zip(pairs.queries, pairs.docs, strict=True))
    assert len(same_label_pairs(make_labelled(30, labels=1), seed=0)) == 10 * 30  # capped per text


def test_same_label_set_excludes_the_query_itself_against_brute_force():
    rng = np.random.default_rng(1)
    held = make_labelled(3, labels=8)
    eval_set = same_label_set(held)
    task = eval_set.tasks[0]
    assert eval_set.docs == held.texts and task.queries == held.texts
    emb = rng.normal(size=(len(held), 16)).astype(np.float32)
    ours = dense_scores(emb, emb, task.relevant, exclude=task.exclude)
    scores = emb @ emb.T
    run = {str(i): {str(j): float(scores[i, j]) for j in range(len(held)) if j != i} for i in range(len(held))}
    qrels = {str(i): {str(j): 1 for j in range(len(held)) if j != i and held.labels[j] == held.labels[i]} for i in range(len(held))}
    ref = ndcg_per_query(run, qrels, 10)
    np.testing.assert_allclose(ours, [ref[str(i)] for i in range(len(held))], atol=1e-9)


def test_a_text_label_table_is_read_as_labelled_texts(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("text,label\nhello there,greet\nbye now,leave\n")
    data = load_query_pairs(str(path), [])
    assert isinstance(data, LabelledTexts) and data.labels == ["greet", "leave"]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello there,greet\nbye now,\n")
    with pytest.raises(InputError, match=r"bad\.csv:3: missing 'label'"):
        load_query_pairs(str(bad), [])
