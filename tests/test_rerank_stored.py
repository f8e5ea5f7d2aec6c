"""A bi-encoder re-ranker's document vectors stored at index time (``Collection.store_rerank_vectors``,
``embedforge index --rerank-vectors``): search then encodes only the queries and gives the same scores as
encoding the candidates at query time (the exact reference); added, deleted and interrupted work stays
right, another model's vectors are never used, and a bad call changes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedforge.cli import main
from embedforge.collection import Collection
from embedforge.errors import InputError
from embedforge.rerank.model import (
    FINGERPRINT_TEXTS,
    BiEncoderReranker,
    StoredVectorsReranker,
    load_cross_encoder,
)

DOCS = [
    {"id": f"d{i}", "text": text}
    for i, text in enumerate([
        "cats purr and chase mice", "rockets launch into orbit", "bread rises in the oven", "rivers flow to the sea",
        "mice hide from the cat", "the oven bakes bread at dawn", "orbiting satellites watch the sea",
    ])
]
MORE = [{"id": "n1", "text": "a mouse hides under the stove"}, {"id": "n2", "text": "the sea floods the river delta"}]
QUERIES = ["where do the mice hide", "what flows to the sea", "baking bread"]


def save_embedding_model(out: Path, hf_dir: Path, prompts: dict[str, str] | None) -> Path:
    from sentence_transformers import SentenceTransformer, models

    from embedforge.models import save_model

    transformer = models.Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension()), models.Normalize()],
                                device="cpu", prompts=prompts)
    save_model(model, out, base_model="tiny-random-bert")
    return out


@pytest.fixture(scope="module")
def second_stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny embedding model (other random weights) with e5-style prompts: the re-ranker."""
    from conftest import build_tiny_bert

    root = tmp_path_factory.mktemp("second-stage")
    return save_embedding_model(root / "model", build_tiny_bert(root / "hf", seed=7, hidden=48), {"query": "query: ", "document": "passage: "})


@pytest.fixture(scope="module")
def other_stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same prompts and size as ``second_stage``, different weights."""
    from conftest import build_tiny_bert

    root = tmp_path_factory.mktemp("other-stage")
    return save_embedding_model(root / "model", build_tiny_bert(root / "hf", seed=11, hidden=48), {"query": "query: ", "document": "passage: "})


def make_collection(path: Path, tiny_model_dir: Path, tiny_model: Any, docs: list[dict[str, str]] = DOCS) -> Collection:
    coll = Collection.create(path, str(tiny_model_dir), model=tiny_model, index_spec="exact")
    coll.add(docs)
    coll.save()
    return coll


class Counting(BiEncoderReranker):
    """A BiEncoderReranker that records every document text it encodes."""

    def __init__(self, path: Path) -> None:
        loaded = load_cross_encoder(path)
        super().__init__(loaded.model, loaded.max_length)
        self.encoded: list[str] = []

    def encode_documents(self, docs: Any, batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        self.encoded.extend(docs)
        return super().encode_documents(docs, batch_size, show_progress)


def scores(coll: Collection, reranker: Any, **kwargs: Any) -> list[list[tuple[str, float]]]:
    hits = coll.search(QUERIES, top_k=len(coll), mode="dense", rerank=reranker, rerank_top=len(coll), **kwargs)
    return [[(h.id, h.score) for h in row] for row in hits]


def assert_same(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> None:
    for x, y in zip(a, b, strict=True):
        assert dict(x).keys() == dict(y).keys()
        np.testing.assert_allclose([dict(x)[k] for k in sorted(dict(x))], [dict(y)[k] for k in sorted(dict(y))], atol=1e-5)


def test_stored_vectors_give_the_query_time_scores_and_encode_no_document(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path
) -> None:
    plain = make_collection(tmp_path / "plain", tiny_model_dir, tiny_model)
    reference = scores(plain, Counting(second_stage))
    coll = make_collection(tmp_path / "stored", tiny_model_dir, tiny_model)
    assert coll.store_rerank_vectors(str(second_stage), chunk_size=3) == len(DOCS)
    reopened = Collection.open(coll.path)  # every stored file is checked on open (the manifest's file table)
    info = next(iter(reopened.manifest["rerank_vectors"].values()))
    assert info["count"] == len(DOCS) and info["document_prompt"] == "passage: " and info["max_length"] == 64
    counting = Counting(second_stage)
    assert isinstance(reopened.stored_reranker(counting), StoredVectorsReranker)
    got = scores(reopened, counting)
    assert_same(got, reference)
    assert counting.encoded == list(FINGERPRINT_TEXTS)  # the fingerprint, and not one candidate
    assert [i for i, _ in got[0]] == [i for i, _ in reference[0]]
    # a second call has nothing to do
    assert reopened.store_rerank_vectors(str(second_stage)) == 0


def test_added_documents_are_encoded_at_search_time_until_topped_up_and_deleted_ones_go(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path
) -> None:
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    coll.store_rerank_vectors(str(second_stage))
    coll.add(MORE)
    coll.delete(["d1"])
    coll.save()
    reference_coll = make_collection(tmp_path / "ref", tiny_model_dir, tiny_model, [d for d in DOCS if d["id"] != "d1"] + MORE)
    reference = scores(reference_coll, Counting(second_stage))
    counting = Counting(second_stage)
    assert_same(scores(coll, counting), reference)
    assert sorted(counting.encoded[len(FINGERPRINT_TEXTS):]) == sorted(d["text"] for d in MORE)  # only the unstored ones
    reopened = Collection.open(coll.path)
    assert next(iter(reopened.manifest["rerank_vectors"].values()))["count"] == len(DOCS) - 1  # d1's vector went with the save
    assert reopened.store_rerank_vectors(str(second_stage)) == len(MORE)
    counting = Counting(second_stage)
    assert_same(scores(Collection.open(coll.path), counting), reference)
    assert counting.encoded == list(FINGERPRINT_TEXTS)


def test_an_interrupted_run_keeps_its_finished_chunks(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    calls = {"n": 0}
    real = BiEncoderReranker.encode_documents

    def dies_on_the_third_chunk(self: BiEncoderReranker, docs: Any, batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        if list(docs) != list(FINGERPRINT_TEXTS):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(self, docs, batch_size, show_progress)

    monkeypatch.setattr(BiEncoderReranker, "encode_documents", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        coll.store_rerank_vectors(str(second_stage), chunk_size=2)
    monkeypatch.undo()
    reopened = Collection.open(coll.path)
    assert next(iter(reopened.manifest["rerank_vectors"].values()))["count"] == 4  # two chunks of 2 saved
    assert reopened.store_rerank_vectors(str(second_stage), chunk_size=2) == len(DOCS) - 4
    assert_same(scores(Collection.open(coll.path), Counting(second_stage)),
                scores(make_collection(tmp_path / "ref", tiny_model_dir, tiny_model), Counting(second_stage)))


def test_another_models_vectors_are_never_used(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path, other_stage: Path
) -> None:
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    coll.store_rerank_vectors(str(second_stage))
    other = Counting(other_stage)
    assert not isinstance(coll.stored_reranker(other), StoredVectorsReranker)
    reference = scores(make_collection(tmp_path / "ref", tiny_model_dir, tiny_model), Counting(other_stage))
    assert_same(scores(coll, other), reference)
    # a model directory replaced by other weights under the same path: stored vectors no longer match, and are redone
    moved = tmp_path / "stage"
    shutil.copytree(second_stage, moved)
    coll2 = make_collection(tmp_path / "c2", tiny_model_dir, tiny_model)
    coll2.store_rerank_vectors(str(moved))
    shutil.rmtree(moved)
    shutil.copytree(other_stage, moved)
    assert not isinstance(coll2.stored_reranker(Counting(moved)), StoredVectorsReranker)
    assert coll2.store_rerank_vectors(str(moved)) == len(DOCS)
    assert isinstance(Collection.open(coll2.path).stored_reranker(Counting(moved)), StoredVectorsReranker)


def test_bad_calls_say_why_and_change_nothing(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    from conftest import build_tiny_bert

    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    before = (coll.path / "CURRENT").read_text()
    cross = build_tiny_bert(tmp_path / "ce", num_labels=1)
    with pytest.raises(InputError, match="is a cross-encoder"):
        coll.store_rerank_vectors(str(cross))
    with pytest.raises(InputError, match="neither a cross-encoder nor an embedding model directory"):
        coll.store_rerank_vectors(str(tmp_path / "missing"))
    coll.add(MORE)
    with pytest.raises(InputError, match="unsaved changes"):
        coll.store_rerank_vectors(str(tiny_model_dir))
    assert (coll.path / "CURRENT").read_text() == before
    assert "rerank_vectors" not in Collection.open(coll.path).manifest


def test_a_damaged_vectors_file_is_refused_on_open(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path) -> None:
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    coll.store_rerank_vectors(str(second_stage))
    files = sorted(coll.path.glob("v*/rerank/*.vectors.npy"))
    assert len(files) == 1
    data = bytearray(files[0].read_bytes())
    data[-1] ^= 0xFF
    files[0].write_bytes(bytes(data))
    with pytest.raises(InputError, match="checksum"):
        Collection.open(coll.path)


def test_cli_index_stores_vectors_and_search_runs_match(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}) + "\n" for d in DOCS))
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, q in enumerate(QUERIES)))
    stored, plain = tmp_path / "stored", tmp_path / "plain"
    assert main(["index", "--model", str(tiny_model_dir), "--input", str(corpus), "--collection", str(plain), "--no-progress"]) == 0
    assert main(["index", "--model", str(tiny_model_dir), "--input", str(corpus), "--collection", str(stored), "--no-progress",
                 "--rerank-vectors", str(second_stage)]) == 0
    assert f"({len(DOCS)} documents encoded, 0 already stored)" in capsys.readouterr().out
    # without --input: the collection as it is (nothing left to encode)
    assert main(["index", "--model", str(tiny_model_dir), "--collection", str(stored), "--rerank-vectors", str(second_stage)]) == 0
    assert f"(0 documents encoded, {len(DOCS)} already stored)" in capsys.readouterr().out
    runs, notes = [], []
    for coll in (plain, stored):
        out = tmp_path / f"{coll.name}.tsv"
        assert main(["search", "--collection", str(coll), "--queries", str(queries), "--output", str(out), "--top-k", "5",
                     "--rerank", str(second_stage), "--rerank-weights", "0.5,0.5"]) == 0
        runs.append([line.split("\t") for line in out.read_text().splitlines()])
        notes.append([line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")])
    assert len(notes[0]) == 1 and "--rerank-vectors" in notes[0][0] and "encodes its 30 candidates" in notes[0][0]
    assert notes[1] == []  # stored: nothing to say
    assert [r[:3] for r in runs[0]] == [r[:3] for r in runs[1]]
    np.testing.assert_allclose([float(r[3]) for r in runs[0]], [float(r[3]) for r in runs[1]], atol=1e-5)
    capsys.readouterr()
    assert main(["index", "--model", str(tiny_model_dir), "--collection", str(stored)]) == 2
    assert "index needs --input" in capsys.readouterr().err


def test_the_server_search_uses_them_with_the_same_scores(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path
) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from test_rerank_model import DOCS as SERVED
    from test_rerank_model import QUERY, scores_three_ways

    from embedforge.rerank.model import pair_scores

    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model, SERVED)
    coll.store_rerank_vectors(str(second_stage))
    cli, search, rerank, method = scores_three_ways(second_stage, coll.path, tiny_model_dir, tiny_model, tmp_path)
    expected = pair_scores(load_cross_encoder(second_stage), [(QUERY, d["text"]) for d in SERVED])
    ids = [d["id"] for d in SERVED]
    assert method == "bi-encoder-reranker"
    for got in (cli, search, rerank):
        np.testing.assert_allclose([got[i] for i in ids], expected, atol=1e-5)
    # /v1/search reads the stored vectors: not one candidate is encoded while it answers
    assert not served_search_encodes(coll.path, tiny_model_dir, tiny_model, second_stage) & {d["text"] for d in SERVED}


def served_search_encodes(coll: Path, tiny_model_dir: Path, tiny_model: Any, reranker: Path, **config: Any) -> set[str]:
    """The document texts the re-ranker encodes while the server answers one /v1/search with rerank."""
    import httpx
    from test_rerank_model import QUERY

    from embedforge.serve import ServeConfig, create_app
    from embedforge.serve.server import running_server

    encoded: list[str] = []
    real = BiEncoderReranker.encode_documents

    def recording(self: BiEncoderReranker, docs: Any, batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        encoded.extend(docs)
        return real(self, docs, batch_size, show_progress)

    served = ServeConfig(model=str(tiny_model_dir), collection=str(coll), reranker=str(reranker), **config)
    with running_server(create_app(served, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=60) as client:
        BiEncoderReranker.encode_documents = recording  # type: ignore[method-assign]
        try:
            searched = client.post("/v1/search", json={"query": QUERY, "top_k": 5, "rerank": True})
        finally:
            BiEncoderReranker.encode_documents = real  # type: ignore[method-assign]
    assert searched.status_code == 200, searched.text
    return set(encoded)


def test_the_server_uses_vectors_stored_at_its_rerank_max_length(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path
) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    coll.store_rerank_vectors(str(second_stage), max_length=16)
    texts = {d["text"] for d in DOCS}
    assert served_search_encodes(coll.path, tiny_model_dir, tiny_model, second_stage) & texts  # own length: not these
    assert not served_search_encodes(coll.path, tiny_model_dir, tiny_model, second_stage, rerank_max_length=16) & texts


def test_vectors_listed_but_not_saved_by_an_older_embedforge_are_ignored_not_fatal(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path
) -> None:
    """An embedforge without stored re-ranker vectors keeps the manifest entry on save, not the files:
    the collection still opens and searches; the entry is ignored and the vectors can be stored again."""
    from embedforge.collection import manifest_checksum
    from embedforge.io import write_json

    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    coll.store_rerank_vectors(str(second_stage))
    opened = Collection.open(coll.path)
    version, manifest = opened._version_dir, opened.manifest
    assert version is not None
    shutil.rmtree(version / "rerank")  # what the older code's save leaves: the entry, no files
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("rerank/")}
    manifest["checksum"] = manifest_checksum(manifest)
    write_json(version / "manifest.json", manifest)
    reopened = Collection.open(coll.path)
    counting = Counting(second_stage)
    assert not isinstance(reopened.stored_reranker(counting), StoredVectorsReranker)
    assert_same(scores(reopened, counting), scores(make_collection(tmp_path / "ref", tiny_model_dir, tiny_model), Counting(second_stage)))
    assert reopened.store_rerank_vectors(str(second_stage)) == len(DOCS)
    assert isinstance(Collection.open(coll.path).stored_reranker(Counting(second_stage)), StoredVectorsReranker)


def test_a_failed_save_leaves_memory_as_on_disk_and_a_retry_does_the_work(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    before = (coll.path / "CURRENT").read_text()

    def disk_full(self: Collection) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Collection, "_save_locked", disk_full)
    with pytest.raises(OSError, match="No space"):
        coll.store_rerank_vectors(str(second_stage))
    monkeypatch.undo()
    assert (coll.path / "CURRENT").read_text() == before
    assert "rerank_vectors" not in coll.manifest
    assert not isinstance(coll.stored_reranker(Counting(second_stage)), StoredVectorsReranker)
    assert coll.store_rerank_vectors(str(second_stage)) == len(DOCS)  # the retry in the same process: all of it
    # and the lock was released after the failure: another handle can write
    other = Collection.open(coll.path)
    other.add(MORE)
    other.save()


def test_a_changed_text_after_upsert_is_encoded_again(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path) -> None:
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    coll.store_rerank_vectors(str(second_stage))
    changed = [{"id": "d0", "text": "a mouse hides under the stove"}]
    coll.upsert(changed)
    coll.save()
    counting = Counting(second_stage)
    want = [changed[0] if d["id"] == "d0" else d for d in DOCS]
    assert_same(scores(coll, counting), scores(make_collection(tmp_path / "ref", tiny_model_dir, tiny_model, want), Counting(second_stage)))
    assert changed[0]["text"] in counting.encoded  # its old vector was not used


def test_another_length_is_not_matched_and_a_mixed_list_fuses_right(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path
) -> None:
    from conftest import build_tiny_bert

    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    coll.store_rerank_vectors(str(second_stage), max_length=16)
    assert next(iter(Collection.open(coll.path).manifest["rerank_vectors"].values()))["max_length"] == 16
    assert not isinstance(coll.stored_reranker(Counting(second_stage)), StoredVectorsReranker)  # 64 tokens: not these
    short = load_cross_encoder(second_stage, max_length=16)
    assert isinstance(coll.stored_reranker(short), StoredVectorsReranker)
    # a cross-encoder beside the stored bi-encoder: same fused scores as with nothing stored
    cross = load_cross_encoder(build_tiny_bert(tmp_path / "ce", num_labels=1))
    plain = make_collection(tmp_path / "plain", tiny_model_dir, tiny_model)
    assert_same(scores(coll, [short, cross], rerank_weights=[0.2, 0.5, 0.3]),
                scores(plain, [load_cross_encoder(second_stage, max_length=16), cross], rerank_weights=[0.2, 0.5, 0.3]))


def test_an_empty_collection_stores_nothing_and_searches(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path) -> None:
    coll = Collection.create(tmp_path / "c", str(tiny_model_dir), model=tiny_model, index_spec="exact")
    coll.save()
    assert coll.store_rerank_vectors(str(second_stage)) == 0
    reopened = Collection.open(coll.path)
    assert next(iter(reopened.manifest["rerank_vectors"].values()))["count"] == 0
    with pytest.raises(InputError, match="the collection is empty"):  # as without stored vectors
        reopened.search(QUERIES, top_k=3, mode="dense", rerank=Counting(second_stage))
    reopened.add(DOCS)
    reopened.save()
    assert reopened.store_rerank_vectors(str(second_stage)) == len(DOCS)


def test_cli_refuses_bad_rerank_vectors_before_indexing(
    tmp_path: Path, tiny_model_dir: Path, second_stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from conftest import build_tiny_bert

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}) + "\n" for d in DOCS))
    cross = build_tiny_bert(tmp_path / "ce", num_labels=1)
    coll = tmp_path / "coll"
    for bad, says in ((str(cross), "is a cross-encoder"), (str(tmp_path / "typo"), "neither a cross-encoder nor an embedding model")):
        assert main(["index", "--model", str(tiny_model_dir), "--input", str(corpus), "--collection", str(coll),
                     "--no-progress", "--rerank-vectors", bad]) == 2
        err = capsys.readouterr().err
        assert f"--rerank-vectors {bad}" in err and says in err
        assert not coll.exists()  # refused before anything was indexed
    images = tmp_path / "images"
    images.mkdir()
    assert main(["index", "--model", str(tiny_model_dir), "--images", str(images), "--collection", str(coll),
                 "--rerank-vectors", str(second_stage)]) == 2
    assert "image collection has none" in capsys.readouterr().err
    assert main(["index", "--model", str(tiny_model_dir), "--input", str(corpus), "--collection", str(coll), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["index", "--model", str(tiny_model_dir), "--collection", str(coll), "--rerank-vectors", str(second_stage),
                 "--upsert", "--limit", "3"]) == 2
    assert "--upsert, --limit apply to indexing --input" in capsys.readouterr().err
    assert "rerank_vectors" not in Collection.open(coll).manifest
    # with a length: stored at it, and search uses them only at the same length
    assert main(["index", "--model", str(tiny_model_dir), "--collection", str(coll), "--rerank-vectors", str(second_stage),
                 "--rerank-max-length", "16"]) == 0
    assert "--rerank-max-length 16 now encodes only the query" in capsys.readouterr().out
    for extra, noted in (([], True), (["--rerank-max-length", "16"], False)):
        assert main(["search", "--collection", str(coll), "--query", "baking bread", "--rerank", str(second_stage), *extra]) == 0
        assert any(line.startswith("note:") for line in capsys.readouterr().err.splitlines()) is noted


def test_a_second_chunk_that_fails_to_save_keeps_the_first(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model)
    real = Collection._write_pointer
    calls = {"n": 0}

    def fails_the_second_time(self: Collection, name: str) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real(self, name)

    monkeypatch.setattr(Collection, "_write_pointer", fails_the_second_time)
    with pytest.raises(InputError, match="No space left"):
        coll.store_rerank_vectors(str(second_stage), chunk_size=3)
    monkeypatch.undo()
    on_disk = Collection.open(coll.path)
    assert next(iter(on_disk.manifest["rerank_vectors"].values()))["count"] == 3
    assert next(iter(coll.manifest["rerank_vectors"].values()))["count"] == 3  # memory: the first chunk, as on disk
    assert [len(k) for k, _ in coll._rerank.values()] == [3]
    assert coll.store_rerank_vectors(str(second_stage), chunk_size=3) == len(DOCS) - 3
    assert_same(scores(Collection.open(coll.path), Counting(second_stage)),
                scores(make_collection(tmp_path / "ref", tiny_model_dir, tiny_model), Counting(second_stage)))


def test_checkpoints_grow_with_the_work_and_chunk_size_sets_them(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import embedforge.collection as collection_module

    many = [{"id": f"m{i}", "text": f"{DOCS[i % len(DOCS)]['text']} number {i}"} for i in range(40)]
    saves = {"n": 0}
    real = Collection._save_locked

    def counting(self: Collection) -> None:
        saves["n"] += 1
        real(self)

    monkeypatch.setattr(collection_module, "DEFAULT_STORE_CHUNK", 1)  # the rule without its 4096 floor
    monkeypatch.setattr(Collection, "_save_locked", counting)
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model, many)
    saves["n"] = 0
    assert coll.store_rerank_vectors(str(second_stage)) == 40
    assert saves["n"] == 14  # chunks of ceil(40 / 16) = 3: at most 16 saves
    saves["n"] = 0
    assert main(["index", "--model", str(tiny_model_dir), "--collection", str(tmp_path / "c"), "--rerank-vectors",
                 str(second_stage), "--rerank-max-length", "16", "--chunk-size", "10", "--no-progress"]) == 0
    assert saves["n"] == 4 and "(40 documents encoded" in capsys.readouterr().out


def test_rerank_max_length_is_capped_and_refused_where_it_does_nothing(
    tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, second_stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedforge.serve import ServeConfig

    long = load_cross_encoder(second_stage, max_length=100_000)
    assert long.document_max_length == 64  # the model's own limit: longer would overrun its position embeddings
    coll = make_collection(tmp_path / "c", tiny_model_dir, tiny_model, [*DOCS, {"id": "long", "text": "word " * 400}])
    assert coll.store_rerank_vectors(str(second_stage), max_length=100_000) == len(DOCS) + 1
    assert next(iter(coll.manifest["rerank_vectors"].values()))["max_length"] == 64
    assert main(["search", "--collection", str(coll.path), "--query", "bread", "--rerank-max-length", "16"]) == 2
    assert "without --rerank it does nothing" in capsys.readouterr().err
    assert main(["index", "--model", str(tiny_model_dir), "--collection", str(coll.path), "--input", str(tmp_path / "x.txt"),
                 "--rerank-max-length", "16"]) == 2
    assert "without --rerank-vectors" in capsys.readouterr().err
    with pytest.raises(InputError, match="rerank_max_length needs a reranker"):
        ServeConfig(model=str(tiny_model_dir), rerank_max_length=16)
