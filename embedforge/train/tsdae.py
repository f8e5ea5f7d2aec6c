r"""TSDAE (Wang, Reimers & Gurevych, Findings of EMNLP 2021): a denoising auto-encoder through the sentence vector.

The encoder reads a damaged text — a fraction ``1 − p`` of its words kept, in order, ``p = 0.6``
deleted (the paper's best noise) — and pools it into one vector; a transformer decoder that sees
only that vector (through cross-attention) must reconstruct the original text:

    L = − Σ_t log P_θ(x_t | x_<t, s(x̃)),   s(x̃) = pool(encoder(x̃))

The objective and the decoder are sentence-transformers' ``DenoisingAutoEncoderLoss``; what this
module adds is the noise (seeded, whitespace words, so it needs no NLTK) and the check that a
decoder is *usable*: its output layer (the LM head) must come from a checkpoint. A decoder whose
LM head starts random spends its training learning the vocabulary instead of teaching the
encoder: with the bundled all-MiniLM-L6-v2 (saved without its MLM head) TSDAE lost 15 nDCG@10
points on SciFact (issue 6). Hence :func:`lm_head_keys`, which reads the weight names only.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from embedforge.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from torch import nn

    from embedforge.config import TrainConfig

__all__ = ["DELETE_RATIO", "delete_noise", "noisy_texts", "lm_head_keys", "decoder_source", "build_loss"]

logger = logging.getLogger(__name__)

DELETE_RATIO = 0.6  # the paper's best: delete 60 % of the words
# Weight-name prefixes of a masked- or causal-LM output layer in Hugging Face checkpoints
# (BERT / MiniLM / ELECTRA-style "cls.predictions", RoBERTa / MPNet "lm_head", DistilBERT "vocab_").
LM_HEAD_PREFIXES = ("cls.predictions.", "lm_head.", "vocab_transform.", "vocab_projector.", "generator_lm_head.")


def delete_noise(text: str, rng: random.Random, ratio: float = DELETE_RATIO) -> str:
    """``text`` with each word deleted with probability ``ratio``; at least one word is kept."""
    words = text.split()
    if not words:
        return text
    kept = [w for w in words if rng.random() >= ratio]
    return " ".join(kept) if kept else rng.choice(words)


def noisy_texts(texts: Sequence[str], seed: int, ratio: float = DELETE_RATIO) -> list[str]:
    """One damaged copy of every text, reproducible from ``seed``."""
    rng = random.Random(seed)
    return [delete_noise(t, rng, ratio) for t in texts]


def _weight_files(folder: Path) -> list[Path]:
    index = [folder / "model.safetensors.index.json", folder / "pytorch_model.bin.index.json"]
    for file in index:
        if file.is_file():
            shards = sorted(set(json.loads(file.read_text(encoding="utf-8"))["weight_map"].values()))
            return [folder / s for s in shards]
    return [f for f in (folder / "model.safetensors", folder / "pytorch_model.bin") if f.is_file()]


def lm_head_keys(folder: str | os.PathLike[str]) -> list[str]:
    """Names of the LM-head weights stored in the transformers checkpoint at ``folder`` ([] if none).

    Reads only the names (safetensors header; a ``.bin`` is loaded on the meta device).
    """
    names: list[str] = []
    for file in _weight_files(Path(folder)):
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                names.extend(f.keys())
        else:
            import torch

            names.extend(torch.load(file, map_location="meta", weights_only=True).keys())
    return sorted(n for n in names if n.startswith(LM_HEAD_PREFIXES))


def _unusable(encoder_folder: Path, source: Path, tied: bool) -> str | None:
    """Why transformers cannot decode with ``source`` for this encoder, or None when it can."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        return f"cannot read the decoder's config in {source} ({type(err).__name__})"
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"transformers has no decoder (causal-LM) class for model type {config.model_type!r}"
    if tied:
        return None
    try:
        encoder = AutoConfig.from_pretrained(encoder_folder)
        same_vocab = AutoTokenizer.from_pretrained(source).get_vocab() == AutoTokenizer.from_pretrained(encoder_folder).get_vocab()
    except (OSError, ValueError) as err:
        return f"cannot compare the decoder's tokenizer with the base's ({type(err).__name__}: {err})"
    if getattr(encoder, "hidden_size", None) != getattr(config, "hidden_size", None):
        return f"the decoder's hidden size {config.hidden_size} differs from the base's {encoder.hidden_size}"
    if not same_vocab:
        return "the decoder's vocabulary differs from the base's (it must decode the base's token ids)"
    return None


def decoder_source(encoder_folder: str | os.PathLike[str], decoder: str | os.PathLike[str] | None) -> tuple[str | None, str]:
    """Where TSDAE's decoder comes from: ``(path or None, why)``.

    ``decoder`` given: that checkpoint, untied from the encoder (it must hold an LM head, have a
    causal-LM class in transformers, the base's hidden size and vocabulary). Otherwise the
    encoder's own checkpoint, tied to it, when that holds an LM head; else None.
    """
    encoder = Path(encoder_folder)
    if not encoder.is_dir():
        return None, f"the base {encoder_folder} is not a local checkpoint, so its LM head cannot be checked; pass a local directory"
    if decoder is not None:
        if not Path(decoder).is_dir():
            return None, f"the decoder {decoder} is not a local directory"
        if not lm_head_keys(decoder):
            return None, f"the decoder {decoder} holds no LM-head weights (expected e.g. a *ForMaskedLM checkpoint)"
        why = _unusable(encoder, Path(decoder), tied=False)
        return (None, why) if why else (str(decoder), f"decoder from {decoder} (untied), its LM head from that checkpoint")
    if lm_head_keys(encoder):
        why = _unusable(encoder, encoder, tied=True)
        return (None, why) if why else (str(encoder), "decoder tied to the encoder, LM head from the base checkpoint")
    return None, (
        "the base has no decoder (LM) head, and one starting random loses (-15 nDCG@10 on SciFact with MiniLM); "
        "give a masked-LM checkpoint of the same architecture (--tsdae-decoder) to try it"
    )


def build_loss(model: SentenceTransformer, config: TrainConfig) -> nn.Module:
    """sentence-transformers' ``DenoisingAutoEncoderLoss`` with a decoder whose LM head is trained, not random
    (:func:`decoder_source`); an InputError when no usable decoder is available."""
    from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss

    transformer = model.transformers_model
    if transformer is None:
        raise InputError("TSDAE needs a base model with a transformers encoder")
    encoder_folder = transformer.config._name_or_path
    source, why = decoder_source(encoder_folder, config.decoder)
    if source is None:
        raise InputError(f"TSDAE: {why}")
    logger.info("TSDAE: %s", why)
    tied = config.decoder is None
    try:
        return DenoisingAutoEncoderLoss(model, decoder_name_or_path=None if tied else source, tie_encoder_decoder=tied)
    except (ValueError, OSError, AssertionError) as err:  # what transformers / sentence-transformers raise
        raise InputError(f"TSDAE cannot build its decoder from {source}: {err}") from None
