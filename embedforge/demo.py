"""``make demo``: adapt the bundled model to the bundled Banking77 corpus with ``embedforge adapt``
and show, on held-out texts, whether the result beats the model it started from.

1. Split the bundled corpus (Banking77 train, CC BY 4.0) into training texts and 1,500 held-out
   texts. The held-out texts and their intent labels are never shown to ``adapt``.
2. Score the base model on the held-out texts with the intent labels: same-intent retrieval
   (precision@1, MAP@10) and k-means clustering (V-measure, k = 77); STS-B test as a forgetting
   check when ``--data-dir`` holds it.
3. ``adapt`` label-free (texts only): it tries unsupervised SimCSE and random crops, 60 steps
   each (a work budget: every machine trains the same amount and decides the same; only the time
   differs, and each run prints its expected duration first), measures them on pseudo-queries built from its own held-out slice, and keeps the base
   model unless a candidate wins beyond noise.
4. ``adapt`` again with a small labelled slice — 10 texts per intent with their intent, the way a
   user would label a few examples: adapt trains one pass over same-intent pairs of 8 of them and
   measures same-intent retrieval among the other 2 per intent.
5. Score both results like the base, print adapt's decisions and a few example searches.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.adapt import AdaptConfig, LabelledTexts, adapt
from embedforge.adapt.planner import read_budget
from embedforge.cli.adapt import progress_lines
from embedforge.corpus import Document
from embedforge.encode import encode
from embedforge.errors import InputError
from embedforge.io import DATA_ENV, DEV_DATA_DIR, default_data_dir
from embedforge.models import load_model

HELD_OUT = 1500
LABEL_FREE_BUDGET = "60steps"  # per candidate: above adapt's 50-step floor for a label-free estimate
LABELLED_BUDGET = "1epoch"  # one pass over the labelled pairs: what a supervised estimate needs
EXAMPLE_QUERIES = (
    "my new card still hasn't arrived",
    "why did I pay a fee for taking out cash?",
    "can I add money with apple pay",
)


def load_banking77() -> list[tuple[str, str]]:
    with resources.files("embedforge.data").joinpath("banking77_train.csv").open(encoding="utf-8") as f:
        # a few queries span several lines in the csv: one text per line needs them on one
        return [(" ".join(row["text"].split()), row["category"]) for row in csv.DictReader(f)]


def label_scores(emb: np.ndarray, labels: list[str], seed: int = 0) -> dict[str, float]:
    """Same-intent retrieval (leave-one-out precision@1 and MAP@10) and k-means V-measure (k = #intents)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import v_measure_score

    from embedforge.evaluate.metrics import same_label_retrieval

    retrieval = same_label_retrieval(emb, labels, k=10)
    clusters = KMeans(n_clusters=len(set(labels)), n_init=3, random_state=seed).fit_predict(emb)
    return {"P@1": retrieval["P@1"], "MAP@10": retrieval["MAP@10"], "V-measure": float(v_measure_score(labels, clusters))}


def labelled_texts(rows: list[tuple[str, str]], per_intent: int, seed: int = 0) -> LabelledTexts:
    """``per_intent`` texts of each intent with their label, the way a user labels a few examples;
    adapt turns them into same-intent pairs and holds some out to measure same-intent retrieval."""
    rng = random.Random(seed)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, label in rows:
        by_intent[label].append(text)
    texts: list[str] = []
    labels: list[str] = []
    for label in sorted(by_intent):
        chosen = rng.sample(by_intent[label], min(per_intent, len(by_intent[label])))
        texts += chosen
        labels += [label] * len(chosen)
    return LabelledTexts(texts, labels, source="demo labelled slice")


DemoRun = tuple[str, str, AdaptConfig, "LabelledTexts | None", str]  # label, tag, config, labelled texts, budget text


def demo_runs(budget: str, labelled_budget: str, pairs: LabelledTexts, per_intent: int, **overrides: Any) -> list[DemoRun]:
    """The demo's two adapt runs: label-free (SimCSE, crops) and supervised on the labelled texts.
    ``overrides``: other :class:`AdaptConfig` settings (the tests' tiny corpora)."""
    free, labelled = read_budget(budget).config_fields(), read_budget(labelled_budget).config_fields()
    common: dict[str, Any] = {"max_length": 64, "batch_size": 32, "seed": 0, **overrides}
    return [
        ("adapt, label-free", "label-free", AdaptConfig(candidates=("simcse", "crops"), **free, **common), None, budget),
        (f"adapt, {per_intent} labelled texts/intent", "labelled", AdaptConfig(
            candidates=("supervised",), **labelled, **common), pairs, labelled_budget),
    ]


def run_adapts(model: str, docs: list[Document], runs: list[DemoRun], out: Path,
               sts_dir: Path | None) -> dict[str, dict[str, Any]]:
    """Run each of ``runs`` (see :func:`demo_runs`) on ``docs``: label -> chosen, reason, seconds, steps, ..."""
    info: dict[str, dict[str, Any]] = {}
    for label, tag, config, run_pairs, _budget in runs:
        start = time.perf_counter()
        res = adapt(model, docs, out / f"model-{tag}", config, pairs=run_pairs, data_dir=sts_dir, overwrite=True)
        info[label] = {"chosen": res.chosen, "reason": res.decision.reason, "seconds": time.perf_counter() - start,
                       "report": res.report_dir, "output": res.output,
                       "steps": {r.name: r.steps for r in res.plan.runs},
                       "scores": res.report["models"]}
    return info


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=default_data_dir(),
                    help=f"STS-B for the forgetting checks (default: ${DATA_ENV}, else {DEV_DATA_DIR} when it exists; "
                         "skipped without one)")
    ap.add_argument("--output", default="demo-output")
    # Work budgets, not seconds: every machine trains the same amount and reaches the same decision;
    # a slower or busier one only takes longer (a time budget fitted half the steps on a busy machine
    # and kept the base in both runs). Each run prints its expected duration before it trains.
    ap.add_argument("--budget", default=LABEL_FREE_BUDGET,
                    help="label-free adapt run: steps / epochs per candidate and/or a time, as `adapt --budget` "
                         "(default %(default)s)")
    ap.add_argument("--labelled-budget", default=LABELLED_BUDGET,
                    help="labelled adapt run, as --budget (default %(default)s: one pass over the labelled pairs)")
    ap.add_argument("--per-intent", type=int, default=10, help="labelled texts per intent for the second run")
    args = ap.parse_args(argv)
    console = Console()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_banking77()
    random.Random(0).shuffle(rows)
    held, train = rows[:HELD_OUT], rows[HELD_OUT:]
    held_texts, held_labels = [t for t, _ in held], [y for _, y in held]
    docs = [Document(str(i), t) for i, (t, _) in enumerate(train)]
    console.print(f"[bold]Banking77[/]: {len(train)} training texts (labels unused), {len(held)} held-out texts")

    data_dir = Path(args.data_dir or ".")
    stsb = None
    if args.data_dir and (data_dir / "sts" / "STSBenchmark").is_dir():
        from embedforge.evaluate.sts import load_stsb

        stsb = load_stsb(data_dir, "test")
    else:
        where = args.data_dir or f"a data folder (set ${DATA_ENV} or pass --data-dir)"
        console.print(f"[yellow]no STS-B under {where}: the forgetting checks are skipped[/]")

    held_vectors: dict[str, np.ndarray] = {}

    def score(name: str, model_name: str) -> dict[str, float]:
        model = load_model(model_name)
        held_vectors[name] = encode(model, held_texts, batch_size=64)
        result = label_scores(held_vectors[name], held_labels)
        if stsb is not None:
            from embedforge.evaluate.metrics import cosine_pairs, spearman

            a = encode(model, list(stsb.sentences1), batch_size=64)
            b = encode(model, list(stsb.sentences2), batch_size=64)
            result["STS-B"] = 100 * spearman(cosine_pairs(a, b), stsb.scores)
        return result

    results: dict[str, dict[str, float]] = {}
    info: dict[str, dict[str, Any]] = {}
    console.print("scoring the base model (all-MiniLM-L6-v2) on the held-out texts ...")
    results["base"] = score("base", "minilm")

    pairs = labelled_texts(train, args.per_intent)
    runs = demo_runs(args.budget, args.labelled_budget, pairs, args.per_intent)
    sts_dir = data_dir if stsb is not None else None
    for label, _tag, _config, run_pairs, budget_text in runs:
        extra = f" with {len(run_pairs)} labelled texts" if run_pairs is not None else ""
        console.print(f"[bold]{label}[/]: embedforge adapt{extra}, budget {budget_text} "
                      "(its plan, with the expected duration measured here, follows) ...")
        try:
            with progress_lines():
                info.update(run_adapts("minilm", docs, [r for r in runs if r[0] == label], out, sts_dir))
        except InputError as err:  # e.g. a budget too small for any candidate: say so, go on
            console.print(f"[red]{label}: {err}[/] (other budgets: `python -m embedforge.demo --budget B --labelled-budget B`)")
            continue
        results[label] = score(label, str(info[label]["output"]))

    metrics = list(results["base"])
    table = Table(title="held-out Banking77 (scored with intent labels adapt never saw) and STS-B test")
    table.add_column("model")
    table.add_column("adapt chose")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("adapt s", justify="right")
    for name, r in results.items():
        cells = [f"{r[m]:.3f}" if m != "STS-B" else f"{r[m]:.2f}" for m in metrics]
        chose = info[name]["chosen"] if name in info else "–"
        table.add_row(name, chose, *cells, f"{info[name]['seconds']:.0f}" if name in info else "–")
    console.print(table)
    base_map = results["base"]["MAP@10"]
    for name, meta in info.items():
        delta = results[name]["MAP@10"] - base_map
        verdict = "better than" if delta > 1e-9 else ("the same as" if abs(delta) <= 1e-9 else "worse than")
        console.print(f"{name}: adapt chose [bold]{meta['chosen']}[/] ({meta['reason']}); held-out MAP@10 "
                      f"{delta:+.3f} -> {verdict} the base. Report: {meta['report']}/report.md")

    # a few searches over the held-out texts (their vectors are already computed): base vs the labelled run
    show = ["base"] + [label for label, *_ in runs if label in info][-1:]
    hits: dict[str, list[list[int]]] = {}
    for name in show:
        q_vec = encode(load_model(str(info[name]["output"]) if name in info else "minilm"), list(EXAMPLE_QUERIES))
        hits[name] = np.argsort(-(q_vec @ held_vectors[name].T), axis=1)[:, :3].tolist()
    for qi, query in enumerate(EXAMPLE_QUERIES):
        console.print(f"\n[bold]search the held-out texts:[/] {query!r}")
        for name in show:
            console.print(f"  [cyan]{name}[/]")
            for j in hits[name][qi]:
                console.print(f"    - {held_texts[j]}  [dim]({held_labels[j]})[/]")
    console.print(f"\nmodels and adapt reports saved under {out}/ (each model with an embedforge.json manifest)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
