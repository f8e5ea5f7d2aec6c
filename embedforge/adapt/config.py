"""The settings of one ``embedforge adapt`` run, as one frozen dataclass (saved in the report)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from embedforge.adapt.planner import Budget
from embedforge.errors import InputError

__all__ = ["AdaptConfig", "CANDIDATE_NAMES", "LABEL_FREE_TASKS", "DECISION_SETTINGS"]

# Every candidate adapt knows, in the order they are trained (cheap and safe first).
CANDIDATE_NAMES = ("simcse", "title", "crops", "ict", "tsdae", "supervised")
# The label-free held-out constructions (see embedforge.adapt.heldout).
LABEL_FREE_TASKS = ("title", "keywords", "span")


# Settings left out of a run's fingerprint: a finished or interrupted run resumes with other values
# of these, re-deciding from its stored scores without retraining. (min_gain and max_sts_drop only
# change the decision too, but they have always been fingerprinted: leaving them out now would
# orphan existing runs.)
DECISION_SETTINGS = ("budget_seconds", "budget_steps", "budget_epochs", "label_free_min_steps", "keep_candidates",
                     "min_label_free_tasks")


@dataclass(frozen=True)
class AdaptConfig:
    """How ``adapt`` splits, trains, measures and decides. Defaults are sized for ~5k documents on 2 CPU cores."""

    # The budget: wall clock for the whole run (evaluation included), work per candidate (optimiser
    # steps, passes over its training rows), or both (whichever ends first). None: no limit of that
    # kind; a run needs at least one. A work budget trains the same amount on every machine.
    budget_seconds: float | None = 1200.0  # 20 minutes
    budget_steps: int | None = None
    budget_epochs: float | None = None
    candidates: tuple[str, ...] = CANDIDATE_NAMES  # tried when the data allows (titles, sentences, pairs)
    seed: int = 42  # the split, the pseudo-queries, the mined pairs and training
    max_length: int = 256  # tokens per document in training and evaluation (abstracts are ~300 words)
    batch_size: int = 32  # pairs per optimiser step: 31 in-batch negatives, CPU-sized
    # Held-out documents for the label-free estimate: this fraction of the corpus, clamped to
    # [heldout_min, heldout_max]; a corpus needs heldout_min + train_min documents at least.
    heldout_fraction: float = 0.1
    heldout_min: int = 50  # fewer queries per construction give intervals too wide to decide anything
    heldout_max: int = 400  # ~400 long targets encode in ~20 s per model on 2 cores
    train_min: int = 50  # documents left to train on
    # Each held-out seed document brings its nearest BM25 neighbours, so every pseudo-query has
    # topically close distractors in the pool (a random slice is too easy to tell models apart).
    neighbourhood: int = 4
    # Labelled pairs (--pairs): this fraction of the *queries* is held out (never trained on).
    pairs_heldout_fraction: float = 0.2
    pairs_heldout_min: int = 20  # held-out labelled queries at least; --pairs needs twice as many queries
    labelled_pool: int = 1000  # documents searched by held-out labelled queries: positives + BM25 top + random
    labelled_bm25_depth: int = 20  # BM25 distractors per held-out labelled query in that pool
    # Hard negatives for the supervised candidate (BM25 and base-model top-k, false negatives filtered).
    mine_depth: int = 30  # candidates per source and query
    mine_margin: float = 0.95  # drop a negative whose similarity exceeds 95% of the positive's (likely unlabelled positive)
    mine_max_length: int = 128  # tokens when encoding the pool for mining (ranking only needs the start)
    # The decision.
    n_resamples: int = 2000  # bootstrap resamples for every interval
    confidence: float = 0.95  # two-sided level of every interval
    min_gain: float = 0.0  # nDCG@10 points the lower end of a gain's interval must exceed to replace the base
    min_label_free_tasks: int = 2  # label-free: constructions a candidate is judged on (and gains on) at least
    max_sts_drop: float = 2.0  # STS-B dev Spearman points a candidate may lose (forgetting check)
    sts_pairs: int = 500  # STS-B dev pairs used (seeded sample; paired, so the difference is far less noisy than each score)
    # The planner.
    probe_steps: int = 4  # real optimiser steps timed per candidate before sizing the runs
    min_steps: int = 10  # a candidate that cannot get this many steps in the budget is not run
    # Steps a label-free candidate needs before its estimate means anything (an assumption: at batch
    # 32, fewer than ~50 steps of SimCSE / crops barely move a pre-trained model). A supervised
    # candidate needs one pass over its labelled pairs. A plan below either is reported undertrained.
    label_free_min_steps: int = 50
    keep_candidates: bool = False  # keep every trained candidate under OUTPUT.adapt-work after success
    # TSDAE's decoder: a masked-LM checkpoint of the base's architecture (untied). None: the base's own
    # checkpoint when it holds an LM head; else TSDAE is skipped (a random head lost 15 nDCG@10 points).
    tsdae_decoder: str | None = None
    encode_batch_size: int = 32  # texts per forward pass when evaluating

    def __post_init__(self) -> None:
        unknown = [c for c in self.candidates if c not in CANDIDATE_NAMES]
        if unknown:
            raise InputError(f"candidates: unknown candidate(s) {', '.join(unknown)}; expected some of {', '.join(CANDIDATE_NAMES)}")
        if not self.candidates:
            raise InputError("candidates must name at least one candidate")
        if self.budget_seconds is None and self.budget_steps is None and self.budget_epochs is None:
            raise InputError("a budget needs a time (budget_seconds), steps (budget_steps) or epochs (budget_epochs)")
        for name in ("budget_seconds", "budget_steps", "budget_epochs"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"{name} must be > 0, got {value}")
        for name in ("heldout_fraction", "pairs_heldout_fraction", "confidence"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise InputError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.heldout_min < 2:
            raise InputError(f"heldout_min must be >= 2, got {self.heldout_min}")
        if self.heldout_max < self.heldout_min:
            raise InputError(f"heldout_max must be >= heldout_min ({self.heldout_min}), got {self.heldout_max}")
        if self.train_min < 2:
            raise InputError(f"train_min must be >= 2, got {self.train_min}")
        if self.batch_size < 2:
            raise InputError(f"batch_size must be >= 2 (in-batch negatives need a second text), got {self.batch_size}")
        for name in ("min_label_free_tasks", "max_length", "mine_max_length", "probe_steps", "min_steps", "label_free_min_steps", "n_resamples", "labelled_pool", "sts_pairs"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def budget(self) -> Budget:
        """The budget as the planner reads it."""
        return Budget(self.budget_seconds, self.budget_steps, self.budget_epochs)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["candidates"] = list(self.candidates)
        return out
