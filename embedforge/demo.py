"""``make demo``: adapt the bundled model to the bundled Banking77 corpus with ``embedforge adapt``
and show, on held-out texts, whether the result beats the model it started from.

1. Split the bundled corpus (Banking77 train, CC BY 4.0) into training texts and 1,500 held-out
   texts. The held-out texts and their intent labels are never shown to ``adapt``.
2. Score the base model on the held-out texts with the intent labels: same-intent retrieval
   (precision@1, MAP@10) and k-means clustering (V-measure, k = 77); STS-B test as a forgetting
   check when ``--data-dir`` holds it.
3. ``adapt`` label-free (texts only): it tries unsupervised SimCSE and random crops within the
   budget, measures them on pseudo-queries built from its own held-out slice, and keeps the base
   model unless a candidate wins beyond noise.
4. ``adapt`` again with a small labelled slice — 10 texts per intent with their intent, the way a
   user would label a few examples: adapt trains on same-intent pairs of 8 of them and measures
   same-intent retrieval among the other 2 per intent.
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
from embedforge.corpus import Document
from embedforge.encode import encode
from embedforge.errors import InputError
from embedforge.models import load_model

HELD_OUT = 1500
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


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data", help="STS-B for the forgetting checks (skipped without it)")
    ap.add_argument("--output", default="demo-output")
    ap.add_argument("--budget", type=float, default=200.0, help="seconds for the label-free adapt run (default 200)")
    ap.add_argument("--labelled-budget", type=float, default=300.0,
                    help="seconds for the labelled adapt run (default 300: mining hard negatives takes ~1 min of it)")
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

    data_dir = Path(args.data_dir)
    stsb = None
    if (data_dir / "sts" / "STSBenchmark").is_dir():
        from embedforge.evaluate.sts import load_stsb

        stsb = load_stsb(data_dir, "test")
    else:
        console.print(f"[yellow]no STS-B under {data_dir}: the forgetting checks are skipped[/]")

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
    runs = [
        ("adapt, label-free", "label-free", AdaptConfig(budget_seconds=args.budget, candidates=("simcse", "crops"), max_length=64,
                                                        batch_size=32, seed=0), None),
        (f"adapt, {args.per_intent} labelled texts/intent", "labelled",
         AdaptConfig(budget_seconds=args.labelled_budget, candidates=("supervised",), max_length=64, batch_size=32, seed=0), pairs),
    ]
    sts_dir = data_dir if stsb is not None else None
    for label, tag, config, run_pairs in runs:
        extra = f" with {len(run_pairs)} labelled texts" if run_pairs is not None else ""
        console.print(f"[bold]{label}[/]: embedforge adapt{extra}, budget {config.budget_seconds:.0f} s ...")
        start = time.perf_counter()
        try:
            res = adapt("minilm", docs, out / f"model-{tag}", config, pairs=run_pairs, data_dir=sts_dir, overwrite=True)
        except InputError as err:  # e.g. a machine slower than this budget assumes: say so, go on
            console.print(f"[red]{label}: {err}[/] (a slower machine: `python -m embedforge.demo --budget S --labelled-budget S`)")
            continue
        info[label] = {"chosen": res.chosen, "reason": res.decision.reason, "seconds": time.perf_counter() - start,
                       "report": res.report_dir, "output": res.output}
        results[label] = score(label, str(res.output))

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
