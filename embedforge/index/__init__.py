"""Vector indexes behind one Protocol, chosen by one spec string (like faiss' ``index_factory``).

==========================  =========================================================
spec                        backend
==========================  =========================================================
``exact``                   NumPy brute force, the reference (:mod:`.exact`)
``Flat``, ``HNSW32``,       faiss ``index_factory`` strings, ``;option=value`` for
``IVF1024,PQ32`` …          efSearch / efConstruction / nprobe / k_factor (:mod:`.faiss`)
``int8``, ``binary``        quantised first pass + float rescoring, ``;rescore=R`` (:mod:`.quantized`)
``milvus[:URI]``            Milvus Lite file or Milvus server (:mod:`.milvus`)
``auto``                    chosen by collection size, see :func:`auto_spec`
==========================  =========================================================
"""

from __future__ import annotations

import math
from pathlib import Path

from embedforge.errors import InputError
from embedforge.index.base import PAD_KEY, VectorIndex
from embedforge.index.exact import ExactIndex, exact_search

__all__ = [
    "PAD_KEY",
    "VectorIndex",
    "ExactIndex",
    "exact_search",
    "make_index",
    "load_index",
    "auto_spec",
    "AUTO_EXACT_MAX",
    "AUTO_HNSW_MAX",
]

AUTO_EXACT_MAX = 50_000  # up to here brute force answers in milliseconds and needs no build
AUTO_HNSW_MAX = 2_000_000  # up to here HNSW32 (float vectors in RAM + graph, ~1.7 kB/vector at d=384)


def auto_spec(n: int, dim: int) -> str:
    """The index ``"auto"`` resolves to for ``n`` vectors of dimension ``dim``.

    ``exact`` below :data:`AUTO_EXACT_MAX`; ``HNSW32`` below :data:`AUTO_HNSW_MAX`; above that an
    IVF with ``nlist = 2^round(log2(4·√n))`` lists and 8-bit scalar codes (4× smaller than float).
    Falls back to ``exact`` when faiss is not installed.
    """
    if n < AUTO_EXACT_MAX:
        return "exact"
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "exact"
    if n < AUTO_HNSW_MAX:
        return "HNSW32"
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    return f"IVF{nlist},SQ8"


def _kind(spec: str) -> str:
    head = spec.split(";")[0].strip()
    if head == "exact":
        return "exact"
    if head in ("int8", "binary"):
        return "quantized"
    if head == "milvus" or head.startswith("milvus:"):
        return "milvus"
    if head == "auto":
        return "auto"
    return "faiss"


def make_index(spec: str, dim: int, *, size_hint: int = 0, milvus_uri: str | Path | None = None) -> VectorIndex:
    """Build an empty index from a spec string (see the module docstring).

    Args:
        spec: the spec; ``"auto"`` uses ``size_hint`` (the number of vectors to come).
        dim: vector dimension.
        size_hint: expected number of vectors, for ``"auto"``.
        milvus_uri: where a bare ``"milvus"`` spec keeps its Milvus Lite file.
    Raises:
        InputError: an unknown or malformed spec, a bad dimension, a missing optional package.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"empty index spec; expected {_SPEC_HELP}")
    if int(dim) != dim or dim < 1:
        raise InputError(f"dimension must be a positive integer, got {dim}")
    spec = spec.strip()
    kind = _kind(spec)
    if kind == "auto":
        if spec != "auto":
            raise InputError(f"'auto' takes no options, got {spec!r}")
        return make_index(auto_spec(size_hint, dim), dim, milvus_uri=milvus_uri)
    if kind == "exact":
        if spec != "exact":
            raise InputError(f"'exact' takes no options, got {spec!r}")
        return ExactIndex(dim)
    if kind == "quantized":
        from embedforge.index.quantized import QuantizedIndex

        return QuantizedIndex(dim, spec)
    if kind == "milvus":
        from embedforge.index.milvus import MilvusIndex

        return MilvusIndex(dim, spec, default_uri=milvus_uri)
    if not _looks_like_faiss(spec):
        raise InputError(f"unknown index spec {spec!r}; expected {_SPEC_HELP}")
    from embedforge.index.faiss import FaissIndex

    return FaissIndex(dim, spec)


def load_index(spec: str, dim: int, path: Path, *, milvus_uri: str | Path | None = None) -> VectorIndex:
    """Reopen a persistent index saved under ``path`` (faiss) or connect to it (milvus).

    Non-persistent specs (exact, int8, binary) return an empty index for the caller to fill.
    """
    kind = _kind(spec)
    if kind == "faiss":
        from embedforge.index.faiss import FaissIndex

        return FaissIndex.load(path, dim, spec)
    return make_index(spec, dim, milvus_uri=milvus_uri)


_SPEC_HELP = "'auto', 'exact', a faiss factory string ('Flat', 'HNSW32', 'IVF1024,PQ32'), 'int8', 'binary' or 'milvus[:URI]'"
_FAISS_WORDS = ("Flat", "HNSW", "IVF", "PQ", "SQ", "LSH", "OPQ", "PCA", "IDMap", "NSG", "RFlat", "Refine", "LSQ", "RQ", "ITQ", "L2norm")


def _looks_like_faiss(spec: str) -> bool:
    factory = spec.split(";")[0]
    return all(any(part.strip().startswith(w) for w in _FAISS_WORDS) for part in factory.split(","))
