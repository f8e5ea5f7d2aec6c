"""adapt's decision: bootstrap intervals, own-format exclusion, guardrail, forgetting check."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.adapt.choose import ModelScores, decide, judged_tasks, stratified_paired_bootstrap
from embedforge.adapt.config import AdaptConfig
from embedforge.evaluate.metrics import paired_bootstrap

CONFIG = AdaptConfig(n_resamples=500)
FORMATS = {"simcse": (), "title": ("title",), "ict": ("span", "title"), "crops": ("span",), "supervised": ()}


def scores(name, shift=0.0, n=200, seed=0, tasks=("title", "keywords", "span"), own=None, sts=None, labelled=None):
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(123).uniform(0.2, 0.8, size=(len(tasks), n))
    noise = 0.05 * rng.normal(size=base.shape)
    out = {}
    for k, t in enumerate(tasks):
        s = shift + (own if own is not None and t in FORMATS.get(name, ()) else 0.0)
        out[t] = np.clip(base[k] + s + (noise[k] if name != "base" else 0.0), 0, 1)
    return ModelScores(name, out, labelled, sts)


def test_one_stratum_agrees_with_the_plain_paired_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=300), rng.uniform(size=300)
    ours = stratified_paired_bootstrap([a], [b], n_resamples=2000, seed=3)
    ref = paired_bootstrap(a, b, n_resamples=2000, seed=3)
    assert ours == tuple(100 * v for v in ref)  # one implementation: the same draws, the same numbers


def test_strata_are_weighted_equally():
    x = [np.zeros(10), np.zeros(1000)]
    y = [np.ones(10), np.zeros(1000)]
    assert stratified_paired_bootstrap(x, y, n_resamples=50)[0] == pytest.approx(50.0)


def test_judged_tasks_exclude_own_formats():
    assert judged_tasks(["title", "keywords", "span"], ("span", "title")) == ("keywords",)


def test_noise_keeps_the_base():
    d = decide(scores("base"), [scores("simcse", 0.0, seed=1), scores("crops", 0.0, seed=2)], FORMATS, CONFIG)
    assert d.chosen == "base" and "guardrail" in d.reason and not d.separable
    assert all(not v.eligible for v in d.verdicts)


def test_a_clear_gain_wins_and_own_format_gains_do_not_count():
    base = scores("base")
    # ict looks great only on its own formats (span, title); crops gains a little everywhere
    ict = scores("ict", 0.0, seed=1, own=0.2)
    crops = scores("crops", 0.05, seed=2)
    d = decide(base, [ict, crops], FORMATS, CONFIG)
    assert d.chosen == "crops" and d.estimate == "label-free"
    v_ict = next(v for v in d.verdicts if v.name == "ict")
    assert v_ict.tasks == ("keywords",) and not v_ict.eligible
    assert v_ict.task_gains["span"][0] > 15  # visible in the diagnostics, ignored in the decision


def test_forgetting_check_and_significant_losses_disqualify():
    base = scores("base", sts=80.0)
    forgets = scores("simcse", 0.05, seed=1, sts=75.0)
    d = decide(base, [forgets], FORMATS, CONFIG)
    assert d.chosen == "base" and "forgets" in d.verdicts[0].reasons[0]
    lopsided = scores("simcse", 0.0, seed=1)
    lopsided.label_free["keywords"][:] = np.clip(base.label_free["keywords"] + 0.3, 0, 1)
    lopsided.label_free["span"][:] = np.clip(base.label_free["span"] - 0.1, 0, 1)
    d = decide(base, [lopsided], FORMATS, CONFIG)
    assert d.chosen == "base" and any("worse on span" in r for r in d.verdicts[0].reasons)


def test_labelled_estimate_rules_when_present():
    rng = np.random.default_rng(0)
    lab = rng.uniform(0.3, 0.6, size=100)
    base = scores("base", labelled=lab)
    sup = scores("supervised", -0.01, seed=1, labelled=np.clip(lab + 0.1, 0, 1))  # label-free slightly worse
    simcse = scores("simcse", 0.05, seed=2, labelled=lab.copy())  # label-free better, labelled flat
    d = decide(base, [sup, simcse], FORMATS, CONFIG)
    assert d.estimate == "labelled" and d.chosen == "supervised"


def test_two_close_winners_are_reported_as_inseparable():
    base = scores("base")
    a, b = scores("simcse", 0.05, seed=1), scores("crops", 0.05, seed=2)
    d = decide(base, [a, b], FORMATS, CONFIG)
    assert d.chosen in ("simcse", "crops") and not d.separable and "cannot be separated" in d.notes[0]


def test_one_construction_alone_cannot_replace_the_base():
    """SciFact: ICT was judged on the keyword construction only, gained there and lost on real queries."""
    base = scores("base")
    ict = scores("ict", 0.08, seed=1)  # big gain on keywords, its only judged task
    crops = scores("crops", 0.03, seed=2)  # smaller gain, judged on title and keywords
    d = decide(base, [ict, crops], FORMATS, CONFIG)
    v_ict = next(v for v in d.verdicts if v.name == "ict")
    assert v_ict.tasks == ("keywords",) and not v_ict.eligible
    assert any("needs 2 that agree" in r for r in v_ict.reasons)
    assert d.chosen == "crops"
    lenient = decide(base, [ict, crops], FORMATS, AdaptConfig(n_resamples=500, min_label_free_tasks=1))
    assert lenient.chosen == "ict", "the old one-construction rule would have taken it"


def test_constructions_that_disagree_keep_the_base():
    base = scores("base")
    mixed = scores("simcse", 0.0, seed=1)
    mixed.label_free["keywords"][:] = np.clip(base.label_free["keywords"] + 0.08, 0, 1)
    mixed.label_free["title"][:] = np.clip(base.label_free["title"] + 0.04, 0, 1)
    noise = np.random.default_rng(7).normal(0, 0.05, size=base.label_free["span"].shape)
    mixed.label_free["span"][:] = base.label_free["span"] + (noise - noise.mean()) - 0.002  # a hair behind, within noise
    d = decide(base, [mixed], FORMATS, CONFIG)
    v = d.verdicts[0]
    assert v.label_free_gain is not None and v.label_free_gain[1] > 0, "the mean gain alone would have won"
    assert d.chosen == "base" and any("disagree" in r and "span" in r for r in v.reasons)
