"""STS benchmark: the base model vs. SimCSE-trained variants, all measured in one run.

Rows: base model; + unsupervised SimCSE on unlabeled/wiki_head.txt; + supervised SimCSE on the
SNLI triplets (hard negatives); + supervised on STS-B train (CoSENT loss: graded pairs have no
positive/negative split). Each row: STS12-16, STS-B, SICK-R (Spearman x100, SentEval "all"),
their average, alignment, uniformity, training time and training sentences/s.

    .venv/bin/python bench/sts.py --data-dir ../shared/data

Results: bench/results/sts.json and the "sts" table in BENCHMARKS.md. Trained models are kept
under bench/cache/models/ (git-ignored), so a re-run evaluates without retraining (--retrain to redo);
the JSON is rewritten after every row, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import CACHE, machine, read_result, update_section, write_result

from embedforge.config import SimCSEConfig
from embedforge.corpus import read_pairs
from embedforge.evaluate.sts import STS_TASKS, evaluate_sts, load_stsb
from embedforge.models import load_model, read_manifest
from embedforge.train.trainer import DevSet, train_simcse


def runs(data: Path) -> list[dict[str, Any]]:
    """What is trained, with which data and hyper-parameters (small lr: MiniLM is already a strong model)."""
    return [
        {"name": "base", "label": "base model (all-MiniLM-L6-v2)"},
        {
            "name": "unsup-wiki", "label": "+ unsup SimCSE, wiki_head (11,913 sentences)",
            "train_file": data / "unlabeled" / "wiki_head.txt",
            "config": SimCSEConfig(mode="unsup", learning_rate=1e-5, batch_size=64, epochs=1, eval_steps=60),
        },
        {
            "name": "sup-snli", "label": "+ sup SimCSE, SNLI triplets (6,339, hard negatives)",
            "train_file": data / "nli" / "snli" / "snli_devtest_triplets_simcse_format.csv",
            "config": SimCSEConfig(mode="sup", learning_rate=2e-5, batch_size=64, epochs=1, eval_steps=30),
        },
        {
            "name": "sup-stsb", "label": "+ sup, STS-B train (5,749 graded pairs, CoSENT loss)",
            "train_file": "stsb-train",
            "config": SimCSEConfig(mode="sup", learning_rate=2e-5, batch_size=32, epochs=1, eval_steps=60),
        },
    ]


def stsb_train_csv(data: Path, tmp: Path) -> Path:
    """STS-B train as a headed csv (sentence1,sentence2,score), from the STSBenchmark copy."""
    import csv

    part = load_stsb(data, "train")
    out = tmp / "stsb-train.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sentence1", "sentence2", "score"])
        for a, b, s in zip(part.sentences1, part.sentences2, part.scores, strict=True):
            w.writerow([a, b, float(s)])
    read_pairs(out)  # validate with the reader users get
    return out


def markdown_table(results: dict[str, Any]) -> str:
    m = results["machine"]
    head = ["model", *STS_TASKS, "avg", "align ↓", "uniform ↓", "train s", "train sent/s"]
    lines = [
        "## STS (Spearman × 100, SentEval \"all\"), `bench/sts.py`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}; "
        f"torch {m['torch']}; commit {m['commit']}. Dev selection on STS-B dev; all rows from one run.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in results["rows"]:
        r = row["scores"]
        t = row.get("train") or {}
        cells = [row["label"], *(f"{r[k]:.2f}" for k in (*STS_TASKS, "avg")), f"{r['alignment']:.3f}",
                 f"{r['uniformity']:.3f}", f"{t['seconds']:.0f}" if t else "–",
                 f"{t['sentences_per_second']:.1f}" if t else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Training sentences/s counts forward passes (unsup: each text twice through dropout; triplets: 3 per row). "
        "Losses: SimCSE InfoNCE (τ = 0.05) for unsup and SNLI (α = 1), CoSENT for STS-B's graded pairs."
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--max-steps", type=int, default=-1, help="cap training steps (smoke runs)")
    ap.add_argument("--only", nargs="*", help="run only these row names")
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    data = Path(args.data_dir)
    dev_data = load_stsb(data, "dev")
    dev = DevSet(list(dev_data.sentences1), list(dev_data.sentences2), [float(s) for s in dev_data.scores])
    previous = read_result("sts") or {}
    done = {r["name"]: r for r in previous.get("rows", [])} if not args.retrain else {}
    results: dict[str, Any] = {"benchmark": "sts", "machine": machine(), "base_model": args.model, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs(data):
            if args.only and run["name"] not in args.only:
                if run["name"] in done:
                    results["rows"].append(done[run["name"]])
                continue
            row: dict[str, Any] = {"name": run["name"], "label": run["label"]}
            model_name = args.model
            if "config" in run:
                out = CACHE / "models" / f"sts-{run['name']}"
                train_file = stsb_train_csv(data, Path(tmp)) if run["train_file"] == "stsb-train" else run["train_file"]
                config = run["config"]
                if args.max_steps > 0:
                    config = SimCSEConfig(**{**config.to_dict(), "max_steps": args.max_steps})
                if args.retrain or not out.is_dir():
                    result = train_simcse(args.model, train_file, out, config, dev=dev, overwrite=True)
                    row["train"] = {"seconds": result.seconds, "steps": result.steps, "rows": result.rows,
                                    "sentences_per_second": result.sentences_per_second, "loss": result.loss,
                                    "best_dev": result.best_dev, "config": config.to_dict()}
                else:
                    manifest = read_manifest(out) or {}
                    row["train"] = done.get(run["name"], {}).get("train") or {"from_cache": True, **manifest.get("training", {})}
                model_name = str(out)
            start = time.perf_counter()
            row["scores"] = evaluate_sts(load_model(model_name), data)
            row["eval_seconds"] = time.perf_counter() - start
            results["rows"].append(row)
            write_result("sts", results)
            print(run["label"], {k: round(v, 2) for k, v in row["scores"].items()})
    update_section("sts", markdown_table(results))
    print(markdown_table(results))


if __name__ == "__main__":
    main()
