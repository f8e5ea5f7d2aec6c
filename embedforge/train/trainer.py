"""Run a training (SimCSE, CoSENT or TSDAE) on the sentence-transformers Trainer: resumable, evaluated, saved atomically.

Layout on disk while training: ``OUTPUT.partial/checkpoint-N/`` (Trainer checkpoints, so an
interrupted run resumes from the last one). ``OUTPUT`` itself appears only when training has
finished and the model is saved, so there is never a half-written model at ``OUTPUT``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedforge.config import TrainConfig
from embedforge.corpus import PairData, read_pairs, read_texts
from embedforge.errors import InputError
from embedforge.models import load_model, resolve_model, save_model
from embedforge.train.losses import build_loss
from embedforge.train.simcse import prepare_model, strip_training_modules

__all__ = ["TrainResult", "train", "train_simcse", "partial_dir", "DevSet"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevSet:
    """Scored sentence pairs for model selection (e.g. STS-B dev)."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


@dataclass(frozen=True)
class TrainResult:
    output: Path
    pooler: str
    steps: int
    rows: int  # training examples seen (texts for unsup, pairs/triplets for sup)
    seconds: float  # wall time of the optimisation loop (this run only, after a resume)
    rows_per_second: float
    sentences_per_second: float  # forward passes/s: rows x text columns (unsup: 2 per text)
    loss: str  # which objective ran: simcse-unsup, simcse-sup, simcse-sup-hardneg, cosent or tsdae
    best_dev: float | None
    resumed_from: str | None


def partial_dir(output: str | os.PathLike[str]) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".partial")


def _dataset(config: TrainConfig, train_file: str | os.PathLike[str]) -> tuple[Any, str, str, int]:
    """(datasets.Dataset, loss name in :data:`embedforge.train.losses.LOSSES`, label of the run, text
    columns) — validates the file before anything is written."""
    from datasets import Dataset

    if config.mode == "tsdae":
        from embedforge.train.tsdae import noisy_texts

        texts = read_texts(train_file)
        if len(texts) < 2:
            raise InputError("TSDAE needs at least 2 texts", train_file)
        return Dataset.from_dict({"noisy": noisy_texts(texts, config.seed), "text": texts}), "tsdae", "tsdae", 2
    if config.mode == "unsup":
        texts = read_texts(train_file)
        if len(texts) < 2:
            raise InputError("unsupervised SimCSE needs at least 2 texts (in-batch negatives)", train_file)
        return Dataset.from_dict({"anchor": texts, "positive": texts}), "simcse", "simcse-unsup", 2
    pairs: PairData = read_pairs(train_file)
    if len(pairs) < 2:
        raise InputError("supervised SimCSE needs at least 2 pairs (in-batch negatives)", train_file)
    if pairs.scores is not None:
        # Graded pairs (STS-style) have no positive/negative split: CoSENT ranks pairs by their score.
        data = {"sentence1": pairs.sent0, "sentence2": pairs.sent1, "score": pairs.scores}
        return Dataset.from_dict(data), "cosent", "cosent", 2
    data = {"anchor": pairs.sent0, "positive": pairs.sent1}
    if pairs.hard_neg is not None:
        data["negative"] = pairs.hard_neg
        return Dataset.from_dict(data), "simcse", "simcse-sup-hardneg", 3
    return Dataset.from_dict(data), "simcse", "simcse-sup", 2


def _evaluator(dev: DevSet, batch_size: int) -> Any:
    """STS-B-style Spearman on the dev pairs, computed without the training-only MLP (as the paper)."""
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    inner = EmbeddingSimilarityEvaluator(
        dev.sentences1, dev.sentences2, dev.scores, batch_size=batch_size,
        similarity_fn_names=["cosine"], name="dev", write_csv=False,
    )

    class _WithoutMLP(type(inner)):  # type: ignore[misc]
        def __call__(self, model: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            return super().__call__(strip_training_modules(model), *args, **kwargs)

    inner.__class__ = _WithoutMLP
    return inner


def train(
    model_name: str,
    train_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    dev: DevSet | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train from ``model_name`` on ``train_file`` with ``config`` and save the model at ``output``.

    ``config.mode`` and the file pick the objective (:mod:`embedforge.train.losses`): unsup: one
    text per line (or a text column), unsupervised SimCSE; sup: pairs / triplets with hard
    negatives (SimCSE, Eq. 5) or graded pairs (CoSENT); tsdae: texts, trained as a denoising
    auto-encoder (:mod:`embedforge.train.tsdae`; needs a decoder with an LM head). Re-running the
    same call after an interruption resumes from the last checkpoint in ``OUTPUT.partial``.
    ``dev`` scored pairs select the best checkpoint; ``callbacks`` are ``transformers.TrainerCallback``
    objects passed to the Trainer. Progress goes to the ``logging`` logger of this module.
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers
    from transformers.trainer_utils import get_last_checkpoint

    config = config or TrainConfig()
    output = Path(output)
    if output.exists() and not overwrite:
        raise InputError("already exists; choose another --output or pass --overwrite", output)
    dataset, objective, loss_name, columns = _dataset(config, train_file)
    resolved = resolve_model(model_name)
    is_sentence_model = not Path(resolved).is_dir() or (Path(resolved) / "modules.json").is_file()
    model = load_model(model_name, device="cuda" if torch.cuda.is_available() else "cpu")
    model.max_seq_length = config.max_length
    pooler = prepare_model(model, config.pooler, is_sentence_model=is_sentence_model, mode=config.mode)

    loss = build_loss(objective, model, config)

    work = partial_dir(output)
    last = get_last_checkpoint(str(work)) if work.is_dir() else None
    if last and objective == "tsdae":
        # the Trainer checkpoints the encoder only: the decoder (cross-attention, LM head) would restart
        # from its initial weights under a restored optimiser state, so start over instead
        logger.warning("TSDAE cannot resume %s (its decoder is not checkpointed); starting again", last)
        shutil.rmtree(work, ignore_errors=True)
        last = None
    evaluator = _evaluator(dev, config.batch_size) if dev is not None else None
    on_cpu = not torch.cuda.is_available()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES if config.no_duplicates else BatchSamplers.BATCH_SAMPLER,
        eval_strategy="steps" if evaluator is not None else "no",
        eval_steps=config.eval_steps if evaluator is not None else None,
        save_strategy="steps",
        save_steps=config.eval_steps if evaluator is not None else config.save_steps,
        save_total_limit=2,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model="eval_dev_spearman_cosine" if evaluator is not None else None,
        greater_is_better=True,
        logging_steps=max(1, min(50, config.eval_steps)),
        report_to="none",
        disable_tqdm=not show_progress,
        use_cpu=on_cpu,
        ddp_backend="gloo" if on_cpu and "LOCAL_RANK" in os.environ else None,
        dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator, callbacks=callbacks
    )
    if last:
        logger.warning("resuming from %s", last)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - start
    state = trainer.state
    steps_done = state.global_step - (int(Path(last).name.rsplit("-", 1)[-1]) if last else 0)
    world = max(1, args.world_size)
    rows = min(len(dataset), config.batch_size * world) * steps_done if steps_done else 0
    best = state.best_metric if evaluator is not None else None
    result = TrainResult(
        output=output, pooler=pooler, steps=state.global_step, rows=rows, seconds=seconds,
        rows_per_second=rows / seconds if seconds else 0.0,
        sentences_per_second=rows * columns / seconds if seconds else 0.0,
        loss=loss_name, best_dev=best, resumed_from=last,
    )
    if trainer.is_world_process_zero():
        training = {
            **config.to_dict(), "pooler": pooler, "loss": loss_name, "train_file": str(train_file),
            "train_rows": len(dataset), "steps": state.global_step, "world_size": world,
            "seconds": round(seconds, 2), "rows_per_second": round(result.rows_per_second, 2),
        }
        evaluation = {"dev_spearman": best} if best is not None else {}
        save_model(
            strip_training_modules(model), output, base_model=str(model_name), training=training,
            evaluation=evaluation,
        )
        shutil.rmtree(work, ignore_errors=True)
    return result


# The name before :func:`train` (which also runs CoSENT and TSDAE); kept until every caller says train.
train_simcse = train
