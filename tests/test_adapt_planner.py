"""adapt's planner: budgets, water-filling, dropping, the too-short error, and a real probe."""

from __future__ import annotations

import re

import pytest

from embedforge.adapt.planner import (
    FINAL_SECONDS,
    Budget,
    Plan,
    Probe,
    needed_steps,
    parse_budget,
    plan_budget,
    probe_candidate,
    read_budget,
)
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


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("20m", Budget(1200.0)),
        ("300steps", Budget(None, 300)),
        ("1epoch", Budget(None, None, 1.0)),
        ("0.5epochs", Budget(None, None, 0.5)),
        ("20m,1epoch", Budget(1200.0, None, 1.0)),
        ("1epoch, 90s", Budget(90.0, None, 1.0)),
        ("100steps,2epochs", Budget(None, 100, 2.0)),
    ],
)
def test_read_budget_takes_time_work_or_both(text, budget):
    assert read_budget(text) == budget


@pytest.mark.parametrize("text", ["", "1epoch,2epochs", "20m,30m", "1.5steps", "0steps", "3 apples", ","])
def test_read_budget_rejects_nonsense(text):
    with pytest.raises(InputError):
        read_budget(text)


def test_a_work_budget_plans_the_same_steps_on_a_fast_and_a_slow_machine():
    def plan(slowdown):
        probes = [probe("simcse", 1.0 * slowdown, spe=80), probe("crops", 2.0 * slowdown, spe=120)]
        return plan_budget(probes, budget_seconds=None, spent_seconds=30 * slowdown, eval_seconds=10 * slowdown, min_steps=10,
                           budget=read_budget("1epoch"))

    fast, slow = plan(1.0), plan(2.5)
    assert [(r.name, r.steps) for r in fast.runs] == [(r.name, r.steps) for r in slow.runs] == [("simcse", 80), ("crops", 120)]
    assert slow.expected_seconds() > fast.expected_seconds()
    assert "no time limit" in fast.summary() and Plan.from_dict(fast.to_dict()) == fast


def test_time_and_work_whichever_ends_first():
    probes = [probe("a", 1.0, spe=50)]
    roomy = plan_budget(probes, budget_seconds=1000, spent_seconds=0, eval_seconds=10, min_steps=5, budget=read_budget("1000s,1epoch"))
    assert roomy.runs[0].steps == 50 and roomy.limited_by == "work"
    tight = plan_budget(probes, budget_seconds=60, spent_seconds=0, eval_seconds=10, min_steps=5, budget=read_budget("60s,1epoch"))
    assert tight.runs[0].steps == int(60 - FINAL_SECONDS - 15) and tight.limited_by == "time"


def test_labels_first_supervised_gets_its_work_before_label_free_candidates():
    probes = [probe("title", 1.0, spe=1000), probe("supervised", 2.0, spe=100, epochs=1.0, weight=2.0)]
    alone = plan_budget([probes[1]], budget_seconds=600, spent_seconds=0, eval_seconds=10, min_steps=5)
    shared = plan_budget(probes, budget_seconds=600, spent_seconds=0, eval_seconds=10, min_steps=5, first=("supervised",))
    steps = {r.name: r.steps for r in shared.runs}
    assert steps["supervised"] == alone.runs[0].steps == 100  # its whole epoch, as when it runs alone
    assert steps["title"] == int(600 - FINAL_SECONDS - 30 - 200)  # the rest goes to the label-free one


def test_a_budget_too_small_to_resolve_says_undertrained_and_what_would():
    probes = [probe("supervised", 8.0, spe=68, epochs=2.0)]
    plan = plan_budget(probes, budget_seconds=300, spent_seconds=60, eval_seconds=20, min_steps=10,
                       needed={"supervised": needed_steps(68, floor=50, labelled=True)})
    run = plan.runs[0]
    assert run.steps == int((300 - 60 - FINAL_SECONDS - 25) // 8.0) and run.needed == 68 and run.undertrained
    advice = plan.undertrained_advice()
    assert f"allows {run.steps} steps of supervised; at least 68 are needed" in advice
    minutes = int(re.search(r"about (\d+)m", advice).group(1))
    assert minutes * 60 >= 60 + FINAL_SECONDS + 25 + 68 * 8.0  # the suggested time does fit the needed steps
    assert "UNDERTRAINED" in plan.summary()
    enough = plan_budget(probes, budget_seconds=None, spent_seconds=60, eval_seconds=20, min_steps=10,
                         budget=read_budget("1epoch"), needed={"supervised": 68})
    assert not enough.undertrained and enough.runs[0].steps == 68
