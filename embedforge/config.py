"""Configuration as frozen dataclasses; each is written into the manifest of the model it made."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from embedforge.errors import InputError

__all__ = ["TrainConfig", "SimCSEConfig", "POOLERS", "MODES"]

POOLERS = ("cls", "cls_mlp", "mean")
MODES = ("unsup", "sup", "tsdae")


@dataclass(frozen=True)
class TrainConfig:
    """One training run of :func:`embedforge.train.train`: SimCSE (Gao, Yao & Chen 2021), CoSENT on
    graded pairs, or TSDAE (``mode``). Defaults follow the SimCSE paper unless noted."""

    # unsup: a text and its dropout copy; sup: labelled pairs/triplets; tsdae: rebuild a text from
    # its vector after deleting 60 % of its words (Wang et al. 2021; embedforge.train.tsdae)
    mode: Literal["unsup", "sup", "tsdae"] = "unsup"
    # None keeps the base model's own pooling when it is a sentence-transformers model (switching a
    # mean-pooled model such as MiniLM to CLS would throw away what it learnt); for a plain
    # transformers model it takes the paper's choice: cls_mlp (unsup) / cls (sup).
    pooler: Literal["cls", "cls_mlp", "mean"] | None = None
    temperature: float = 0.05  # tau in the paper; logits are cos/tau
    hard_negative_weight: float = 1.0  # alpha of the paper's Eq. 5 (1 = plain InfoNCE over hard negatives)
    max_length: int = 32  # tokens; the paper truncates at 32
    learning_rate: float = 3e-5  # the paper: 3e-5 unsup BERT-base; 5e-5 sup
    batch_size: int = 64  # per process; the paper: 64 unsup, 512 sup
    epochs: float = 1.0  # the paper: 1 unsup, 3 sup
    max_steps: int = -1  # > 0 overrides epochs
    warmup_ratio: float = 0.0  # the paper uses linear decay without warmup
    weight_decay: float = 0.0  # the paper's HF Trainer default
    seed: int = 42
    eval_steps: int = 250  # the paper evaluates on STS-B dev every 250 steps and keeps the best
    save_steps: int = 250  # checkpoints for resuming; with a dev set, at each evaluation
    no_duplicates: bool = True  # no text twice in a batch: a duplicate is a false negative
    gather_across_processes: bool = True  # under torchrun, negatives from every process (as the official code)
    # tsdae only: a checkpoint with an LM head to decode with (untied); None ties the decoder to
    # the encoder's own checkpoint, which must then hold an LM head (embedforge.train.tsdae)
    decoder: str | None = None
    # Matryoshka representation learning (Kusupati et al. 2022; sentence-transformers' MatryoshkaLoss):
    # the loss is also applied to the first d dimensions for each d here, so the model's vectors can be
    # cut to any of them (embed/serve ``dimensions``) at little loss. None: off. Not with tsdae.
    matryoshka_dims: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.pooler is not None and self.pooler not in POOLERS:
            raise InputError(f"pooler must be one of {', '.join(POOLERS)} (or None), got {self.pooler!r}")
        if self.temperature <= 0:
            raise InputError(f"temperature must be > 0, got {self.temperature}")
        if self.hard_negative_weight < 0:
            raise InputError(f"hard_negative_weight (alpha) must be >= 0, got {self.hard_negative_weight}")
        for name in ("max_length", "batch_size", "eval_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise InputError(f"batch_size must be >= 2 (in-batch negatives need a second text), got {self.batch_size}")
        if self.learning_rate <= 0:
            raise InputError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.matryoshka_dims is not None:
            dims = tuple(self.matryoshka_dims)
            if not dims or any(not isinstance(d, int) or d < 1 for d in dims) or len(set(dims)) != len(dims):
                raise InputError(f"matryoshka_dims must be distinct positive whole numbers, got {self.matryoshka_dims!r}")
            if self.mode == "tsdae":
                raise InputError("matryoshka_dims cannot be used with mode tsdae (its loss decodes the full vector)")
            object.__setattr__(self, "matryoshka_dims", tuple(sorted(dims, reverse=True)))
        if self.max_steps <= 0 and self.epochs <= 0:
            raise InputError(f"epochs or max_steps must be > 0, got epochs={self.epochs} and max_steps={self.max_steps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The name before the class also configured CoSENT and TSDAE runs; kept until every caller says TrainConfig.
SimCSEConfig = TrainConfig
