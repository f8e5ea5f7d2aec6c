"""Ingestion: read a corpus and embed its documents into a :class:`~embedforge.collection.Collection`.

:func:`index_documents` embeds in resumable chunks, staged under ``DIR/.staging/`` (shards and a
checkpoint) until the collection is saved in one step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.collection import Collection, DocLike, _doc_fields, stored_model_name
from embedforge.errors import InputError
from embedforge.io import write_json

__all__ = ["read_corpus", "index_documents", "join_title"]

logger = logging.getLogger(__name__)


def join_title(title: str, text: str) -> str:
    """``"Title. text"`` (BEIR's title + text), without doubling the title's own final punctuation."""
    if not title:
        return text
    if not text:
        return title
    return f"{title} {text}" if title.rstrip()[-1:] in ".!?:;" else f"{title}. {text}"


def read_corpus(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Documents of a corpus file or BEIR folder as ``{"id", "text", "title", "metadata"}`` dicts.

    Ids, texts and titles come from :func:`embedforge.corpus.read_documents` (which validates
    them); any other column of a table (and a BEIR ``metadata`` object) becomes metadata.
    """
    from embedforge.corpus import read_documents, read_records

    docs = read_documents(path)
    p = Path(path)
    file = p / "corpus.jsonl" if p.is_dir() else p
    extras: list[dict[str, Any]] = [{} for _ in docs]
    if file.suffix.lower() not in (".txt", ".text"):
        records = read_records(file)
        if len(records) == len(docs):
            skip = {"_id", "id", "doc_id", "docid", "text", "sentence", "content", "body", "title", "metadata"}
            for i, (_, row) in enumerate(records):
                meta = dict(row.get("metadata") or {}) if isinstance(row.get("metadata"), dict) else {}
                meta.update({k: v for k, v in row.items() if k not in skip})
                extras[i] = meta
    return [{"id": d.id, "text": d.text, "title": d.title, "metadata": m} for d, m in zip(docs, extras, strict=True)]


def _signature(docs: Sequence[DocLike], model_name: str, prefix: str, chunk: int) -> str:
    h = hashlib.sha256(f"{model_name}\0{prefix}\0{chunk}\0{len(docs)}".encode())
    for doc in docs:
        doc_id, text, _ = _doc_fields(doc)
        h.update(f"{doc_id}\0{len(text)}\0".encode())
    return h.hexdigest()


def index_documents(
    path: str | os.PathLike[str],
    model_name: str,
    docs: Sequence[DocLike],
    *,
    index_spec: str = "auto",
    query_prefix: str = "",
    document_prefix: str = "",
    upsert: bool = False,
    batch_size: int = 32,
    chunk_size: int = 4096,
    show_progress: bool = True,
    processes: int = 1,
) -> Collection:
    """Embed ``docs`` into the collection at ``path`` (created if needed) in resumable chunks.

    Every ``chunk_size`` documents the vectors go to ``path/.staging/shard-N.npy`` and the number
    done to ``checkpoint.json`` (both atomic). Run again after an interruption with the same
    documents and model: finished chunks are read back, not re-encoded. The collection itself
    changes only at the end, in one :meth:`Collection.save`. ``processes > 1`` encodes with that
    many worker processes (:func:`embedforge.encode.encode_pool`): for machines with many cores,
    where one process's torch threads leave cores idle.
    """
    from tqdm.auto import tqdm

    from embedforge.encode import encode_pool
    from embedforge.io import save_npy

    if processes < 1:
        raise InputError(f"processes must be >= 1, got {processes}")
    root = Path(path)
    if (root / "CURRENT").exists():
        coll = Collection.open(root)
        if stored_model_name(model_name) != coll.manifest["model"]:
            from embedforge.models import load_model

            coll.model(load_model(model_name))  # a different model -> InputError
    else:
        coll = Collection.create(root, model_name, index_spec=index_spec, query_prefix=query_prefix, document_prefix=document_prefix)
    rows = [_doc_fields(d) for d in docs]
    if not upsert:  # fail before hours of encoding, not after
        seen: set[str] = set()
        for doc_id, _, _ in rows:
            if doc_id in coll or doc_id in seen:
                raise InputError(f"duplicate id {doc_id!r}: already in the collection or repeated in the input (use --upsert)")
            seen.add(doc_id)
    staging = root / ".staging"
    signature = _signature(docs, coll.manifest["model"], coll.manifest["document_prefix"], chunk_size)
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
            logger.info("resuming: %d of %d documents already embedded", done, len(rows))
    staging.mkdir(parents=True, exist_ok=True)
    shards: list[np.ndarray] = []
    pool_cm = encode_pool(coll.model(), processes) if done < len(rows) else contextlib.nullcontext()
    with pool_cm as pool, tqdm(total=len(rows), initial=done, disable=not show_progress, desc="embedding", unit="doc") as bar:
        for number, start in enumerate(range(0, len(rows), chunk_size)):
            shard = staging / f"shard-{number:06d}.npy"
            stop = min(start + chunk_size, len(rows))
            if stop <= done and shard.is_file():
                shards.append(np.load(shard))
                continue
            vectors = coll._encode_docs([t for _, t, _ in rows[start:stop]], batch_size, False, pool)
            save_npy(shard, vectors)
            write_json(checkpoint, {"signature": signature, "done": stop, "total": len(rows)})
            shards.append(vectors)
            bar.update(stop - start)
    vectors = np.concatenate(shards) if shards else np.zeros((0, coll.dim), dtype=np.float32)
    (coll.upsert if upsert else coll.add)(docs, vectors=vectors)
    coll.save()
    shutil.rmtree(staging, ignore_errors=True)
    return coll
