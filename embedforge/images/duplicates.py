"""Near-duplicate photos: groups of images whose vectors have cosine >= a threshold, plus byte-identical files.

A thin wrapper: the images are embedded with :func:`encode_images` and grouped by
:func:`embedforge.mine.dedupe` (connected components of the pairs above the threshold; files with
the same SHA-256 are merged whatever their vectors, as identical texts are). Nothing is deleted:
the groups are reported, the first file of each (in sorted path order) marked as the one to keep.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedforge.images.model import IMAGE_BATCH, encode_images
from embedforge.images.read import MAX_SIDE, list_images, read_images

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DuplicateGroup", "find_duplicate_images", "DEFAULT_THRESHOLD"]

# CLIP ViT-B/32 gives a photo and its re-encoded / resized copy a cosine of ~0.97-0.99, and two
# different shots of one scene ~0.90-0.95; 0.95 groups copies and near-identical bursts.
DEFAULT_THRESHOLD = 0.95


@dataclass(frozen=True)
class DuplicateGroup:
    kept: Path  # the first file of the group in sorted path order
    duplicates: tuple[Path, ...]  # the others, in sorted path order
    cosines: tuple[float, ...]  # each duplicate's cosine to ``kept`` (1.0 for a byte-identical copy)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def find_duplicate_images(
    model: SentenceTransformer,
    folder: str | os.PathLike[str],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    max_side: int = MAX_SIDE,
    batch_size: int = IMAGE_BATCH,
) -> list[DuplicateGroup]:
    """Groups (of 2 or more) of near-duplicate images under ``folder``; unreadable files are skipped with a warning."""
    from embedforge.mine import dedupe

    paths, images = [], []
    for path, image in read_images(list_images(folder), max_side):
        if image is not None:
            paths.append(path)
            images.append(image)
    vectors = encode_images(model, images, batch_size=batch_size)  # (n, dim)
    hashes = [_sha256(p) for p in paths]
    _, groups = dedupe(hashes, vectors, threshold)  # exact up to 100k images (see embedforge.mine)
    out = []
    for members in groups:
        first, rest = members[0], members[1:]
        cosines = [1.0 if hashes[i] == hashes[first] else float(np.dot(vectors[first], vectors[i])) for i in rest]
        out.append(DuplicateGroup(paths[first], tuple(paths[i] for i in rest), tuple(round(c, 6) for c in cosines)))
    return out
