"""``adapt``: from a corpus (and optional labelled pairs) to a model measured to beat its base — or the base.

Order of work, every step saved under ``OUTPUT.adapt-work/`` so an interrupted run resumes
(a finished candidate is neither retrained nor re-evaluated; an interrupted one resumes from its
last checkpoint, see :func:`embedforge.train.trainer.train_simcse`):

1. read and check the inputs; hold out documents (and labelled queries) no candidate trains on;
2. write each applicable candidate's training file (mining hard negatives with the base);
3. evaluate the base on the held-out sets (+ STS-B dev); time it;
4. time a few real steps of every candidate and size the runs to the budget (or stop with an
   InputError before anything is trained);
5. train and evaluate each candidate; 6. decide (:mod:`embedforge.adapt.choose`);
7. write the chosen model to ``OUTPUT`` atomically, with the decision in its manifest, and the report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.adapt import candidates as cands
from embedforge.adapt.choose import Decision, ModelScores, decide
from embedforge.adapt.config import DECISION_SETTINGS, AdaptConfig
from embedforge.adapt.heldout import (
    EvalSet,
    Split,
    bm25_scores,
    evaluate_model,
    label_free_set,
    labelled_set,
    same_label_set,
    split_corpus,
    split_labelled_texts,
    split_pairs,
)
from embedforge.adapt.inputs import (
    LabelledTexts,
    QueryPairs,
    digest,
    doc_text,
    load_corpus,
    load_query_pairs,
    same_label_pairs,
)
from embedforge.adapt.planner import (
    Plan,
    PlannedRun,
    Probe,
    format_seconds,
    needed_steps,
    plan_budget,
    probe_candidate,
)
from embedforge.adapt.report import ReportInputs, build_report, write_report
from embedforge.adapt.state import State, discard_work, work_dir
from embedforge.config import SimCSEConfig
from embedforge.corpus import Document, PairData
from embedforge.errors import InputError
from embedforge.io import atomic_dir, write_json
from embedforge.models import MANIFEST_NAME, load_model, resolve_model, save_model

__all__ = ["AdaptResult", "adapt", "work_dir", "discard_work", "MIN_BUDGET_SECONDS"]

MIN_BUDGET_SECONDS = 60.0  # below this nothing can be measured, let alone trained
OVERRUN = 1.1  # a candidate is not started when it would end past 110% of the budget
OVERRUN_RUN = 1.5  # a run taking 150% of its planned time + OVERRUN_GRACE is stopped (and saved) where it is
OVERRUN_GRACE = 60.0  # seconds: short runs are mostly fixed costs, which vary a lot on a busy machine


@dataclass(frozen=True)
class AdaptResult:
    chosen: str  # "base" or the winning candidate's name
    output: Path  # the chosen model
    report_dir: Path  # report.md, report.json, chart.png
    decision: Decision
    plan: Plan
    report: dict[str, Any]  # what report.json holds
    candidate_dirs: dict[str, Path]  # trained candidates, when config.keep_candidates
    seconds: float


log = logging.getLogger(__name__)  # progress of a run at INFO; the CLI shows these as "adapt: ..." lines


def training_config(spec: cands.CandidateSpec, config: AdaptConfig, steps: int) -> SimCSEConfig:
    """The trainer settings of a candidate run of ``steps`` optimiser steps."""
    return SimCSEConfig(
        mode=spec.mode,  # type: ignore[arg-type]
        learning_rate=spec.learning_rate,
        batch_size=config.batch_size,
        max_length=config.max_length,
        max_steps=steps,
        warmup_ratio=0.1,  # the base is already a good model: ramp up instead of jolting it
        seed=config.seed,
        save_steps=max(25, steps // 4),  # checkpoints to resume from, ~4 per run
        decoder=config.tsdae_decoder if spec.mode == "tsdae" else None,
    )


def _evaluate(model: Any, name: str, sets: Sequence[EvalSet], stsb: Any, config: AdaptConfig) -> ModelScores:
    from embedforge.encode import encode
    from embedforge.evaluate.metrics import cosine_pairs, spearman

    kw = {"batch_size": config.encode_batch_size, "max_length": config.max_length}
    label_free = evaluate_model(model, sets[0], **kw)
    labelled = evaluate_model(model, sets[1], **kw)["labelled"] if len(sets) > 1 else None
    sts = None
    if stsb is not None:
        a = encode(model, list(stsb.sentences1), batch_size=64, max_length=128)
        b = encode(model, list(stsb.sentences2), batch_size=64, max_length=128)
        sts = 100.0 * spearman(cosine_pairs(a, b), stsb.scores)
    return ModelScores(name, label_free, labelled, sts)


def _train(model: str, data: Path, target: Path, spec: cands.CandidateSpec, config: AdaptConfig, run: PlannedRun) -> dict[str, Any]:
    """Train one candidate (resuming a checkpoint); stop it if it overruns its planned time by half (+ a grace)."""
    from transformers import TrainerCallback

    from embedforge.train.trainer import train_simcse

    # a time budget stops a run far over its planned time; a work budget alone never does
    limit = OVERRUN_RUN * run.seconds + OVERRUN_GRACE if config.budget_seconds is not None else float("inf")

    class _Deadline(TrainerCallback):  # type: ignore[misc]
        stopped_at: int | None = None

        def __init__(self) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if time.perf_counter() - self.t0 > limit and not control.should_training_stop:
                control.should_training_stop = True
                self.stopped_at = state.global_step

    log.info(f"{run.name}: training {run.steps} steps (~{format_seconds(run.seconds)} with evaluation)")
    deadline = _Deadline()
    t = time.perf_counter()
    if not target.exists():
        train_simcse(model, data, target, training_config(spec, config, run.steps), show_progress=sys.stderr.isatty(),
                     callbacks=[deadline])
    if deadline.stopped_at is not None:
        log.info(f"{run.name}: stopped after {deadline.stopped_at} of {run.steps} steps, far over its planned time")
    return {"steps": deadline.stopped_at or run.steps, "train_seconds": round(time.perf_counter() - t, 1)}


def _load_stsb(data_dir: str | os.PathLike[str] | None, config: AdaptConfig) -> tuple[Any, str]:
    """A seeded sample of ``config.sts_pairs`` STS-B dev pairs, or None and why not."""
    if data_dir is None:
        return None, "skipped: no --data-dir"
    from embedforge.evaluate.sts import StsData, load_stsb

    try:
        data = load_stsb(data_dir, "dev")
    except InputError as err:
        return None, f"skipped: STS-B dev not found under {data_dir} ({err.message})"
    n = len(data.sentences1)
    if n > config.sts_pairs:
        rows = np.sort(np.random.default_rng(config.seed).choice(n, size=config.sts_pairs, replace=False))
        data = StsData([data.sentences1[i] for i in rows], [data.sentences2[i] for i in rows], data.scores[rows])
    return data, f"STS-B dev, {len(data.sentences1)} of {n} pairs (Spearman x100; a candidate may lose {config.max_sts_drop:g})"


@dataclass(frozen=True)
class _Setup:
    """Everything measured before the plan: data, held-out sets, training files and the base's scores."""

    docs: list[Document]
    qp: QueryPairs | LabelledTexts | None
    split: Split
    sets: list[EvalSet]  # label-free, then labelled when there are pairs
    stsb: Any
    sts_note: str
    prepared: dict[str, cands.Prepared]
    base: Any  # the loaded base model
    base_scores: ModelScores
    eval_seconds: float


def _setup(model: str, docs: list[Document], qp: QueryPairs | LabelledTexts | None, config: AdaptConfig, state: State,
           stsb: tuple[Any, str]) -> _Setup:
    """Steps 1-3: split, evaluation sets, training files, the base's scores (each reused when saved)."""
    texts = [doc_text(d) for d in docs]
    if "split" not in state.data:
        protected = {i for i in qp.doc_ids if i} if isinstance(qp, QueryPairs) else set()
        split = split_corpus(docs, config, protected=protected)
        state.data["split"] = {"train": split.train, "heldout": split.heldout}
        state.save()
    split = Split(**state.data["split"])
    sets = [label_free_set(docs, split.heldout, idf_texts=texts, seed=config.seed)]
    qp_train = None
    held_texts: set[str] = set()
    if isinstance(qp, LabelledTexts):
        lt_train, lt_held = split_labelled_texts(qp, config)
        qp_train = same_label_pairs(lt_train, config.seed)
        sets.append(same_label_set(lt_held))
        held_texts = set(lt_held.texts)  # no candidate trains on them, not even as corpus text
        labelled_note = (f"; {len(qp)} labelled texts ({len(set(qp.labels))} labels): {len(qp_train):,} same-label "
                         f"training pairs, {len(lt_held)} held-out texts")
    elif qp is not None:
        qp_train, qp_held = split_pairs(qp, config)
        sets.append(labelled_set(qp_held, texts, config))
        labelled_note = f"; {len(qp)} labelled pairs, {len(sets[1].tasks[0].queries)} held-out queries"
    log.info(f"{len(docs):,} documents: {len(split.train):,} to train on, {len(split.heldout):,} held out "
         f"({', '.join(f'{t.name}: {len(t.queries)} queries' for t in sets[0].tasks)})"
         + (labelled_note if qp is not None else ""))
    base = load_model(model)
    train_docs = [docs[i] for i in split.train if texts[i] not in held_texts]
    prepared: dict[str, cands.Prepared] = {}
    saved = state.data.setdefault("prepared", {})
    mining = {"depth": config.mine_depth, "margin": config.mine_margin, "max_length": config.mine_max_length,
              "batch_size": config.encode_batch_size}
    for name in config.candidates:
        old = saved.get(name)
        if old is not None and (old["path"] is None or Path(old["path"]).is_file()):
            prepared[name] = cands.Prepared(name, Path(old["path"]) if old["path"] else None, old["rows"], old["note"], old["stats"])
            continue
        prep = cands.prepare_candidate(name, train_docs, state.folder / "data", seed=config.seed, pairs=qp_train, model=base,
                                       mining=mining, decoder=config.tsdae_decoder)
        prepared[name] = prep
        saved[name] = {"path": str(prep.path) if prep.path else None, "rows": prep.rows, "note": prep.note, "stats": prep.stats}
        state.save()
        log.info(f"{name}: {prep.note}" + ("" if prep.path else " — skipped"))
    base_scores = state.scores("base")
    if base_scores is None:
        t = time.perf_counter()
        base_scores = _evaluate(base, "base", sets, stsb[0], config)
        state.data["eval_seconds"] = time.perf_counter() - t
        state.save_scores(base_scores)
        state.save()
    eval_seconds = float(state.data["eval_seconds"])
    log.info(f"base measured in {format_seconds(eval_seconds)}")
    return _Setup(docs, qp, split, sets, stsb[0], stsb[1], prepared, base, base_scores, eval_seconds)


def _plan(model: str, s: _Setup, config: AdaptConfig, state: State, start: float) -> Plan:
    """Step 4: probe every applicable candidate and size the runs (or reuse the saved plan)."""
    if "plan" in state.data:
        log.info("resuming: keeping the plan of the interrupted run")
        return Plan.from_dict(state.data["plan"])
    probes: list[Probe] = []
    for name, prep in s.prepared.items():
        if prep.path is None:
            continue
        spec = cands.SPECS[name]
        probes.append(probe_candidate(
            model, prep.path, state.folder / f"probe-{name}", training_config(spec, config, config.probe_steps),
            spec_epochs=spec.epochs, weight=spec.weight, rows=prep.rows, name=name,
        ))
        log.info(f"{name}: {probes[-1].seconds_per_step:.2f}s per step, {probes[-1].steps_per_epoch} steps per epoch")
    # labels first: the supervised candidate gets its work before the label-free ones share the rest
    first = tuple(p.name for p in probes if p.name == "supervised")
    needed = {p.name: needed_steps(p.steps_per_epoch, floor=config.label_free_min_steps, labelled=p.name in first)
              for p in probes}
    plan = plan_budget(probes, budget_seconds=config.budget_seconds, spent_seconds=time.perf_counter() - start,
                       eval_seconds=s.eval_seconds, min_steps=config.min_steps, budget=config.budget, first=first,
                       needed=needed)
    if plan.undertrained:
        log.warning("undertrained: " + plan.undertrained_advice())
    state.data["plan"] = plan.to_dict()
    state.save()
    return plan


def _run_candidates(model: str, s: _Setup, plan: Plan, config: AdaptConfig, state: State, start: float
                    ) -> tuple[dict[str, ModelScores], Plan]:
    """Step 5: train and evaluate each planned candidate not finished before; the plan as it ran."""
    scores = {"base": s.base_scores}
    trained = state.data.setdefault("trained", {})
    late: dict[str, str] = {}
    # measured / planned seconds of the runs so far: re-estimates what is left on this machine, now
    slowdown: list[float] = []
    for i, run in enumerate(plan.runs):
        done = state.scores(run.name)
        if done is not None:
            log.info(f"{run.name}: finished in an earlier run; not retrained")
            scores[run.name] = done
            continue
        left = plan.runs[i:]
        factor = float(np.median(slowdown)) if slowdown else 1.0
        remaining = factor * sum(r.seconds for r in left)
        log.info(f"candidate {i + 1} of {len(plan.runs)} ({run.name}); about {format_seconds(remaining)} left"
                 + (f" (runs so far took {factor:.2f}x their planned time)" if slowdown else ""))
        budget = config.budget_seconds  # None: a work budget, no time limit
        if budget is not None and time.perf_counter() - start + run.seconds > OVERRUN * budget:
            late[run.name] = "not started: the budget ran out (the machine was slower than measured)"
            log.info(f"{run.name}: {late[run.name]}")
            continue
        target = state.folder / "models" / run.name
        t_run = time.perf_counter()
        steps = _train(model, s.prepared[run.name].path, target, cands.SPECS[run.name], config, run)  # type: ignore[arg-type]
        t = time.perf_counter()
        scores[run.name] = _evaluate(load_model(target), run.name, s.sets, s.stsb, config)
        trained[run.name] = {**steps, "eval_seconds": round(time.perf_counter() - t, 1)}
        if run.seconds > 0:
            slowdown.append((time.perf_counter() - t_run) / run.seconds)
        state.save()
        state.save_scores(scores[run.name])
    if late:
        plan = Plan(plan.budget_seconds, plan.spent_seconds, plan.eval_seconds,
                    tuple(r for r in plan.runs if r.name not in late), {**plan.dropped, **late}, plan.work,
                    plan.limited_by)
    return scores, plan


def _place(output: Path, source: Path, model: str, decision: Decision, report: dict[str, Any], report_dir: Path | None,
           plan: Plan) -> Path:
    """Step 7: copy the chosen model to ``output`` atomically with the decision in its manifest, plus the report."""
    report_path = report_dir if report_dir is not None else output / "adapt-report"
    with atomic_dir(output) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        manifest = json.loads((tmp / MANIFEST_NAME).read_text())
        manifest["base_model"] = model
        manifest["evaluation"] = {**manifest.get("evaluation", {}), "adapt": report["models"].get(decision.chosen, {})}
        manifest["adapt"] = {"chosen": decision.chosen, "reason": decision.reason, "estimate": decision.estimate,
                             "separable": decision.separable, "notes": list(decision.notes),
                             "candidates": [r.name for r in plan.runs], "report": str(report_path)}
        write_json(tmp / MANIFEST_NAME, manifest)
        if report_dir is None:
            write_report(report, tmp / "adapt-report")
    if report_dir is not None:
        write_report(report, report_dir)
    return report_path


def undertrained_decision(decision: Decision, plan: Plan) -> Decision:
    """"Not trained enough" is never reported as "no better than the base": when the base is kept and
    a candidate ran fewer steps than it needs (:func:`~embedforge.adapt.planner.needed_steps`), the
    reason says so, with the budget that would give it enough; a winner's shortfall becomes a note."""
    if not plan.undertrained:
        return decision
    advice = plan.undertrained_advice()
    if decision.chosen == "base":
        return replace(decision, reason=f"undertrained: {advice}; the base is kept, but this does not show the "
                                        f"candidates cannot beat it ({decision.reason})")
    return replace(decision, notes=(*decision.notes, f"undertrained: {advice}"))


def _labelled_digest(qp: QueryPairs | LabelledTexts | None) -> str:
    if qp is None:
        return "-"
    if isinstance(qp, LabelledTexts):
        return "texts:" + digest(qp.texts + qp.labels)
    return digest(qp.queries + qp.docs)


def adapt(
    model: str,
    corpus: str | os.PathLike[str] | Sequence[Document],
    output: str | os.PathLike[str],
    config: AdaptConfig | None = None,
    *,
    pairs: str | os.PathLike[str] | PairData | QueryPairs | LabelledTexts | None = None,
    report_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> AdaptResult:
    """Try the candidates within ``config.budget_seconds``, keep the one measured to beat ``model``.

    ``corpus``: a file or BEIR folder (:func:`embedforge.corpus.read_documents`) or documents.
    ``pairs``: labelled (query, document) pairs — a table, a BEIR folder (``qrels/train.tsv``),
    :class:`~embedforge.corpus.PairData` or :class:`QueryPairs` — or labelled texts: a
    ``text,label`` table or :class:`LabelledTexts` (same label = relevant). ``data_dir`` holds
    ``sts/STSBenchmark`` for the forgetting check (skipped without it). The report goes to
    ``report_dir`` or ``OUTPUT/adapt-report``. Re-running the same call after an interruption
    resumes; bad input raises :class:`InputError` before anything is trained.
    """
    start = time.perf_counter()
    config = config or AdaptConfig()
    output = Path(output)
    if output.exists() and not overwrite:
        raise InputError("already exists; choose another --output or pass --overwrite", output)
    if config.budget_seconds is not None and config.budget_seconds < MIN_BUDGET_SECONDS:
        raise InputError(f"the budget {format_seconds(config.budget_seconds)} is too short; adapt needs at least "
                         f"{format_seconds(MIN_BUDGET_SECONDS)} (a few minutes for a real corpus)")
    resolve_model(model)
    docs = load_corpus(corpus)
    qp = load_query_pairs(pairs, docs) if pairs is not None else None
    stsb = _load_stsb(data_dir, config)
    settings = {k: v for k, v in config.to_dict().items() if k not in DECISION_SETTINGS}
    fingerprint = digest([model, digest([doc_text(d) for d in docs]), _labelled_digest(qp),
                          json.dumps(settings, sort_keys=True), stsb[1]])
    work = work_dir(output)
    fresh = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    try:
        state = State(work, fingerprint)
        setup = _setup(model, docs, qp, config, state, stsb)
        plan = _plan(model, setup, config, state, start)
    except InputError:
        if fresh:  # nothing was trained: leave nothing behind
            shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("plan:\n" + plan.summary())
    scores, plan = _run_candidates(model, setup, plan, config, state, start)

    formats = {n: cands.SPECS[n].formats for n in setup.prepared}
    decision = undertrained_decision(
        decide(setup.base_scores, [scores[r.name] for r in plan.runs], formats, config), plan)
    log.info(f"decision: {decision.chosen} — {decision.reason}")
    for note in decision.notes:
        log.info(f"note: {note}")

    report = build_report(ReportInputs(
        model=model, corpus=str(corpus) if isinstance(corpus, str | os.PathLike) else "(documents)", docs=docs,
        split=setup.split, sets=setup.sets, pairs=qp, prepared=setup.prepared, plan=plan, scores=scores,
        bm25={s.name: bm25_scores(s) for s in setup.sets}, decision=decision, trained=state.data.get("trained", {}),
        config=config, sts_note=setup.sts_note, seconds=time.perf_counter() - start,
    ))
    source = work / "models" / decision.chosen
    if decision.chosen == "base":
        source = work / "base-model"
        save_model(setup.base, source, base_model=model)
    report_path = _place(output, source, model, decision, report, Path(report_dir) if report_dir is not None else None, plan)
    kept: dict[str, Path] = {}
    if config.keep_candidates:
        kept = {r.name: work / "models" / r.name for r in plan.runs if (work / "models" / r.name).is_dir()}
    else:
        shutil.rmtree(work, ignore_errors=True)
    log.info(f"wrote {output} ({decision.chosen}) and the report in {report_path}")
    return AdaptResult(decision.chosen, output, report_path, decision, plan, report, kept, time.perf_counter() - start)
