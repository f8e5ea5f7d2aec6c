"""Layer reduction: a student made of a subset of the teacher's transformer layers, trained to copy it.

The student starts as the teacher with only ``n`` of its ``L`` layers kept, spread across depth
(:func:`spread_layers`; sentence-transformers' ``model_distillation_layer_reduction.py`` example
keeps e.g. layers 0, 4, 8 of 12 the same way), and is trained so its sentence vector reproduces
the teacher's on the user's texts:

    loss = mean_i || s(x_i) - t(x_i) ||^2 / d            (sentence-transformers' ``MSELoss``)

with ``t(x_i)`` computed once, before training, and cached in the work folder. The training runs
on the sentence-transformers Trainer in ``OUTPUT.partial/`` (checkpoints there), so an
interrupted run resumes from its last checkpoint; nothing appears at the output until the
whole compression has finished (:mod:`embedforge.compress.run`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["spread_layers", "layer_list", "count_layers", "make_student", "distill", "DistillResult"]

logger = logging.getLogger(__name__)


def spread_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer ids out of ``range(total)``, evenly spread, always starting with layer 0.

    ``round(linspace(0, total - 1, keep))``: 6 -> 3 keeps ``[0, 2, 5]``, 12 -> 6 keeps
    ``[0, 2, 4, 7, 9, 11]``; one layer keeps the first (closest to the embeddings it was trained on).
    """
    if not 1 <= keep <= total:
        raise InputError(f"cannot keep {keep} of {total} layers: choose 1..{total}")
    if keep == 1:
        return [0]
    return [int(i) for i in np.round(np.linspace(0, total - 1, keep)).astype(int)]


def _transformer(model: Any) -> Any:
    """The first module of a sentence-transformers model, if it wraps a transformers model."""
    first = model[0]
    if not hasattr(first, "auto_model"):
        raise InputError(f"layer reduction needs a transformer model; the first module is {type(first).__name__}")
    return first


def layer_list(model: Any) -> tuple[Any, str]:
    """The ``nn.ModuleList`` of transformer layers inside ``model`` and its attribute path.

    Found as the module list whose length is the config's ``num_hidden_layers`` (BERT, MPNet and
    XLM-R keep it at ``encoder.layer``, DistilBERT at ``transformer.layer``).
    """
    import torch

    auto = _transformer(model).auto_model
    total = getattr(auto.config, "num_hidden_layers", None)
    for name, module in auto.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == total and name.split(".")[-1] in (
            "layer", "layers", "block", "blocks"
        ):
            return module, name
    raise InputError(f"cannot find the transformer layers of {type(auto).__name__} (num_hidden_layers={total})")


def count_layers(model: Any) -> int:
    """The number of transformer layers of a loaded model."""
    return len(layer_list(model)[0])


def make_student(teacher: SentenceTransformer, keep: list[int]) -> SentenceTransformer:
    """A deep copy of ``teacher`` with only the layers ``keep`` (in that order); the teacher is untouched."""
    import torch

    student = copy.deepcopy(teacher)
    layers, path = layer_list(student)
    auto = _transformer(student).auto_model
    parent = auto.get_submodule(path.rsplit(".", 1)[0]) if "." in path else auto
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    for new_id, layer in enumerate(kept):  # caches index layers by position (decoder-style code paths)
        for sub in layer.modules():
            if hasattr(sub, "layer_idx"):
                setattr(sub, "layer_idx", new_id)  # noqa: B010
    setattr(parent, path.rsplit(".", 1)[-1], kept)
    auto.config.num_hidden_layers = len(keep)
    return student


@dataclass(frozen=True)
class DistillResult:
    steps: int
    seconds: float
    final_loss: float | None
    resumed_from: str | None


def distill(
    student: SentenceTransformer,
    texts: list[str],
    targets: np.ndarray,
    work: Path,
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    seed: int,
    show_progress: bool = False,
) -> DistillResult:
    """Train ``student`` in place to reproduce ``targets`` ``(n, d)`` (the teacher's vectors of ``texts``).

    Checkpoints go to ``work``; a run finding a checkpoint there resumes from it.
    """
    import time

    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MSELoss
    from transformers.trainer_utils import get_last_checkpoint

    if len(texts) != len(targets):
        raise InputError(f"{len(texts)} texts but {len(targets)} teacher vectors")
    dataset = Dataset.from_dict({"text": texts, "label": targets.astype(np.float32).tolist()})
    last = get_last_checkpoint(str(work)) if work.is_dir() else None
    on_cpu = not torch.cuda.is_available()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        warmup_steps=0.1,  # a float < 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        seed=seed,
        data_seed=seed,
        save_strategy="steps",
        save_steps=200,
        save_total_limit=1,
        logging_steps=50,
        report_to="none",
        disable_tqdm=not show_progress,
        use_cpu=on_cpu,
        dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=dataset, loss=MSELoss(student))
    if last:
        logger.warning("resuming layer distillation from %s", last)
    start = time.perf_counter()
    quiet = contextlib.nullcontext() if show_progress else contextlib.redirect_stdout(io.StringIO())
    with quiet:  # the Trainer prints its closing metrics dict
        trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    student.eval()
    return DistillResult(
        steps=trainer.state.global_step, seconds=seconds,
        final_loss=float(losses[-1]) if losses else None, resumed_from=last,
    )
