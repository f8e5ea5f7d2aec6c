"""Find and read image files safely: png / jpg / webp via Pillow, EXIF orientation applied, large ones downscaled.

An image folder is read in sorted order (its files and those of its sub-folders); a file that
Pillow cannot decode (truncated, not an image, a decompression bomb) is skipped with a warning
naming it, so one bad file never stops a run of thousands.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from embedforge.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "MAX_SIDE", "list_images", "decode_image", "open_image", "read_images", "pillow"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what an image folder is searched for (case-insensitive)
# Longest side kept after reading: CLIP processors resize to 224-336 px anyway, so a 6000 px photo
# is shrunk once here (Pillow's draft mode makes JPEG decoding itself cheaper) instead of held whole.
MAX_SIDE = 1024
# Pillow's own limit (Image.MAX_IMAGE_PIXELS, ~89 M pixels) is kept, and its warning above it is made
# an error here: such a file is almost always a decompression bomb or a broken header, and is skipped
# like any unreadable one.


def pillow() -> object:
    """The ``PIL.Image`` module, with an install hint when Pillow is missing."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow comes with matplotlib and the images extra
        raise InputError("image support needs Pillow: pip install 'embedforge[images]'") from err
    return Image


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped), sorted; InputError when there are none."""
    root = Path(folder)
    if not root.exists():
        raise InputError("no such image folder", root)
    if not root.is_dir():
        raise InputError("is a file, not a folder of images", root)
    found = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not found:
        raise InputError(f"no images found (looked for {', '.join(IMAGE_SUFFIXES)} files)", root)
    return found


def decode_image(
    source: str | os.PathLike[str] | BinaryIO,
    max_side: int = MAX_SIDE,
    *,
    formats: Sequence[str] | None = None,
    check_size: Callable[[tuple[int, int]], None] | None = None,
) -> Image.Image:
    """Decode a file path or a binary file object into an RGB image: EXIF orientation applied, longest side at
    most ``max_side``, ``image.info["original_size"]`` the (width, height) as displayed (after the EXIF
    rotation, before downscaling). The one decoder behind :func:`open_image` and the server's data URIs.

    ``formats`` limits Pillow's decoders; ``check_size`` sees the header's size before any pixel is decoded
    (and may raise). Pillow's own errors propagate (a decompression bomb as its warning, raised).
    """
    pil = pillow()  # the install hint first, when Pillow is missing
    from PIL import ImageOps

    if max_side < 1:
        raise InputError(f"max_side must be >= 1, got {max_side}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pil.DecompressionBombWarning)  # type: ignore[attr-defined]
        with pil.open(source, formats=formats) as img:  # type: ignore[attr-defined]
            size = img.size  # from the header, before any reduced-scale decoding
            if check_size is not None:
                check_size(size)
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale when far larger
            img.load()
            decoded = img.size
            out = ImageOps.exif_transpose(img) or img
            out = out.convert("RGB")
    if out.size != decoded:  # rotated by 90 degrees by its EXIF orientation
        size = (size[1], size[0])
    if max(out.size) > max_side:
        out.thumbnail((max_side, max_side), pil.Resampling.LANCZOS)  # type: ignore[attr-defined]
    out.info["original_size"] = size  # (width, height) as displayed, before downscaling
    return out


def open_image(path: str | os.PathLike[str], max_side: int = MAX_SIDE) -> Image.Image:
    """:func:`decode_image` of the file at ``path``.

    Raises :class:`InputError` naming the file when it cannot be read or decoded.
    """
    pillow()
    from PIL import UnidentifiedImageError

    try:
        return decode_image(path, max_side)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError("no such image file", path) from None
    except UnidentifiedImageError:
        raise InputError("unreadable image (not a file Pillow can decode)", path) from None
    except (OSError, ValueError, SyntaxError, Warning) as err:  # PIL raises all of these on broken files
        detail = str(err).replace(f"'{os.fspath(path)}'", "").replace(os.fspath(path), "").strip(" :")
        raise InputError(f"unreadable image ({type(err).__name__}{': ' + detail if detail else ''})", path) from None
    except Exception as err:  # decoders of some formats raise others on garbage (e.g. struct.error)
        raise InputError(f"unreadable image ({type(err).__name__})", path) from None


def read_images(
    paths: Iterable[str | os.PathLike[str]], max_side: int = MAX_SIDE
) -> Iterator[tuple[Path, Image.Image | None]]:
    """``(path, image)`` per path; ``image`` is None (and a warning names the file) when it cannot be read."""
    for path in paths:
        try:
            yield Path(path), open_image(path, max_side)
        except InputError as err:
            logger.warning("skipped %s", err)
            yield Path(path), None
