"""Training: :func:`train` (one entry point), one file per objective and the loss registry.

``train(model, train_file, output, TrainConfig(...))`` runs SimCSE (unsupervised or on pairs),
CoSENT (graded pairs) or TSDAE as ``TrainConfig.mode`` and the file say; :mod:`.losses` maps each
objective's name to its builder.
"""

from __future__ import annotations

from embedforge.config import TrainConfig
from embedforge.train.losses import LOSSES, build_loss
from embedforge.train.simcse import SimCSELoss, prepare_model, simcse_loss
from embedforge.train.trainer import DevSet, TrainResult, train

__all__ = ["LOSSES", "DevSet", "SimCSELoss", "TrainConfig", "TrainResult", "build_loss", "prepare_model", "simcse_loss", "train"]
