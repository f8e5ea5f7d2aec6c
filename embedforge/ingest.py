"""Ingestion: stream a corpus into a :class:`~embedforge.collection.Collection`.

:func:`index_corpus` reads a corpus file lazily, three passes over it: validate (ids, texts,
duplicates: a bad line fails the run before any encoding), encode in resumable chunks staged
under ``DIR/.staging/`` (shards and a checkpoint), and hand the documents with the vectors read
back from the shards to the collection, which is saved in one step. Each pass checks a digest of
the ids and texts against the first, so a corpus edited mid-run is refused, not mixed. Encoding holds one chunk of texts at a time;
only the collection itself (ids, texts, metadata, vectors, index) is held whole, as every
in-process docstore is. :func:`index_documents` does the same for documents already in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.collection import INDEX_CHUNK, Collection, check_new_collection_dir, stored_model_name
from embedforge.corpus import DocLike, doc_fields
from embedforge.errors import InputError
from embedforge.io import write_json
from embedforge.lock import write_lock

__all__ = ["read_corpus", "iter_corpus", "index_corpus", "index_documents"]

logger = logging.getLogger(__name__)

_CHANGED = "the corpus changed while it was being indexed (its documents differ from what the first pass read); nothing was saved"
_END = object()
INGESTED = "ingested"  # manifest key: digest of the ingest that made the version (dropped by any other change)
_SKIP = {"_id", "id", "doc_id", "docid", "text", "sentence", "content", "body", "title", "metadata"}


def iter_corpus(path: str | os.PathLike[str], limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Documents of a corpus file or BEIR folder as ``{"id", "text", "title", "metadata"}`` dicts, lazily.

    Ids, texts and titles come from :func:`embedforge.corpus.iter_document_rows` (which validates
    them); any other column of a table (and a BEIR ``metadata`` object) becomes metadata.
    ``limit`` stops after that many documents.
    """
    from embedforge.corpus import iter_document_rows

    rows = iter_document_rows(path)
    for doc, row in rows if limit is None else itertools.islice(rows, max(0, limit)):
        meta = dict(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
        meta.update({k: v for k, v in row.items() if k not in _SKIP})
        yield {"id": doc.id, "text": doc.text, "title": doc.title, "metadata": meta}


def read_corpus(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All of :func:`iter_corpus` as a list."""
    return list(iter_corpus(path))


def index_corpus(
    path: str | os.PathLike[str],
    model_name: str,
    corpus: str | os.PathLike[str],
    *,
    limit: int | None = None,
    **options: Any,
) -> Collection:
    """Stream the corpus file or BEIR folder ``corpus`` into the collection at ``path``.

    Same options and resume behaviour as :func:`index_documents`; the file is read lazily (three
    passes: validate, encode chunk by chunk, add), so encoding never holds more than one chunk of
    texts. Nothing is encoded, and the collection is untouched, when any line is bad.
    """
    return _index_stream(path, model_name, lambda: iter_corpus(corpus, limit), source=str(corpus), **options)


def index_documents(path: str | os.PathLike[str], model_name: str, docs: Iterable[DocLike], **options: Any) -> Collection:
    """Embed ``docs`` into the collection at ``path`` (created if needed) in resumable chunks.

    Every ``chunk_size`` documents the vectors go to ``path/.staging/shard-N.npy`` and the number
    done to ``checkpoint.json`` (both atomic). Run again after an interruption with the same
    documents and model: finished chunks are read back, not re-encoded (and a run killed after its
    save, before its cleanup, is recognised as done). The collection itself
    changes only at the end, in one :meth:`Collection.save`. ``processes > 1`` encodes with that
    many worker processes (:func:`embedforge.encode.encode_pool`): for machines with many cores,
    where one process's torch threads leave cores idle. Options: ``index_spec`` ("auto"),
    ``query_prefix``, ``document_prefix``, ``upsert``, ``batch_size`` (32), ``chunk_size`` (4096),
    ``show_progress``, ``processes`` (1).
    """
    rows = docs if isinstance(docs, Sequence) else list(docs)  # read more than once: a generator would run dry
    return _index_stream(path, model_name, lambda: iter(rows), source="", **options)


def _open_existing(root: Path, model_name: str) -> Collection | None:
    """The collection at ``root`` if there is one, refusing a model other than the one it was built with."""
    if not (root / "CURRENT").exists():
        return None
    coll = Collection.open(root)
    if stored_model_name(model_name) != coll.manifest["model"]:
        from embedforge.models import load_model

        coll.model(load_model(model_name))  # a different model -> InputError
    else:
        coll.model()  # loaded and checked too: the model directory may have been replaced since
    return coll


class _Digest:
    """sha256 over the (id, text) of documents in order: the same corpus read twice gives the same digest."""

    def __init__(self, head: str) -> None:
        self._h = hashlib.sha256(head.encode())
        self.n = 0

    def add(self, doc: DocLike) -> tuple[str, str]:
        doc_id, text, _ = doc_fields(doc)
        self._h.update(f"{doc_id}\0{len(text)}\0".encode())
        self._h.update(text.encode("utf-8", "surrogatepass"))
        self.n += 1
        return doc_id, text

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _duplicate(doc_id: str) -> InputError:
    return InputError(f"duplicate id {doc_id!r}: already in the collection or repeated in the input (use --upsert)")


def _scan(stream: Iterable[DocLike], coll: Collection | None, upsert: bool, head: str, show_progress: bool) -> tuple[_Digest, str | None]:
    """Validate every document (and its id against ``coll``) without keeping texts; their digest and the first duplicate id.

    A duplicate fails at once, unless ``coll``'s last save was an ingest (then the digest is
    finished, to tell a rerun of that same ingest, killed after it saved, from a real duplicate).
    """
    from tqdm.auto import tqdm

    digest = _Digest(head)
    seen: set[str] = set()
    first: str | None = None
    finish = coll is not None and INGESTED in coll.manifest
    for doc in tqdm(stream, disable=not show_progress, desc="reading", unit="doc"):
        doc_id, _ = digest.add(doc)
        if not upsert and first is None:
            if (coll is not None and doc_id in coll) or doc_id in seen:
                if not finish:
                    raise _duplicate(doc_id)
                first = doc_id
            seen.add(doc_id)
    return digest, first


def _index_stream(path: str | os.PathLike[str], model_name: str, open_stream: Callable[[], Iterable[DocLike]], **options: Any) -> Collection:
    """Run :func:`_index_locked` holding the collection's writer lock from the first read to the last write.

    A second ``index`` on the same collection fails at once naming this one; the staging area
    (shards, checkpoint) is touched only by the lock holder, so a later run may resume it.
    """
    root = Path(path)
    if not (root / "CURRENT").exists():
        check_new_collection_dir(root)  # before the lock file is made in someone else's directory
    with write_lock(root):
        return _index_locked(root, model_name, open_stream, **options)


def _index_locked(
    path: str | os.PathLike[str],
    model_name: str,
    open_stream: Callable[[], Iterable[DocLike]],
    *,
    source: str,
    index_spec: str = "auto",
    query_prefix: str = "",
    document_prefix: str = "",
    upsert: bool = False,
    batch_size: int = 32,
    chunk_size: int = INDEX_CHUNK,
    show_progress: bool = True,
    processes: int = 1,
) -> Collection:
    from tqdm.auto import tqdm

    from embedforge.encode import encode_pool
    from embedforge.io import save_npy

    if processes < 1:
        raise InputError(f"processes must be >= 1, got {processes}")
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
    root = Path(path)
    existing = _open_existing(root, model_name)
    # pass 1: fail on a bad line or a duplicate id before hours of encoding, not after
    manifest = existing.manifest if existing is not None else {"model": stored_model_name(model_name), "document_prefix": document_prefix}
    head = f"{manifest['model']}\0{manifest['document_prefix']}\0{chunk_size}\0"
    scanned, duplicate = _scan(open_stream(), existing, upsert, head, show_progress and bool(source))
    n, signature = scanned.n, scanned.hexdigest()
    if duplicate is not None:
        assert existing is not None
        if existing.manifest.get(INGESTED) != signature:
            raise _duplicate(duplicate)
        # the same run was killed after its save, before it cleaned up: it is done
        logger.info("%s: these documents were already indexed by an earlier run of this command", root)
        existing.remove_leftovers()
        shutil.rmtree(root / ".staging", ignore_errors=True)
        return existing
    if n == 0 and source:
        raise InputError("no documents to index", source)
    if existing is not None:
        coll = existing
    else:
        coll = Collection.create(root, model_name, index_spec=index_spec, query_prefix=query_prefix, document_prefix=document_prefix)
    if n == 0:
        return coll
    staging = root / ".staging"
    done = 0
    checkpoint = staging / "checkpoint.json"
    if checkpoint.is_file():
        try:
            state = json.loads(checkpoint.read_text(encoding="utf-8"))
            done = int(state["done"]) if state.get("signature") == signature else 0
        except (json.JSONDecodeError, KeyError, ValueError):
            done = 0
        if not done:
            shutil.rmtree(staging, ignore_errors=True)
        else:
            logger.info("resuming: %d of %d documents already embedded", done, n)
    staging.mkdir(parents=True, exist_ok=True)

    def changed() -> InputError:
        shutil.rmtree(staging, ignore_errors=True)  # its shards may mix two versions of the corpus
        return InputError(_CHANGED, source or None)

    # pass 2: encode chunk by chunk; finished chunks of an interrupted run are skipped, not re-encoded
    shards: list[Path] = []
    pool_cm = encode_pool(coll.model(), processes) if done < n else contextlib.nullcontext()
    stream = iter(open_stream())
    again = _Digest(head)
    with pool_cm as pool, tqdm(total=n, initial=done, disable=not show_progress, desc="embedding", unit="doc") as bar:
        for number, start in enumerate(range(0, n, chunk_size)):
            stop = min(start + chunk_size, n)
            texts = [again.add(d)[1] for d in itertools.islice(stream, stop - start)]
            if len(texts) != stop - start:
                raise changed()
            shard = staging / f"shard-{number:06d}.npy"
            shards.append(shard)
            if stop <= done and shard.is_file():
                continue
            vectors = coll.encode_docs(texts, batch_size, False, pool)
            save_npy(shard, vectors)
            write_json(checkpoint, {"signature": signature, "done": stop, "total": n})
            bar.update(stop - start)
    if next(stream, _END) is not _END or again.hexdigest() != signature:
        raise changed()
    # pass 3: the collection takes the documents and the vectors, copied from the shards
    vectors = np.empty((n, coll.dim), dtype=np.float32)
    at = 0
    for shard in shards:
        try:
            part = np.load(shard, mmap_mode="r")
            vectors[at : at + len(part)] = part
        except (OSError, ValueError, EOFError):
            shutil.rmtree(staging, ignore_errors=True)
            raise InputError("unreadable staged vectors (removed; run the command again)", shard) from None
        at += len(part)
    docs = list(itertools.islice(open_stream(), n + 1))
    final = _Digest(head)
    for doc in docs:
        final.add(doc)
    if at != n or final.hexdigest() != signature:
        raise changed()
    (coll.upsert if upsert else coll.add)(docs, vectors=vectors)
    coll.manifest[INGESTED] = signature  # a rerun after a kill between this save and the cleanup knows it is done
    coll.save()
    shutil.rmtree(staging, ignore_errors=True)
    return coll
