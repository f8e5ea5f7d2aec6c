"""A persistent collection on disk: ids, texts, metadata, vectors, an index and the model's manifest.

Layout (every write is crash-safe: a new version directory is written in full, then the small
``CURRENT`` pointer is replaced atomically, then old versions are removed; a process killed at
any point leaves the previous state readable)::

    DIR/CURRENT                 {"format": "embedforge-collection/1", "version": "v000004"}
    DIR/v000004/manifest.json   model + pooling/normalize/dimension/prefixes, index spec, files (bytes, crc32)
    DIR/v000004/vectors.npy     float32 (n, dim), L2-normalised, memory-mapped on open
    DIR/v000004/keys.npy        int64 (n,) index keys (never reused)
    DIR/v000004/docs.jsonl      {"id", "text", "metadata"} per row
    DIR/v000004/index/          the persistent index (faiss), if any
    DIR/v000004/bm25/           the BM25 index, cached on first use
    DIR/milvus.db               the Milvus Lite file for spec "milvus"
    DIR/.staging/               shards + checkpoint of an interrupted :func:`embedforge.ingest.index_documents`
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.corpus import Document
from embedforge.errors import InputError
from embedforge.index import VectorIndex, auto_spec, exact_search, load_index, make_index
from embedforge.io import atomic_write, write_json
from embedforge.models import embedding_dim
from embedforge.search import DEFAULT_FUSION, BM25Index, Hit, match_metadata

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedforge.ingest import index_documents, join_title, read_corpus

__all__ = ["Collection", "Hit", "FORMAT", "DocLike", "read_corpus", "index_documents", "join_title"]

logger = logging.getLogger(__name__)

FORMAT = "embedforge-collection/1"  # bump when the layout's meaning changes
FINGERPRINT_TEXTS = ("embedforge collection fingerprint", "A cat sat on the mat; the sun was warm.")
FINGERPRINT_MIN_COSINE = 0.999  # same weights give ~1.0; any other model falls far below
EXACT_SUBSET_MAX = 20_000  # filtered searches over at most this many documents scan them exactly
DEFAULT_RERANK_TOP = 30  # hits re-scored by a cross-encoder (CPU time grows linearly with it)
DATA_FILES = ("vectors.npy", "keys.npy", "docs.jsonl")

DocLike = Document | Mapping[str, Any]


def _crc_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def stored_model_name(model_name: str) -> str:
    """How a collection records its model: bundled aliases and hub ids as given, directories absolute."""
    from embedforge.models import BUNDLED_MODELS, resolve_model

    if model_name in BUNDLED_MODELS:
        return model_name
    resolved = resolve_model(model_name)
    return str(Path(resolved).resolve()) if Path(resolved).is_dir() else model_name



def _doc_fields(doc: DocLike) -> tuple[str, str, dict[str, Any]]:
    """(id, text, metadata) of a Document or a mapping with id/_id, text and optional title/metadata."""
    from embedforge.ingest import join_title  # ingest imports this module at its top

    if isinstance(doc, Document):
        meta = {"title": doc.title} if doc.title else {}
        return doc.id, join_title(doc.title, doc.text), meta
    if not isinstance(doc, Mapping):
        raise InputError(f"a document must be a Document or a mapping, got {type(doc).__name__}")
    doc_id = doc.get("id", doc.get("_id"))
    raw_text = doc.get("text")
    if doc_id is None or not isinstance(raw_text, str):
        raise InputError(f"a document needs an 'id' and a 'text' string, got keys {sorted(doc)}")
    text = raw_text
    meta = dict(doc.get("metadata") or {})
    title = doc.get("title")
    if title:
        meta.setdefault("title", title)
        text = join_title(str(title), text)
    return str(doc_id), text, meta


class Collection:
    """Documents, their vectors and an index, stored under one directory. See the module docstring.

    Changes (:meth:`add`, :meth:`upsert`, :meth:`delete`) live in memory until :meth:`save`.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.dim = int(manifest["dimension"])
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._meta: list[dict[str, Any]] = []
        self._keys = np.zeros(0, dtype=np.int64)
        self._vectors: np.ndarray = np.zeros((0, self.dim), dtype=np.float32)
        self._row: dict[str, int] = {}
        self._index: VectorIndex | None = None
        self._bm25: BM25Index | None = None
        self._model: SentenceTransformer | None = None
        self._checked_models: set[int] = set()
        self._version_dir: Path | None = None
        self._dirty = False  # in-memory changes not yet saved

    # ------------------------------------------------------------ create / open / save

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        model_name: str,
        *,
        index_spec: str = "auto",
        query_prefix: str = "",
        document_prefix: str = "",
        model: SentenceTransformer | None = None,
    ) -> Collection:
        """A new empty collection at ``path`` (which must not hold one), saved at once."""
        from embedforge.encode import encode
        from embedforge.models import load_model, model_info, read_manifest, resolve_model

        root = Path(path)
        if (root / "CURRENT").exists():
            raise InputError("already holds a collection; open it or choose another directory", root)
        resolved = resolve_model(model_name)
        stored_name = stored_model_name(model_name)
        model = model or load_model(model_name)
        info = model_info(model)
        make_index(index_spec, int(info["dimension"]), milvus_uri=root / "milvus.db")  # validate the spec early
        model_manifest = read_manifest(resolved) if Path(resolved).is_dir() else None
        fingerprint = encode(model, list(FINGERPRINT_TEXTS), normalize=True)
        manifest = {
            "format": FORMAT,
            "model": stored_name,
            "base_model": (model_manifest or {}).get("base_model", model_name),
            **info,
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
            "fingerprint": np.round(fingerprint, 6).tolist(),
            "index_spec": index_spec,
            "index": None,
            "count": 0,
            "next_key": 0,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        out = cls(root, manifest)
        out._model = model
        out._checked_models.add(id(model))
        out.save()
        return out

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Collection:
        """Reopen a saved collection; a missing, truncated or corrupt file is an InputError."""
        root = Path(path)
        pointer = root / "CURRENT"
        if not pointer.is_file():
            raise InputError("is not a collection (no CURRENT file); create one with 'embedforge index'", root)
        try:
            current = json.loads(pointer.read_text(encoding="utf-8"))
            version = root / str(current["version"])
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise InputError("corrupt collection pointer", pointer) from None
        if current.get("format") != FORMAT:
            raise InputError(f"unsupported collection format {current.get('format')!r}, expected {FORMAT!r}", pointer)
        try:
            manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"missing or corrupt collection manifest ({type(err).__name__})", version / "manifest.json") from None
        for name, meta in manifest.get("files", {}).items():
            file = version / name
            if not file.is_file() or file.stat().st_size != meta["bytes"]:
                raise InputError(f"missing or truncated collection file (expected {meta['bytes']} bytes)", file)
            if _crc_file(file) != meta["crc32"]:
                raise InputError("corrupt collection file (checksum mismatch)", file)
        out = cls(root, manifest)
        out._version_dir = version
        out._load_rows(version)
        return out

    def _load_rows(self, version: Path) -> None:
        try:
            self._vectors = np.load(version / "vectors.npy", mmap_mode="r")
            self._keys = np.load(version / "keys.npy")
        except (OSError, ValueError) as err:
            raise InputError(f"unreadable collection arrays ({err})", version) from None
        with open(version / "docs.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                self._ids.append(row["id"])
                self._texts.append(row["text"])
                self._meta.append(row.get("metadata") or {})
        n = len(self._ids)
        if self._vectors.shape != (n, self.dim) or self._keys.shape != (n,) or n != self.manifest["count"]:
            raise InputError(f"inconsistent collection: {n} docs, vectors {self._vectors.shape}, {self._keys.shape[0]} keys", version)
        self._row = {doc_id: i for i, doc_id in enumerate(self._ids)}
        spec = self.manifest.get("index")
        if spec and n:
            index = load_index(spec, self.dim, version / "index", milvus_uri=self.path / "milvus.db")
            if not index.persistent:
                index.add(self._vectors, self._keys)
            elif len(index) != n:
                logger.warning("index holds %d vectors, the collection %d: rebuilding it", len(index), n)
                index = self._build_index(spec)
            self._index = index

    def save(self) -> None:
        """Write the current state as a new version, then switch ``CURRENT`` to it (atomic)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._ensure_index()
        number = 1 + max([int(p.name[1:]) for p in self.path.glob("v[0-9]*") if p.name[1:].isdigit()] or [0])
        name = f"v{number:06d}"
        tmp = self.path / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            np.save(tmp / "vectors.npy", np.ascontiguousarray(self._vectors, dtype=np.float32))
            np.save(tmp / "keys.npy", self._keys)
            with open(tmp / "docs.jsonl", "w", encoding="utf-8") as f:
                for doc_id, text, meta in zip(self._ids, self._texts, self._meta, strict=True):
                    f.write(json.dumps({"id": doc_id, "text": text, "metadata": meta}, ensure_ascii=False) + "\n")
            if self._index is not None and self._index.persistent:
                (tmp / "index").mkdir()
                self._index.save(tmp / "index")
            if self._bm25 is not None and self._bm25.size == len(self._ids):
                self._bm25.save(tmp / "bm25")
            self.manifest.update(
                count=len(self._ids),
                index=self._index.spec if self._index is not None else None,
                updated=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                files={n: {"bytes": (tmp / n).stat().st_size, "crc32": _crc_file(tmp / n)} for n in DATA_FILES},
            )
            write_json(tmp / "manifest.json", self.manifest)
            for file in tmp.rglob("*"):
                if file.is_file():
                    with open(file, "rb") as fh:
                        os.fsync(fh.fileno())
            os.replace(tmp, self.path / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._write_pointer(name)
        self._version_dir = self.path / name
        self._dirty = False
        for old in self.path.glob("v[0-9]*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def _write_pointer(self, name: str) -> None:
        with atomic_write(self.path / "CURRENT") as f:
            json.dump({"format": FORMAT, "version": name}, f)
            f.write("\n")

    # ------------------------------------------------------------ index

    def _build_index(self, spec: str) -> VectorIndex:
        index = make_index(spec, self.dim, size_hint=len(self._ids), milvus_uri=self.path / "milvus.db")
        if hasattr(index, "drop") and len(index):
            index.drop()  # a stale Milvus collection from before a crash
        if len(self._ids):
            index.add(self._vectors, self._keys)
        return index

    def _ensure_index(self) -> None:
        requested = self.manifest["index_spec"]
        spec = auto_spec(len(self._ids), self.dim) if requested == "auto" else requested
        if self._index is None or self._index.spec != spec:
            self._index = self._build_index(spec) if self._ids else None

    # ------------------------------------------------------------ changes

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._row

    def _encode_docs(self, texts: Sequence[str], batch_size: int, show_progress: bool | None, pool: Any = None) -> np.ndarray:
        from embedforge.encode import encode

        return encode(
            self.model(), texts, batch_size=batch_size, normalize=True,
            prompt=self.manifest["document_prefix"] or None, show_progress=show_progress, pool=pool,
        )

    def add(
        self,
        docs: Iterable[DocLike],
        *,
        vectors: np.ndarray | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> int:
        """Embed and add new documents; an id already present (or repeated) is an InputError, nothing added.

        ``vectors``: precomputed document embeddings (n, dim) from the collection's model.
        """
        rows = [_doc_fields(d) for d in docs]
        seen: set[str] = set()
        for doc_id, _, _ in rows:
            if doc_id in self._row or doc_id in seen:
                raise InputError(f"duplicate id {doc_id!r}: already in the collection; use upsert() to replace it")
            seen.add(doc_id)
        if not rows:
            return 0
        if vectors is None:
            vectors = self._encode_docs([t for _, t, _ in rows], batch_size, show_progress)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(rows), self.dim):
            raise InputError(f"dimension mismatch: got vectors of shape {vectors.shape}, expected ({len(rows)}, {self.dim})")
        start = int(self.manifest["next_key"])
        keys = np.arange(start, start + len(rows), dtype=np.int64)
        if self._index is not None:
            self._index.add(vectors, keys)
        self.manifest["next_key"] = start + len(rows)
        self._vectors = np.concatenate([np.asarray(self._vectors), vectors]) if len(self._ids) else vectors
        self._keys = np.concatenate([self._keys, keys])
        for doc_id, text, meta in rows:
            self._row[doc_id] = len(self._ids)
            self._ids.append(doc_id)
            self._texts.append(text)
            self._meta.append(meta)
        self._bm25 = None
        self._dirty = True
        return len(rows)

    def delete(self, ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Remove documents by id; an unknown id is an InputError (nothing removed) unless ``missing_ok``."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        missing = [i for i in wanted if i not in self._row]
        if missing and not missing_ok:
            raise InputError(f"{len(missing)} unknown id(s), nothing deleted: {', '.join(map(repr, missing[:5]))}")
        rows = np.array(sorted(self._row[i] for i in wanted if i in self._row), dtype=np.int64)
        if not rows.size:
            return 0
        if self._index is not None:
            self._index.remove(self._keys[rows])
        keep = np.ones(len(self._ids), dtype=bool)
        keep[rows] = False
        self._vectors = np.asarray(self._vectors)[keep]
        self._keys = self._keys[keep]
        self._ids = [x for x, k in zip(self._ids, keep, strict=True) if k]
        self._texts = [x for x, k in zip(self._texts, keep, strict=True) if k]
        self._meta = [x for x, k in zip(self._meta, keep, strict=True) if k]
        self._row = {doc_id: i for i, doc_id in enumerate(self._ids)}
        self._bm25 = None
        self._dirty = True
        return int(rows.size)

    def upsert(self, docs: Iterable[DocLike], **kwargs: Any) -> int:
        """Add documents, replacing those whose id is already present."""
        docs = list(docs)
        self.delete([_doc_fields(d)[0] for d in docs], missing_ok=True)
        return self.add(docs, **kwargs)

    def get(self, doc_id: str) -> Hit:
        if doc_id not in self._row:
            raise InputError(f"unknown id {doc_id!r}")
        row = self._row[doc_id]
        return Hit(doc_id, 0.0, self._texts[row], dict(self._meta[row]))

    # ------------------------------------------------------------ queries

    def model(self, model: SentenceTransformer | None = None) -> SentenceTransformer:
        """The collection's model (loaded once from the manifest), or ``model`` after checking it is the same."""
        from embedforge.encode import encode
        from embedforge.models import load_model

        if model is None:
            if self._model is None:
                self._model = load_model(self.manifest["model"])
                self._checked_models.add(id(self._model))
            return self._model
        if id(model) in self._checked_models:
            return model
        dim = embedding_dim(model)
        if dim != self.dim:
            raise InputError(f"dimension mismatch: the model gives {dim}-dim vectors, the collection holds {self.dim}-dim ones ({self.manifest['model']})")
        probe = encode(model, list(FINGERPRINT_TEXTS), normalize=True)
        cosine = np.sum(probe * np.asarray(self.manifest["fingerprint"], dtype=np.float32), axis=1)
        if float(cosine.min()) < FINGERPRINT_MIN_COSINE:
            raise InputError(
                f"a different model than the collection's: it was embedded with {self.manifest['model']!r} "
                f"(fingerprint cosine {float(cosine.min()):.3f}); pass that model or none"
            )
        self._checked_models.add(id(model))
        return model

    def encode_queries(self, queries: Sequence[str], model: SentenceTransformer | None = None) -> np.ndarray:
        from embedforge.encode import encode

        return encode(self.model(model), list(queries), normalize=True, prompt=self.manifest["query_prefix"] or None)

    def search_vectors(self, queries: np.ndarray, k: int, *, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dense top-``k`` for query vectors: (scores (n, k) float32, rows (n, k) int64, -1 padded)."""
        self._ensure_index()
        assert self._index is not None
        if mask is not None and mask.sum() <= EXACT_SUBSET_MAX:
            rows = np.flatnonzero(mask)
            scores, found = exact_search(queries, np.asarray(self._vectors[rows]), rows.astype(np.int64), k)
            return scores, found
        scores, keys = self._index.search(queries, k, subset=None if mask is None else self._keys[mask])
        # keys grow with every add and deletions keep their order, so rows are found by bisection
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        rows = np.where((keys >= 0) & (self._keys[pos] == keys), pos, -1)
        return scores, rows.astype(np.int64)

    def bm25(self) -> BM25Index:
        """The BM25 index over the texts, built on first use and cached in the current version."""
        if self._bm25 is None:
            cached = self._version_dir / "bm25" if self._version_dir is not None and not self._dirty else None
            if cached is not None and cached.is_dir():
                try:
                    self._bm25 = BM25Index.load(cached)
                except Exception:  # a cache: rebuild rather than fail
                    self._bm25 = None
            if self._bm25 is None or self._bm25.size != len(self._ids):
                self._bm25 = BM25Index.build(self._texts)
                if cached is not None and not cached.exists():
                    tmp = cached.with_name(".bm25.tmp")  # a derived cache: written aside, renamed in
                    shutil.rmtree(tmp, ignore_errors=True)
                    self._bm25.save(tmp)
                    os.replace(tmp, cached)
        return self._bm25

    def search(
        self,
        queries: list[str],
        *,
        top_k: int = 10,
        mode: str = "dense",
        model: SentenceTransformer | None = None,
        where: Mapping[str, Any] | None = None,
        fusion: str = DEFAULT_FUSION,
        rerank: Any = None,
        rerank_top: int = DEFAULT_RERANK_TOP,
    ) -> list[list[Hit]]:
        """Top-``top_k`` hits per query, best first (see :func:`embedforge.search.search_collection`).

        Args:
            queries: query texts (the collection's query prefix is added for dense encoding).
            top_k: hits per query.
            mode: ``dense``, ``bm25`` or ``hybrid`` (dense + BM25 fused by ``fusion``: ``rrf`` or ``score``).
            model: the collection's model, already loaded (checked against its fingerprint); default: load it.
            where: metadata filter, see :func:`embedforge.search.match_metadata`.
            rerank: a CrossEncoder or its directory; re-scores the top ``max(top_k, rerank_top)``.
        """
        from embedforge.search import search_collection

        return search_collection(
            self, queries, top_k=top_k, mode=mode, model=model, where=where, fusion=fusion,
            rerank=rerank, rerank_top=rerank_top,
        )

    def hit(self, row: int, score: float) -> Hit:
        return Hit(self._ids[row], score, self._texts[row], dict(self._meta[row]))

    def text(self, row: int) -> str:
        return self._texts[row]

    def mask(self, where: Mapping[str, Any] | None) -> np.ndarray | None:
        """Bool per row: which documents' metadata match ``where`` (None: no filter)."""
        if not where:
            return None
        return np.fromiter((match_metadata(m, where) for m in self._meta), dtype=bool, count=len(self._meta))


# ---------------------------------------------------------------- backwards compatibility

_MOVED_TO_INGEST = ("read_corpus", "join_title", "index_documents")


def __getattr__(name: str) -> Any:
    """``read_corpus``, ``join_title`` and ``index_documents`` now live in :mod:`embedforge.ingest`."""
    if name in _MOVED_TO_INGEST:
        from embedforge import ingest

        return getattr(ingest, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
