"""adapt's planner: budgets, water-filling, dropping, the too-short error, and a real probe."""

from __future__ import annotations

import pytest

from embedforge.adapt.planner import FINAL_SECONDS, Plan, Probe, parse_budget, plan_budget, probe_candidate
from embedforge.config import SimCSEConfig
from embedforge.errors import InputError


@pytest.mark.parametrize(
    ("text", "seconds"), [("20m", 1200), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), ("20", 1200), (" 2m 30s ", 150)]
)
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "m", "0s"])
def test_parse_budget_rejects_nonsense(text):
    with pytest.raises(InputError):
        parse_budget(text)


def probe(name, sps, spe=100, epochs=1.0, weight=1.0, fixed=5.0):
    return Probe(name, sps, fixed, spe, epochs, weight)


def test_runs_are_sized_to_the_budget_by_weight():
    probes = [probe("a", 1.0, spe=1000), probe("b", 2.0, spe=1000), probe("c", 1.0, weight=2.0, spe=1000)]
    plan = plan_budget(probes, budget_seconds=1000, spent_seconds=100, eval_seconds=10, min_steps=10)
    steps = {r.name: r.steps for r in plan.runs}
    train = 1000 - 100 - FINAL_SECONDS - 3 * (10 + 5)
    # a and b share a quarter each, c half; none is capped
    assert steps == {"a": int(train / 4 // 1.0), "b": int(train / 4 // 2.0), "c": int(train / 2 // 1.0)}
    total = sum(r.seconds for r in plan.runs)
    assert total <= 1000 - 100 - FINAL_SECONDS + 1e-6


def test_capped_runs_give_their_time_back():
    probes = [probe("small", 1.0, spe=20), probe("big", 1.0, spe=10_000)]
    plan = plan_budget(probes, budget_seconds=600, spent_seconds=0, eval_seconds=10, min_steps=5)
    runs = {r.name: r for r in plan.runs}
    assert runs["small"].steps == 20 and runs["small"].capped
    train = 600 - FINAL_SECONDS - 2 * 15
    assert runs["big"].steps == int(train - 20) and not runs["big"].capped


def test_too_slow_candidates_are_dropped_with_a_reason():
    probes = [probe("fast", 0.5), probe("slow", 30.0)]
    plan = plan_budget(probes, budget_seconds=300, spent_seconds=0, eval_seconds=10, min_steps=10)
    assert [r.name for r in plan.runs] == ["fast"] and "fewer than 10 steps" in plan.dropped["slow"]
    assert "slow: not run" in plan.summary()
    assert Plan.from_dict(plan.to_dict()).runs == plan.runs


def test_small_data_runs_its_whole_epoch_even_below_min_steps():
    plan = plan_budget([probe("tiny", 1.0, spe=3)], budget_seconds=600, spent_seconds=0, eval_seconds=5, min_steps=10)
    assert plan.runs[0].steps == 3 and plan.runs[0].capped


def test_a_budget_too_short_for_anything_says_what_would_fit():
    with pytest.raises(InputError, match=r"too short for any candidate.*give --budget \d+m or more"):
        plan_budget([probe("a", 5.0), probe("b", 9.0)], budget_seconds=120, spent_seconds=60, eval_seconds=20, min_steps=10)
    with pytest.raises(InputError, match="no candidate applies"):
        plan_budget([], budget_seconds=1000, spent_seconds=0, eval_seconds=1, min_steps=1)


def test_probe_times_real_steps_and_leaves_nothing(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.csv"
    data.write_text("sent0,sent1\n" + "".join(f"query {i},document number {i} about things\n" for i in range(20)))
    config = SimCSEConfig(mode="sup", max_steps=3, batch_size=4, max_length=16)
    p = probe_candidate(str(tiny_model_dir), data, tmp_path / "probe", config, spec_epochs=1.0, weight=1.0, rows=20, name="x")
    assert p.seconds_per_step > 0 and p.fixed_seconds >= 0 and p.steps_per_epoch == 5
    assert not (tmp_path / "probe").exists() and not (tmp_path / "probe.partial").exists()
