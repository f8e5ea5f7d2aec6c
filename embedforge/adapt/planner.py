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

__all__ = ["Probe", "PlannedRun", "Plan", "parse_budget", "format_seconds", "plan_budget", "probe_candidate"]

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
    capped: bool  # True when it got all its epochs


@dataclass(frozen=True)
class Plan:
    budget_seconds: float
    spent_seconds: float  # before planning: reading, mining, base evaluation, probes
    eval_seconds: float  # per model
    runs: tuple[PlannedRun, ...]
    dropped: dict[str, str] = field(default_factory=dict)  # name -> why

    def summary(self) -> str:
        lines = [
            f"budget {format_seconds(self.budget_seconds)}: {format_seconds(self.spent_seconds)} spent on set-up, "
            f"base evaluation and probes; ~{format_seconds(self.eval_seconds)} to evaluate each model"
        ]
        for r in self.runs:
            cap = " (all its epochs)" if r.capped else ""
            lines.append(f"  {r.name}: {r.steps} steps{cap}, ~{format_seconds(r.seconds)}")
        for name, why in self.dropped.items():
            lines.append(f"  {name}: not run, {why}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_seconds": self.budget_seconds, "spent_seconds": round(self.spent_seconds, 1),
            "eval_seconds": round(self.eval_seconds, 1),
            "runs": [{"name": r.name, "steps": r.steps, "seconds": round(r.seconds, 1), "capped": r.capped} for r in self.runs],
            "dropped": dict(self.dropped),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        runs = tuple(PlannedRun(r["name"], int(r["steps"]), float(r["seconds"]), bool(r["capped"])) for r in d["runs"])
        return cls(float(d["budget_seconds"]), float(d["spent_seconds"]), float(d["eval_seconds"]), runs, dict(d["dropped"]))


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


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _cap(p: Probe) -> int:
    return max(1, math.ceil(p.epochs * p.steps_per_epoch))


def _allocate(probes: Sequence[Probe], seconds: float) -> dict[str, tuple[int, bool]]:
    """Water-filling of ``seconds`` of training time: name -> (steps, capped)."""
    cap = {p.name: _cap(p) for p in probes}
    open_ = {p.name: p for p in probes}
    steps: dict[str, tuple[int, bool]] = {}
    left = seconds
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
    probes: Sequence[Probe], *, budget_seconds: float, spent_seconds: float, eval_seconds: float, min_steps: int
) -> Plan:
    """Size every candidate's run to the budget (module docstring); InputError when none fits."""
    active = list(probes)
    dropped: dict[str, str] = {}
    remaining = budget_seconds - spent_seconds - FINAL_SECONDS
    while active:
        train = remaining - sum(eval_seconds + p.fixed_seconds for p in active)
        alloc = _allocate(active, max(0.0, train))
        short = [p for p in active if alloc[p.name][0] < min(min_steps, _cap(p))]
        if not short:
            runs = tuple(
                PlannedRun(p.name, alloc[p.name][0], alloc[p.name][0] * p.seconds_per_step + p.fixed_seconds + eval_seconds,
                           alloc[p.name][1])
                for p in active
            )
            return Plan(budget_seconds, spent_seconds, eval_seconds, runs, dropped)
        # the least weighted first; among those, the one that costs most per step
        victim = min(short, key=lambda p: (p.weight, -p.seconds_per_step))
        dropped[victim.name] = f"the budget leaves it fewer than {min_steps} steps"
        active.remove(victim)
    cheapest = min(probes, key=lambda p: min_steps * p.seconds_per_step + p.fixed_seconds) if probes else None
    if cheapest is None:
        raise InputError("no candidate applies to this data (see the notes above)")
    need = spent_seconds + FINAL_SECONDS + eval_seconds + cheapest.fixed_seconds + min_steps * cheapest.seconds_per_step
    raise InputError(
        f"the budget {format_seconds(budget_seconds)} is too short for any candidate: "
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
