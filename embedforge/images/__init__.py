"""Image search: CLIP-style models that embed texts and images into one space, image collections, LiT training.

* :mod:`embedforge.images.read` — find and decode image files safely (EXIF rotation, downscaling, skip unreadable);
* :mod:`embedforge.images.model` — load a CLIP / LiT model, embed images;
* :mod:`embedforge.images.collection` — index an image folder into a collection; search by image;
* :mod:`embedforge.images.lit` — train an image encoder into a locked text model's space (LiT).
* :mod:`embedforge.images.finetune` — fine-tune a CLIP model on (image, caption) pairs (symmetric InfoNCE);
* :mod:`embedforge.images.duplicates` — groups of near-duplicate photos.

Pillow is needed (``pip install 'embedforge[images]'``); it is imported only when images are read.
"""

from __future__ import annotations

from embedforge.images.collection import ImageIndexConfig, index_images, is_image_collection, search_by_image
from embedforge.images.model import encode_images, load_image_model, supports_images
from embedforge.images.read import list_images, open_image

__all__ = [
    "ImageIndexConfig",
    "index_images",
    "is_image_collection",
    "search_by_image",
    "encode_images",
    "load_image_model",
    "supports_images",
    "list_images",
    "open_image",
]
