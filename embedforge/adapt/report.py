"""The adapt report: ``report.json`` (everything), ``report.md`` (for people) and ``chart.png``.

Scores are nDCG@10 in points (x100) with 95 % percentile-bootstrap intervals over the held-out
queries (:func:`embedforge.evaluate.metrics.bootstrap_ci`); gains are the paired intervals of
:mod:`embedforge.adapt.choose`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from embedforge.adapt.candidates import SPECS, Prepared
from embedforge.adapt.choose import Decision, ModelScores
from embedforge.adapt.config import AdaptConfig
from embedforge.adapt.heldout import EvalSet, Split
from embedforge.adapt.inputs import LabelledTexts, QueryPairs
from embedforge.adapt.planner import Plan, format_seconds
from embedforge.corpus import Document

__all__ = ["ReportInputs", "build_report", "markdown", "write_chart", "write_report", "REPORT_FORMAT"]

REPORT_FORMAT = "embedforge-adapt-report/1"

logger = logging.getLogger(__name__)

ESTIMATE_TEXT = (
    "**Label-free estimate.** Held-out documents (seed documents plus their nearest BM25 neighbours, so "
    "distractors are close) are never trained on. Each gives one target (its text with a short span cut out) "
    "and pseudo-queries: `span` (the 4–10 words cut out), `keywords` (3–5 tf·idf-weighted content words in "
    "random order) and `title` (its title, when it has one), each retrieved among all held-out targets "
    "(nDCG@10). A candidate is judged only on the constructions that do not share its training format "
    "(crops train on spans, ICT on spans and titles, title↔body on titles): a proxy built like a candidate's training pairs "
    "rewards that candidate whether or not real relevance improves. With labelled pairs, held-out labelled "
    "queries searching their relevant documents + BM25 distractors are the estimate the decision rests on."
)

# What bench/adapt_scifact.py measured of the estimate itself (part scifact-panel; BENCHMARKS.md).
TRUST_TEXT = (
    "**How far to trust a label-free decision.** Measured against SciFact's real test judgments on models "
    "whose real differences are large enough to resolve, the label-free estimate ranks them the way the real "
    "metric does (Kendall τ +0.83 over 9 models; 33 of 36 resolved pairs in the right order), so it catches "
    "a candidate that is clearly worse. It has blind spots: it did not see the +2.2 nDCG@10 points a fine-tune "
    "on labelled (claim, abstract) pairs gained (estimate −0.2), it saw only −2.8 of an over-trained SimCSE's "
    "−14.3 (and a gain on keywords alone), and among near-tied candidates (real differences within about "
    "a point) its ranking agrees with the real one no better than chance. Read a label-free \"use X\" as "
    "\"X is not worse here and gains on two independent constructions\", not as a measured real gain of that "
    "size; for that, give labelled pairs (`--pairs`) — the labelled estimate is the one to trust."
)


@dataclass(frozen=True)
class ReportInputs:
    model: str
    corpus: str
    docs: Sequence[Document]
    split: Split
    sets: Sequence[EvalSet]
    pairs: QueryPairs | LabelledTexts | None
    prepared: Mapping[str, Prepared]
    plan: Plan
    scores: Mapping[str, ModelScores]  # "base" and every trained candidate
    bm25: Mapping[str, Mapping[str, np.ndarray]]  # eval set name -> task -> per-query nDCG
    decision: Decision
    trained: Mapping[str, Mapping[str, Any]]  # name -> steps, train_seconds, eval_seconds
    config: AdaptConfig
    sts_note: str
    seconds: float


def _labelled_line(pairs: dict[str, Any]) -> str:
    if pairs.get("kind") == "texts":
        return (f"; {pairs['pairs']:,} labelled texts, {pairs['heldout_queries']} of them held out, each searching "
                f"the other held-out texts for its label")
    return f"; {pairs['pairs']:,} labelled pairs, {pairs['heldout_queries']} held-out queries searching {pairs['pool']:,} documents"


def _ci(values: np.ndarray, config: AdaptConfig) -> list[float]:
    from embedforge.evaluate.metrics import bootstrap_ci

    mean, lo, hi = bootstrap_ci(values, n_resamples=config.n_resamples, seed=config.seed, confidence=config.confidence)
    return [round(100 * mean, 2), round(100 * lo, 2), round(100 * hi, 2)]


def _round(interval: Sequence[float] | None) -> list[float] | None:
    return None if interval is None else [round(float(x), 3) for x in interval]


def build_report(r: ReportInputs) -> dict[str, Any]:
    """Everything the run measured and decided, JSON-ready."""
    models: dict[str, Any] = {}
    for name, s in r.scores.items():
        models[name] = {
            "label_free": {t: _ci(v, r.config) for t, v in s.label_free.items()},
            "labelled": _ci(s.labelled, r.config) if s.labelled is not None else None,
            "sts_b_dev": None if s.sts is None else round(s.sts, 2),
        }
    labelled_bm25 = r.bm25.get("labelled", {}).get("labelled")
    models["bm25"] = {
        "label_free": {t: _ci(v, r.config) for t, v in r.bm25["label-free"].items()},
        "labelled": _ci(labelled_bm25, r.config) if labelled_bm25 is not None else None, "sts_b_dev": None,
    }
    verdicts = {v.name: v for v in r.decision.verdicts}
    planned = {p.name: p for p in r.plan.runs}
    candidates: dict[str, Any] = {}
    for name, prep in r.prepared.items():
        status = "trained" if name in r.scores else "dropped" if name in r.plan.dropped else "skipped"
        v = verdicts.get(name)
        candidates[name] = {
            "about": SPECS[name].about, "status": status, "note": r.plan.dropped.get(name, prep.note), "rows": prep.rows,
            "own_format_tasks": list(SPECS[name].formats), "mining": prep.stats or None,
            "steps": planned[name].steps if name in planned else 0, **dict(r.trained.get(name, {})),
            "judged_on": list(v.tasks) if v else [], "label_free_gain": _round(v.label_free_gain) if v else None,
            "labelled_gain": _round(v.labelled_gain) if v else None,
            "task_gains": {t: _round(g) for t, g in v.task_gains.items()} if v else {},
            "sts_drop": None if v is None or v.sts_drop is None else round(v.sts_drop, 2), "eligible": v.eligible if v else False,
            "reasons": list(v.reasons) if v else [],
        }
    lf = r.sets[0]
    return {
        "format": REPORT_FORMAT,
        "model": r.model,
        "corpus": {"source": r.corpus, "documents": len(r.docs), "train_documents": len(r.split.train),
                   "heldout_documents": len(r.split.heldout), "with_title": sum(1 for d in r.docs if d.title)},
        "pairs": None if r.pairs is None else {
            "source": r.pairs.source, "pairs": len(r.pairs), "heldout_queries": len(r.sets[1].tasks[0].queries),
            "pool": len(r.sets[1].docs), "kind": "texts" if isinstance(r.pairs, LabelledTexts) else "pairs"},
        "heldout": {"label_free_pool": len(lf.docs), "tasks": {t.name: len(t.queries) for t in lf.tasks},
                    "sts": r.sts_note},
        "config": r.config.to_dict(),
        "plan": {**r.plan.to_dict(), "summary": r.plan.summary()},
        "candidates": candidates,
        "models": models,
        "decision": r.decision.to_dict(),
        "seconds": round(r.seconds, 1),
    }


def _fmt(ci: Sequence[float] | None, signed: bool = False) -> str:
    if ci is None:
        return "–"
    f = "{:+.2f}" if signed else "{:.2f}"
    return f"{f.format(ci[0])} [{f.format(ci[1])}, {f.format(ci[2])}]"


def markdown(report: dict[str, Any]) -> str:
    """``report.md``: the decision, the scores with intervals, what was tried and the plan."""
    d = report["decision"]
    tasks = list(report["heldout"]["tasks"])
    labelled = report["pairs"] is not None
    lines = [
        f"# embedforge adapt: {report['model']} on {report['corpus']['source']}",
        "",
        f"**Decision: {'keep the base model' if d['chosen'] == 'base' else 'use ' + d['chosen']}.** {d['reason']}.",
    ]
    lines += [f"- {n}" for n in d["notes"]]
    c = report["corpus"]
    lines += [
        "",
        f"{c['documents']:,} documents ({c['with_title']:,} with a title): {c['train_documents']:,} to train on, "
        f"{c['heldout_documents']:,} held out; pseudo-queries: "
        + ", ".join(f"{t} {n}" for t, n in report["heldout"]["tasks"].items())
        + (_labelled_line(report["pairs"]) if labelled else "")
        + f". Forgetting check: {report['heldout']['sts']}.",
        "",
        "## Gains over the base (nDCG@10 points, 95% CI)",
        "",
        "| candidate | judged on | label-free Δ | " + ("labelled Δ | " if labelled else "") + "STS-B Δ | steps | train | eligible |",
        "|---|---|---|" + ("---|" if labelled else "") + "---|---|---|---|",
    ]
    for name, cand in report["candidates"].items():
        if cand["status"] != "trained":
            continue
        sts = "–" if cand["sts_drop"] is None else f"{-cand['sts_drop']:+.1f}"
        why = "yes" if cand["eligible"] else "no: " + "; ".join(cand["reasons"])
        lines.append(
            f"| {name} | {', '.join(cand['judged_on']) or '–'} | {_fmt(cand['label_free_gain'], True)} | "
            + (f"{_fmt(cand['labelled_gain'], True)} | " if labelled else "")
            + f"{sts} | {cand['steps']} | {format_seconds(cand.get('train_seconds', 0))} | {why} |"
        )
    lines += [
        "",
        "## Held-out scores (nDCG@10 points, 95% CI)",
        "",
        "| model | " + " | ".join(tasks) + (" | labelled" if labelled else "") + " | STS-B dev |",
        "|---|" + "---|" * (len(tasks) + 1 + labelled),
    ]
    for name, m in report["models"].items():
        cells = [_fmt(m["label_free"].get(t)) for t in tasks]
        own = report["candidates"].get(name, {}).get("own_format_tasks", [])
        cells = [f"{cell} (own format)" if t in own else cell for cell, t in zip(cells, tasks, strict=True)]
        if labelled:
            cells.append(_fmt(m["labelled"]))
        cells.append("–" if m["sts_b_dev"] is None else f"{m['sts_b_dev']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Candidates", ""]
    for name, cand in report["candidates"].items():
        lines.append(f"- **{name}** ({cand['about']}): {cand['status']} — {cand['note']}")
    lines += ["", "## Plan", "", "```", report["plan"]["summary"], "```", "", f"Total time {format_seconds(report['seconds'])}.",
              "", "## How the estimate works", "", ESTIMATE_TEXT, "", TRUST_TEXT, ""]
    return "\n".join(lines)


def write_chart(report: dict[str, Any], path: Path | BinaryIO) -> None:
    """Gains with 95 % intervals per candidate (left) and training time (right), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, c in report["candidates"].items() if c["status"] == "trained"]
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10, 1.2 + 0.6 * max(1, len(names))), gridspec_kw={"width_ratios": [3, 1]})
    y = np.arange(len(names))
    for offset, key, label, color in ((-0.15, "label_free_gain", "label-free", "tab:blue"), (0.15, "labelled_gain", "labelled", "tab:orange")):
        rows = [(i, report["candidates"][n][key]) for i, n in enumerate(names) if report["candidates"][n][key]]
        if not rows:
            continue
        mean = np.array([g[0] for _, g in rows])
        err = np.array([[g[0] - g[1] for _, g in rows], [g[2] - g[0] for _, g in rows]])
        ax.errorbar(mean, np.array([i for i, _ in rows]) + offset, xerr=err, fmt="o", capsize=3, color=color, label=label)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y, names)
    ax.set_xlabel("gain over the base, nDCG@10 points (95% CI)")
    ax.set_title(f"chosen: {report['decision']['chosen']}")
    ax.legend(loc="best", fontsize=8)
    ax_t.barh(y, [report["candidates"][n].get("train_seconds", 0) / 60 for n in names], color="tab:grey")
    ax_t.set_yticks(y, [""] * len(names))
    ax_t.set_xlabel("training, minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_report(report: dict[str, Any], folder: Path) -> Path:
    """``report.json``, ``report.md`` and ``chart.png`` in ``folder`` (each written atomically; no chart without matplotlib)."""
    from embedforge.io import atomic_write, write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "report.json", report)
    with atomic_write(folder / "report.md") as f:
        f.write(markdown(report))
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the chart is optional; the numbers are all in report.md / report.json
        logger.warning("no chart.png: matplotlib is not installed (pip install 'embedforge[adapt]')")
        return folder
    with atomic_write(folder / "chart.png", "wb") as f:
        write_chart(report, f)
    return folder
