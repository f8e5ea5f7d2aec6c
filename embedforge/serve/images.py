"""Image inputs of the HTTP API: data URIs and paths under ``--image-root``, decoded with the server's limits.

A request says it carries images with ``"modality": "image"`` (the field infinity-emb uses); then
every item of ``input`` (``/v1/embeddings``) or ``query`` (``/v1/search``) is an image, given as

* a data URI, ``data:image/png;base64,...`` (also ``image/jpeg``, ``image/webp``), or
* a path to a file inside the folder the server was started with (``--image-root DIR``): relative
  to it or absolute, and inside it once symlinks are resolved (:func:`os.path.realpath`).

Nothing else is an image: without the field every string is a text, even one that starts with
``data:image/``. The server never fetches URLs (a server that does can be made to reach its own
network for a caller).

Every image is decoded as :func:`embedforge.images.read.open_image` decodes a file (EXIF
orientation applied, RGB, longest side at most ``MAX_SIDE``), but from bytes in memory, with
only the PNG, JPEG and WebP decoders enabled and a pixel limit far below Pillow's, so a small
file that declares a huge canvas is refused before it is decoded. Nothing is written to disk.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.errors import InputError
from embedforge.images.model import encode_images, supports_images
from embedforge.images.read import MAX_SIDE, open_image
from embedforge.serve.errors import ApiError
from embedforge.serve.schemas import HitLike, VectorCollectionLike

if TYPE_CHECKING:
    from PIL import Image

    from embedforge.serve.service import Service

__all__ = [
    "MAX_IMAGE_PIXELS", "THUMBNAIL_SIDE", "embed_images", "search_images", "thumbnail", "is_image_collection",
    "load_images", "decode_image", "describe_image", "thumbnail_jpeg",
]

# Most pixels an image may declare (width x height, before any downscaling): a 50-megapixel photo
# decodes to 150 MB of RGB for a moment. Pillow's own bomb limit (~89 M, an error past 2x) is
# meant for trusted files; a server decoding several requests at once needs a tighter one.
MAX_IMAGE_PIXELS = 50_000_000
THUMBNAIL_SIDE = 256  # longest side of the web page's thumbnails (JPEG)
_FORMATS = ("PNG", "JPEG", "WEBP")  # Pillow decoders enabled for request images
_DATA_URI = re.compile(r"data:(image/(?:png|jpeg|jpg|webp))(;[^,;]*)*;base64,", re.IGNORECASE)


# ---- what the routes call ----


def _texts_only(what: str) -> ApiError:
    return ApiError(400, f"{what} embeds texts only; image inputs need a model that embeds images too "
                    "(a CLIP model: embedforge serve --model CLIP_DIR)", code="images_not_supported", param="modality")


def _check_count(service: Service, items: Sequence[str], param: str) -> None:
    limit = min(service.config.max_images, service.config.max_inputs)
    if not items:
        raise ApiError(400, f"'{param}' must not be empty", code="empty_input", param=param)
    if len(items) > limit:
        raise ApiError(400, f"'{param}' has {len(items)} images; at most {limit} per request", code="too_many_inputs",
                       param=param)


def _decode_all(service: Service, items: Sequence[str], param: str) -> list[Image.Image]:
    _check_count(service, items, param)
    return load_images(items, param, root=service.config.image_root, max_bytes=service.config.max_image_bytes)


def embed_images(service: Service, items: Sequence[str]) -> np.ndarray:
    """``(len(items), dim)`` float32, rows L2-normalised: :func:`~embedforge.images.model.encode_images` of the decoded images.

    Blocking (decoding here, the forward pass on the model's thread, between text batches).
    """
    if not service.images:
        raise _texts_only(f"the served model {service.model_id!r}")
    images = _decode_all(service, items, "input")
    return service.on_model_thread(lambda: encode_images(service.model, images))  # (n, dim)


def is_image_collection(collection: Any) -> bool:
    manifest = getattr(collection, "manifest", None)
    return isinstance(manifest, dict) and manifest.get("modality") == "image"


def search_images(service: Service, items: Sequence[str], *, top_k: int, mode: str, where: dict[str, Any] | None,
                  fusion: str | None, rerank: bool) -> list[list[HitLike]]:
    """Top-``top_k`` hits per query image: image -> image in an image collection, image -> text in a text
    collection embedded with the same CLIP model (cosine of the image's vector, as ``search_by_image``)."""
    collection = service.served_collection()
    if mode != "dense" or fusion is not None or rerank:
        raise ApiError(400, "image queries search the vectors only: mode 'dense', no 'fusion', no 'rerank'",
                       code="invalid_search", param="mode" if mode != "dense" else ("fusion" if fusion else "rerank"))
    if not isinstance(collection, VectorCollectionLike):
        raise ApiError(400, "this server's collection cannot be searched by image", code="images_not_supported",
                       param="modality")
    if service.collection_model is not None and not service.images:
        raise _texts_only(f"the collection's model {service.model_id!r}")
    images = _decode_all(service, items, "query")

    def run() -> list[list[HitLike]]:
        model = collection.model(service.collection_model)  # the served model when it is the collection's
        if not supports_images(model):
            raise _texts_only("the collection's model")
        queries = encode_images(model, images)  # (q, dim)
        k = min(top_k, len(service.served_collection()))
        if k < 1:
            return [[] for _ in images]
        scores, rows = collection.search_vectors(queries, k, mask=collection.mask(where))  # (q, k) each
        return [[collection.hit(int(r), float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
                for srow, rrow in zip(scores, rows, strict=True)]

    try:
        return service.on_model_thread(run)
    except (InputError, ValueError) as err:
        raise ApiError(400, str(err), code="invalid_search") from err


def thumbnail(service: Service, doc_id: str) -> bytes:
    """A small JPEG of an image document of the served image collection; 404 for anything else.

    The file is the one the collection's own metadata names for ``doc_id`` (``index_images``
    wrote it); no request names a path, so no other file on the machine can be read this way.
    """
    collection = service.collection
    missing = ApiError(404, f"no image document {doc_id!r} in this server's collection", code="image_not_found")
    if collection is None or not is_image_collection(collection) or not isinstance(collection, VectorCollectionLike):
        raise missing
    try:
        metadata = collection.get(doc_id).metadata or {}
    except (InputError, KeyError):
        raise missing from None
    path = metadata.get("path")
    if metadata.get("kind") != "image" or not isinstance(path, str):
        raise missing
    data = thumbnail_jpeg(path)
    if data is None:
        raise ApiError(404, f"the image of {doc_id!r} cannot be read any more", code="image_not_found")
    return data


# ---- decoding ----


def describe_image(item: str) -> str:
    """A short stand-in for an image input in a response (``query`` of ``/v1/search``): a data URI's head, a path as given."""
    match = _DATA_URI.match(item)
    if match is None:
        return item
    return f"data:{match.group(1).lower()};base64,… ({(len(item) - match.end()) * 3 // 4} bytes)"


def load_images(items: Sequence[str], param: str, *, root: str | None, max_bytes: int) -> list[Image.Image]:
    """Decode every item (a data URI or a path under ``root``); the first bad one is a 400 naming ``param[i]``."""
    images = []
    for i, item in enumerate(items):
        name = f"{param}[{i}]" if len(items) > 1 else param
        images.append(decode_image(_image_bytes(item, name, root=root, max_bytes=max_bytes), name))
    return images


def _image_bytes(item: str, param: str, *, root: str | None, max_bytes: int) -> bytes:
    if not item:
        raise ApiError(400, f"'{param}' is an empty string", code="empty_input", param=param)
    if item[:5].lower() == "data:":
        return _data_uri_bytes(item, param, max_bytes)
    if re.match(r"[a-z][a-z0-9+.-]*://", item, re.IGNORECASE):
        raise ApiError(400, f"'{param}': this server does not fetch URLs; send the image as a data URI "
                       "(data:image/png;base64,...)", code="invalid_image", param=param)
    return _rooted_file_bytes(item, param, root, max_bytes)


def _data_uri_bytes(item: str, param: str, max_bytes: int) -> bytes:
    match = _DATA_URI.match(item)
    if match is None:
        raise ApiError(400, f"'{param}': not an image data URI; expected data:image/png;base64,... "
                       "(or image/jpeg, image/webp)", code="invalid_image", param=param)
    payload = item[match.end():]
    if len(payload) * 3 // 4 > max_bytes + 2:  # before decoding: base64 is 4 characters per 3 bytes
        raise _too_large(param, max_bytes)
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"'{param}': the data URI's base64 is malformed", code="invalid_image", param=param) from None
    if len(data) > max_bytes:
        raise _too_large(param, max_bytes)
    return data


def _rooted_file_bytes(item: str, param: str, root: str | None, max_bytes: int) -> bytes:
    """The bytes of the file ``item`` names, if it lies inside ``root`` after symlinks are resolved."""
    if root is None:
        raise ApiError(400, f"'{param}': image paths are accepted only by a server started with --image-root DIR; "
                       "send the image as a data URI (data:image/png;base64,...)", code="image_path_not_allowed", param=param)
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, item))  # an absolute item replaces the root here, then is checked
    if os.path.commonpath([base, real]) != base:
        raise ApiError(400, f"'{param}': the path is outside the server's image root", code="image_path_not_allowed",
                       param=param)
    try:
        # O_NOFOLLOW: a symlink put in place after realpath is refused; O_NONBLOCK: a FIFO does not hang the read
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ApiError(400, f"'{param}': no such image file under the image root: {item!r}", code="image_not_found",
                       param=param) from None
    except OSError as err:
        raise ApiError(400, f"'{param}': cannot read {item!r} ({err.strerror or type(err).__name__})",
                       code="image_not_found", param=param) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ApiError(400, f"'{param}': {item!r} is not a file", code="image_not_found", param=param)
    if info.st_size > max_bytes:
        os.close(fd)
        raise _too_large(param, max_bytes)
    with os.fdopen(fd, "rb") as file:
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since fstat
        raise _too_large(param, max_bytes)
    return data


def _too_large(param: str, max_bytes: int) -> ApiError:
    return ApiError(400, f"'{param}': the image is larger than the server's limit of {max_bytes} bytes",
                    code="image_too_large", param=param)


def decode_image(data: bytes, param: str, max_side: int = MAX_SIDE) -> Image.Image:
    """``data`` decoded by :func:`embedforge.images.read.decode_image` (the decoder behind ``open_image``, so a
    data URI of a file embeds exactly as the file does locally), PNG/JPEG/WebP only and at most
    ``MAX_IMAGE_PIXELS`` (checked from the header); a 400 when it is no usable image."""
    from PIL import UnidentifiedImageError

    from embedforge.images.read import decode_image as decode

    def check_size(size: tuple[int, int]) -> None:
        if size[0] * size[1] > MAX_IMAGE_PIXELS:
            raise ApiError(400, f"'{param}': the image has {size[0]}x{size[1]} pixels; at most "
                           f"{MAX_IMAGE_PIXELS} per image", code="image_too_large", param=param)

    try:
        return decode(io.BytesIO(data), max_side, formats=_FORMATS, check_size=check_size)
    except ApiError:
        raise
    except UnidentifiedImageError:
        raise ApiError(400, f"'{param}': not a PNG, JPEG or WebP image", code="invalid_image", param=param) from None
    except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError, struct.error … on broken data
        raise ApiError(400, f"'{param}': corrupt image ({type(err).__name__})", code="invalid_image", param=param) from None


def thumbnail_jpeg(path: str, side: int = THUMBNAIL_SIDE) -> bytes | None:
    """A JPEG of the image file at ``path``, longest side at most ``side``; None when it cannot be read.

    Re-encoded, never the file's own bytes: what leaves the server is always a small picture.
    """
    try:
        image = open_image(path, side)
    except InputError:
        return None
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()
