"""The SimCSE objective against a hand-computed InfoNCE (the paper's Eq. 1 and Eq. 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embedforge.train.simcse import simcse_loss


def reference_loss(z1: np.ndarray, z2: np.ndarray, z3: np.ndarray | None, tau: float, alpha: float) -> float:
    """Eq. 5 written out with explicit loops, in float64."""

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    n = len(z1)
    total = 0.0
    for i in range(n):
        numerator = math.exp(cos(z1[i], z2[i]) / tau)
        denominator = 0.0
        for j in range(n):
            denominator += math.exp(cos(z1[i], z2[j]) / tau)
            if z3 is not None:
                denominator += (alpha if i == j else 1.0) * math.exp(cos(z1[i], z3[j]) / tau)
        total += -math.log(numerator / denominator)
    return total / n


@pytest.fixture()
def triplet() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 4))


@pytest.mark.parametrize("tau", [0.05, 0.5, 1.0])
def test_unsupervised_loss_matches_hand_computed_infonce(triplet, tau):
    z1, z2, _ = triplet
    got = simcse_loss(torch.tensor(z1), torch.tensor(z2), temperature=tau).item()
    assert got == pytest.approx(reference_loss(z1, z2, None, tau, 1.0), rel=1e-9)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0, 0.0])
def test_hard_negative_loss_matches_eq5(triplet, alpha):
    z1, z2, z3 = triplet
    got = simcse_loss(
        torch.tensor(z1), torch.tensor(z2), torch.tensor(z3), temperature=0.1, hard_negative_weight=alpha
    ).item()
    assert got == pytest.approx(reference_loss(z1, z2, z3, 0.1, alpha), rel=1e-9)


def test_alpha_changes_the_loss_in_the_right_direction(triplet):
    z1, z2, z3 = (torch.tensor(x) for x in triplet)
    losses = [simcse_loss(z1, z2, z3, temperature=0.1, hard_negative_weight=a).item() for a in (0.0, 1.0, 3.0)]
    assert losses[0] < losses[1] < losses[2]  # a heavier own negative makes the denominator larger


def test_identical_views_of_distinct_texts_give_low_loss():
    z = torch.eye(6, dtype=torch.float64)  # orthogonal texts, each its own perfect positive
    assert simcse_loss(z, z.clone(), temperature=0.05).item() < 1e-6


def test_loss_is_scale_invariant_and_differentiable(triplet):
    z1, z2, _ = (torch.tensor(x, requires_grad=True) for x in triplet)
    loss = simcse_loss(z1, z2)
    loss.backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()
    assert simcse_loss(z1 * 3.0, z2 * 0.1).item() == pytest.approx(loss.item(), rel=1e-9)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="shape mismatch"):
        simcse_loss(torch.zeros(3, 4), torch.zeros(2, 4))


@pytest.mark.parametrize("with_negatives", [False, True])
@pytest.mark.parametrize("tau", [0.05, 0.2])
def test_alpha_one_equals_sentence_transformers_mnrl(triplet, with_negatives, tau):
    """With α = 1 the SimCSE objective is MultipleNegativesRankingLoss(scale=1/τ): training uses that one."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    z = [torch.tensor(x) for x in (triplet if with_negatives else triplet[:2])]
    mnrl = MultipleNegativesRankingLoss(torch.nn.Identity(), scale=1.0 / tau)  # type: ignore[arg-type]
    theirs = mnrl.compute_loss_from_embeddings(z, labels=torch.zeros(0)).item()
    ours = simcse_loss(*z, temperature=tau, hard_negative_weight=1.0).item()
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_the_builder_uses_our_loss_only_for_alpha_other_than_one():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from embedforge.config import TrainConfig
    from embedforge.train.losses import LOSSES, build_loss
    from embedforge.train.simcse import SimCSELoss

    assert set(LOSSES) == {"simcse", "cosent", "tsdae"}
    model = torch.nn.Identity()
    plain = build_loss("simcse", model, TrainConfig(temperature=0.1))  # type: ignore[arg-type]
    assert isinstance(plain, MultipleNegativesRankingLoss) and plain.scale == pytest.approx(10.0)
    weighted = build_loss("simcse", model, TrainConfig(hard_negative_weight=2.0))  # type: ignore[arg-type]
    assert isinstance(weighted, SimCSELoss) and weighted.hard_negative_weight == 2.0
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("triplet", model, TrainConfig())  # type: ignore[arg-type]
