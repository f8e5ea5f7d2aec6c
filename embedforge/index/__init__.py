"""Vector indexes behind one Protocol, chosen by one spec string (like faiss' ``index_factory``).

==========================  =========================================================
spec                        backend
==========================  =========================================================
``exact``                   NumPy brute force, the reference (:mod:`.exact`)
``Flat``, ``HNSW32``,       faiss ``index_factory`` strings, ``;option=value`` for
``IVF1024,PQ32`` …          efSearch / efConstruction / nprobe / k_factor (:mod:`.faiss`)
``int8``, ``binary``        quantised first pass + float rescoring, ``;rescore=R`` (:mod:`.quantized`)
``milvus[:URI]``            Milvus Lite file or Milvus server (:mod:`.milvus`)
``package.module:Class``    your own class implementing :class:`VectorIndex`
                            (:class:`BaseIndex` does the argument checks)
``auto``                    chosen by collection size, see :func:`auto_spec`
==========================  =========================================================

Backends are looked up by the spec's prefix in the registry of :mod:`.base`
(:func:`register_backend` adds one), and imported only when used.
"""

from __future__ import annotations

import math
from pathlib import Path

from embedforge.errors import InputError
from embedforge.index.base import (
    PAD_KEY,
    SPEC_HELP,
    BaseIndex,
    VectorIndex,
    backend_class,
    check_dim,
    create_index,
    open_index,
    register_backend,
)
from embedforge.index.exact import ExactIndex, exact_search

__all__ = [
    "PAD_KEY",
    "VectorIndex",
    "BaseIndex",
    "register_backend",
    "backend_class",
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


def make_index(spec: str, dim: int, *, size_hint: int = 0, milvus_uri: str | Path | None = None) -> VectorIndex:
    """Build an empty index from a spec string (see the module docstring).

    Args:
        spec: the spec; ``"auto"`` uses ``size_hint`` (the number of vectors to come).
        dim: vector dimension.
        size_hint: expected number of vectors, for ``"auto"``.
        milvus_uri: where a bare ``"milvus"`` spec (any backend storing outside the process) keeps its data.
    Raises:
        InputError: an unknown or malformed spec, a bad dimension, a missing optional package.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"empty index spec; expected {SPEC_HELP}")
    dim = check_dim(dim)
    spec = spec.strip()
    if spec.split(";")[0].strip() == "auto":
        if spec != "auto":
            raise InputError(f"'auto' takes no options, got {spec!r}")
        return make_index(auto_spec(size_hint, dim), dim, milvus_uri=milvus_uri)
    return create_index(spec, dim, default_uri=milvus_uri)


def load_index(spec: str, dim: int, path: Path, *, milvus_uri: str | Path | None = None) -> VectorIndex:
    """Reopen a persistent index saved under ``path`` (faiss) or connect to it (milvus).

    Non-persistent specs (exact, int8, binary) return an empty index for the caller to fill.
    """
    return open_index(spec.strip(), check_dim(dim), path, default_uri=milvus_uri)
