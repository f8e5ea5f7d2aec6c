"""Training objectives (one file each) and the runner that drives them."""

from __future__ import annotations

from embedforge.train.simcse import SimCSELoss, gather_with_grad, prepare_model, simcse_loss
from embedforge.train.trainer import TrainResult, train_simcse

__all__ = ["SimCSELoss", "TrainResult", "gather_with_grad", "prepare_model", "simcse_loss", "train_simcse"]
