"""The loss registry: one objective name, one builder ``(model, config) -> torch.nn.Module``.

``simcse`` (:mod:`embedforge.train.simcse`: texts or pairs/triplets, InfoNCE with in-batch
negatives), ``cosent`` (:mod:`embedforge.train.cosent`: graded pairs), ``tsdae``
(:mod:`embedforge.train.tsdae`: denoising auto-encoder). The trainer picks the name from the
config's ``mode`` and the training file (:func:`embedforge.train.trainer.train`); a new objective
is a new module with a ``build_loss`` and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from embedforge.train import cosent, simcse, tsdae

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from torch import nn

    from embedforge.config import TrainConfig

__all__ = ["LOSSES", "LossBuilder", "build_loss"]

LossBuilder = Callable[["SentenceTransformer", "TrainConfig"], "nn.Module"]

LOSSES: dict[str, LossBuilder] = {
    "simcse": simcse.build_loss,
    "cosent": cosent.build_loss,
    "tsdae": tsdae.build_loss,
}


def build_loss(name: str, model: SentenceTransformer, config: TrainConfig) -> nn.Module:
    """The loss ``name`` (a key of :data:`LOSSES`) for ``model`` trained with ``config``."""
    try:
        builder = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}") from None
    return builder(model, config)
