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

__all__ = ["LOSSES", "LossBuilder", "build_loss", "matryoshka"]

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
    loss = builder(model, config)
    dims = getattr(config, "matryoshka_dims", None)
    if dims:
        return matryoshka(model, loss, dims)
    return loss


def matryoshka(model: SentenceTransformer, loss: nn.Module, dims: tuple[int, ...]) -> nn.Module:
    """``loss`` also applied to the first d dimensions (re-normalised) for each d of ``dims``, equally
    weighted: sentence-transformers' ``MatryoshkaLoss``; InputError when a d exceeds the model's dimension."""
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    from embedforge.errors import InputError

    full = model.get_sentence_embedding_dimension()
    if full is not None and max(dims) > full:
        raise InputError(f"matryoshka_dims {list(dims)}: the model has only {full} dimensions")
    return MatryoshkaLoss(model, loss, matryoshka_dims=list(dims))
