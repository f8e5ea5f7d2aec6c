"""Fit the candidate runs into the time budget from measured throughput, and say so.

Each candidate first runs ``probe_steps`` real optimiser steps on its own training file (same
model, batch size and max length as the real run). Its seconds per step is the median interval
between consecutive step ends (the first step, which warms up, is excluded); its fixed cost
(load, set-up, save) is the probe's wall time minus its steps. Evaluating one model costs what
evaluating the base cost. Then :func:`plan_budget` shares what is left of the budget:

    train time of c = share_c · (remaining − Σ_c (eval + fixed_c) − final)
    steps_c = min(epochs_c · ⌈rows_c / batch⌉, ⌊train time of c / seconds-per-step_c⌋)

with shares proportional to each candidate's weight; time a capped candidate does not use goes
back to the others (water-filling). A candidate left with fewer than ``min_steps`` steps (or its whole epochs, if fewer) is
dropped (the least weighted, the costliest per step first) and the rest re-planned; when none fits, an
:class:`~embedforge.errors.InputError` says how much budget would.

A budget can also be *work* (:class:`Budget`): ``300steps`` or ``1epoch`` per candidate, alone
(no time limit: every machine trains the same amount and reaches the same decision, only slower)
or with a time (``20m,1epoch``: whichever ends first, and the plan says which). Candidates named
in ``first`` (the supervised one, when there are labels) get their work before the others share
what is left. Each run also carries the steps it *needs* before its estimate means anything
(``needed``); a run planned below that is flagged undertrained up front, with the budget that
would give it enough, so "not trained enough" is never reported as "no better than the base".
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedforge.errors import InputError

__all__ = [
    "Budget", "Probe", "PlannedRun", "Plan", "parse_budget", "read_budget", "format_seconds", "plan_budget",
    "probe_candidate", "needed_steps",
]

FINAL_SECONDS = 15.0  # writing the chosen model and the report


@dataclass(frozen=True)
class Probe:
    """Measured cost of one candidate."""

    name: str
    seconds_per_step: float
    fixed_seconds: float  # load + set-up + save of one run
    steps_per_epoch: int
    epochs: float  # the cap of its spec
    weight: float


@dataclass(frozen=True)
class PlannedRun:
    name: str
    steps: int
    seconds: float  # expected: steps x seconds/step + fixed + evaluation
    capped: bool  # True when it got all its epochs (or all the work the budget asks for)
    needed: int = 0  # steps before its estimate can be resolved (see needed_steps); 0: unknown
    seconds_per_step: float = 0.0  # as probed: to say how long the needed steps would take

    @property
    def undertrained(self) -> bool:
        return self.steps < self.needed


@dataclass(frozen=True)
class Plan:
    budget_seconds: float
    spent_seconds: float  # before planning: reading, mining, base evaluation, probes
    eval_seconds: float  # per model
    runs: tuple[PlannedRun, ...]
    dropped: dict[str, str] = field(default_factory=dict)  # name -> why
    work: str = ""  # the work part of the budget as given ("1epoch", "300steps"), "" for a time budget
    limited_by: str = "time"  # "time" or "work": which part of a combined budget ends the runs first

    @property
    def undertrained(self) -> tuple[PlannedRun, ...]:
        return tuple(r for r in self.runs if r.undertrained)

    def expected_seconds(self) -> float:
        """Set-up already spent + every planned run + the final write: the run's expected duration."""
        return self.spent_seconds + sum(r.seconds for r in self.runs) + FINAL_SECONDS

    def undertrained_advice(self) -> str:
        """One sentence per undertrained run and the budget that would give each enough ("" when none)."""
        short = self.undertrained
        if not short:
            return ""
        extra = sum((r.needed - r.steps) * r.seconds_per_step for r in short)
        need_time = self.expected_seconds() + extra
        parts = [f"this budget allows {r.steps} steps of {r.name}; at least {r.needed} are needed" for r in short]
        return (
            "; ".join(parts) + f" — use --budget 1epoch or about {math.ceil(need_time / 60)}m on this machine"
        )

    def summary(self) -> str:
        if math.isinf(self.budget_seconds):
            head = f"budget {self.work} per candidate (no time limit)"
        else:
            head = f"budget {format_seconds(self.budget_seconds)}" + (f",{self.work} ({self.limited_by} ends first)" if self.work else "")
        lines = [
            f"{head}: {format_seconds(self.spent_seconds)} spent on set-up, base evaluation and probes; "
            f"~{format_seconds(self.eval_seconds)} to evaluate each model; expected to end after "
            f"~{format_seconds(self.expected_seconds())}"
        ]
        for r in self.runs:
            cap = " (all its work)" if r.capped else ""
            short = f" — UNDERTRAINED: at least {r.needed} needed" if r.undertrained else ""
            lines.append(f"  {r.name}: {r.steps} steps{cap}, ~{format_seconds(r.seconds)}{short}")
        for name, why in self.dropped.items():
            lines.append(f"  {name}: not run, {why}")
        if self.undertrained:
            lines.append("  " + self.undertrained_advice())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_seconds": None if math.isinf(self.budget_seconds) else self.budget_seconds,
            "spent_seconds": round(self.spent_seconds, 1), "eval_seconds": round(self.eval_seconds, 1),
            "runs": [{"name": r.name, "steps": r.steps, "seconds": round(r.seconds, 1), "capped": r.capped,
                      "needed": r.needed, "seconds_per_step": r.seconds_per_step} for r in self.runs],
            "dropped": dict(self.dropped), "work": self.work, "limited_by": self.limited_by,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        runs = tuple(
            PlannedRun(r["name"], int(r["steps"]), float(r["seconds"]), bool(r["capped"]), int(r.get("needed", 0)),
                       float(r.get("seconds_per_step", 0.0)))
            for r in d["runs"]
        )
        budget = math.inf if d["budget_seconds"] is None else float(d["budget_seconds"])
        return cls(budget, float(d["spent_seconds"]), float(d["eval_seconds"]), runs, dict(d["dropped"]),
                   str(d.get("work", "")), str(d.get("limited_by", "time")))


_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_budget(text: str) -> float:
    """``"20m"``, ``"90s"``, ``"1h30m"``, ``"1.5h"`` -> seconds; a bare number means minutes."""
    spec = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", spec):
        return float(spec) * 60.0
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", spec)
    if not parts or "".join(a + b for a, b in parts) != spec:
        raise InputError(f"cannot read the budget {text!r}; expected e.g. 20m, 90s, 1h30m")
    seconds = sum(float(v) * _UNIT[u] for v, u in parts)
    if seconds <= 0:
        raise InputError(f"the budget must be positive, got {text!r}")
    return seconds


@dataclass(frozen=True)
class Budget:
    """What one adapt run may spend: wall-clock seconds, work per candidate, or both (whichever ends first)."""

    seconds: float | None = None  # the whole run; None: no time limit
    steps: int | None = None  # optimiser steps per candidate
    epochs: float | None = None  # passes over each candidate's training rows

    def __post_init__(self) -> None:
        if self.seconds is None and self.steps is None and self.epochs is None:
            raise InputError("a budget needs a time (20m), a number of steps (300steps) or epochs (1epoch)")

    def config_fields(self) -> dict[str, Any]:
        """The :class:`~embedforge.adapt.config.AdaptConfig` fields that hold this budget."""
        return {"budget_seconds": self.seconds, "budget_steps": self.steps, "budget_epochs": self.epochs}

    @property
    def work(self) -> str:
        """The work part as a user writes it ("" when the budget is only a time)."""
        parts = ([f"{self.steps}steps"] if self.steps is not None else []) + (
            [f"{self.epochs:g}epoch" + ("s" if self.epochs != 1 else "")] if self.epochs is not None else [])
        return ",".join(parts)

    def work_steps(self, steps_per_epoch: int) -> int | None:
        """Steps the work part gives a candidate with ``steps_per_epoch`` (the smaller of steps and epochs)."""
        caps = ([self.steps] if self.steps is not None else []) + (
            [max(1, math.ceil(self.epochs * steps_per_epoch))] if self.epochs is not None else [])
        return min(caps) if caps else None


_WORK = re.compile(r"(\d+(?:\.\d+)?)(steps?|epochs?)")


def read_budget(text: str) -> Budget:
    """``"20m"``, ``"300steps"``, ``"1epoch"``, ``"20m,1epoch"`` -> :class:`Budget` (parts joined by commas)."""
    seconds: float | None = None
    steps: int | None = None
    epochs: float | None = None
    for part in (p for p in text.lower().replace(" ", "").split(",")):
        work = _WORK.fullmatch(part)
        if work is None:
            if seconds is not None:
                raise InputError(f"the budget {text!r} gives a time twice")
            seconds = parse_budget(part)
            continue
        value, unit = float(work.group(1)), work.group(2)
        if value <= 0:
            raise InputError(f"the budget {text!r}: work must be positive")
        if unit.startswith("step"):
            if steps is not None or value != int(value):
                raise InputError(f"the budget {text!r}: give a whole number of steps, once")
            steps = int(value)
        else:
            if epochs is not None:
                raise InputError(f"the budget {text!r} gives epochs twice")
            epochs = value
    if seconds is None and steps is None and epochs is None:
        raise InputError(f"cannot read the budget {text!r}; expected e.g. 20m, 300steps, 1epoch or 20m,1epoch")
    return Budget(seconds, steps, epochs)


def needed_steps(steps_per_epoch: int, *, floor: int, labelled: bool) -> int:
    """Steps before a candidate's estimate can be resolved: one full pass over labelled pairs (a
    supervised run that has not seen every pair once is not yet the model the labels would give),
    else ``floor`` (label-free objectives); never more than one epoch of a small data set."""
    return steps_per_epoch if labelled else min(floor, steps_per_epoch)


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _cap(p: Probe, budget: Budget | None = None) -> int:
    """A candidate's most steps: its spec's epochs, and the work part of the budget when given."""
    own = max(1, math.ceil(p.epochs * p.steps_per_epoch))
    work = budget.work_steps(p.steps_per_epoch) if budget is not None else None
    return own if work is None else min(own, work)


def _allocate(probes: Sequence[Probe], seconds: float, budget: Budget | None = None,
              first: Sequence[str] = ()) -> dict[str, tuple[int, bool]]:
    """Water-filling of ``seconds`` of training time: name -> (steps, capped). Candidates in
    ``first`` take their whole cap (or all the time) before the others share what is left."""
    cap = {p.name: _cap(p, budget) for p in probes}
    steps: dict[str, tuple[int, bool]] = {}
    left = seconds
    for p in probes:
        if p.name in first:
            fit = int(max(0.0, left) // p.seconds_per_step)
            steps[p.name] = (min(cap[p.name], fit), fit >= cap[p.name])
            left -= steps[p.name][0] * p.seconds_per_step
    open_ = {p.name: p for p in probes if p.name not in steps}
    while open_:
        total_w = sum(p.weight for p in open_.values())
        capped = [p for p in open_.values() if cap[p.name] * p.seconds_per_step <= left * p.weight / total_w]
        if not capped:
            for p in open_.values():
                steps[p.name] = (int(max(0.0, left * p.weight / total_w) // p.seconds_per_step), False)
            break
        for p in capped:
            steps[p.name] = (cap[p.name], True)
            left -= cap[p.name] * p.seconds_per_step
            del open_[p.name]
    return steps


def plan_budget(
    probes: Sequence[Probe], *, budget_seconds: float | None, spent_seconds: float, eval_seconds: float, min_steps: int,
    budget: Budget | None = None, first: Sequence[str] = (), needed: dict[str, int] | None = None,
) -> Plan:
    """Size every candidate's run to the budget (module docstring); InputError when none fits.

    ``budget`` adds a work part (steps / epochs per candidate); ``budget_seconds`` None means no time
    limit (a work budget alone). ``first``: candidates served before the others. ``needed``: name ->
    steps each needs to be resolved (runs planned below it are flagged undertrained).
    """
    if budget_seconds is None and (budget is None or budget.work_steps(1) is None):
        raise InputError("a budget without a time needs a number of steps or epochs")
    total = math.inf if budget_seconds is None else budget_seconds
    active = list(probes)
    dropped: dict[str, str] = {}
    remaining = total - spent_seconds - FINAL_SECONDS
    while active:
        train = remaining - sum(eval_seconds + p.fixed_seconds for p in active)
        if math.isinf(train):
            alloc = {p.name: (_cap(p, budget), True) for p in active}
        else:
            alloc = _allocate(active, max(0.0, train), budget, first)
        short = [p for p in active if alloc[p.name][0] < min(min_steps, _cap(p, budget))]
        if not short:
            runs = tuple(
                PlannedRun(p.name, alloc[p.name][0], alloc[p.name][0] * p.seconds_per_step + p.fixed_seconds + eval_seconds,
                           alloc[p.name][1], min((needed or {}).get(p.name, 0), _cap(p)), p.seconds_per_step)
                for p in active
            )
            work = budget.work if budget is not None else ""
            limited = "work" if work and all(r.capped for r in runs) else "time"
            return Plan(total, spent_seconds, eval_seconds, runs, dropped, work, limited)
        # the least weighted first; among those, the one that costs most per step
        victim = min(short, key=lambda p: (p.weight, -p.seconds_per_step))
        dropped[victim.name] = f"the budget leaves it fewer than {min_steps} steps"
        active.remove(victim)
    cheapest = min(probes, key=lambda p: min_steps * p.seconds_per_step + p.fixed_seconds) if probes else None
    if cheapest is None:
        raise InputError("no candidate applies to this data (see the notes above)")
    need = spent_seconds + FINAL_SECONDS + eval_seconds + cheapest.fixed_seconds + min_steps * cheapest.seconds_per_step
    raise InputError(
        f"the budget {format_seconds(budget_seconds or 0.0)} is too short for any candidate: "
        f"{format_seconds(spent_seconds)} went to set-up and measuring the base, and the cheapest candidate "
        f"({cheapest.name}) needs ~{format_seconds(need - spent_seconds)} more for {min_steps} steps "
        f"({cheapest.seconds_per_step:.2f}s each) and its evaluation; give --budget {math.ceil(need / 60) + 1}m or more"
    )


def probe_candidate(
    model_name: str, train_file: Path, folder: Path, training_config: Any, *, spec_epochs: float, weight: float,
    rows: int, name: str,
) -> Probe:
    """Run ``training_config.max_steps`` real steps into ``folder`` (deleted after) and time them."""
    from transformers import TrainerCallback

    from embedforge.train.trainer import partial_dir, train_simcse

    class _Timer(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

    timer = _Timer()
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(partial_dir(folder), ignore_errors=True)
    start = time.perf_counter()
    try:
        train_simcse(model_name, train_file, folder, training_config, overwrite=True, show_progress=False, callbacks=[timer])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(partial_dir(folder), ignore_errors=True)
    wall = time.perf_counter() - start
    gaps = [b - a for a, b in zip(timer.ends, timer.ends[1:], strict=False)]
    per_step = statistics.median(gaps) if gaps else wall
    fixed = max(0.0, wall - per_step * len(timer.ends))
    steps_per_epoch = max(1, math.ceil(rows / training_config.batch_size))
    return Probe(name, max(per_step, 1e-4), fixed, steps_per_epoch, spec_epochs, weight)
