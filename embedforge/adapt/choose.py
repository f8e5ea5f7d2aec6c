r"""Choose between the base and the candidates by measured gain; keep the base unless one wins beyond noise.

**Gain.** For a candidate c and a set of tasks T (held-out query sets), with per-query nDCG@10
xₖ (base) and yₖ (candidate) on the same queries of task k,

    Δ_c = 100 · (1/|T|) Σ_{k∈T} mean(yₖ − xₖ)        (nDCG@10 points)

and its interval is the percentile bootstrap of that statistic, resampling the queries of each
task independently and keeping every query's (base, candidate) pair together (a stratified
paired bootstrap; Efron & Tibshirani 1993 ch. 13, Sakai 2006 for the paired IR form).

**Which tasks.** With labelled pairs, T = {held-out labelled queries}: that estimate is the one
trusted. Without, T = the label-free tasks whose construction does *not* share the candidate's
training format (``CandidateSpec.formats``), so no candidate is judged on its own exercise.

**Rule.** A candidate is eligible when (1) the lower end of its Δ interval exceeds ``min_gain``;
(2) its STS-B dev Spearman is at most ``max_sts_drop`` points below the base's (forgetting check;
skipped without STS-B data); (3) label-free only: it loses significantly (interval below 0) on
none of its tasks; (4) label-free only: it is judged on at least ``min_label_free_tasks``
constructions and gains (point estimate >= 0) on every one of them. The eligible candidate with
the largest Δ wins; none eligible keeps the base.

Why (4): on SciFact (bench/adapt_scifact.py) ICT, judged on the keyword construction alone,
gained +2.4 points there (95% CI +1.3 … +3.6) and lost 1.0 nDCG@10 on the real test queries. One
construction is one proxy and can share a candidate's bias; agreement of two or more independent
ones is what a label-free decision rests on. (This rule was added after that run; the Banking77
part of the same benchmark and later runs are its out-of-sample checks.)
When the winner and the runner-up cannot be told apart (their paired interval includes 0) the
report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedforge.adapt.config import AdaptConfig
from embedforge.evaluate.metrics import stratified_bootstrap_ci

__all__ = ["ModelScores", "Verdict", "Decision", "stratified_paired_bootstrap", "judged_tasks", "decide"]

Interval = tuple[float, float, float]  # (mean, lo, hi) in nDCG@10 points


@dataclass(frozen=True)
class ModelScores:
    """Per-query held-out scores of one model (fractions in [0, 1]); ``sts`` is Spearman x 100."""

    name: str
    label_free: Mapping[str, np.ndarray]
    labelled: np.ndarray | None = None
    sts: float | None = None


@dataclass(frozen=True)
class Verdict:
    name: str
    tasks: tuple[str, ...]  # label-free tasks it was judged on
    label_free_gain: Interval | None
    labelled_gain: Interval | None
    task_gains: dict[str, Interval]  # every label-free task, own-format ones included (diagnostic)
    sts_drop: float | None  # base STS-B - candidate STS-B, points
    eligible: bool
    reasons: tuple[str, ...]  # why not eligible (empty when eligible)

    def gain(self, estimate: str) -> Interval | None:
        return self.labelled_gain if estimate == "labelled" else self.label_free_gain


@dataclass(frozen=True)
class Decision:
    chosen: str  # "base" or a candidate name
    estimate: str  # "labelled" or "label-free": the one the decision rests on
    reason: str
    separable: bool  # False when the estimate cannot tell the top models apart
    notes: tuple[str, ...]
    verdicts: tuple[Verdict, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen, "estimate": self.estimate, "reason": self.reason, "separable": self.separable,
            "notes": list(self.notes),
            "verdicts": [
                {"name": v.name, "tasks": list(v.tasks), "label_free_gain": v.label_free_gain,
                 "labelled_gain": v.labelled_gain, "task_gains": v.task_gains, "sts_drop": v.sts_drop,
                 "eligible": v.eligible, "reasons": list(v.reasons)}
                for v in self.verdicts
            ],
        }


def stratified_paired_bootstrap(
    base: Sequence[np.ndarray], other: Sequence[np.ndarray], *, n_resamples: int = 2000, seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """(Δ, lo, hi) of Δ = 100 · mean over strata of mean(other − base), resampling within each stratum
    (:func:`embedforge.evaluate.metrics.stratified_bootstrap_ci` of the per-query differences)."""
    if len(base) != len(other) or not base:
        raise ValueError("need the same, non-zero number of strata for both models")
    diffs = []
    for x, y in zip(base, other, strict=True):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1 or x.shape[0] == 0:
            raise ValueError(f"paired per-query scores must be non-empty 1-D arrays of one length, got {x.shape} and {y.shape}")
        diffs.append(y - x)  # (n,)
    return stratified_bootstrap_ci(diffs, n_resamples, seed, confidence=confidence, scale=100.0)


def judged_tasks(available: Sequence[str], formats: Sequence[str]) -> tuple[str, ...]:
    """The label-free tasks a candidate with training ``formats`` is judged on (all others)."""
    return tuple(t for t in available if t not in formats)


def _verdict(base: ModelScores, cand: ModelScores, formats: Sequence[str], config: AdaptConfig, labelled: bool) -> Verdict:
    def boot(x: Sequence[np.ndarray], y: Sequence[np.ndarray]) -> Interval:
        return stratified_paired_bootstrap(x, y, n_resamples=config.n_resamples, seed=config.seed, confidence=config.confidence)

    available = [t for t in base.label_free if t in cand.label_free]
    task_gains = {t: boot([base.label_free[t]], [cand.label_free[t]]) for t in available}
    tasks = judged_tasks(available, formats)
    lf = boot([base.label_free[t] for t in tasks], [cand.label_free[t] for t in tasks]) if tasks else None
    lab = (
        boot([base.labelled], [cand.labelled])
        if base.labelled is not None and cand.labelled is not None else None
    )
    reasons: list[str] = []
    gain = lab if labelled else lf
    if gain is None:
        reasons.append("no held-out task it does not train on")
    elif gain[1] <= config.min_gain:
        reasons.append(f"gain {gain[0]:+.2f} not beyond noise (95% CI {gain[1]:+.2f} … {gain[2]:+.2f})")
    drop = base.sts - cand.sts if base.sts is not None and cand.sts is not None else None
    if drop is not None and drop > config.max_sts_drop:
        reasons.append(f"forgets: STS-B dev {drop:.1f} points below the base (limit {config.max_sts_drop:g})")
    if not labelled:
        losing = [t for t in tasks if task_gains[t][2] < 0]
        if losing:
            reasons.append(f"significantly worse on {', '.join(losing)}")
        if len(tasks) < config.min_label_free_tasks:
            reasons.append(f"judged on {len(tasks)} label-free construction(s) ({', '.join(tasks) or 'none'}); "
                           f"a label-free decision needs {config.min_label_free_tasks} that agree")
        else:
            behind = [t for t in tasks if task_gains[t][0] < 0 and t not in losing]
            if behind:
                reasons.append(f"constructions disagree: behind the base on {', '.join(behind)}")
    return Verdict(cand.name, tasks, lf, lab, task_gains, drop, not reasons, tuple(reasons))


def decide(
    base: ModelScores, candidates: Sequence[ModelScores], formats: Mapping[str, Sequence[str]], config: AdaptConfig
) -> Decision:
    """Apply the rule in the module docstring; ``formats[name]`` are a candidate's own-format tasks."""
    labelled = base.labelled is not None
    estimate = "labelled" if labelled else "label-free"
    verdicts = tuple(_verdict(base, c, formats.get(c.name, ()), config, labelled) for c in candidates)
    notes: list[str] = []
    if not candidates:
        return Decision("base", estimate, "no candidate was trained; the base is kept", False, (), verdicts)
    eligible = sorted((v for v in verdicts if v.eligible), key=lambda v: -(v.gain(estimate) or (0.0,))[0])
    if not eligible:
        undecided = all((g := v.gain(estimate)) is not None and g[1] <= 0 <= g[2] for v in verdicts)
        if undecided:
            notes.append(f"the {estimate} estimate cannot separate any candidate from the base (every interval includes 0)")
        return Decision("base", estimate, "no candidate beats the base beyond noise; the base is kept (guardrail)",
                        False, tuple(notes), verdicts)
    best = eligible[0]
    gain = best.gain(estimate)
    assert gain is not None
    separable = True
    if len(eligible) > 1:
        second = eligible[1]
        by_name = {c.name: c for c in candidates}
        a, b = by_name[second.name], by_name[best.name]
        if labelled:
            diff = stratified_paired_bootstrap([a.labelled], [b.labelled], n_resamples=config.n_resamples, seed=config.seed, confidence=config.confidence)  # type: ignore[list-item]
        else:
            shared = [t for t in best.tasks if t in second.tasks] or list(best.tasks)
            diff = stratified_paired_bootstrap([a.label_free[t] for t in shared], [b.label_free[t] for t in shared],
                                               n_resamples=config.n_resamples, seed=config.seed)
        if diff[1] <= 0:
            separable = False
            notes.append(f"{best.name} and {second.name} cannot be separated ({best.name} − {second.name}: "
                         f"{diff[0]:+.2f}, 95% CI {diff[1]:+.2f} … {diff[2]:+.2f}); chose the higher point estimate")
    reason = (f"{best.name} beats the base by {gain[0]:+.2f} nDCG@10 points on the {estimate} held-out estimate "
              f"(95% CI {gain[1]:+.2f} … {gain[2]:+.2f})")
    if best.sts_drop is not None:
        reason += f"; STS-B dev change {-best.sts_drop:+.1f}"
    return Decision(best.name, estimate, reason, separable, tuple(notes), verdicts)
