"""LiT, "locked-image text tuning" turned around: train an image encoder into a *locked* text model's space.

Zhai et al. 2022 (LiT) lock a pretrained image tower and tune the text tower; here the text model
is the user's own (already trained on their texts) and stays unchanged, and a small CNN image
encoder, randomly initialised, learns to put each image where the text model puts its caption.
Images then become searchable in the same space as the user's texts: text -> image, image ->
image and image -> text, with the text model's vectors of existing text collections untouched.

The model written is a plain sentence-transformers directory: a ``Router`` with a ``text`` route
(the text model's own modules) and an ``image`` route (a transformers ``ConvNextModel`` wrapped
in a ``Transformer`` module, a ``Dense`` projection to the text dimension, ``Normalize``), so
:func:`embedforge.models.load_model` loads it like any model, with no custom code.

Written here, not taken from a library: open_clip / timm / torchvision train CLIP-style towers
but need downloaded weights and lock the image side; none trains an image tower into an arbitrary
sentence-transformers text model's space.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.errors import InputError
from embedforge.images.read import MAX_SIDE

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from sentence_transformers import SentenceTransformer

__all__ = ["LiTConfig", "lit_infonce", "train_lit", "read_pairs", "load_pairs", "train_images"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiTConfig:
    image_size: int = 64  # side images are resized (shortest edge) and centre-cropped to: the CNN's input
    widths: tuple[int, ...] = (32, 64, 128)  # ConvNeXt stage widths; the last is the pooled feature size
    depths: tuple[int, ...] = (1, 1, 1)  # ConvNeXt blocks per stage
    patch_size: int = 4  # stem stride ("patchify"): 64 px -> a 16x16 feature map; each later stage halves it
    epochs: int = 40  # passes over the pairs
    batch_size: int = 128  # pairs per step; the unique captions of a batch are its InfoNCE candidates
    lr: float = 3e-3  # AdamW peak learning rate (linear warm-up over the first 5% of steps, cosine decay)
    weight_decay: float = 0.05  # AdamW (ConvNeXt's own recipe uses 0.05)
    scale: float = 20.0  # InfoNCE inverse temperature (sentence-transformers MultipleNegativesRankingLoss default)
    shift: int = 2  # augmentation: random translation by up to this many pixels (of the resized image)
    holdout: float = 0.1  # share of pairs held out to report image -> caption recall@1 (0 = none)
    seed: int = 42


def lit_infonce(image_vectors: torch.Tensor, text_vectors: torch.Tensor, targets: torch.Tensor, scale: float) -> torch.Tensor:
    r"""InfoNCE of images against locked text vectors.

    With :math:`u_i` the L2-normalised image vector of pair *i*, :math:`t_1..t_m` the distinct
    (already normalised, locked) caption vectors of the batch and :math:`c(i)` the index of pair
    *i*'s caption among them:

    .. math::  L = -\frac{1}{b}\sum_i \log \frac{\exp(s\, u_i^\top t_{c(i)})}{\sum_{j=1}^{m} \exp(s\, u_i^\top t_j)}

    :math:`s` = ``scale`` is the inverse temperature (CLIP/LiT learn it; a fixed 20 is
    sentence-transformers' MNRL default). Only the image side of CLIP's symmetric loss: the text
    side is locked, so its direction carries no gradient. Captions repeated within a batch are
    one candidate, not false negatives of each other.

    Args:
        image_vectors: (b, d) image encoder outputs (normalised here).
        text_vectors: (m, d) distinct caption vectors, rows L2-normalised.
        targets: (b,) int64, the caption index of each image.
    """
    import torch.nn.functional as F

    logits = scale * F.normalize(image_vectors, dim=-1) @ text_vectors.T  # (b, m)
    return F.cross_entropy(logits, targets)


def _image_encoder(config: LiTConfig, dim: int) -> tuple[Any, Any, Any]:
    """A randomly initialised ConvNeXt, its PIL image processor and a linear projection to ``dim``."""
    import torch
    from transformers import ConvNextConfig, ConvNextModel

    try:
        from transformers.models.convnext.image_processing_pil_convnext import (
            ConvNextImageProcessorPil as Processor,
        )
    except ImportError:  # pragma: no cover - transformers < 5
        from transformers import ConvNextImageProcessor as Processor  # type: ignore[assignment]

    if len(config.widths) != len(config.depths) or not config.widths:
        raise InputError("LiTConfig.widths and depths must be non-empty and of equal length")
    torch.manual_seed(config.seed)
    cnn = ConvNextModel(ConvNextConfig(
        num_channels=3, patch_size=config.patch_size, hidden_sizes=list(config.widths), depths=list(config.depths),
        num_stages=len(config.widths), image_size=config.image_size,
    ))
    processor = Processor(size={"shortest_edge": config.image_size}, crop_pct=1.0)
    projection = torch.nn.Linear(config.widths[-1], dim)
    return cnn, processor, projection


def _shift(pixels: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding): (b, c, h, w) -> same."""
    import torch
    import torch.nn.functional as F

    if max_shift <= 0:
        return pixels
    b, _, h, w = pixels.shape
    padded = F.pad(pixels, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    return torch.stack([padded[i, :, int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w] for i in range(b)])


def train_lit(
    text_model: SentenceTransformer,
    images: Sequence[Image.Image],
    captions: Sequence[str],
    config: LiTConfig | None = None,
) -> tuple[SentenceTransformer, dict[str, Any]]:
    """Train an image encoder so that each image lands on ``text_model``'s vector of its caption.

    Returns the combined model (texts through ``text_model`` unchanged, images through the new
    encoder; see the module docstring) and a report: pairs, steps, seconds, final loss and, when
    ``config.holdout`` > 0, image -> caption recall@1 on held-out pairs against chance.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Router, Transformer

    from embedforge.encode import encode
    from embedforge.models import embedding_dim

    config = config or LiTConfig()
    if len(images) != len(captions):
        raise InputError(f"{len(images)} images but {len(captions)} captions")
    if len(images) < 2:
        raise InputError(f"LiT training needs at least 2 (image, caption) pairs, got {len(images)}")
    if config.epochs < 1 or config.batch_size < 2:
        raise InputError("LiTConfig.epochs must be >= 1 and batch_size >= 2")
    dim = embedding_dim(text_model)
    cnn, processor, projection = _image_encoder(config, dim)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(images))
    n_held = int(round(len(images) * config.holdout)) if len(images) >= 20 else 0
    held, train = order[:n_held], order[n_held:]
    distinct = sorted(set(captions))
    caption_id = {c: i for i, c in enumerate(distinct)}
    text_vectors = torch.from_numpy(encode(text_model, distinct, normalize=True))  # (m, d), locked
    targets_all = torch.tensor([caption_id[c] for c in captions], dtype=torch.int64)  # (n,)
    pixels = torch.as_tensor(np.asarray(processor(list(images), return_tensors="np")["pixel_values"]), dtype=torch.float32)  # (n, 3, s, s)

    params = list(cnn.parameters()) + list(projection.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / total))))
    generator = torch.Generator().manual_seed(config.seed)
    cnn.train()
    started = time.perf_counter()
    loss_value = float("nan")
    for epoch in range(config.epochs):
        perm = torch.from_numpy(train[rng.permutation(len(train))])
        running = 0.0
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start : start + config.batch_size]
            batch_targets = targets_all[idx]  # (b,)
            used, local = torch.unique(batch_targets, return_inverse=True)  # distinct captions of the batch
            x = _shift(pixels[idx], config.shift, generator)  # (b, 3, s, s)
            features = projection(cnn(pixel_values=x).pooler_output)  # (b, d)
            loss = lit_infonce(features, text_vectors[used], local, config.scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += float(loss.detach()) * len(idx)
        loss_value = running / max(1, len(train))
        logger.info("LiT epoch %d/%d: loss %.4f", epoch + 1, config.epochs, loss_value)
    seconds = time.perf_counter() - started
    cnn.eval()

    report: dict[str, Any] = {
        "pairs": len(train), "distinct_captions": len(distinct), "steps": total, "seconds": round(seconds, 2),
        "final_loss": round(loss_value, 4), "config": asdict(config),
    }
    if n_held:
        with torch.no_grad():
            chunks = [projection(cnn(pixel_values=pixels[held[i : i + 256]]).pooler_output) for i in range(0, n_held, 256)]
            u = torch.nn.functional.normalize(torch.cat(chunks), dim=-1)  # (h, d)
        held_caps = sorted({int(targets_all[i]) for i in held})
        sims = u @ text_vectors[held_caps].T  # (h, m_held)
        best = [held_caps[j] for j in sims.argmax(dim=1).tolist()]
        recall = float(np.mean([b == int(targets_all[i]) for b, i in zip(best, held, strict=True)]))
        report["heldout"] = {"pairs": int(n_held), "image_to_caption_recall@1": round(recall, 4),
                             "chance": round(1 / len(held_caps), 4)}

    with tempfile.TemporaryDirectory() as tmp:
        cnn.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        image_in = Transformer(tmp, modality_config={"image": {"method": "forward", "method_output_name": "pooler_output"}},
                               module_output_name="sentence_embedding")
    dense = Dense(config.widths[-1], dim, activation_function=torch.nn.Identity())
    dense.linear.load_state_dict(projection.state_dict())
    text_route: list[Any] = list(text_model.children())
    router = Router({"text": text_route, "image": [image_in, dense, Normalize()]})
    model = SentenceTransformer(modules=[router], device="cpu")
    return model, report


def read_pairs(path: str | os.PathLike[str], image_root: str | os.PathLike[str]) -> list[tuple[Path, str, int]]:
    """``(image path, caption, line)`` from a csv / tsv / jsonl with columns ``image`` and ``caption``.

    Image paths are relative to ``image_root`` and must stay inside it.
    """
    from embedforge.corpus import read_records

    root = Path(image_root)
    if not root.is_dir():
        raise InputError("no such image folder (--image-root)", root)
    rows = read_records(path)
    if not rows:
        raise InputError("no pairs", path)
    names = rows[0][1].keys()
    if "image" not in names or "caption" not in names:
        raise InputError(f"expected columns image and caption (found: {', '.join(names)})", path)
    base = root.resolve()
    out: list[tuple[Path, str, int]] = []
    for line, row in rows:
        image, caption = row.get("image"), row.get("caption")
        if not isinstance(image, str) or not image.strip() or not isinstance(caption, str) or not caption.strip():
            raise InputError("empty image or caption", path, line)
        file = (base / image.strip()).resolve()
        if not file.is_relative_to(base):
            raise InputError(f"image path {image!r} leaves the image root {base}", path, line)
        out.append((file, caption.strip(), line))
    return out


def load_pairs(
    pairs_file: str | os.PathLike[str], image_root: str | os.PathLike[str], max_side: int = MAX_SIDE
) -> tuple[list[Image.Image], list[str], int]:
    """Decoded images and their captions from :func:`read_pairs`; unreadable images skipped (warned), and counted.

    All pairs are held in memory, each image shrunk to ``max_side`` pixels on its long side: pass
    a few times the size the model reads (a 64 px CNN needs no 1,024 px photos).
    """
    from embedforge.images.read import read_images

    pairs = read_pairs(pairs_file, image_root)
    images, captions = [], []
    for (_path, image), (_, caption, _) in zip(read_images([p for p, _, _ in pairs], max_side), pairs, strict=True):
        if image is not None:
            images.append(image)
            captions.append(caption)
    if not images:
        raise InputError(f"none of the {len(pairs)} images could be read (see the warnings above)", pairs_file)
    return images, captions, len(pairs) - len(images)


def train_images(
    text_model: str,
    pairs_file: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: LiTConfig | None = None,
    *,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Read pairs, train (:func:`train_lit`) and save the model with its manifest, atomically; ``(path, report)``.

    Unreadable images are skipped with a warning naming each.
    """
    from embedforge.collection import stored_model_name
    from embedforge.models import load_model, save_model

    config = config or LiTConfig()
    # the CNN reads image_size px (shortest edge): 2x that on the long side keeps up to 2:1 photos sharp, in ~1/60 of the memory
    if Path(output).exists() and not overwrite:
        raise InputError("already exists; choose another --output or pass --overwrite", output)
    images, captions, skipped = load_pairs(pairs_file, image_root, max_side=2 * config.image_size)
    text = load_model(text_model)
    model, report = train_lit(text, images, captions, config)
    report["skipped_images"] = skipped
    out = save_model(model, output, base_model=stored_model_name(text_model), training={"objective": "lit", **report},
                     extra={"modalities": ["text", "image"], "text_model": stored_model_name(text_model)})
    return out, report
