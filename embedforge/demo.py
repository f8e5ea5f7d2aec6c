"""``make demo``: make your own model on the bundled Banking77 corpus and show, on held-out texts,
whether it beats the model it started from.

1. Split the bundled corpus (Banking77 train, CC BY 4.0) into training texts and 1,500 held-out texts.
2. Score the base model on the held-out texts with the intent labels (which training never sees):
   same-intent retrieval (precision@1, MAP@10) and k-means clustering (V-measure, k = 77).
3. Train unsupervised SimCSE on the training texts (label-free), score again.
4. Train supervised on a small labelled slice (10 texts per intent -> same-intent pairs, the way a
   user would label a few examples), score again. STS-B test is printed as a forgetting check
   when ``--data-dir`` holds it.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np

from embedforge.config import SimCSEConfig
from embedforge.encode import encode
from embedforge.models import load_model
from embedforge.train.trainer import train_simcse

HELD_OUT = 1500


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


def labelled_pairs(rows: list[tuple[str, str]], per_intent: int, path: Path, seed: int = 0) -> int:
    """Write same-intent (sent0, sent1) pairs from ``per_intent`` labelled texts per intent."""
    rng = random.Random(seed)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, label in rows:
        by_intent[label].append(text)
    pairs = []
    for texts in by_intent.values():
        chosen = rng.sample(texts, min(per_intent, len(texts)))
        pairs += [(chosen[i], chosen[(i + 1) % len(chosen)]) for i in range(len(chosen))]
    rng.shuffle(pairs)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sent0", "sent1"])
        writer.writerows(pairs)
    return len(pairs)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data", help="only for the STS-B forgetting check")
    ap.add_argument("--output", default="demo-output")
    ap.add_argument("--unsup-steps", type=int, default=30)
    ap.add_argument("--per-intent", type=int, default=10)
    args = ap.parse_args(argv)
    console = Console()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_banking77()
    random.Random(0).shuffle(rows)
    held, train = rows[:HELD_OUT], rows[HELD_OUT:]
    held_texts, held_labels = [t for t, _ in held], [y for _, y in held]
    (out / "train_texts.txt").write_text("\n".join(t for t, _ in train) + "\n", encoding="utf-8")
    console.print(f"[bold]Banking77[/]: {len(train)} training texts (labels unused), {len(held)} held-out texts")

    stsb = None
    sts_dir = Path(args.data_dir) / "sts" / "STSBenchmark"
    if sts_dir.is_dir():
        from embedforge.evaluate.sts import load_stsb

        stsb = load_stsb(args.data_dir, "test")

    def score(model_name: str) -> dict[str, float]:
        model = load_model(model_name)
        result = label_scores(encode(model, held_texts, batch_size=64), held_labels)
        if stsb is not None:
            from embedforge.evaluate.metrics import cosine_pairs, spearman

            a = encode(model, list(stsb.sentences1), batch_size=64)
            b = encode(model, list(stsb.sentences2), batch_size=64)
            result["STS-B"] = 100 * spearman(cosine_pairs(a, b), stsb.scores)
        return result

    table = Table(title="held-out Banking77 (scored with intent labels) and STS-B test")
    results: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}
    console.print("scoring the base model (all-MiniLM-L6-v2) ...")
    results["base"] = score("minilm")

    runs = [
        ("+ SimCSE, label-free", "unsup", out / "train_texts.txt",
         SimCSEConfig(mode="unsup", max_steps=args.unsup_steps, learning_rate=1e-5, batch_size=64)),
    ]
    pair_file = out / "labelled_pairs.csv"
    n_pairs = labelled_pairs(train, args.per_intent, pair_file)
    runs.append((f"+ {args.per_intent} labelled texts/intent", "sup", pair_file,
                 SimCSEConfig(mode="sup", epochs=2, learning_rate=3e-5, batch_size=64)))
    for label, mode, data, config in runs:
        target = out / f"model-{mode}"
        console.print(f"training {label} ({data.name}{', ' + str(n_pairs) + ' pairs' if mode == 'sup' else ''}) ...")
        start = time.perf_counter()
        train_simcse("minilm", data, target, config, overwrite=True)
        timings[label] = time.perf_counter() - start
        results[label] = score(str(target))

    metrics = list(results["base"])
    table.add_column("model")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("train s", justify="right")
    for name, r in results.items():
        cells = [f"{r[m]:.3f}" if m != "STS-B" else f"{r[m]:.2f}" for m in metrics]
        table.add_row(name, *cells, f"{timings[name]:.0f}" if name in timings else "–")
    console.print(table)
    base_map = results["base"]["MAP@10"]
    for name, r in results.items():
        if name != "base":
            delta = r["MAP@10"] - base_map
            verdict = "better than" if delta > 0 else "not better than"
            console.print(f"{name}: MAP@10 {delta:+.3f} vs base -> {verdict} the base on held-out texts")
    console.print(f"models saved under {out}/ (each with an embedforge.json manifest)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
