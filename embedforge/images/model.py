"""Load a model that embeds images and texts into one space, and encode images with it.

Four layouts load, all through :func:`embedforge.models.load_model` (so a hub id offline fails
with the same one-line error as a text model):

* sentence-transformers' CLIP layout (``modules.json`` naming ``sentence_transformers.models.CLIPModel``,
  as ``sentence-transformers/clip-ViT-B-32`` ships);
* a plain transformers ``CLIPModel`` directory (``config.json``, weights, tokenizer and image
  processor files): sentence-transformers >= 5.4 wraps it in a multimodal ``Transformer``
  module that routes texts to ``get_text_features`` and images to ``get_image_features``;
* a LiT model written by :func:`embedforge.images.lit.train_lit` (a sentence-transformers ``Router``
  with a text route and an image route);
* an open_clip folder (``open_clip_config.json`` + ``open_clip_model.safetensors`` or
  ``open_clip_pytorch_model.bin`` + CLIP tokenizer files), ViT models only: converted once into a
  cached plain ``CLIPModel`` directory without open_clip (:mod:`embedforge.images.openclip`), by
  :func:`embedforge.models.resolve_model`, so every command (and a collection reopened later) takes the
  user's folder itself.

Images go in as decoded PIL images (:mod:`embedforge.images.read` reads files safely), never as
path strings: sentence-transformers would open a path itself, without the EXIF rotation, size
limit and skip-with-a-warning handling done here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from embedforge.errors import InputError
from embedforge.models import embedding_dim

if TYPE_CHECKING:
    from PIL import Image
    from sentence_transformers import SentenceTransformer

__all__ = ["load_image_model", "supports_images", "require_images", "encode_images", "IMAGE_BATCH"]

IMAGE_BATCH = 32  # images per forward pass (CLIP ViT-B/32 at 224 px: ~0.5 GB of activations on CPU)


def supports_images(model: SentenceTransformer) -> bool:
    """Whether ``model`` embeds images (a CLIP-style or LiT model), not texts only."""
    supports = getattr(model, "supports", None)
    return bool(supports("image")) if supports is not None else False


def require_images(model: SentenceTransformer, name: str) -> None:
    """InputError naming ``name`` when the model embeds texts only."""
    if not supports_images(model):
        raise InputError(
            f"the model {name!r} embeds texts only; image search needs a model that embeds images too "
            "(a CLIP model directory, a hub id such as sentence-transformers/clip-ViT-B-32, or one made "
            "by 'embedforge train-images')"
        )


def load_image_model(name_or_path: str | os.PathLike[str], device: str | None = None) -> SentenceTransformer:
    """Load a CLIP (or LiT) model from a directory or hub id; InputError if it cannot embed images."""
    from embedforge.models import load_model

    model = load_model(name_or_path, device=device)
    require_images(model, os.fspath(name_or_path))
    return model


def encode_images(
    model: SentenceTransformer, images: Sequence[Image.Image], *, batch_size: int = IMAGE_BATCH
) -> np.ndarray:
    """Embed decoded images; a C-contiguous float32 ``(len(images), dim)`` array, rows L2-normalised.

    ``[]`` gives shape ``(0, dim)``. The vectors share the space of the model's text vectors
    (:func:`embedforge.encode.encode`), so their dot products are the text-image cosines.
    """
    require_images(model, type(model).__name__)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    dim = embedding_dim(model)
    images = list(images)
    if not images:
        return np.zeros((0, dim), dtype=np.float32)
    out = model.encode(images, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                       show_progress_bar=False)
    return np.ascontiguousarray(out, dtype=np.float32)  # (n, dim)
