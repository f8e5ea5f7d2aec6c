"""Fine-tune a CLIP model on your own (image, caption) pairs with CLIP's symmetric InfoNCE loss.

Both towers train (the LiT alternative, :mod:`embedforge.images.lit`, locks the text side). The
model is a sentence-transformers model that embeds both modalities (:func:`load_image_model`);
batches go through its own ``preprocess`` and ``forward``, so what is trained is exactly what
``encode`` runs. Written here rather than with ``SentenceTransformerTrainer``: its collator expects
a ``datasets`` table, and PIL images would first have to be serialised into one; the loop is short.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.errors import InputError
from embedforge.images.model import require_images

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from sentence_transformers import SentenceTransformer

__all__ = ["ClipTuneConfig", "clip_infonce", "finetune_clip", "finetune_images"]

logger = logging.getLogger(__name__)

TRAIN_MAX_SIDE = 672  # long side of training images held in memory (~1.3 MB each as RGB)


@dataclass(frozen=True)
class ClipTuneConfig:
    epochs: int = 3  # passes over the pairs; a pretrained CLIP needs few
    batch_size: int = 32  # pairs per step (the in-batch negatives); CPU memory grows with it
    lr: float = 1e-5  # AdamW; full CLIP fine-tuning recipes use 1e-5 to 5e-6 (higher forgets pretraining)
    weight_decay: float = 0.1  # CLIP's own value
    scale: float | None = None  # InfoNCE inverse temperature; None: the model's learned logit scale (CLIP ~100), else 20
    holdout: float = 0.1  # share of pairs held out to report image -> caption recall@1 before and after (0 = none)
    seed: int = 42


def clip_infonce(image_vectors: torch.Tensor, text_vectors: torch.Tensor, targets: torch.Tensor, scale: float) -> torch.Tensor:
    r"""CLIP's symmetric InfoNCE, with repeated captions as one candidate with several images.

    With :math:`u_i` the normalised image vectors (b of them), :math:`t_j` the normalised vectors of
    the m distinct captions of the batch, :math:`c(i)` the caption of image *i*,
    :math:`\ell_{ij} = s\,u_i^\top t_j` and :math:`P_j = \{i : c(i) = j\}`:

    .. math::  L = \tfrac12\Big[-\tfrac1b\sum_i \log\frac{e^{\ell_{i c(i)}}}{\sum_j e^{\ell_{ij}}}
               \;-\; \tfrac1m\sum_j \log\frac{\sum_{i\in P_j} e^{\ell_{ij}}}{\sum_i e^{\ell_{ij}}}\Big]

    (Radford et al. 2021; the text -> image half is multi-positive, so two images with the same
    caption are not pushed apart.) Args: image_vectors (b, d), text_vectors (m, d), targets (b,)
    int64 caption index per image, every caption index used at least once.
    """
    import torch
    import torch.nn.functional as F

    logits = scale * F.normalize(image_vectors, dim=-1) @ F.normalize(text_vectors, dim=-1).T  # (b, m)
    image_to_text = F.cross_entropy(logits, targets)
    positive = F.one_hot(targets, num_classes=text_vectors.shape[0]).bool()  # (b, m)
    text_logits = logits.T  # (m, b)
    pos = torch.logsumexp(text_logits.masked_fill(~positive.T, float("-inf")), dim=1)  # (m,)
    text_to_image = (torch.logsumexp(text_logits, dim=1) - pos).mean()
    return (image_to_text + text_to_image) / 2


def _embed(model: SentenceTransformer, inputs: Sequence[Any]) -> torch.Tensor:
    """Vectors (n, d) with gradients: the model's own preprocess + forward, as ``encode`` runs them."""
    features = model.preprocess(list(inputs))
    features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
    return model(features)["sentence_embedding"]


def _recall_at_1(model: SentenceTransformer, images: Sequence[Image.Image], captions: Sequence[str]) -> float:
    import torch

    distinct = sorted(set(captions))
    with torch.no_grad():
        u = torch.nn.functional.normalize(_embed(model, images), dim=-1)  # (h, d)
        t = torch.nn.functional.normalize(_embed(model, distinct), dim=-1)  # (m, d)
    best = (u @ t.T).argmax(dim=1).tolist()
    return float(np.mean([distinct[j] == c for j, c in zip(best, captions, strict=True)]))


def finetune_clip(
    model: SentenceTransformer,
    images: Sequence[Image.Image],
    captions: Sequence[str],
    config: ClipTuneConfig | None = None,
) -> dict[str, Any]:
    """Train ``model`` (in place) on (image, caption) pairs; returns a report (pairs, steps, seconds, loss, held-out recall@1)."""
    import torch

    config = config or ClipTuneConfig()
    require_images(model, type(model).__name__)
    if len(images) != len(captions):
        raise InputError(f"{len(images)} images but {len(captions)} captions")
    if len(images) < 2 or config.epochs < 1 or config.batch_size < 2:
        raise InputError("CLIP fine-tuning needs at least 2 pairs, epochs >= 1 and batch_size >= 2")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    order = rng.permutation(len(images))
    n_held = int(round(len(images) * config.holdout)) if len(images) >= 20 else 0
    held, train = order[:n_held], order[n_held:]
    held_images, held_captions = [images[i] for i in held], [captions[i] for i in held]
    report: dict[str, Any] = {"pairs": len(train), "config": asdict(config)}
    model.eval()
    before = _recall_at_1(model, held_images, held_captions) if n_held else None
    scale = config.scale
    if scale is None:
        logit_scale = getattr(getattr(model[0], "auto_model", None), "logit_scale", None)
        scale = float(logit_scale.detach().exp()) if logit_scale is not None else 20.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps, started, loss_value = 0, time.perf_counter(), float("nan")
    model.train()
    for epoch in range(config.epochs):
        perm = train[rng.permutation(len(train))]
        running = 0.0
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start : start + config.batch_size]
            batch_captions = [captions[i] for i in idx]
            distinct = sorted(set(batch_captions))
            targets = torch.tensor([distinct.index(c) for c in batch_captions], dtype=torch.int64, device=model.device)
            u = _embed(model, [images[i] for i in idx])  # (b, d)
            t = _embed(model, distinct)  # (m, d)
            loss = clip_infonce(u, t, targets, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            running += float(loss.detach()) * len(idx)
        loss_value = running / len(train)
        logger.info("CLIP fine-tuning epoch %d/%d: loss %.4f", epoch + 1, config.epochs, loss_value)
    model.eval()
    report.update({"steps": steps, "seconds": round(time.perf_counter() - started, 2), "final_loss": round(loss_value, 4),
                   "scale": round(scale, 3), "distinct_captions": len(set(captions))})
    if n_held:
        report["heldout"] = {"pairs": n_held, "image_to_caption_recall@1_before": round(float(before or 0.0), 4),
                             "image_to_caption_recall@1": round(_recall_at_1(model, held_images, held_captions), 4),
                             "chance": round(1 / len(set(held_captions)), 4)}
    return report


def finetune_images(
    clip_model: str,
    pairs_file: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: ClipTuneConfig | None = None,
    *,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Read pairs (:func:`embedforge.images.lit.load_pairs`), fine-tune, save atomically with a manifest; ``(path, report)``."""
    from embedforge.collection import stored_model_name
    from embedforge.images.lit import load_pairs
    from embedforge.images.model import load_image_model
    from embedforge.models import save_model

    # CLIP processors read 224-336 px (shortest edge); 672 px on the long side keeps 2:1 photos at full detail
    if Path(output).exists() and not overwrite:
        raise InputError("already exists; choose another --output or pass --overwrite", output)
    images, captions, skipped = load_pairs(pairs_file, image_root, max_side=TRAIN_MAX_SIDE)
    model = load_image_model(clip_model)
    report = finetune_clip(model, images, captions, config)
    report["skipped_images"] = skipped
    out = save_model(model, output, base_model=stored_model_name(clip_model), training={"objective": "clip-infonce", **report},
                     extra={"modalities": ["text", "image"]})
    return out, report
