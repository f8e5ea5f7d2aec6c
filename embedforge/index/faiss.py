"""FAISS indexes built from a faiss ``index_factory`` string, plus our search-time options.

Spec grammar: ``FACTORY[;option=value...]``, e.g. ``"Flat"``, ``"HNSW32"``,
``"HNSW32;efSearch=128"``, ``"IVF1024,PQ32"``, ``"IVF1024,PQ32,RFlat;nprobe=32;k_factor=4"``.
The factory part goes to ``faiss.index_factory(dim, FACTORY, METRIC_INNER_PRODUCT)``
unchanged; the options are:

* ``efSearch`` (HNSW beam width at query time; default 128), ``efConstruction`` (default 80);
* ``nprobe`` (IVF lists visited per query; default ``clamp(nlist / 16, 16, nlist)``);
* ``k_factor`` (``RFlat`` refinement: re-rank ``k * k_factor`` candidates exactly; default 4).

Indexes without their own ids (Flat, HNSW) are wrapped in ``IndexIDMap`` so every backend
returns the caller's int64 keys. HNSW and RFlat cannot delete in faiss, so removed keys become
tombstones that an ``IDSelector`` hides at search time (``len`` counts only live vectors).

This is the package's one place that builds a faiss index: collections get it through
:func:`embedforge.index.make_index`, :mod:`embedforge.mine` builds its IVF index here too
(training on its own sample with :meth:`FaissIndex.train`, range search for thresholds).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import InputError
from embedforge.index.base import PAD_KEY, BaseIndex, check_vectors, empty_result

__all__ = ["FaissIndex", "import_faiss", "parse_faiss_spec"]

DEFAULT_EF_SEARCH = 128  # HNSW beam at query time: recall@10 ~0.95+ on 1M sentence vectors with M=32
# HNSW beam while building (faiss: 40). On 1M vectors 160 took 1.6x the build time and raised recall@10
# at efSearch 48 from 0.933 to 0.963 (BENCHMARKS.md, ann-hnsw): pass ";efConstruction=160" when build time is cheap.
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_K_FACTOR = 4  # RFlat: exact re-rank of 4k candidates
INDEX_FILE = "index.faiss"
TOMBSTONE_FILE = "index.deleted.npy"
_OPTIONS = {"efSearch": int, "efConstruction": int, "nprobe": int, "k_factor": float}


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as err:
        raise InputError(
            "this index needs faiss: pip install 'embedforge[search]' (or faiss-cpu); "
            "the 'exact' index works without it"
        ) from err
    return faiss


def parse_faiss_spec(spec: str) -> tuple[str, dict[str, float]]:
    """Split ``"FACTORY;opt=v;..."`` into the factory string and typed options."""
    factory, *rest = [part.strip() for part in spec.split(";")]
    options: dict[str, float] = {}
    for item in rest:
        name, sep, value = item.partition("=")
        if not sep or name not in _OPTIONS:
            raise InputError(f"unknown index option {item!r} in {spec!r}; expected one of {', '.join(_OPTIONS)}=VALUE")
        try:
            options[name] = _OPTIONS[name](value)
        except ValueError:
            raise InputError(f"index option {name} needs a number, got {value!r} in {spec!r}") from None
    if not factory:
        raise InputError(f"empty faiss factory string in {spec!r}")
    return factory, options


def _ivf_min_train(factory: str) -> int:
    """Fewest training vectors a factory string needs (nlist for IVF, 256 for 8-bit PQ)."""
    need = 0
    ivf = re.search(r"IVF(\d+)", factory)
    if ivf:
        need = max(need, int(ivf.group(1)))
    pq = re.search(r"PQ\d+(?:x(\d+))?", factory)
    if pq:
        need = max(need, 2 ** int(pq.group(1) or 8))
    return need


class _KeySelector:
    """A faiss IDSelector plus what it means in keys: ``keep`` these keys, or drop them."""

    def __init__(self, sel: Any, keys: np.ndarray, *, keep: bool) -> None:
        self.faiss, self.keys, self.keep = sel, keys, keep


def selector_mask(selector: _KeySelector, keys: np.ndarray) -> np.ndarray:
    """Which of ``keys`` the selector lets through (bool array)."""
    inside = np.isin(keys, selector.keys)
    return inside if selector.keep else ~inside


class FaissIndex(BaseIndex):
    """A faiss index (inner product) behind the :class:`~embedforge.index.base.VectorIndex` Protocol."""

    persistent = True

    def __init__(self, dim: int, spec: str, *, _index: Any = None) -> None:
        faiss = import_faiss()
        super().__init__(dim, spec)
        self.factory, self.options = parse_faiss_spec(spec)
        if _index is not None:
            self._index = _index
        else:
            try:
                index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as err:
                msg = str(err).strip().splitlines()[-1] if str(err).strip() else ""
                raise InputError(f"faiss cannot build index {self.factory!r} for dimension {dim}: {msg}") from None
            if not isinstance(faiss.downcast_index(index), faiss.IndexIVF | faiss.IndexIDMap):
                index = faiss.IndexIDMap(index)
            self._index = index
        self._hnsw = self._find_hnsw()
        if self._hnsw is not None and _index is None:
            self._hnsw.efConstruction = int(self.options.get("efConstruction", DEFAULT_EF_CONSTRUCTION))
        self._deleted = np.zeros(0, dtype=np.int64)  # HNSW tombstones, sorted

    # -- internals

    def _unwrapped(self) -> Any:
        """The index inside our ``IndexIDMap`` wrapper, downcast to its concrete type."""
        faiss = import_faiss()
        index = faiss.downcast_index(self._index)
        return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index

    def _find_hnsw(self) -> Any:
        faiss = import_faiss()
        inner = self._unwrapped()
        return inner.hnsw if isinstance(inner, faiss.IndexHNSW) else None

    def _search_params(self, selector: Any) -> Any:
        faiss = import_faiss()
        ivf = faiss.try_extract_index_ivf(self._index)
        if self._hnsw is not None:
            params = faiss.SearchParametersHNSW()
            params.efSearch = int(self.options.get("efSearch", DEFAULT_EF_SEARCH))
        elif ivf is not None:
            params = faiss.SearchParametersIVF()
            default = min(ivf.nlist, max(16, ivf.nlist // 16))
            params.nprobe = int(self.options.get("nprobe", default))
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector.faiss
        if isinstance(self._unwrapped(), faiss.IndexRefine):
            outer = faiss.IndexRefineSearchParameters()
            outer.k_factor = float(self.options.get("k_factor", DEFAULT_K_FACTOR))
            outer.base_index_params = params
            if selector is not None:
                # IndexIDMap translates only the outer selector; the refine index hands the base
                # its own parameters, so give the base a selector on internal positions instead.
                id_map = faiss.vector_to_array(faiss.downcast_index(self._index).id_map)
                positions = np.flatnonzero(selector_mask(selector, id_map)).astype(np.int64)
                params.sel = faiss.IDSelectorBatch(positions)
                return outer, (params, positions, params.sel)
            return outer, params
        return params, None

    # -- Protocol

    def __len__(self) -> int:
        return int(self._index.ntotal) - int(self._deleted.shape[0])

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def train(self, vectors: np.ndarray, *, iterations: int | None = None, seed: int | None = None) -> None:
        """Train the index's quantisers (IVF lists, PQ / SQ codes) on ``vectors`` (n, dim).

        A sample of what will be added is enough; :meth:`add` trains on its first batch when
        this was not called. ``iterations`` and ``seed`` set the IVF k-means (faiss' defaults
        otherwise: 25 iterations, seed 1234).
        """
        faiss = import_faiss()
        vectors = check_vectors(vectors, self.dim)
        need = _ivf_min_train(self.factory)
        if vectors.shape[0] < need:
            raise InputError(
                f"index {self.factory!r} needs at least {need} vectors to train, got {vectors.shape[0]}; "
                "use a smaller IVF/PQ size, 'HNSW32', 'exact' or 'auto'"
            )
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            if iterations is not None:
                ivf.cp.niter = int(iterations)
            if seed is not None:
                ivf.cp.seed = int(seed)
        self._index.train(vectors)

    def _add(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        if not self._index.is_trained:
            self.train(vectors)
        self._index.add_with_ids(vectors, keys)

    def _remove(self, keys: np.ndarray) -> int:
        faiss = import_faiss()
        if not self._index.ntotal:
            return 0
        if not self._deleted.size:
            try:
                return int(self._index.remove_ids(faiss.IDSelectorBatch(keys)))
            except RuntimeError:
                pass  # HNSW, RFlat: no removal in faiss -> tombstones
        id_map = faiss.vector_to_array(faiss.downcast_index(self._index).id_map)
        fresh = np.setdiff1d(np.intersect1d(keys, id_map), self._deleted)
        self._deleted = np.union1d(self._deleted, fresh)
        return int(fresh.shape[0])

    def _selector(self, subset: np.ndarray | None, keep: list[Any]) -> _KeySelector | None:
        """What a query may return: ``subset`` minus tombstones, or everything but the tombstones (None: all)."""
        faiss = import_faiss()
        if subset is not None:
            allowed = np.setdiff1d(subset, self._deleted)
            return _KeySelector(faiss.IDSelectorBatch(np.ascontiguousarray(allowed)), allowed, keep=True)
        if self._deleted.size:
            inner = faiss.IDSelectorBatch(self._deleted)
            keep.append(inner)  # keeps the wrapped selector alive during the call
            return _KeySelector(faiss.IDSelectorNot(inner), self._deleted, keep=False)
        return None

    def _search(self, queries: np.ndarray, k: int, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if not len(self):
            return empty_result(queries.shape[0], k)
        keep: list[Any] = []  # keeps selector objects alive during the call
        selector = self._selector(subset, keep)
        if selector is not None and selector.keep and not selector.keys.size:
            return empty_result(queries.shape[0], k)
        params, inner_params = self._search_params(selector)
        keep.append(inner_params)
        scores, keys = self._index.search(queries, k, params=params)
        scores = np.asarray(scores, dtype=np.float32)
        keys = np.asarray(keys, dtype=np.int64)
        scores[keys == PAD_KEY] = -np.inf
        return scores, keys

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every live vector with ``q · x >= threshold`` per query, faiss' contract: (lims (n + 1,)
        int64, scores (total,) float32, keys (total,) int64), query i's results at ``lims[i]:lims[i + 1]``.

        Approximate for IVF (only ``nprobe`` lists are visited); not every faiss index supports it.
        """
        queries = check_vectors(queries, self.dim, "queries")
        keep: list[Any] = []
        params, inner_params = self._search_params(self._selector(None, keep))
        keep.append(inner_params)
        try:
            lims, scores, keys = self._index.range_search(queries, float(threshold), params=params)
        except RuntimeError as err:
            msg = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            raise InputError(f"faiss index {self.factory!r} cannot range-search: {msg}") from None
        return np.asarray(lims, dtype=np.int64), np.asarray(scores, dtype=np.float32), np.asarray(keys, dtype=np.int64)

    def drop(self) -> None:
        self._index.reset()  # keeps what training learnt (IVF lists, codebooks)
        self._deleted = np.zeros(0, dtype=np.int64)

    def save(self, path: Path) -> None:
        from embedforge.io import atomic_write, save_npy

        faiss = import_faiss()
        data = faiss.serialize_index(self._index)  # (bytes,) uint8
        with atomic_write(Path(path) / INDEX_FILE, "wb") as f:
            f.write(data.tobytes())
        save_npy(Path(path) / TOMBSTONE_FILE, self._deleted)

    @classmethod
    def open(cls, spec: str, dim: int, path: Path, *, default_uri: str | Path | None = None) -> FaissIndex:
        faiss = import_faiss()
        file = Path(path) / INDEX_FILE
        try:
            raw = np.frombuffer(file.read_bytes(), dtype=np.uint8)
            index = faiss.deserialize_index(raw)
        except (OSError, RuntimeError) as err:
            raise InputError(f"unreadable faiss index ({type(err).__name__}); rebuild it with 'embedforge index'", file) from None
        if index.d != dim:
            raise InputError(f"dimension mismatch: the faiss index has dimension {index.d}, expected {dim}", file)
        out = cls(dim, spec, _index=index)
        tomb = Path(path) / TOMBSTONE_FILE
        if tomb.is_file():
            out._deleted = _read_tombstones(tomb, out._index)
        return out


def _read_tombstones(file: Path, index: Any) -> np.ndarray:
    """The removed keys saved beside an index: sorted, distinct keys of that index, else an InputError."""
    faiss = import_faiss()
    try:
        keys = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"unreadable tombstone file ({type(err).__name__})", file) from None
    if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
        raise InputError(f"corrupt tombstone file (expected a 1-D integer array, got {keys.dtype} {keys.shape})", file)
    keys = keys.astype(np.int64)
    if not keys.size:
        return keys
    inner = faiss.downcast_index(index)
    id_map = faiss.vector_to_array(inner.id_map) if isinstance(inner, faiss.IndexIDMap) else None
    if np.any(np.diff(keys) <= 0) or keys[0] < 0 or (id_map is not None and not np.isin(keys, id_map).all()):
        raise InputError("corrupt tombstone file (keys not sorted, not distinct, or not in the index)", file)
    return keys
