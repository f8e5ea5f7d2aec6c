"""A persistent collection on disk: ids, texts, metadata, vectors, an index and the model's manifest.

Layout (every write is crash-safe: a new version directory is written in full, then the small
``CURRENT`` pointer is replaced atomically, then old versions are removed; a process killed at
any point leaves the previous state readable)::

    DIR/CURRENT                 {"format": "embedforge-collection/1", "version": "v000004"}
    DIR/.lock                   the writer lock (flock) and its holder: pid, host, start time
    DIR/v000004/.embedforge-version   our marker: only marked vNNNNNN directories are ever removed
    DIR/v000004/manifest.json   model + pooling/normalize/dimension/prefixes, index spec, files (bytes, crc32), its own checksum
    DIR/v000004/vectors.npy     float32 (n, dim), L2-normalised, memory-mapped on open
    DIR/v000004/keys.npy        int64 (n,) index keys (never reused)
    DIR/v000004/docs.jsonl      {"id", "text", "metadata"} per row
    DIR/v000004/index/          the persistent index (faiss), if any
    DIR/v000004/bm25/           the BM25 index, when one was built before the save (else built in memory)
    DIR/v000004/rerank/NAME.vectors.npy, NAME.keys.npy
                                a bi-encoder re-ranker's document vectors by key (:meth:`Collection.store_rerank_vectors`)
    DIR/milvus.db               the Milvus Lite file for spec "milvus"
    DIR/.staging/               shards + checkpoint of an interrupted :func:`embedforge.ingest.index_documents`

One writer at a time (:mod:`embedforge.lock`); readers take no lock and never write. Every file of
a version except the manifest is in the manifest's ``files`` table and checked on open, and the
manifest carries a crc32 of its own canonical JSON; a file not in the table, a missing table or
key, a wrong size or checksum is an :class:`InputError`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.corpus import DocLike, doc_fields
from embedforge.errors import InputError
from embedforge.index import VectorIndex, auto_spec, exact_search, load_index, make_index
from embedforge.io import atomic_write, write_json
from embedforge.lock import LOCK_FILE, write_lock
from embedforge.models import embedding_dim
from embedforge.query import DEFAULT_FUSION, BM25Index, Hit, match_metadata, search_collection
from embedforge.rerank.model import DEFAULT_RERANK_DEPTH, BiEncoderReranker, StoredVectorsReranker

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["Collection", "FORMAT", "IMAGE_MODALITY"]

logger = logging.getLogger(__name__)

FORMAT = "embedforge-collection/1"  # bump when the layout's meaning changes
FINGERPRINT_TEXTS = ("embedforge collection fingerprint", "A cat sat on the mat; the sun was warm.")
FINGERPRINT_MIN_COSINE = 0.999  # same weights give ~1.0; any other model falls far below
EXACT_SUBSET_MAX = 20_000  # filtered searches over at most this many documents scan them exactly
DEFAULT_RERANK_TOP = DEFAULT_RERANK_DEPTH  # hits re-scored by a cross-encoder (the older name of embedforge.rerank.model's)
DATA_FILES = ("vectors.npy", "keys.npy", "docs.jsonl")
MARKER = ".embedforge-version"  # written first into every version directory we make; only marked ones are removed
VERSION_NAME = re.compile(r"v\d{6}")  # a version directory's exact name
RERANK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")  # a stored re-ranker's file name stem
TMP_NAME = re.compile(r"\.v\d{6}\.tmp")  # a version being written, or being removed
POINTER_TMP = re.compile(r"\.CURRENT\..+\.tmp")  # CURRENT being replaced (embedforge.io.atomic_write)
IMAGE_MODALITY = "image"  # manifest "modality" of an image collection, and each of its documents' metadata "kind"
MANIFEST_KEYS = ("model", "dimension", "fingerprint", "query_prefix", "document_prefix", "index_spec", "index", "count", "next_key", "files", "checksum")
OURS_WITHOUT_CURRENT = (LOCK_FILE, ".staging", "milvus.db")  # what a directory may hold before its first version
RERANK_DIR = "rerank"  # a version's stored re-ranker vectors (manifest "rerank_vectors" describes them)
PROGRESS_STEP = 256  # documents encoded between two progress updates of store_rerank_vectors
INDEX_CHUNK = 4096  # documents (or images) per checkpoint when indexing (index --chunk-size's default)
DEFAULT_STORE_CHUNK = INDEX_CHUNK  # store_rerank_vectors' smallest default checkpoint ...
MAX_STORE_CHECKPOINTS = 16  # ... grown so that one run saves the collection at most this many times


def _crc_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _version_files(version: Path) -> list[str]:
    """Every file under ``version`` but its manifest, as sorted relative posix names."""
    names = (p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file() or p.is_symlink())
    return sorted(n for n in names if n != "manifest.json")


def _file_table(version: Path) -> dict[str, dict[str, int]]:
    return {n: {"bytes": (version / n).stat().st_size, "crc32": _crc_file(version / n)} for n in _version_files(version)}


def manifest_checksum(manifest: Mapping[str, Any]) -> int:
    """crc32 of the manifest's canonical JSON, ``checksum`` left out: the manifest checks itself.

    Canonical (sorted keys, ASCII, no spaces) so it is the same before writing and after reading
    (JSON floats round-trip exactly); any changed value, key or table entry changes it.
    """
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
    return zlib.crc32(text.encode("ascii"))


LEGACY_CACHES = ("bm25/", ".bm25.tmp/")  # search caches that older versions wrote after the save; never read


def verify_version(version: Path, manifest: Any) -> None:
    """Check ``manifest`` has every key and a file table that lists, sizes and checksums every file of ``version``.

    Costs one read of every file (crc32: ~0.13 s for 100k x 384 float32 vectors from the page
    cache), so a reader never uses a byte that was not checked.
    """
    where = version / "manifest.json"
    if not isinstance(manifest, dict):
        raise InputError("corrupt collection manifest (not a JSON object)", where)
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise InputError(
            f"collection manifest lacks {', '.join(missing)}, so the version cannot be verified "
            "(damaged, or written by an older embedforge: index it again)", where,
        )
    if manifest["checksum"] != manifest_checksum(manifest):
        raise InputError("corrupt collection manifest (checksum mismatch: a value was changed after it was written)", where)
    table = manifest["files"]
    if not isinstance(table, dict) or any(name not in table for name in DATA_FILES):
        raise InputError("collection manifest has no complete file table (files: bytes, crc32); the version cannot be verified", where)
    try:
        dim, count = int(manifest["dimension"]), int(manifest["count"])
        int(manifest["next_key"])
        fingerprint = np.asarray(manifest["fingerprint"], dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError("corrupt collection manifest (dimension, count, next_key or fingerprint)", where) from None
    if dim < 1 or count < 0 or fingerprint.shape != (len(FINGERPRINT_TEXTS), dim):
        raise InputError("corrupt collection manifest (dimension, count or fingerprint)", where)
    for name in _version_files(version):
        if name not in table and not name.startswith(LEGACY_CACHES):
            raise InputError("file not in the manifest's checksummed file table (added by hand, or written by an older embedforge: re-index)", version / name)
    for name, meta in table.items():
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) for k in ("bytes", "crc32")):
            raise InputError(f"corrupt collection manifest (file table entry {name!r})", where)
        file = version / name
        if not file.is_file() or file.stat().st_size != meta["bytes"]:
            raise InputError(f"missing or truncated collection file (expected {meta['bytes']} bytes)", file)
        if _crc_file(file) != meta["crc32"]:
            raise InputError("corrupt collection file (checksum mismatch)", file)


def _read_pointer(root: Path) -> str:
    """The version name ``CURRENT`` points to."""
    pointer = root / "CURRENT"
    try:
        current = json.loads(pointer.read_text(encoding="utf-8"))
        version = current["version"]
    except FileNotFoundError:
        raise InputError("is not a collection (no CURRENT file); create one with 'embedforge index'", root) from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise InputError("corrupt collection pointer", pointer) from None
    if current.get("format") != FORMAT:
        raise InputError(f"unsupported collection format {current.get('format')!r}, expected {FORMAT!r}", pointer)
    if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
        raise InputError("corrupt collection pointer", pointer)
    return version


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_new_collection_dir(root: Path) -> None:
    """Refuse to make a collection in a directory that holds one, or anything that is not ours."""
    if (root / "CURRENT").exists():
        raise InputError("already holds a collection; open it or choose another directory", root)
    if root.exists() and not root.is_dir():
        raise InputError("exists and is not a directory; choose a new or empty directory for the collection", root)
    if root.is_dir():
        foreign = sorted(
            p.name for p in root.iterdir()
            if p.name not in OURS_WITHOUT_CURRENT and not p.name.startswith(("milvus.db", ".milvus.db"))
            and not _is_leftover(p)
        )
        if foreign:
            raise InputError(
                f"is a non-empty directory that is not a collection (it holds {foreign[0]!r}"
                f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); choose a new or empty directory",
                root,
            )


def _is_ours(path: Path) -> bool:
    """A version (or version-in-progress) directory that embedforge wrote: it carries our marker."""
    return path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def _is_leftover(path: Path) -> bool:
    """What a writer killed before its first ``CURRENT`` leaves: our marked versions, a still empty
    ``.vNNNNNN.tmp`` (killed between its mkdir and its marker) and a ``CURRENT`` temporary file."""
    if VERSION_NAME.fullmatch(path.name) or TMP_NAME.fullmatch(path.name):
        if _is_ours(path):
            return True
        return bool(TMP_NAME.fullmatch(path.name)) and path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    return bool(POINTER_TMP.fullmatch(path.name)) and path.is_file() and not path.is_symlink()


def _remove_ours(path: Path) -> None:
    """Remove a marked version directory so that a kill at any point leaves it marked, or empty.

    A version is first renamed to ``.vNNNNNN.tmp`` (a partly removed directory is then never
    taken for a version), its marker goes last, then the empty directory.
    """
    if VERSION_NAME.fullmatch(path.name):
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            os.rename(path, tmp)
            path = tmp
        except OSError:
            pass  # a directory of that name that is not ours (rename never replaces a non-empty one): remove in place
    for child in path.iterdir():
        if child.name == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()
    with contextlib.suppress(OSError):
        (path / MARKER).unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


def stored_model_name(model_name: str) -> str:
    """How a collection records its model: bundled aliases and hub ids as given, directories absolute."""
    from embedforge.models import BUNDLED_MODELS, resolve_model

    if model_name in BUNDLED_MODELS:
        return model_name
    resolved = resolve_model(model_name)
    return str(Path(resolved).resolve()) if Path(resolved).is_dir() else model_name



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
        self._rerank: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (keys (m,) sorted, vectors (m, d)) of a re-ranker
        self._model: SentenceTransformer | None = None
        self._checked_models: set[int] = set()
        self._version_dir: Path | None = None
        self._dirty = False  # in-memory changes not yet saved
        self._lock: contextlib.ExitStack | None = None  # the writer lock, held from the first change to save()

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
        check_new_collection_dir(root)
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
        """Reopen a saved collection, every file verified; a missing, truncated or corrupt one is an InputError.

        Takes no lock: a writer switching ``CURRENT`` meanwhile (and removing the version read)
        makes it read the new version instead.
        """
        root = Path(path)
        if not (root / "CURRENT").is_file():
            raise InputError("is not a collection (no CURRENT file); create one with 'embedforge index'", root)
        for attempt in range(3):
            name = _read_pointer(root)
            try:
                return cls._open_version(root, root / name)
            except InputError:
                if attempt == 2 or _read_pointer(root) == name:
                    raise  # not a version removed under us: a real error
        raise AssertionError("unreachable")

    @classmethod
    def _open_version(cls, root: Path, version: Path) -> Collection:
        try:
            manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"missing or corrupt collection manifest ({type(err).__name__})", version / "manifest.json") from None
        verify_version(version, manifest)
        out = cls(root, manifest)
        out._version_dir = version
        out._load_rows(version)
        return out

    def _load_rows(self, version: Path) -> None:
        try:
            self._vectors = np.load(version / "vectors.npy", mmap_mode="r")
            self._keys = np.load(version / "keys.npy")
        except (OSError, ValueError, EOFError) as err:
            raise InputError(f"unreadable collection arrays ({err})", version) from None
        if self._vectors.dtype != np.float32 or self._keys.dtype != np.int64:
            raise InputError(f"unexpected collection array types {self._vectors.dtype}, {self._keys.dtype}", version)
        docs = version / "docs.jsonl"
        with open(docs, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    self._ids.append(str(row["id"]))
                    self._texts.append(str(row["text"]))
                    self._meta.append(dict(row.get("metadata") or {}))
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise InputError("corrupt document row", docs, line_no) from None
        n = len(self._ids)
        if self._vectors.shape != (n, self.dim) or self._keys.shape != (n,) or n != self.manifest["count"]:
            raise InputError(f"inconsistent collection: {n} docs, vectors {self._vectors.shape}, {self._keys.shape[0]} keys", version)
        self._row = {doc_id: i for i, doc_id in enumerate(self._ids)}
        self._load_rerank(version)
        spec = self.manifest.get("index")
        if spec and n:
            try:
                index = load_index(spec, self.dim, version / "index", milvus_uri=self.path / "milvus.db")
            except InputError:
                raise
            except Exception as err:  # a backend's own error on a bad file (e.g. a garbage tombstone array)
                raise InputError(f"unreadable index ({type(err).__name__}: {err}); re-index the collection", version / "index") from None
            if not index.persistent:
                index.add(self._vectors, self._keys)
            elif len(index) != n:
                logger.warning("index holds %d vectors, the collection %d: rebuilding it", len(index), n)
                index = self._build_index(spec)
            self._index = index

    def save(self) -> None:
        """Write the current state as a new version, then switch ``CURRENT`` to it (atomic).

        Holds the writer lock throughout (:mod:`embedforge.lock`) and refuses to save over a
        version that another writer saved after this object read the collection. A failed write
        (a full disk: ``OSError``) is an InputError and leaves the previous version current.
        """
        self._hold()
        try:
            self._save_locked()
        finally:
            self._release()

    def _save_locked(self) -> None:
        self._ensure_index()
        previous = self._version_dir.name if self._version_dir is not None else None
        taken = [int(p.name.strip(".tmpv")) for p in self.path.iterdir() if VERSION_NAME.fullmatch(p.name) or TMP_NAME.fullmatch(p.name)]
        name = f"v{1 + max(taken, default=0):06d}"
        tmp = self.path / f".{name}.tmp"
        try:
            tmp.mkdir()
            (tmp / MARKER).write_text(json.dumps({"format": FORMAT, "version": name}) + "\n", encoding="utf-8")
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
            rerank_info = self._save_rerank(tmp)
            manifest = {
                **self.manifest,
                **({"rerank_vectors": rerank_info} if rerank_info else {}),
                "count": len(self._ids),
                "index": self._index.spec if self._index is not None else None,
                "updated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "files": _file_table(tmp),
            }
            if not rerank_info:
                manifest.pop("rerank_vectors", None)
            manifest["checksum"] = manifest_checksum(manifest)
            write_json(tmp / "manifest.json", manifest)
            for file in tmp.rglob("*"):
                if file.is_file():
                    with open(file, "rb") as fh:
                        os.fsync(fh.fileno())
            for folder in [p for p in tmp.rglob("*") if p.is_dir()] + [tmp]:
                _fsync_dir(folder)
            os.replace(tmp, self.path / name)
            _fsync_dir(self.path)
            self._write_pointer(name)
            _fsync_dir(self.path)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(InputError):
                if (self.path / name).is_dir() and _read_pointer(self.path) != name:  # never written: an orphan
                    _remove_ours(self.path / name)
            if isinstance(err, OSError):
                reason = os.strerror(err.errno) if err.errno else str(err)
                kept = f"the previous version {previous} is intact" if previous else "nothing was saved"
                raise InputError(f"cannot write the collection ({reason}); {kept}", self.path) from err
            raise
        self.manifest = manifest
        self._version_dir = self.path / name
        self._dirty = False
        self._remove_old(keep=name, previous=previous)

    def remove_leftovers(self) -> None:
        """Remove what a writer killed after switching ``CURRENT`` left: our old versions, temporary files."""
        if self._version_dir is not None:
            with write_lock(self.path, create=False):
                self._remove_old(keep=self._version_dir.name, previous=None)

    def _remove_old(self, keep: str, previous: str | None) -> None:
        """Remove our old versions and leftovers: marked ``vNNNNNN`` / ``.vNNNNNN.tmp`` directories,
        empty ``.vNNNNNN.tmp`` ones and ``CURRENT`` temporary files (see :func:`_is_leftover`).

        The version current before this save is removed too (collections written before the
        marker existed have unmarked versions); nothing else in the directory is touched.
        """
        for entry in self.path.iterdir():
            if entry.name == keep:
                continue
            legacy = entry.name == previous and (entry / "manifest.json").is_file() and not entry.is_symlink()
            if legacy and not _is_ours(entry):
                shutil.rmtree(entry, ignore_errors=True)
            elif _is_leftover(entry):
                if entry.is_dir():
                    _remove_ours(entry)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()

    def _write_pointer(self, name: str) -> None:
        with atomic_write(self.path / "CURRENT") as f:
            json.dump({"format": FORMAT, "version": name}, f)
            f.write("\n")

    # ------------------------------------------------------------ the writer lock

    def _hold(self) -> None:
        """Take the writer lock (kept until :meth:`save` ends or :meth:`close`); refuse a stale view.

        A second writer gets :class:`embedforge.lock.CollectionLocked` at once. Once locked, the
        collection must still be at the version this object read: saving over another writer's
        newer version would silently drop its changes.
        """
        if self._lock is not None:
            return
        stack = contextlib.ExitStack()
        stack.enter_context(write_lock(self.path))
        self._lock = stack
        try:
            expected = self._version_dir.name if self._version_dir is not None else None
            now = _read_pointer(self.path) if (self.path / "CURRENT").exists() else None
            if now != expected and expected is None:
                raise InputError("already holds a collection; open it or choose another directory", self.path)
            if now != expected:
                raise InputError(
                    f"was changed by another writer since it was opened (now {now}, opened at {expected}); "
                    "open it again and redo the changes", self.path,
                )
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()

    def close(self) -> None:
        """Give up the writer lock that unsaved changes hold (they stay in memory, unsaved)."""
        self._release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._release()

    # ------------------------------------------------------------ index

    def _build_index(self, spec: str) -> VectorIndex:
        index = make_index(spec, self.dim, size_hint=len(self._ids), milvus_uri=self.path / "milvus.db")
        if len(index):
            index.drop()  # a stale external collection (Milvus) from before a crash
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

    def encode_docs(self, texts: Sequence[str], batch_size: int, show_progress: bool | None, pool: Any = None) -> np.ndarray:
        """Document vectors (n, dim) float32, L2-normalised, with the collection's model and document prefix."""
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

        An image collection takes images only (rows with metadata ``"kind": "image"``): texts are an InputError.

        ``vectors``: precomputed document embeddings (n, dim) from the collection's model.
        """
        rows = [doc_fields(d) for d in docs]
        self._refuse_texts_into_images(rows)
        seen: set[str] = set()
        for doc_id, _, _ in rows:
            if doc_id in self._row or doc_id in seen:
                raise InputError(f"duplicate id {doc_id!r}: already in the collection; use upsert() to replace it")
            seen.add(doc_id)
        if not rows:
            return 0
        if vectors is None:
            vectors = self.encode_docs([t for _, t, _ in rows], batch_size, show_progress)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(rows), self.dim):
            raise InputError(f"dimension mismatch: got vectors of shape {vectors.shape}, expected ({len(rows)}, {self.dim})")
        self._hold()
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
        self.manifest.pop("ingested", None)  # see embedforge.ingest: no longer the version an ingest made
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
        self._hold()
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
        self.manifest.pop("ingested", None)
        return int(rows.size)

    def _refuse_texts_into_images(self, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """InputError when this is an image collection and a row is not an image's.

        Texts and images are never mixed in one collection (see :mod:`embedforge.images.collection`,
        which sets the manifest's ``"modality"`` and each image's metadata ``"kind"``): CLIP's
        text-text cosines sit far above its text-image ones, so a mixed ranking would put texts first.
        """
        if self.manifest.get("modality") != IMAGE_MODALITY:
            return
        text = next((doc_id for doc_id, _, meta in rows if meta.get("kind") != IMAGE_MODALITY), None)
        if text is not None:
            raise InputError(
                f"is an image collection; texts and images are not mixed (document {text!r} is not an image; "
                "index the texts into another directory)", self.path,
            )

    def upsert(self, docs: Iterable[DocLike], **kwargs: Any) -> int:
        """Add documents, replacing those whose id is already present."""
        docs = list(docs)
        self._refuse_texts_into_images([doc_fields(d) for d in docs])  # before anything is deleted
        self.delete([doc_fields(d)[0] for d in docs], missing_ok=True)
        return self.add(docs, **kwargs)

    def get(self, doc_id: str) -> Hit:
        if doc_id not in self._row:
            raise InputError(f"unknown id {doc_id!r}")
        row = self._row[doc_id]
        return Hit(doc_id, 0.0, self._texts[row], dict(self._meta[row]))

    # ------------------------------------------------------------ a bi-encoder re-ranker's stored vectors

    def _load_rerank(self, version: Path) -> None:
        info = self.manifest.get("rerank_vectors") or {}
        where = version / RERANK_DIR
        if not isinstance(info, dict):
            raise InputError("corrupt collection manifest (rerank_vectors)", version / "manifest.json")
        files = self.manifest.get("files") or {}
        for name, meta in list(info.items()):
            if not isinstance(name, str) or not RERANK_NAME.fullmatch(name) or not isinstance(meta, dict):
                raise InputError(f"corrupt collection manifest (rerank_vectors entry {name!r})", version / "manifest.json")
            if any(f"{RERANK_DIR}/{name}.{part}.npy" not in files for part in ("keys", "vectors")):
                # an embedforge without stored re-ranker vectors saved this version: it kept the manifest entry, not the files
                logger.warning("%s: re-ranker vectors %r are listed but were not saved with this version (written by an older "
                               "embedforge?); ignoring them: store them again with index --rerank-vectors", self.path, name)
                del info[name]
                continue
            try:
                keys = np.load(where / f"{name}.keys.npy")
                vectors = np.load(where / f"{name}.vectors.npy", mmap_mode="r")
                dim = int(meta["dimension"])
            except (OSError, ValueError, EOFError, KeyError, TypeError) as err:
                raise InputError(f"unreadable re-ranker vectors {name!r} ({type(err).__name__})", where) from None
            if keys.dtype != np.int64 or vectors.dtype != np.float32 or keys.ndim != 1 or vectors.shape != (len(keys), dim) \
                    or bool(np.any(np.diff(keys) <= 0)):
                raise InputError(f"inconsistent re-ranker vectors {name!r}: keys {keys.shape} {keys.dtype}, vectors {vectors.shape} "
                                 f"{vectors.dtype}, expected sorted int64 keys and float32 (keys, {dim})", where)
            self._rerank[name] = (keys, vectors)

    def _save_rerank(self, version: Path) -> dict[str, Any]:
        """Write each stored re-ranker's vectors of the documents still here into ``version``; their manifest entries."""
        info = self.manifest.get("rerank_vectors") or {}
        out: dict[str, Any] = {}
        for name, (keys, vectors) in self._rerank.items():
            keep = np.isin(keys, self._keys)
            keys, vectors = keys[keep], np.ascontiguousarray(np.asarray(vectors)[keep], dtype=np.float32)
            self._rerank[name] = (keys, vectors)
            (version / RERANK_DIR).mkdir(exist_ok=True)
            np.save(version / RERANK_DIR / f"{name}.keys.npy", keys)
            np.save(version / RERANK_DIR / f"{name}.vectors.npy", vectors)
            out[name] = {**info[name], "count": len(keys)}
        return out

    def store_rerank_vectors(
        self,
        model_name: str,
        *,
        reranker: BiEncoderReranker | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        chunk_size: int | None = None,
        show_progress: bool | None = None,
    ) -> int:
        """Store every document's vector for the embedding model ``model_name`` used as a re-ranker
        (``search --rerank MODEL``), so that re-ranking encodes only the queries.

        What a search engine calls a second named vector per document. It is encoded exactly as
        :class:`embedforge.rerank.model.BiEncoderReranker` encodes a candidate (the model's document
        prompt, ``max_length``), and found again at search time by the model's fingerprint, prompt
        and length (:meth:`stored_reranker`). Only documents without a stored vector are encoded:
        each ``chunk_size`` of them is saved as a new version (atomic), so an interrupted run keeps
        its finished chunks and a second call does the rest, and a call after adding documents
        encodes just those. A document added and not yet stored is encoded at search time.
        Deleted documents' vectors go with the next save. Returns the number of documents encoded.

        Each checkpoint rewrites the whole collection (a version is complete on its own), so the
        default ``chunk_size`` grows with the work: 4096 documents, or a 16th of those to encode
        when that is more — at most 16 rewrites however large the collection; an interruption
        loses at most one chunk. ``reranker``: the model already loaded
        (:func:`embedforge.rerank.model.load_bi_encoder_reranker` of ``model_name``, ``max_length``).
        """
        from tqdm.auto import tqdm

        from embedforge.rerank.model import load_bi_encoder_reranker

        if self.manifest.get("modality") == IMAGE_MODALITY:
            raise InputError("is an image collection; re-ranker vectors are stored for texts", self.path)
        if (chunk_size is not None and chunk_size < 1) or batch_size < 1:
            raise InputError(f"chunk_size and batch_size must be >= 1, got {chunk_size} and {batch_size}")
        if self._dirty:
            raise InputError("has unsaved changes; save() them before storing re-ranker vectors", self.path)
        if reranker is None:
            reranker = load_bi_encoder_reranker(model_name, max_length=max_length)
        stored = stored_model_name(model_name)
        meta = {
            "model": stored, "dimension": embedding_dim(reranker.model), "fingerprint": np.round(reranker.fingerprint(), 6).tolist(),
            "document_prompt": reranker.document_prompt, "max_length": reranker.document_max_length,
        }
        digest = hashlib.sha256(json.dumps([stored, meta["document_prompt"], meta["max_length"]]).encode()).hexdigest()[:10]
        name = f"{re.sub(r'[^A-Za-z0-9._-]+', '-', Path(stored).name).strip('.-')[:48] or 'model'}-{digest}"
        self._hold()
        try:
            keys, vectors = self._rerank.get(name, (np.zeros(0, np.int64), np.zeros((0, meta["dimension"]), np.float32)))
            if name in self._rerank and self._rerank_match(name, reranker) is None:
                logger.warning("%s: the stored vectors of %s are another model's (its directory changed); encoding them again", self.path, stored)
                keys, vectors = keys[:0], np.zeros((0, meta["dimension"]), np.float32)
            todo = np.flatnonzero(~np.isin(self._keys, keys))
            chunk = chunk_size or max(DEFAULT_STORE_CHUNK, -(-len(todo) // MAX_STORE_CHECKPOINTS))
            show = sys.stderr.isatty() if show_progress is None else show_progress
            with tqdm(total=len(self._keys), initial=len(self._keys) - len(todo), disable=not show, desc="re-ranker vectors", unit="doc") as bar:
                for start in range(0, max(len(todo), 1 if name not in self._rerank else 0), chunk):
                    rows = todo[start : start + chunk]
                    fresh = np.zeros((len(rows), meta["dimension"]), dtype=np.float32)
                    for at in range(0, len(rows), PROGRESS_STEP):  # the bar moves within a chunk; a chunk is saved at once
                        part = rows[at : at + PROGRESS_STEP]
                        fresh[at : at + len(part)] = reranker.encode_documents([self._texts[r] for r in part], batch_size)
                        bar.update(len(part))
                    keys = np.concatenate([keys, self._keys[rows]])
                    order = np.argsort(keys, kind="stable")
                    keys, vectors = keys[order], np.concatenate([np.asarray(vectors), fresh])[order]
                    before = (dict(self._rerank), self.manifest.get("rerank_vectors"))
                    self._rerank[name] = (keys, vectors)
                    self.manifest["rerank_vectors"] = {**(self.manifest.get("rerank_vectors") or {}), name: meta}
                    current = self._version_dir.name if self._version_dir is not None else None
                    try:
                        self._save_locked()
                    except BaseException:
                        try:
                            moved = _read_pointer(self.path) != current  # it failed after CURRENT moved: this chunk is saved
                        except (InputError, OSError):
                            moved = False
                        if not moved:  # not saved (disk full, interrupted): memory stays what is on disk
                            self._rerank = before[0]
                            if before[1] is None:
                                self.manifest.pop("rerank_vectors", None)
                            else:
                                self.manifest["rerank_vectors"] = before[1]
                        raise
        finally:
            self._release()
        return len(todo)

    def _rerank_match(self, name: str, reranker: BiEncoderReranker) -> str | None:
        """``name`` if its stored vectors are ``reranker``'s (same document prompt, length and weights), else None."""
        meta = (self.manifest.get("rerank_vectors") or {}).get(name) or {}
        if meta.get("max_length") != reranker.document_max_length or meta.get("document_prompt") != reranker.document_prompt:
            return None
        stored = np.asarray(meta.get("fingerprint"), dtype=np.float32)
        mine = reranker.fingerprint()
        if stored.shape != mine.shape or float(np.sum(stored * mine, axis=1).min()) < FINGERPRINT_MIN_COSINE:
            return None
        return name

    def stored_reranker(self, reranker: Any) -> Any:
        """``reranker`` over the document vectors stored for it (:meth:`store_rerank_vectors`), or
        ``reranker`` unchanged: a cross-encoder, or an embedding model with none stored here."""
        if not isinstance(reranker, BiEncoderReranker):
            return reranker
        name = next((n for n in self._rerank if self._rerank_match(n, reranker)), None)
        if name is None:
            return reranker
        keys, vectors = self._rerank[name]

        def lookup(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            want = self._keys[rows]
            pos = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
            found = (keys[pos] == want) if len(keys) else np.zeros(len(want), dtype=bool)
            out = np.zeros((len(want), vectors.shape[1]), dtype=np.float32)
            out[found] = vectors[pos[found]]
            return out, found

        return StoredVectorsReranker(reranker, lookup)

    # ------------------------------------------------------------ queries

    def model(self, model: SentenceTransformer | None = None) -> SentenceTransformer:
        """The collection's model (loaded once from the manifest), or ``model`` after checking it is the same."""
        from embedforge.encode import encode
        from embedforge.models import load_model

        if model is None:
            if self._model is None:  # checked too: a model directory can be replaced after indexing
                self._model = self.model(load_model(self.manifest["model"]))
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
                f"(fingerprint cosine {float(cosine.min()):.3f}); pass that model or none, or, if that model "
                "directory was replaced since, restore it or re-index"
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
        """The BM25 index over the texts: the version's ``bm25/`` if it has one, else built in memory.

        Never writes (a search must work on a read-only collection). A version's ``bm25/`` files
        are in its checksummed table and checked again before use; one gone meanwhile (a writer
        replaced the version) means building it here instead.
        """
        if self._bm25 is None:
            version = self._version_dir if not self._dirty else None
            table = self.manifest.get("files", {}) if version is not None else {}
            listed = sorted(n for n in table if n.startswith("bm25/"))
            if version is not None and listed and all((version / n).is_file() for n in listed):
                for name in listed:
                    meta, file = table[name], version / name
                    if file.stat().st_size != meta["bytes"] or _crc_file(file) != meta["crc32"]:
                        raise InputError("corrupt collection file (checksum mismatch)", file)
                try:
                    self._bm25 = BM25Index.load(version / "bm25")
                except Exception as err:
                    raise InputError(f"unreadable BM25 index ({type(err).__name__})", version / "bm25") from None
            if self._bm25 is None or self._bm25.size != len(self._ids):
                self._bm25 = BM25Index.build(self._texts)
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
        rerank_weights: Sequence[float] | None = None,
    ) -> list[list[Hit]]:
        """Top-``top_k`` hits per query, best first (see :func:`embedforge.query.search_collection`).

        Args:
            queries: query texts (the collection's query prefix is added for dense encoding).
            top_k: hits per query.
            mode: ``dense``, ``bm25`` or ``hybrid`` (dense + BM25 fused by ``fusion``: ``rrf`` or ``score``).
            model: the collection's model, already loaded (checked against its fingerprint); default: load it.
            where: metadata filter, see :func:`embedforge.query.match_metadata`.
            rerank: a CrossEncoder or its directory (or a list of them); re-scores exactly the top ``rerank_top``.
            rerank_weights: fuse the re-rankers' scores with the first stage's (its weight first, then one
                per re-ranker) instead of replacing it.
        """
        return search_collection(
            self, queries, top_k=top_k, mode=mode, model=model, where=where, fusion=fusion,
            rerank=rerank, rerank_top=rerank_top, rerank_weights=rerank_weights,
        )

    def hit(self, row: int, score: float) -> Hit:
        return Hit(self._ids[row], score, self._texts[row], dict(self._meta[row]))

    def text(self, row: int) -> str:
        return self._texts[row]

    def row_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored document vectors of ``rows`` (collection rows, as in :meth:`hit`), ``(n, dim)`` float32."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise InputError(f"rows out of range 0..{len(self) - 1}", self.path)
        return np.array(self._vectors[rows], dtype=np.float32)

    def vectors(self) -> np.ndarray:
        """A copy of the stored document vectors, ``(len(self), dim)`` float32, in row order (``hit(row)``)."""
        return np.array(self._vectors, dtype=np.float32)

    def mask(self, where: Mapping[str, Any] | None) -> np.ndarray | None:
        """Bool per row: which documents' metadata match ``where`` (None: no filter)."""
        if not where:
            return None
        return np.fromiter((match_metadata(m, where) for m in self._meta), dtype=bool, count=len(self._meta))
