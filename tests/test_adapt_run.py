"""adapt end to end on a tiny random model: outputs, manifest, report, resume, bad input, CLI.

Probes are replaced by fixed throughputs so the plan does not depend on how busy the machine is
(the real probe is tested in test_adapt_planner.py); training and evaluation are real.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from embedforge.adapt import AdaptConfig, adapt, work_dir
from embedforge.adapt import run as run_module
from embedforge.adapt.planner import Probe
from embedforge.cli import main
from embedforge.errors import InputError
from embedforge.models import load_model, read_manifest

VOCAB = [
    ["cell", "membrane", "protein", "receptor", "signal", "kinase", "mitochondria", "nucleus"],
    ["ship", "harbour", "sail", "anchor", "captain", "voyage", "ocean", "cargo"],
    ["cat", "whisker", "kitten", "purr", "fur", "mouse", "claw", "feline"],
    ["code", "compiler", "function", "variable", "loop", "debug", "software", "syntax"],
]
COMMON = ["the", "a", "of", "and", "in", "to", "with", "for", "on", "is", "study", "results", "show", "that"]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # for the STS-B forgetting check, when present
FAST = AdaptConfig(
    candidates=("simcse", "title"), budget_seconds=600, heldout_min=20, heldout_max=20, train_min=20,
    max_length=48, batch_size=8, n_resamples=200, min_steps=2, keep_candidates=False,
)


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        vocab = VOCAB[i % len(VOCAB)]
        text = " ".join(
            " ".join(rng.choice(vocab if rng.random() < 0.5 else COMMON) for _ in range(rng.randint(7, 10))).capitalize() + "."
            for _ in range(4)
        )
        rows.append({"_id": f"d{i}", "title": " ".join(rng.choice(vocab) for _ in range(3)).capitalize(), "text": text})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def fixed_probes(monkeypatch):
    def fake(model, train_file, folder, config, *, spec_epochs, weight, rows, name):
        return Probe(name, 0.05, 1.0, max(1, -(-rows // config.batch_size)), spec_epochs, weight)

    monkeypatch.setattr(run_module, "probe_candidate", fake)


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.jsonl", 60)


def test_interrupted_run_resumes_then_writes_model_manifest_and_report(tiny_model_dir, corpus, tmp_path, fixed_probes, monkeypatch):
    import embedforge.train.trainer as trainer

    real = trainer.train_simcse
    calls: list[str] = []

    def interrupt_second(model, train_file, output, config, **kw):
        calls.append(Path(output).name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, train_file, output, config, **kw)

    monkeypatch.setattr(trainer, "train_simcse", interrupt_second)
    out = tmp_path / "adapted"
    data_dir = DATA if (DATA / "sts" / "STSBenchmark").is_dir() else None
    with pytest.raises(KeyboardInterrupt):
        adapt(str(tiny_model_dir), corpus, out, FAST, report_dir=tmp_path / "report", data_dir=data_dir)
    assert calls == ["simcse", "title"] and not out.exists()  # never a half-written model
    assert (work_dir(out) / "scores" / "simcse.json").is_file()

    calls.clear()
    monkeypatch.setattr(trainer, "train_simcse", lambda *a, **kw: (calls.append(Path(a[2]).name), real(*a, **kw))[1])
    result = adapt(str(tiny_model_dir), corpus, out, FAST, report_dir=tmp_path / "report", data_dir=data_dir)
    assert calls == ["title"]  # simcse finished before: neither retrained nor lost
    assert {v.name for v in result.decision.verdicts} == {"simcse", "title"}
    assert result.chosen in ("base", "simcse", "title")

    manifest = read_manifest(out)
    assert manifest["adapt"]["chosen"] == result.chosen and manifest["adapt"]["estimate"] == "label-free"
    assert manifest["base_model"] == str(tiny_model_dir)
    load_model(out)  # a loadable model
    for name in ("report.md", "report.json", "chart.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["models"]) == {"base", "simcse", "title", "bm25"}
    assert report["candidates"]["title"]["judged_on"] == ["keywords", "span"]
    assert report["candidates"]["simcse"]["judged_on"] == ["title", "keywords", "span"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Decision:" in md and "(own format)" in md and "Forgetting check:" in md
    assert "How far to trust a label-free decision" in md  # the estimate's measured blind spots go with every report
    if data_dir is not None:
        assert report["heldout"]["sts"].startswith("STS-B dev, 500 of 1500 pairs")
        assert all(report["models"][m]["sts_b_dev"] is not None for m in ("base", "simcse", "title"))
    assert not work_dir(out).exists()  # cleaned up after success
    with pytest.raises(InputError, match="already exists"):
        adapt(str(tiny_model_dir), corpus, out, FAST)


def test_changed_inputs_do_not_mix_with_saved_progress(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "adapted"
    work_dir(out).mkdir()
    (work_dir(out) / "state.json").write_text(json.dumps({"fingerprint": "something else"}))
    with pytest.raises(InputError, match="different inputs"):
        adapt(str(tiny_model_dir), corpus, out, FAST)


def test_bad_inputs_fail_clearly_and_leave_nothing(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "adapted"
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="corpus is empty"):
        adapt(str(tiny_model_dir), empty, out, FAST)
    small = write_corpus(tmp_path / "small.jsonl", 30)
    with pytest.raises(InputError, match="at least 40"):
        adapt(str(tiny_model_dir), small, out, FAST)
    with pytest.raises(InputError, match="at least 60s"):
        adapt(str(tiny_model_dir), small, out, AdaptConfig(budget_seconds=30))
    assert not out.exists() and not work_dir(out).exists()

    def slow(model, train_file, folder, config, *, spec_epochs, weight, rows, name):
        return Probe(name, 1000.0, 5.0, 100, spec_epochs, weight)

    monkeypatch.setattr(run_module, "probe_candidate", slow)
    with pytest.raises(InputError, match="too short for any candidate"):
        adapt(str(tiny_model_dir), write_corpus(tmp_path / "c.jsonl", 60), out, FAST)
    assert not out.exists() and not work_dir(out).exists()


def test_cli(tiny_model_dir, tmp_path, fixed_probes, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 110)
    out = tmp_path / "adapted"
    assert main(["adapt", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(out),
                 "--budget", "1x"]) == 2
    assert "cannot read the budget" in capsys.readouterr().err
    assert main(["adapt", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(out),
                 "--candidates", "simcse,nope"]) == 2
    assert "unknown candidate(s) nope" in capsys.readouterr().err
    code = main(["adapt", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(out),
                 "--candidates", "title", "--max-length", "32", "--batch-size", "16", "--budget", "10m",
                 "--data-dir", str(tmp_path / "nowhere")])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "chose" in printed and (out / "adapt-report" / "report.md").is_file()
    # the library logs its progress; the CLI shows it as the same "adapt: ..." lines on stderr
    assert "adapt: decision: " in captured.err and "adapt: plan:" in captured.err
    report = json.loads((out / "adapt-report" / "report.json").read_text())
    assert report["heldout"]["sts"].startswith("skipped")


def test_a_run_far_over_its_planned_time_is_stopped_and_saved(tiny_model_dir, tmp_path, monkeypatch):
    from embedforge.adapt.candidates import SPECS
    from embedforge.adapt.planner import PlannedRun

    monkeypatch.setattr(run_module, "OVERRUN_GRACE", 0.0)
    data = tmp_path / "pairs.csv"
    data.write_text("sent0,sent1\n" + "".join(f"title {i},body of document {i}\n" for i in range(64)))
    run = PlannedRun("title", steps=50, seconds=1e-4, capped=False)
    config = AdaptConfig(batch_size=4, max_length=16)
    out = run_module._train(str(tiny_model_dir), data, tmp_path / "m", SPECS["title"], config, run)
    assert out["steps"] == 1 and read_manifest(tmp_path / "m")["training"]["steps"] == 1


def test_labelled_texts_give_a_same_label_estimate_and_train_supervised(tiny_model_dir, tmp_path, fixed_probes, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 110)
    rng = random.Random(3)
    rows = [(" ".join(rng.choice(vocab) for _ in range(6)), f"topic{t}-{j}")
            for t, vocab in enumerate(VOCAB) for j in range(3) for _ in range(12)]
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    out = tmp_path / "adapted"
    code = main(["adapt", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(out),
                 "--pairs", str(labels), "--candidates", "supervised", "--max-length", "32", "--batch-size", "8",
                 "--budget", "10m", "--data-dir", str(tmp_path / "nowhere")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "adapt-report" / "report.json").read_text())
    assert report["pairs"]["kind"] == "texts" and report["pairs"]["pairs"] == len(rows)
    assert report["pairs"]["heldout_queries"] == 12 * 2  # round(0.2 * 12) = 2 per label, stratified
    assert "supervised" in report["models"] and "labelled" in json.dumps(report["models"]["supervised"])
    assert "labelled texts" in (out / "adapt-report" / "report.md").read_text()


def test_tsdae_runs_only_where_the_decoder_head_is_real(tiny_model_dir, corpus, tmp_path, fixed_probes):
    from dataclasses import replace

    from conftest import build_tiny_bert

    config = replace(FAST, candidates=("simcse", "tsdae"))
    no_head = adapt(str(tiny_model_dir), corpus, tmp_path / "a", config, report_dir=tmp_path / "ra")
    report = json.loads((tmp_path / "ra" / "report.json").read_text())
    assert report["candidates"]["tsdae"]["status"] == "skipped"
    assert "no decoder (LM) head" in report["candidates"]["tsdae"]["note"]
    assert {v.name for v in no_head.decision.verdicts} == {"simcse"}

    mlm = build_tiny_bert(tmp_path / "mlm", mlm=True)
    adapt(str(mlm), corpus, tmp_path / "b", replace(FAST, candidates=("tsdae",)), report_dir=tmp_path / "rb")
    report = json.loads((tmp_path / "rb" / "report.json").read_text())
    assert report["candidates"]["tsdae"]["status"] == "trained"
    assert "tied to the encoder" in report["candidates"]["tsdae"]["note"]
    assert report["candidates"]["tsdae"]["judged_on"] == ["title", "span"], "not judged on keyword queries, its own input format"


def _slow_steps(monkeypatch, seconds: float) -> None:
    """Every training step (probes included) takes ``seconds`` longer: an artificially slow machine."""
    import time as _time

    from transformers import TrainerCallback

    import embedforge.train.trainer as trainer

    real = trainer.train_simcse

    class Sleep(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            _time.sleep(seconds)

    def slow(*args, callbacks=None, **kwargs):  # type: ignore[no-untyped-def]
        return real(*args, callbacks=[*(callbacks or []), Sleep()], **kwargs)

    monkeypatch.setattr(trainer, "train_simcse", slow)


def test_demo_work_budget_decides_the_same_on_a_fast_and_a_slowed_machine(tiny_model_dir, tmp_path, monkeypatch):
    """The demo's code path with work budgets: same steps, same scores, same decisions; only the time differs."""
    from embedforge.adapt import LabelledTexts
    from embedforge.corpus import Document
    from embedforge.demo import demo_runs, run_adapts

    rows = [json.loads(line) for line in write_corpus(tmp_path / "c.jsonl", 72).read_text().splitlines()]
    docs = [Document(r["_id"], r["text"], r["title"]) for r in rows]
    labelled = LabelledTexts([r["text"] for r in rows[:48]], [f"topic{i % 4}" for i in range(48)])
    overrides = {"heldout_min": 20, "heldout_max": 20, "train_min": 20, "max_length": 32, "batch_size": 8,
                 "n_resamples": 200, "min_steps": 2, "pairs_heldout_min": 8, "label_free_min_steps": 4}
    runs = demo_runs("4steps", "1epoch", labelled, 12, **overrides)
    assert runs[0][2].budget_seconds is None and runs[0][2].budget_steps == 4
    assert runs[1][2].budget_seconds is None and runs[1][2].budget_epochs == 1.0

    fast = run_adapts(str(tiny_model_dir), docs, runs, tmp_path / "fast", None)
    _slow_steps(monkeypatch, 0.25)
    slow = run_adapts(str(tiny_model_dir), docs, runs, tmp_path / "slow", None)
    for label, _tag, _config, _pairs, _budget in runs:
        assert slow[label]["steps"] == fast[label]["steps"] and all(n > 0 for n in fast[label]["steps"].values())
        assert slow[label]["chosen"] == fast[label]["chosen"]
        for model, scores in fast[label]["scores"].items():
            assert slow[label]["scores"][model] == scores, (label, model)  # as reported (2 decimals)
        assert slow[label]["seconds"] > fast[label]["seconds"]  # the slowdown was real; the work was the same


def test_a_budget_too_small_to_resolve_a_candidate_says_undertrained(tiny_model_dir, corpus, tmp_path, monkeypatch):
    def slow_probe(model, train_file, folder, config, *, spec_epochs, weight, rows, name):
        return Probe(name, 100.0, 1.0, 20, spec_epochs, weight)  # 20 steps an epoch at 100 s each

    monkeypatch.setattr(run_module, "probe_candidate", slow_probe)
    config = AdaptConfig(**{**FAST.to_dict(), "candidates": ("simcse",), "budget_seconds": 600.0, "label_free_min_steps": 10})
    result = adapt(str(tiny_model_dir), corpus, tmp_path / "out", config)
    (run,) = result.plan.runs
    assert run.steps < 10 and run.needed == 10 and result.plan.undertrained == (run,)
    advice = f"this budget allows {run.steps} steps of simcse; at least 10 are needed — use --budget 1epoch or about"
    text = result.decision.reason if result.chosen == "base" else " ".join(result.decision.notes)
    assert "undertrained: " + advice in text
    assert "no candidate beats the base" not in result.decision.reason.split("(")[0]
    md = (result.report_dir / "report.md").read_text()
    assert "UNDERTRAINED: at least 10 needed" in md and advice in md


def test_undertrained_wording_replaces_the_guardrail_reason():
    from embedforge.adapt.choose import Decision
    from embedforge.adapt.planner import Plan, PlannedRun
    from embedforge.adapt.run import undertrained_decision

    plan = Plan(300.0, 100.0, 10.0, (PlannedRun("supervised", 18, 170.0, False, 68, 8.0),))
    kept = Decision("base", "labelled", "no candidate beats the base beyond noise; the base is kept (guardrail)", True, ())
    out = undertrained_decision(kept, plan)
    assert out.chosen == "base" and out.reason.startswith(
        "undertrained: this budget allows 18 steps of supervised; at least 68 are needed — use --budget 1epoch or about ")
    # (68 - 18) steps x 8 s more than the plan's 100 + 170 + 15 s: 685 s -> 12m
    assert "about 12m on this machine" in out.reason
    won = Decision("supervised", "labelled", "supervised beats the base", True, ())
    assert undertrained_decision(won, plan).reason == won.reason and undertrained_decision(won, plan).notes[0].startswith("undertrained: ")
    fine = Plan(300.0, 100.0, 10.0, (PlannedRun("supervised", 68, 170.0, True, 68, 8.0),))
    assert undertrained_decision(kept, fine) is kept
