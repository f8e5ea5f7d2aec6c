"""One congruence suite for every index backend, checked against the exact reference.

Data: a seeded mixture of 24 Gaussian clusters in 32 dimensions, L2-normalised (structured like
sentence embeddings: clustered, not uniform noise). Queries are perturbed database points.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from embedforge.errors import InputError
from embedforge.index import ExactIndex, VectorIndex, auto_spec, load_index, make_index
from embedforge.index.base import topk_from_scores

DIM = 32
N = 2000
K = 10

HAS_FAISS = importlib.util.find_spec("faiss") is not None
if HAS_FAISS:  # one thread: the test machine's cores are shared, and OpenMP spinning then crawls
    import faiss

    faiss.omp_set_num_threads(1)
HAS_MILVUS = importlib.util.find_spec("pymilvus") is not None and importlib.util.find_spec("milvus_lite") is not None

# spec -> minimum mean recall@10 against exact search (seeded data, so these are stable)
BACKENDS: dict[str, float] = {
    "exact": 1.0,
    "Flat": 1.0,
    "HNSW16": 0.95,
    "HNSW16;efSearch=64": 0.9,
    "IVF32,Flat": 0.9,
    "IVF32,PQ8x4,RFlat;k_factor=8": 0.85,
    "IVF32,PQ8x4": 0.3,
    "int8": 0.95,
    "binary": 0.75,
    "milvus": 0.99,
}


def _needs(spec: str) -> list[pytest.MarkDecorator]:
    if spec.startswith("milvus"):
        return [pytest.mark.skipif(not HAS_MILVUS, reason="pymilvus + milvus-lite not installed")]
    if spec not in ("exact", "int8", "binary"):
        return [pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")]
    return []


SPECS = [pytest.param(s, marks=_needs(s), id=s) for s in BACKENDS]


def clustered(n: int, dim: int, *, clusters: int = 24, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    labels = rng.integers(0, clusters, n)
    x = centers[labels] + spread * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base = clustered(N, DIM)
    rng = np.random.default_rng(1)
    queries = base[rng.choice(N, 60, replace=False)] + 0.1 * rng.standard_normal((60, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    keys = np.arange(N, dtype=np.int64) * 3 + 7  # keys are not row numbers
    return base, keys, queries.astype(np.float32)


def build(spec: str, base: np.ndarray, keys: np.ndarray, tmp_path: Path) -> VectorIndex:
    index = make_index(spec, DIM, milvus_uri=tmp_path / "milvus.db")
    index.add(base, keys)
    return index


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum()) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def reference(base: np.ndarray, keys: np.ndarray, queries: np.ndarray, k: int = K, mask: np.ndarray | None = None):
    scores = queries @ base.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    return topk_from_scores(scores, keys, k)


@pytest.mark.parametrize("spec", SPECS)
def test_recall_against_exact(spec: str, data, tmp_path: Path) -> None:
    base, keys, queries = data
    index = build(spec, base, keys, tmp_path)
    assert isinstance(index, VectorIndex)
    assert len(index) == N
    scores, found = index.search(queries, K)
    assert scores.shape == (len(queries), K) and scores.dtype == np.float32
    assert found.shape == (len(queries), K) and found.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "rows sorted by score descending"
    assert set(np.unique(found)) <= set(keys.tolist())
    ref_s, ref_k = reference(base, keys, queries)
    assert recall(found, ref_k) >= BACKENDS[spec]
    if BACKENDS[spec] == 1.0:
        np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    if spec in ("int8", "binary", "IVF32,PQ8x4,RFlat;k_factor=8"):  # rescored: true float scores
        exact_scores = np.einsum("qd,qkd->qk", queries, base[(found - 7) // 3])
        np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


@pytest.mark.parametrize("spec", SPECS)
def test_padding_when_k_exceeds_size(spec: str, data, tmp_path: Path) -> None:
    base, keys, queries = data
    index = build(spec, base[:5], keys[:5], tmp_path) if spec.split(",")[0][:3] != "IVF" else None
    if index is None:
        pytest.skip("IVF needs more training vectors than 5")
    scores, found = index.search(queries[:3], 8)
    assert (found[:, :5] >= 0).all() and (found[:, 5:] == -1).all()
    assert np.isneginf(scores[:, 5:]).all()


@pytest.mark.parametrize("spec", SPECS)
def test_remove_and_subset(spec: str, data, tmp_path: Path) -> None:
    base, keys, queries = data
    index = build(spec, base, keys, tmp_path)
    _, before = index.search(queries, K)
    gone = np.unique(before[:, :3].reshape(-1))
    assert index.remove(gone) == gone.size
    assert index.remove(gone) == 0, "removing twice removes nothing"
    assert len(index) == N - gone.size
    _, after = index.search(queries, K)
    assert not np.isin(after, gone).any()
    alive = ~np.isin(keys, gone)
    assert recall(after, reference(base, keys, queries, mask=alive)[1]) >= BACKENDS[spec] - 0.05

    rng = np.random.default_rng(2)
    subset = rng.choice(keys[alive], 300, replace=False)
    _, sub = index.search(queries, K, subset=subset)
    assert np.isin(sub[sub >= 0], subset).all()
    mask = np.isin(keys, subset)
    assert recall(sub, reference(base, keys, queries, mask=mask)[1]) >= min(0.9, BACKENDS[spec]) - 0.1


@pytest.mark.parametrize("spec", [s for s in SPECS if s.values[0] not in ("milvus",)])
def test_two_batches_equal_one(spec, data, tmp_path: Path) -> None:
    base, keys, queries = data
    one = build(spec, base, keys, tmp_path)
    two = make_index(spec, DIM)
    two.add(base[:1200], keys[:1200])
    two.add(base[1200:], keys[1200:])
    assert len(two) == N
    assert recall(two.search(queries, K)[1], one.search(queries, K)[1]) >= min(1.0, BACKENDS[spec]) - 0.1


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
@pytest.mark.parametrize("spec", ["Flat", "HNSW16", "IVF32,PQ8x4"])
def test_faiss_save_load_roundtrip(spec: str, data, tmp_path: Path) -> None:
    base, keys, queries = data
    index = build(spec, base, keys, tmp_path)
    index.remove(keys[:50])
    index.save(tmp_path)
    again = load_index(spec, DIM, tmp_path)
    assert len(again) == len(index)
    np.testing.assert_array_equal(again.search(queries, K)[1], index.search(queries, K)[1])
    with pytest.raises(InputError, match="dimension mismatch"):
        load_index(spec, DIM + 1, tmp_path)
    (tmp_path / "index.faiss").write_bytes((tmp_path / "index.faiss").read_bytes()[:100])
    with pytest.raises(InputError, match="unreadable faiss index"):
        load_index(spec, DIM, tmp_path)


@pytest.mark.skipif(not HAS_MILVUS, reason="pymilvus + milvus-lite not installed")
def test_milvus_reopens_its_file(data, tmp_path: Path) -> None:
    base, keys, queries = data
    index = build("milvus", base[:300], keys[:300], tmp_path)
    index.save(tmp_path)
    expected = index.search(queries, K)[1]
    index.close()
    again = make_index(f"milvus:{tmp_path / 'milvus.db'}", DIM)
    assert len(again) == 300
    np.testing.assert_array_equal(again.search(queries, K)[1], expected)
    again.close()
    with pytest.raises(InputError, match="dimension mismatch"):
        make_index(f"milvus:{tmp_path / 'milvus.db'}", DIM + 4)


@pytest.mark.parametrize(
    "spec",
    ["", "nonsense", "HNSWx", "exact;efSearch=3", "HNSW16;bogus=1", "HNSW16;efSearch=lots", "int8;rescore=0", "IVF32,PQ7", "auto;x=1"],
)
def test_bad_specs_are_input_errors(spec: str) -> None:
    if not HAS_FAISS and spec.startswith(("HNSW", "IVF")):
        pytest.skip("faiss not installed")
    with pytest.raises(InputError):
        make_index(spec, DIM)


def test_bad_inputs_are_input_errors(data) -> None:
    base, keys, queries = data
    index = ExactIndex(DIM)
    with pytest.raises(InputError, match="dimension mismatch"):
        index.add(base[:, :16], keys)
    with pytest.raises(InputError, match="keys"):
        index.add(base[:3], keys[:2])
    with pytest.raises(InputError, match="duplicate"):
        index.add(base[:2], np.array([1, 1]))
    with pytest.raises(InputError, match="NaN"):
        index.add(np.full((1, DIM), np.nan, dtype=np.float32), np.array([1]))
    with pytest.raises(InputError, match="k must be"):
        index.search(queries, 0)
    scores, found = index.search(queries[:2], 3)  # empty index: all padding
    assert (found == -1).all() and np.isneginf(scores).all()


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
def test_ivf_with_too_few_vectors_is_a_clear_error(data) -> None:
    base, keys, _ = data
    with pytest.raises(InputError, match="needs at least 32 vectors"):
        make_index("IVF32,Flat", DIM).add(base[:10], keys[:10])


def test_auto_spec_by_size() -> None:
    assert auto_spec(10, 384) == "exact"
    assert make_index("auto", DIM, size_hint=100).spec == "exact"
    if HAS_FAISS:
        assert auto_spec(100_000, 384) == "HNSW32"
        assert auto_spec(4_000_000, 384).startswith("IVF8192,")


# ---------------------------------------------------------------- the backend registry and user backends

USER_BACKEND = '''
from __future__ import annotations

import numpy as np

from embedforge.index import BaseIndex, exact_search

CALLS: list[str] = []


class ScanIndex(BaseIndex):
    """A user's backend: brute force over the stored vectors, with a ';scale=S' option."""

    def __init__(self, dim: int, spec: str) -> None:
        super().__init__(dim, spec)
        self.scale = float(spec.partition(";scale=")[2] or 1.0)
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.keys = np.zeros(0, dtype=np.int64)
        CALLS.append(spec)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def _add(self, vectors, keys):
        self.vectors, self.keys = np.concatenate([self.vectors, vectors]), np.concatenate([self.keys, keys])

    def _remove(self, keys):
        keep = ~np.isin(self.keys, keys)
        self.vectors, self.keys = self.vectors[keep], self.keys[keep]
        return int((~keep).sum())

    def _search(self, queries, k, subset):
        mask = None if subset is None else np.isin(self.keys, subset)
        scores, keys = exact_search(queries, self.vectors, self.keys, k, mask=mask)
        return scores * self.scale, keys

    def drop(self) -> None:
        self.vectors, self.keys = self.vectors[:0], self.keys[:0]


class NotAnIndex:
    pass


class Broken(ScanIndex):
    def __init__(self, dim: int, spec: str) -> None:
        raise RuntimeError("cannot start")
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import importlib
    import sys

    name = f"user_index_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_BACKEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def test_registry_finds_each_backend_by_prefix() -> None:
    from embedforge.index import backend_class
    from embedforge.index.quantized import QuantizedIndex

    assert backend_class("exact") is ExactIndex
    assert backend_class("int8;rescore=2") is QuantizedIndex and backend_class("binary") is QuantizedIndex
    if HAS_FAISS:
        from embedforge.index.faiss import FaissIndex

        assert backend_class("HNSW32;efSearch=16") is FaissIndex and backend_class("IVF8,PQ4x4") is FaissIndex
    if HAS_MILVUS:
        from embedforge.index.milvus import MilvusIndex

        assert backend_class("milvus:http://localhost:19530;collection=x") is MilvusIndex
    for spec in ("nonsense", "a b:c", "exact:x:y"):
        with pytest.raises(InputError):
            make_index(spec, DIM)


@pytest.mark.parametrize("spec", ["exact", "int8", "binary"])
def test_drop_and_close_are_in_the_protocol(spec: str, data) -> None:
    base, keys, queries = data
    index = make_index(spec, DIM)
    index.add(base[:100], keys[:100])
    index.drop()
    assert len(index) == 0 and (index.search(queries[:2], 3)[1] == -1).all()
    index.add(base[:10], keys[:10])  # usable again after a drop
    assert len(index) == 10
    index.close()


def test_user_backend_spec_end_to_end(user_module, data, tmp_path: Path, tiny_model_dir: Path, tiny_model) -> None:  # type: ignore[no-untyped-def]
    from embedforge.collection import Collection
    from embedforge.index import register_backend

    base, keys, queries = data
    spec = f"{user_module.__name__}:ScanIndex"
    index = make_index(spec, DIM)
    assert isinstance(index, user_module.ScanIndex) and isinstance(index, VectorIndex) and index.spec == spec
    index.add(base, keys)
    found_s, found_k = index.search(queries, K)
    ref_s, ref_k = reference(base, keys, queries)
    np.testing.assert_array_equal(found_k, ref_k)
    np.testing.assert_allclose(found_s, ref_s, atol=1e-5)
    assert make_index(f"{spec};scale=2", DIM).scale == 2.0  # options reach the class

    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(["cats purr", "rockets fly", "bread rises", "rivers flow", "cats nap"])]
    user = Collection.create(tmp_path / "user", str(tiny_model_dir), model=tiny_model, index_spec=spec)
    user.add(docs)
    user.save()
    exact = Collection.create(tmp_path / "exact", str(tiny_model_dir), model=tiny_model, index_spec="exact")
    exact.add(docs)
    queries_text = ["sleepy cats", "space launch"]
    want = [[(h.id, round(h.score, 5)) for h in hits] for hits in exact.search(queries_text, top_k=3, model=tiny_model)]
    again = Collection.open(tmp_path / "user")
    assert again.manifest["index"] == spec
    got = [[(h.id, round(h.score, 5)) for h in hits] for hits in again.search(queries_text, top_k=3, model=tiny_model)]
    assert got == want and user_module.CALLS.count(spec) >= 2  # built at create/add and rebuilt on open

    register_backend("scan", f"{user_module.__name__}:ScanIndex")
    try:
        assert isinstance(make_index("scan;scale=3", DIM), user_module.ScanIndex)
        with pytest.raises(InputError, match="already taken"):
            register_backend("exact", f"{user_module.__name__}:ScanIndex")
    finally:
        from embedforge.index import base as index_base

        index_base._BACKENDS.pop("scan", None)


def test_bad_user_specs_are_input_errors(user_module) -> None:  # type: ignore[no-untyped-def]
    name = user_module.__name__
    cases = {
        "no_such_module_for_embedforge_tests:Index": "cannot import module",
        f"{name}:Missing": "has no class 'Missing'",
        f"{name}:NotAnIndex": "is not a vector index",
        f"{name}:Broken": "RuntimeError: cannot start",
        f"{name}:CALLS": "has no class",
    }
    for spec, message in cases.items():
        with pytest.raises(InputError, match=message):
            make_index(spec, DIM)
