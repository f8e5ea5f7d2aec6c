"""SimCSE (Gao, Yao & Chen, EMNLP 2021): the objective, its loss builder and the poolers.

With the default hard-negative weight α = 1 the SimCSE objective *is* sentence-transformers'
``MultipleNegativesRankingLoss`` with ``scale = 1/τ``, and that is what :func:`build_loss` returns.
Ours (:func:`simcse_loss`, :class:`SimCSELoss`) is used only for what it adds: α ≠ 1 (the paper's
Eq. 5 weight on each text's own hard negative). Batching, optimisation, checkpoints, evaluation
and DDP come from the sentence-transformers / transformers Trainer (:mod:`embedforge.train.trainer`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedforge.models import embedding_dim, pooling_name

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedforge.config import TrainConfig

__all__ = ["simcse_loss", "SimCSELoss", "build_loss", "prepare_model", "MLP_MODULE_NAME"]

MLP_MODULE_NAME = "simcse_mlp"  # the training-only MLP of the cls_mlp pooler carries this attribute


def simcse_loss(
    z1: Tensor, z2: Tensor, z3: Tensor | None = None, *, temperature: float = 0.05, hard_negative_weight: float = 1.0
) -> Tensor:
    r"""The SimCSE contrastive loss on embeddings; the paper's Eq. 1 (unsup/pairs) and Eq. 5 (triplets).

    With :math:`s(a, b)` the cosine similarity, :math:`\tau` the temperature and
    :math:`\alpha` the hard-negative weight, for a batch of :math:`N`:

    .. math::
        \ell_i = -\log \frac{e^{s(h_i, h_i^+)/\tau}}
        {\sum_{j=1}^N \left( e^{s(h_i, h_j^+)/\tau} + \alpha^{\mathbb{1}[i=j]} e^{s(h_i, h_j^-)/\tau} \right)}

    and the loss is the mean of :math:`\ell_i`. Without ``z3`` the hard-negative term is absent
    (Eq. 1: unsupervised SimCSE passes the same texts twice, so ``z1`` and ``z2`` differ only by
    dropout). :math:`\alpha` multiplies the exponential of a text's *own* hard negative; the
    official code adds :math:`\log\alpha` to that logit, which is the same thing. ``alpha = 0``
    drops own hard negatives from the denominator (other rows' negatives stay).

    For α = 1 this is sentence-transformers' ``MultipleNegativesRankingLoss(scale=1/τ)`` (a test
    checks it), which training uses then; this function is what training runs only for α ≠ 1,
    which sentence-transformers' loss does not offer.

    Args:
        z1: (N, d) anchors. z2: (N, d) positives. z3: (N, d) hard negatives or None.

    Returns:
        A scalar: cross-entropy of the (N, N) or (N, 2N) logits against the diagonal.
    """
    if z1.shape != z2.shape or (z3 is not None and z3.shape != z1.shape):
        raise ValueError(f"shape mismatch: z1 {tuple(z1.shape)}, z2 {tuple(z2.shape)}, z3 {None if z3 is None else tuple(z3.shape)}")
    a = F.normalize(z1, dim=-1)  # (N, d)
    logits = a @ F.normalize(z2, dim=-1).T / temperature  # (N, N)
    if z3 is not None:
        neg = a @ F.normalize(z3, dim=-1).T / temperature  # (N, N)
        if hard_negative_weight != 1.0:
            log_alpha = math.log(hard_negative_weight) if hard_negative_weight > 0 else float("-inf")
            neg = neg + torch.diag(neg.new_full((neg.shape[0],), log_alpha))  # log(alpha) on own negatives
        logits = torch.cat([logits, neg], dim=1)  # (N, 2N)
    labels = torch.arange(z1.shape[0], device=z1.device)  # (N,)
    return F.cross_entropy(logits, labels)


class SimCSELoss(nn.Module):
    """sentence-transformers loss wrapper of :func:`simcse_loss`, used only for α ≠ 1 (for α = 1
    :func:`build_loss` returns sentence-transformers' own loss). Encodes each column with its own
    forward pass (so two columns holding the same text get two dropout masks), gathers across
    processes, then calls :func:`simcse_loss`. Columns: (anchor, positive) or (anchor, positive, negative).

    Under torchrun the columns are gathered with ``sentence_transformers.util.all_gather`` as the
    official SimCSE code does: the other processes' rows without gradient, this process's own rows
    put back with theirs, so every process computes the loss over the global batch.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        temperature: float = 0.05,
        hard_negative_weight: float = 1.0,
        gather_across_processes: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.hard_negative_weight = hard_negative_weight
        self.gather_across_processes = gather_across_processes

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        if len(embeddings) not in (2, 3):
            raise ValueError(f"SimCSE takes 2 or 3 text columns, got {len(embeddings)}")
        if self.gather_across_processes:
            from sentence_transformers.util import all_gather, is_dist_initialized

            if is_dist_initialized():  # (it warns when asked to gather in a single process)
                embeddings = [all_gather(e) for e in embeddings]  # (N * world, d) each
        z3 = embeddings[2] if len(embeddings) == 3 else None
        return simcse_loss(
            embeddings[0],
            embeddings[1],
            z3,
            temperature=self.temperature,
            hard_negative_weight=self.hard_negative_weight,
        )

    def get_config_dict(self) -> dict[str, float]:
        return {"temperature": self.temperature, "hard_negative_weight": self.hard_negative_weight}

    @property
    def citation(self) -> str:
        return (
            "@inproceedings{gao2021simcse, title={{SimCSE}: Simple Contrastive Learning of Sentence Embeddings},"
            " author={Gao, Tianyu and Yao, Xingcheng and Chen, Danqi}, booktitle={EMNLP}, year={2021}}"
        )


def build_loss(model: SentenceTransformer, config: TrainConfig) -> nn.Module:
    """The SimCSE loss for ``config``: sentence-transformers' ``MultipleNegativesRankingLoss``
    (scale = 1/τ) when α = 1, our :class:`SimCSELoss` otherwise.

    Both gather negatives across processes under torchrun when ``config.gather_across_processes``.
    sentence-transformers' loss then scores this process's anchors against every process's
    candidates and sends gradients back to every process (the gradient of the global loss); ours
    scores all anchors in every process with gradients to its own rows only (the official SimCSE
    code): the same direction at 1/world size the length, which Adam's normalisation cancels.
    """
    if config.hard_negative_weight == 1.0:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        return MultipleNegativesRankingLoss(
            model, scale=1.0 / config.temperature, gather_across_devices=config.gather_across_processes and distributed
        )
    return SimCSELoss(
        model, temperature=config.temperature, hard_negative_weight=config.hard_negative_weight,
        gather_across_processes=config.gather_across_processes,
    )


def prepare_model(model: SentenceTransformer, pooler: str | None, *, is_sentence_model: bool, mode: str) -> str:
    """Set the pooling of a loaded SentenceTransformer for training, in place; returns the pooler used.

    ``cls`` / ``mean`` replace the Pooling module's mode; ``cls_mlp`` uses CLS and inserts a
    Dense(d, d, tanh) after pooling that :func:`strip_training_modules` removes before saving
    (the paper's unsupervised setting: the MLP is used only in training). ``None`` keeps a
    sentence-transformers model's pooling and uses the paper's choice for a plain transformer.
    """
    from sentence_transformers.models import Dense, Pooling

    modules: list[Any] = list(model)
    index = next(i for i, m in enumerate(modules) if isinstance(m, Pooling))
    if pooler is None:
        if is_sentence_model:
            return pooling_name(modules[index])
        pooler = "cls_mlp" if mode == "unsup" else "cls"
    old = modules[index]
    dim = embedding_dim(old)
    modules[index] = Pooling(dim, pooling_mode="cls" if pooler.startswith("cls") else "mean")
    if pooler == "cls_mlp":
        mlp = Dense(dim, dim, activation_function=nn.Tanh())
        setattr(mlp, MLP_MODULE_NAME, True)
        modules.insert(index + 1, mlp)
    for name in list(model._modules):
        del model._modules[name]
    for i, module in enumerate(modules):
        model.add_module(str(i), module)
    return pooler


def strip_training_modules(model: SentenceTransformer) -> SentenceTransformer:
    """A SentenceTransformer sharing ``model``'s modules minus the training-only MLP (no copy)."""
    from sentence_transformers import SentenceTransformer

    modules = [m for m in model if not getattr(m, MLP_MODULE_NAME, False)]
    if len(modules) == len(model):
        return model
    return SentenceTransformer(modules=modules, device=str(model.device))
