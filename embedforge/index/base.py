"""The vector-index Protocol, the base class of the bundled backends, and the backend registry.

An index stores float32 vectors under caller-chosen int64 keys and answers top-k queries by
inner product (cosine similarity when the vectors are L2-normalised, as collections store them).
The one return type, as in faiss::

    scores, keys = index.search(queries, k)   # (n, k) float32, (n, k) int64, -1 padded

Rows are sorted by score descending; where fewer than ``k`` vectors exist (or pass the
``subset`` filter) the tail is padded with key ``-1`` and score ``-inf``.

Backends are found by the spec's prefix (the text before the first ``;`` or ``:``) in a
registry (:func:`register_backend`); a faiss ``index_factory`` string falls through to faiss,
and ``package.module:ClassName[;options]`` names a user's own class, imported when first used.
A backend class is built with ``cls.from_spec(spec, dim, default_uri=...)`` when it has that
classmethod (:class:`BaseIndex` does), else ``cls(dim, spec)``; a persistent one is reopened
with ``cls.open(spec, dim, path, default_uri=...)``. The full spec string is handed over, so a
class parses its own ``;option=value`` parts, and it must keep it as ``spec`` (the collection
records it and reopens the index with it).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from embedforge.errors import InputError
from embedforge.vectors import as_embeddings

__all__ = [
    "VectorIndex",
    "BaseIndex",
    "PAD_KEY",
    "check_dim",
    "check_vectors",
    "check_keys",
    "check_k",
    "empty_result",
    "topk_from_scores",
    "register_backend",
    "backend_class",
    "create_index",
    "open_index",
    "looks_like_faiss",
]

PAD_KEY = -1  # the key of an empty result slot (faiss' convention)


@runtime_checkable
class VectorIndex(Protocol):
    """What a collection needs from a vector index. Backends: exact, faiss, quantized, milvus.

    ``persistent`` says whether :meth:`save` writes the index itself (faiss, milvus) or whether
    the owner rebuilds it from the stored vectors on load (exact, quantized: building is a copy).
    """

    dim: int
    spec: str  # the spec string that :func:`embedforge.index.make_index` builds this index from
    persistent: bool

    def __len__(self) -> int:
        """Number of live (not removed) vectors."""
        ...

    def add(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        """Add ``vectors`` (n, dim) float32 under ``keys`` (n,) int64; keys must be new and >= 0."""
        ...

    def remove(self, keys: np.ndarray) -> int:
        """Remove the vectors with these keys (unknown keys are ignored); returns how many went."""
        ...

    def search(
        self, queries: np.ndarray, k: int, *, subset: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: (scores (n, k) float32, keys (n, k) int64, -1 padded).

        ``subset``: when given, only vectors whose key is in this int64 array may be returned.
        """
        ...

    def save(self, path: Path) -> None:
        """Write the index under the directory ``path`` (no-op for non-persistent indexes)."""
        ...

    def drop(self) -> None:
        """Delete every vector, in storage outside this process too (a Milvus collection); ``len`` becomes 0."""
        ...

    def close(self) -> None:
        """Release connections and handles (a no-op for in-process indexes); the index is not used after."""
        ...


def check_dim(dim: int) -> int:
    if isinstance(dim, bool) or int(dim) != dim or dim < 1:
        raise InputError(f"dimension must be a positive integer, got {dim}")
    return int(dim)


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (n, dim) array (one (dim,) vector is one row); an InputError otherwise."""
    arr = np.asarray(vectors)
    if arr.ndim == 1 and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim == 2 and arr.shape[1] != dim:
        raise InputError(f"dimension mismatch: {what} have dimension {arr.shape[1]}, the index has {dim}")
    if arr.ndim == 2 and not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what} must be floating point, got {arr.dtype}")
    return as_embeddings(arr, what)  # 2-D, finite, contiguous float32


def check_keys(keys: np.ndarray, n: int) -> np.ndarray:
    """``keys`` as a contiguous int64 (n,) array of distinct non-negative values."""
    arr = np.ascontiguousarray(np.asarray(keys).reshape(-1))
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"keys must be integers, got {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.shape[0] != n:
        raise InputError(f"{arr.shape[0]} keys for {n} vectors")
    if n and arr.min() < 0:
        raise InputError("keys must be >= 0 (-1 marks an empty result slot)")
    if np.unique(arr).shape[0] != n:
        raise InputError("duplicate keys in one add() call")
    return arr


def check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise InputError(f"k must be a positive integer, got {k}")
    return int(k)


def as_key_array(keys: np.ndarray) -> np.ndarray:
    """Keys to look up or remove as a contiguous int64 (n,) array."""
    return np.ascontiguousarray(np.asarray(keys, dtype=np.int64).reshape(-1))


def empty_result(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All-padding result: scores -inf, keys -1."""
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), PAD_KEY, dtype=np.int64)


def topk_from_scores(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of a dense (n, m) score matrix whose columns carry ``keys`` (m,); -inf columns never win.

    Ties are broken by the smaller key first, so every backend's reference order is deterministic.
    """
    n, m = scores.shape
    out_s, out_k = empty_result(n, k)
    if m == 0:
        return out_s, out_k
    kk = min(k, m)
    if kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]  # (n, kk) unordered
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    part_scores = np.take_along_axis(scores, part, axis=1)  # (n, kk)
    part_keys = keys[part]  # (n, kk)
    order = np.lexsort((part_keys, -part_scores), axis=1)  # by score desc, then key asc
    sorted_scores = np.take_along_axis(part_scores, order, axis=1)
    sorted_keys = np.take_along_axis(part_keys, order, axis=1)
    valid = np.isfinite(sorted_scores)
    out_s[:, :kk] = np.where(valid, sorted_scores, -np.inf)
    out_k[:, :kk] = np.where(valid, sorted_keys, PAD_KEY)
    return out_s, out_k



class BaseIndex:
    """The argument checks every backend shares, done once: subclasses implement ``_add``,
    ``_remove``, ``_search``, ``__len__`` and ``drop`` on checked arguments.

    ``add`` gets (n, dim) float32 vectors and distinct keys >= 0 (an empty batch never reaches
    ``_add``); ``_remove`` a non-empty int64 key array; ``_search`` at least one (n, dim) float32
    query, ``k >= 1`` and ``subset`` as a sorted, distinct, non-empty int64 array or None (an
    empty subset is answered here, with padding).
    """

    persistent = False

    def __init__(self, dim: int, spec: str) -> None:
        self.dim = check_dim(dim)
        self.spec = spec

    @classmethod
    def from_spec(cls, spec: str, dim: int, *, default_uri: str | Path | None = None) -> BaseIndex:
        """A new, empty index; ``default_uri``: where an out-of-process store (Milvus Lite) goes when the spec names none."""
        return cls(dim, spec)

    @classmethod
    def open(cls, spec: str, dim: int, path: Path, *, default_uri: str | Path | None = None) -> BaseIndex:
        """Reopen what :meth:`save` wrote under ``path``; non-persistent indexes come back empty, for the owner to fill."""
        return cls.from_spec(spec, dim, default_uri=default_uri)

    def __len__(self) -> int:
        raise NotImplementedError

    def _vectors_to_add(self, vectors: np.ndarray) -> np.ndarray:
        return check_vectors(vectors, self.dim)

    def add(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        vectors = self._vectors_to_add(vectors)
        keys = check_keys(keys, vectors.shape[0])
        if vectors.shape[0]:
            self._add(vectors, keys)

    def remove(self, keys: np.ndarray) -> int:
        keys = as_key_array(keys)
        return int(self._remove(keys)) if keys.size else 0

    def search(
        self, queries: np.ndarray, k: int, *, subset: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        k = check_k(k)
        queries = check_vectors(queries, self.dim, "queries")
        if subset is not None:
            subset = np.unique(as_key_array(subset))  # sorted, distinct
        if not queries.shape[0] or (subset is not None and not subset.size):
            return empty_result(queries.shape[0], k)
        return self._search(queries, k, subset)

    def save(self, path: Path) -> None:
        return None  # non-persistent: rebuilt from the owner's vectors

    def drop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None

    def _add(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        raise NotImplementedError

    def _remove(self, keys: np.ndarray) -> int:
        raise NotImplementedError

    def _search(self, queries: np.ndarray, k: int, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


# ---------------------------------------------------------------- the backend registry

# spec prefix -> "module:Class", imported on first use (optional dependencies stay optional)
_BACKENDS: dict[str, str] = {
    "exact": "embedforge.index.exact:ExactIndex",
    "int8": "embedforge.index.quantized:QuantizedIndex",
    "binary": "embedforge.index.quantized:QuantizedIndex",
    "milvus": "embedforge.index.milvus:MilvusIndex",
}
FAISS_BACKEND = "embedforge.index.faiss:FaissIndex"  # any faiss index_factory string
_FAISS_WORDS = ("Flat", "HNSW", "IVF", "PQ", "SQ", "LSH", "OPQ", "PCA", "IDMap", "NSG", "RFlat", "Refine", "LSQ", "RQ", "ITQ", "L2norm")
_CLASS_SPEC = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")  # package.module:ClassName
_REQUIRED = ("__len__", "add", "remove", "search", "save", "drop", "close")
SPEC_HELP = (
    "'auto', 'exact', a faiss factory string ('Flat', 'HNSW32', 'IVF1024,PQ32'), 'int8', 'binary', "
    "'milvus[:URI]' or 'package.module:ClassName' (your own index class)"
)


def register_backend(prefix: str, target: str) -> None:
    """Make specs starting with ``prefix`` build ``target`` (``"package.module:ClassName"``, imported when used)."""
    if not re.fullmatch(r"[A-Za-z_][\w-]*", prefix) or prefix in ("auto", *_BACKENDS):
        raise InputError(f"cannot register index prefix {prefix!r}: not a plain name, or already taken")
    if not _CLASS_SPEC.fullmatch(target):
        raise InputError(f"index backend must be 'package.module:ClassName', got {target!r}")
    _BACKENDS[prefix] = target


def looks_like_faiss(spec: str) -> bool:
    """Whether every comma-separated part of the spec's factory string starts with a faiss index word."""
    factory = spec.split(";")[0]
    return all(any(part.strip().startswith(w) for w in _FAISS_WORDS) for part in factory.split(","))


def _import_backend(target: str, spec: str) -> type:
    module_name, _, name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"index spec {spec!r}: cannot import module {module_name!r} ({err})") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise InputError(f"index spec {spec!r}: module {module_name!r} has no class {name!r}")
    missing = [m for m in _REQUIRED if not callable(getattr(cls, m, None))]
    if missing or not hasattr(cls, "persistent"):
        lacks = ", ".join(missing + ([] if hasattr(cls, "persistent") else ["persistent"]))
        raise InputError(f"index spec {spec!r}: {target} is not a vector index (it lacks {lacks}; see VectorIndex)")
    return cls


def backend_class(spec: str) -> type:
    """The class a spec names: a registered prefix, ``package.module:ClassName``, else faiss."""
    head = spec.split(";", 1)[0].strip()
    prefix = head.split(":", 1)[0]
    if prefix in _BACKENDS:
        return _import_backend(_BACKENDS[prefix], spec)
    if ":" in head:
        if not _CLASS_SPEC.fullmatch(head):
            raise InputError(f"unknown index spec {spec!r}; expected {SPEC_HELP}")
        return _import_backend(head, spec)
    if head and looks_like_faiss(head):
        return _import_backend(FAISS_BACKEND, spec)
    raise InputError(f"unknown index spec {spec!r}; expected {SPEC_HELP}")


def _built(cls: type, spec: str, make: Callable[[], Any]) -> VectorIndex:
    """``make()``, checked to give a VectorIndex; a user class's own failure becomes an InputError naming the spec."""
    try:
        index = make()
    except InputError:
        raise
    except Exception as err:
        if cls.__module__.startswith("embedforge."):
            raise  # our own backends: a bug, not a bad spec
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"index spec {spec!r}: {type(err).__name__}: {first}") from err
    if not isinstance(index, VectorIndex):
        raise InputError(f"index spec {spec!r}: built a {type(index).__name__}, which is not a VectorIndex (dim, spec, persistent, methods)")
    return index


def create_index(spec: str, dim: int, *, default_uri: str | Path | None = None) -> VectorIndex:
    """A new, empty index of the backend ``spec`` names (see the module docstring)."""
    cls = backend_class(spec)
    build = getattr(cls, "from_spec", None)
    if callable(build):
        return _built(cls, spec, lambda: build(spec, dim, default_uri=default_uri))
    return _built(cls, spec, lambda: cls(dim, spec))


def open_index(spec: str, dim: int, path: Path, *, default_uri: str | Path | None = None) -> VectorIndex:
    """Reopen the index saved under ``path`` (persistent backends) or a new empty one (the others)."""
    cls = backend_class(spec)
    reopen = getattr(cls, "open", None)
    if not callable(reopen):
        return create_index(spec, dim, default_uri=default_uri)
    return _built(cls, spec, lambda: reopen(spec, dim, path, default_uri=default_uri))
