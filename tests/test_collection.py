"""Collections on disk: round trips, add/upsert/delete, crash safety, corruption, model checks, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedforge.collection import Collection, Hit
from embedforge.encode import encode
from embedforge.errors import InputError
from embedforge.ingest import index_documents, read_corpus

TOPICS = ["cats purr and chase mice", "rockets launch into orbit", "bread rises in the oven", "rivers flow to the sea"]


def make_docs(n: int, start: int = 0) -> list[dict]:
    return [
        {"id": f"d{i}", "text": f"{TOPICS[i % 4]} (note {i})", "metadata": {"topic": i % 4, "year": 2000 + i}}
        for i in range(start, start + n)
    ]


@pytest.fixture
def coll(tmp_path: Path, tiny_model_dir: Path, tiny_model) -> Collection:
    c = Collection.create(tmp_path / "c", str(tiny_model_dir), model=tiny_model, query_prefix="q: ", document_prefix="d: ")
    c.add(make_docs(40))
    c.save()
    return c


def test_roundtrip_manifest_and_search(coll: Collection, tiny_model_dir: Path, tiny_model) -> None:
    again = Collection.open(coll.path)
    assert len(again) == 40 and "d3" in again
    m = again.manifest
    assert m["model"] == str(tiny_model_dir.resolve())
    assert (m["pooling"], m["normalize"], m["dimension"], m["max_seq_length"]) == ("mean", True, 32, 64)
    assert (m["query_prefix"], m["document_prefix"]) == ("q: ", "d: ")
    hits = again.search(["cats purr", "rockets"], top_k=5, model=tiny_model)
    assert len(hits) == 2 and all(len(h) == 5 for h in hits)
    assert isinstance(hits[0][0], Hit) and isinstance(hits[0][0].metadata, dict)
    assert [h.id for h in hits[0]] == [h.id for h in coll.search(["cats purr", "rockets"], top_k=5)[0]]
    assert all(a.score >= b.score for a, b in zip(hits[0], hits[0][1:], strict=False))
    # the document prefix was used for documents, the query prefix for queries
    doc_vec = encode(tiny_model, ["d: " + again.get("d0").text])
    np.testing.assert_allclose(again._vectors[again._row["d0"]], doc_vec[0], atol=1e-5)
    np.testing.assert_allclose(again.encode_queries(["x"]), encode(tiny_model, ["q: x"]), atol=1e-5)
    with pytest.raises(InputError, match="list of queries"):
        again.search("a string", model=tiny_model)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown search mode"):
        again.search(["x"], mode="magic", model=tiny_model)


def test_add_upsert_delete(coll: Collection, tiny_model) -> None:
    with pytest.raises(InputError, match="duplicate id 'd1'"):
        coll.add(make_docs(1, start=1))
    with pytest.raises(InputError, match="duplicate id 'x'"):
        coll.add([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    assert len(coll) == 40, "nothing added on error"
    coll.upsert([{"id": "d1", "text": "completely new text about volcanoes", "metadata": {"topic": 9}}])
    assert len(coll) == 40 and coll.get("d1").text.startswith("completely")
    with pytest.raises(InputError, match="unknown id"):
        coll.delete(["d2", "nope"])
    assert "d2" in coll
    assert coll.delete(["d2", "d5"]) == 2
    coll.save()
    again = Collection.open(coll.path)
    assert len(again) == 38 and "d2" not in again and again.get("d1").metadata == {"topic": 9}
    ids = {h.id for h in again.search(["cats purr and chase mice"], top_k=40, model=tiny_model)[0]}
    assert "d2" not in ids and "d5" not in ids and len(ids) == 38


def test_crash_before_pointer_keeps_previous_state(coll: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    coll.add(make_docs(5, start=100))

    def crash(self, name):  # killed after the new version is on disk, before CURRENT moves
        raise KeyboardInterrupt

    monkeypatch.setattr(Collection, "_write_pointer", crash)
    with pytest.raises(KeyboardInterrupt):
        coll.save()
    assert len(Collection.open(coll.path)) == 40
    monkeypatch.undo()
    coll.save()  # the next save succeeds and cleans up the orphan version
    assert len(Collection.open(coll.path)) == 45
    assert len(list(coll.path.glob("v*"))) == 1


def test_crash_while_writing_files_keeps_previous_state(coll: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    coll.delete(["d0"])
    real_save = np.save
    calls = []

    def dying_save(file, arr, *a, **k):
        calls.append(file)
        if len(calls) == 2:  # vectors written, keys half-way
            raise OSError("disk full")
        return real_save(file, arr, *a, **k)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(InputError, match=r"cannot write the collection \(disk full\); the previous version v\d+ is intact"):
        coll.save()
    monkeypatch.undo()
    assert len(Collection.open(coll.path)) == 40
    assert not list(coll.path.glob(".v*.tmp"))


@pytest.mark.parametrize("damage", ["truncate-vectors", "flip-docs", "pointer", "no-pointer", "manifest"])
def test_corruption_is_a_clear_error(coll: Collection, damage: str) -> None:
    version = coll.path / json.loads((coll.path / "CURRENT").read_text())["version"]
    if damage == "truncate-vectors":
        data = (version / "vectors.npy").read_bytes()
        (version / "vectors.npy").write_bytes(data[: len(data) // 2])
        match = "truncated"
    elif damage == "flip-docs":
        data = bytearray((version / "docs.jsonl").read_bytes())
        data[10] ^= 0x01
        (version / "docs.jsonl").write_bytes(bytes(data))
        match = "checksum"
    elif damage == "pointer":
        (coll.path / "CURRENT").write_text("{not json")
        match = "corrupt collection pointer"
    elif damage == "no-pointer":
        (coll.path / "CURRENT").unlink()
        match = "not a collection"
    else:
        (version / "manifest.json").write_text("[")
        match = "manifest"
    with pytest.raises(InputError, match=match):
        Collection.open(coll.path)


def test_model_checks(coll: Collection, tmp_path: Path) -> None:
    from conftest import build_tiny_bert
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    def tiny(hidden: int, seed: int) -> SentenceTransformer:
        path = build_tiny_bert(tmp_path / f"m{hidden}-{seed}", hidden=hidden, seed=seed)
        t = Transformer(str(path), max_seq_length=64)
        return SentenceTransformer(modules=[t, Pooling(hidden, pooling_mode="mean"), Normalize()], device="cpu")

    with pytest.raises(InputError, match="different model"):
        coll.search(["x"], model=tiny(32, seed=1))
    with pytest.raises(InputError, match="dimension mismatch"):
        coll.search(["x"], model=tiny(16, seed=0))


def test_empty_collection_and_bad_spec(tmp_path: Path, tiny_model_dir: Path, tiny_model) -> None:
    empty = Collection.create(tmp_path / "e", str(tiny_model_dir), model=tiny_model)
    assert len(Collection.open(tmp_path / "e")) == 0
    with pytest.raises(InputError, match="empty"):
        empty.search(["x"], model=tiny_model)
    with pytest.raises(InputError, match="already holds a collection"):
        Collection.create(tmp_path / "e", str(tiny_model_dir), model=tiny_model)
    with pytest.raises(InputError, match="unknown index spec"):
        Collection.create(tmp_path / "bad", str(tiny_model_dir), index_spec="warp-drive", model=tiny_model)
    assert not (tmp_path / "bad" / "CURRENT").exists()


@pytest.mark.parametrize("spec", ["Flat", "HNSW16", "int8", "milvus"])
def test_backends_inside_a_collection_match_exact(spec: str, tmp_path: Path, tiny_model_dir: Path, tiny_model) -> None:
    pytest.importorskip("pymilvus" if spec == "milvus" else "faiss" if spec != "int8" else "numpy")
    if spec == "milvus":
        pytest.importorskip("milvus_lite")
    docs = make_docs(60)
    ref = Collection.create(tmp_path / "ref", str(tiny_model_dir), index_spec="exact", model=tiny_model)
    ref.add(docs)
    c = Collection.create(tmp_path / "c", str(tiny_model_dir), index_spec=spec, model=tiny_model)
    c.add(docs)
    c.delete(["d7"])
    ref.delete(["d7"])
    c.save()
    queries = ["cats purr", "bread", "orbit rockets"]
    expected = [[h.id for h in hs] for hs in ref.search(queries, top_k=5, model=tiny_model)]
    again = Collection.open(tmp_path / "c")
    assert again.manifest["index"] == spec
    got = [[h.id for h in hs] for hs in again.search(queries, top_k=5, model=tiny_model)]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, expected, strict=True)])
    assert overlap >= 0.8


def test_metadata_filters(coll: Collection, tiny_model) -> None:
    hits = coll.search(["cats"], top_k=5, where={"topic": 1}, model=tiny_model)[0]
    assert hits and all(h.metadata["topic"] == 1 for h in hits)
    hits = coll.search(["cats"], top_k=50, where={"year": {"$gte": 2030}, "topic": [0, 2]}, model=tiny_model)[0]
    assert {h.id for h in hits} == {f"d{i}" for i in range(30, 40) if i % 4 in (0, 2)}
    for mode in ("bm25", "hybrid"):
        hits = coll.search(["bread oven"], top_k=5, mode=mode, where={"topic": 3}, model=tiny_model)[0]
        assert all(h.metadata["topic"] == 3 for h in hits)
    assert coll.search(["cats"], where={"topic": 99}, model=tiny_model) == [[]]


def test_streaming_index_resumes_after_interruption(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = make_docs(50)
    real = Collection.encode_docs
    calls: list[int] = []

    def flaky(self, texts, batch_size, show_progress, pool=None):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third chunk
        return real(self, texts, batch_size, show_progress, pool)

    monkeypatch.setattr(Collection, "encode_docs", flaky)
    with pytest.raises(KeyboardInterrupt):
        index_documents(tmp_path / "s", str(tiny_model_dir), docs, chunk_size=16, show_progress=False)
    state = json.loads((tmp_path / "s" / ".staging" / "checkpoint.json").read_text())
    assert state["done"] == 32
    calls.clear()
    coll = index_documents(tmp_path / "s", str(tiny_model_dir), docs, chunk_size=16, show_progress=False)
    assert calls == [16, 2], "only the unfinished chunks are encoded again"
    assert len(coll) == 50 and not (tmp_path / "s" / ".staging").exists()
    monkeypatch.undo()
    fresh = index_documents(tmp_path / "f", str(tiny_model_dir), docs, chunk_size=16, show_progress=False)
    np.testing.assert_allclose(np.asarray(coll._vectors), np.asarray(fresh._vectors), atol=1e-5)
    with pytest.raises(InputError, match="duplicate id"):
        index_documents(tmp_path / "f", str(tiny_model_dir), docs[:2], show_progress=False)
    assert len(index_documents(tmp_path / "f", str(tiny_model_dir), docs[:2], upsert=True, show_progress=False)) == 50


def test_index_with_worker_processes_matches_one_process(tmp_path: Path, tiny_model_dir: Path) -> None:
    docs = make_docs(40)
    one = index_documents(tmp_path / "one", str(tiny_model_dir), docs, chunk_size=16, show_progress=False)
    two = index_documents(tmp_path / "two", str(tiny_model_dir), docs, chunk_size=16, show_progress=False, processes=2)
    np.testing.assert_allclose(np.asarray(two._vectors), np.asarray(one._vectors), atol=1e-5)
    assert two._ids == one._ids
    with pytest.raises(InputError, match="processes must be >= 1"):
        index_documents(tmp_path / "bad", str(tiny_model_dir), docs, processes=0, show_progress=False)
    assert not (tmp_path / "bad").exists(), "a bad option creates nothing"


def test_read_corpus_keeps_ids_titles_and_metadata(tmp_path: Path) -> None:
    file = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "a1", "title": "Cats", "text": "They purr.", "metadata": {"src": "x"}, "year": 2020},
        {"_id": "b2", "title": "", "text": "No title here.", "metadata": {}},
    ]
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = read_corpus(tmp_path)
    assert [d["id"] for d in docs] == ["a1", "b2"]
    assert docs[0]["metadata"] == {"src": "x", "year": 2020}
    from embedforge.corpus import doc_fields

    assert doc_fields(docs[0])[1] == "Cats. They purr."
    assert doc_fields(docs[1])[1] == "No title here."


def test_join_title() -> None:
    from embedforge.corpus import join_title

    assert join_title("Cats", "They purr.") == "Cats. They purr."
    assert join_title("Do cats purr?", "Yes.") == "Do cats purr? Yes."
    assert join_title("", "Only text.") == "Only text."
    assert join_title("Only title", "") == "Only title"


def test_indexing_with_another_model_is_refused(coll: Collection, tmp_path: Path) -> None:
    from conftest import build_tiny_bert
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from embedforge.models import save_model

    hf = build_tiny_bert(tmp_path / "other-hf", seed=3)
    model = SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=64), Pooling(32, pooling_mode="mean"), Normalize()], device="cpu")
    other = save_model(model, tmp_path / "other", base_model="tiny-3")
    with pytest.raises(InputError, match="different model"):
        index_documents(coll.path, str(other), make_docs(2, start=500), show_progress=False)
    assert len(Collection.open(coll.path)) == 40


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_texts_are_refused_by_an_image_collection(tmp_path: Path, tiny_model_dir: Path, tiny_model) -> None:
    """The library refuses what the CLI refuses: texts into an image collection, the collection untouched."""
    c = Collection.create(tmp_path / "img", str(tiny_model_dir), model=tiny_model)
    c.manifest["modality"] = "image"  # what embedforge.images.index_images records
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    images = [{"id": f"p{i}.png", "text": f"p{i}.png", "metadata": {"kind": "image", "path": f"/x/p{i}.png"}} for i in range(3)]
    c.add(images, vectors=vectors)
    c.save()
    before = _files(c.path)
    again = Collection.open(c.path)
    texts = make_docs(2)
    attempts = [
        lambda: again.add(texts),
        lambda: again.add(texts, vectors=vectors[:2]),
        lambda: again.add([{"id": "new.png", "text": "new.png", "metadata": {"kind": "image"}}, texts[0]],
                          vectors=vectors[:2]),  # one text among images: nothing added
        lambda: again.upsert([{"id": "p0.png", "text": "a caption, not an image"}], vectors=vectors[:1]),
    ]
    for attempt in attempts:
        with pytest.raises(InputError, match=r"is an image collection; texts and images are not mixed \(document '"):
            attempt()
    assert len(again) == 3 and again.get("p0.png").metadata["kind"] == "image" and not again._dirty
    assert _files(c.path) == before  # byte for byte, the lock file included: no writer lock was taken
    reopened = Collection.open(c.path)
    assert reopened._ids == again._ids and np.array_equal(np.asarray(reopened._vectors), vectors)
    again.add([{"id": "p9.png", "text": "p9.png", "metadata": {"kind": "image"}}], vectors=vectors[:1])  # images still go in
    assert len(again) == 4
