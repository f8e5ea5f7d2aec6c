"""Image collections: index a folder of images into a :class:`~embedforge.collection.Collection`, search it.

An image collection is an ordinary collection (same files, versions, checksums, lock): each
document's id and text are the image's path relative to the folder, its metadata
``{"kind": "image", "path": absolute path, "width", "height"}`` (the size as displayed), and its
vector the model's image embedding, handed to :meth:`Collection.add` precomputed. The manifest
records ``"modality": "image"``; texts and images are never mixed in one collection (their
score scales differ: CLIP's text-text cosines sit far above its text-image ones, so a mixed
ranking would be texts first whatever the query).

Indexing is resumable like :func:`embedforge.ingest.index_documents`: every ``chunk_size`` images
the vectors and the rows kept go to ``DIR/.staging/`` with a checkpoint; a run interrupted and
started again with the same folder and model reads finished chunks back. The collection itself
changes once, at the end.

Queries: by text (:meth:`Collection.search`, unchanged: the model embeds the query text), by
image (:func:`search_by_image`: image -> image in an image collection, image -> text in a text
collection embedded with the same CLIP model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.collection import IMAGE_MODALITY, Collection, check_new_collection_dir
from embedforge.errors import InputError
from embedforge.images.model import IMAGE_BATCH, encode_images, load_image_model, require_images
from embedforge.images.read import MAX_SIDE, list_images, open_image, read_images
from embedforge.io import save_npy, write_json
from embedforge.lock import write_lock
from embedforge.query import Hit

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["ImageIndexConfig", "index_images", "search_by_image", "is_image_collection", "IMAGE_KIND"]

logger = logging.getLogger(__name__)

IMAGE_KIND = IMAGE_MODALITY  # manifest "modality" and each document's metadata "kind"
STAGING = ".staging"  # the same staging folder text indexing uses (a collection runs one index at a time)
CHECKPOINT = "images-checkpoint.json"


@dataclass(frozen=True)
class ImageIndexConfig:
    index_spec: str = "auto"  # as for texts: auto, exact, Flat, HNSW32, int8, ...
    batch_size: int = IMAGE_BATCH  # images per forward pass
    chunk_size: int = 1024  # images per checkpoint (resume granularity): ~1-4 min of CLIP ViT-B/32 on CPU
    max_side: int = MAX_SIDE  # longest side kept after decoding (see embedforge.images.read)
    upsert: bool = False  # replace images whose relative path is already in the collection


def is_image_collection(coll: Collection) -> bool:
    return coll.manifest.get("modality") == IMAGE_KIND


def _check_can_hold_images(coll: Collection) -> None:
    if not is_image_collection(coll) and len(coll):
        raise InputError(
            f"holds {len(coll)} text documents; texts and images are not mixed in one collection "
            "(choose another directory for the images)", coll.path,
        )


def _signature(model_name: str, folder: Path, files: Sequence[Path], config: ImageIndexConfig) -> str:
    """What a finished chunk depends on: the model, the files (name, size, mtime) and the chunking."""
    h = hashlib.sha256(f"{model_name}\0{config.chunk_size}\0{config.max_side}\0".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _encode_chunk(model: SentenceTransformer, folder: Path, files: Sequence[Path], config: ImageIndexConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    images = []
    for path, image in read_images(files, config.max_side):
        if image is None:
            continue  # read_images warned, naming the file
        rel = path.relative_to(folder).as_posix()
        width, height = image.info.get("original_size", image.size)
        rows.append({"id": rel, "text": rel, "metadata": {
            "kind": IMAGE_KIND, "path": str(path.resolve()), "width": int(width), "height": int(height)}})
        images.append(image)
    vectors = encode_images(model, images, batch_size=config.batch_size)  # (kept, dim)
    return vectors, rows


def index_images(
    path: str | os.PathLike[str],
    model_name: str,
    folder: str | os.PathLike[str],
    *,
    config: ImageIndexConfig | None = None,
    model: SentenceTransformer | None = None,
    show_progress: bool = False,
) -> Collection:
    """Embed every image under ``folder`` into the image collection at ``path`` (created if needed).

    Unreadable files are skipped with a warning naming each. A folder with no images, or with
    none readable, a text-only model, or a collection that holds texts is an :class:`InputError`,
    and a collection directory made by this call is removed again.
    """
    from tqdm.auto import tqdm

    config = config or ImageIndexConfig()
    if config.chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {config.chunk_size}")
    source = Path(folder)
    files = list_images(source)
    root = Path(path)
    made = not root.exists()
    if not (root / "CURRENT").exists():
        check_new_collection_dir(root)
    model = model or load_image_model(model_name)
    require_images(model, model_name)
    try:
        with write_lock(root):
            return _index_locked(root, model_name, model, source, files, config, show_progress, tqdm)
    except InputError:
        if made and not (root / "CURRENT").exists():
            shutil.rmtree(root, ignore_errors=True)  # only staging of a run that cannot succeed
        raise


def _index_locked(root: Path, model_name: str, model: SentenceTransformer, source: Path, files: list[Path],
                  config: ImageIndexConfig, show_progress: bool, tqdm: Any) -> Collection:
    coll = None
    if (root / "CURRENT").exists():
        coll = Collection.open(root)
        _check_can_hold_images(coll)
        coll.model(model)  # another model than the collection's -> InputError
        if not config.upsert:
            present = [f.relative_to(source).as_posix() for f in files]
            dup = next((p for p in present if p in coll), None)
            if dup is not None:
                raise InputError(f"duplicate id {dup!r}: already in the collection (use --upsert to replace)", root)
    staging = root / STAGING
    checkpoint = staging / CHECKPOINT
    signature = _signature(str(coll.manifest["model"]) if coll else model_name, source, files, config)
    done = 0
    if checkpoint.is_file():
        try:
            state = json.loads(checkpoint.read_text(encoding="utf-8"))
            done = int(state["done"]) if state.get("signature") == signature else 0
        except (OSError, ValueError, KeyError, TypeError):
            done = 0
        if done:
            logger.info("resuming: %d of %d images already embedded", done, len(files))
    if not done:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    parts: list[tuple[Path, Path]] = []
    with tqdm(total=len(files), initial=done, disable=not show_progress, desc="embedding", unit="image") as bar:
        for number, start in enumerate(range(0, len(files), config.chunk_size)):
            stop = min(start + config.chunk_size, len(files))
            shard, rows_file = staging / f"images-{number:06d}.npy", staging / f"images-{number:06d}.json"
            parts.append((shard, rows_file))
            if stop <= done and shard.is_file() and rows_file.is_file():
                continue
            vectors, rows = _encode_chunk(model, source, files[start:stop], config)
            save_npy(shard, vectors)
            write_json(rows_file, rows)
            write_json(checkpoint, {"signature": signature, "done": stop, "total": len(files)})
            bar.update(stop - start)
    vectors_parts, rows = [], []
    for shard, rows_file in parts:
        try:
            vectors_parts.append(np.load(shard))
            rows.extend(json.loads(rows_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, EOFError):
            shutil.rmtree(staging, ignore_errors=True)
            raise InputError("unreadable staged vectors (removed; run the command again)", shard) from None
    if not rows:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"none of the {len(files)} image files could be read (see the warnings above)", source)
    vectors = np.concatenate(vectors_parts)
    if coll is None:
        coll = Collection.create(root, model_name, index_spec=config.index_spec, model=model)
    coll.manifest["modality"] = IMAGE_KIND  # saved with the documents below
    (coll.upsert if config.upsert else coll.add)(rows, vectors=vectors)
    coll.save()
    shutil.rmtree(staging, ignore_errors=True)
    return coll


def search_by_image(
    coll: Collection,
    images: Sequence[str | os.PathLike[str]],
    *,
    top_k: int = 10,
    model: SentenceTransformer | None = None,
    where: Mapping[str, Any] | None = None,
    max_side: int = MAX_SIDE,
) -> list[list[Hit]]:
    """Top-``top_k`` hits per query image file, best first (cosine of the image's vector).

    In an image collection this is image -> image search; in a text collection embedded with
    the same CLIP model it is image -> text. An unreadable query image is an InputError (a query
    is not skipped like a file of a folder), as is a collection whose model embeds texts only.
    """
    if top_k < 1:
        raise InputError(f"top_k must be >= 1, got {top_k}")
    model = coll.model(model)  # loaded from the manifest, or checked against its fingerprint
    require_images(model, str(coll.manifest["model"]))
    decoded = [open_image(p, max_side) for p in images]
    if not decoded or not len(coll):
        return [[] for _ in decoded]
    queries = encode_images(model, decoded)  # (q, dim)
    scores, rows = coll.search_vectors(queries, min(top_k, len(coll)), mask=coll.mask(where))
    return [
        [coll.hit(int(r), float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
        for srow, rrow in zip(scores, rows, strict=True)
    ]
