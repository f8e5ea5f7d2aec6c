r"""CoSENT (Su 2022) for graded pairs (STS-style ``sentence1,sentence2,score``): sentence-transformers' loss as it is.

Graded pairs have no positive/negative split, so instead of InfoNCE the loss ranks every two pairs of
the batch by their gold scores: for all (i, j) with :math:`y_i > y_j`,

.. math::
    L = \log\Bigl(1 + \sum_{y_i > y_j} e^{\lambda(\cos(u_j, v_j) - \cos(u_i, v_i))}\Bigr)

with :math:`\lambda = 1/\tau` (``TrainConfig.temperature``). Nothing here is ours but the choice of
:math:`\lambda`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedforge.config import TrainConfig

__all__ = ["build_loss"]


def build_loss(model: SentenceTransformer, config: TrainConfig) -> nn.Module:
    """sentence-transformers' ``CoSENTLoss`` with scale ``1 / config.temperature``."""
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    return CoSENTLoss(model, scale=1.0 / config.temperature)
