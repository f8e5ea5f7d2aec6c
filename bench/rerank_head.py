"""Why the SciFact re-ranker stayed at chance: the fresh head's learning rate (a diagnostic).

A cross-encoder started from MiniLM's embedding weights gets a new head (a random 1-logit classifier
on the pooler). Three runs on the same SciFact *train* pairs (positives + 4 hybrid first-stage hard
negatives each, 10% of the queries held out), 100 steps of 16 pairs at 64 tokens — short, so each
runs in ~5 minutes on 2 cores — differing only in the learning rates:

- ``encoder 2e-5, head 2e-5``: one rate for everything (sentence-transformers' trainer default; what
  ``train-reranker`` did before);
- ``encoder 2e-5, head 1e-3``: the head in its own parameter group (``train-reranker``'s default now);
- ``encoder 1e-4, head 1e-3``.

Reported: training loss, held-out pairwise accuracy (share of (relevant, non-relevant) document pairs
of a held-out query in the right order; chance 0.5) against the starting model's cosine on the same
pairs, and the guardrail's verdict. Trained models are cached in bench/cache/rerank-head/.

    .venv/bin/python bench/rerank_head.py     # -> bench/results/rerank_head.json + BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, machine, update_section, write_result  # noqa: E402
from rerank_scifact import Split, mine_hybrid_pairs  # noqa: E402

from embedforge.rerank.train import RerankerConfig, train_reranker  # noqa: E402

RUNS = {"encoder 2e-5, head 2e-5": {"lr": 2e-5, "head_lr": 2e-5},
        "encoder 2e-5, head 1e-3": {"lr": 2e-5, "head_lr": 1e-3},
        "encoder 1e-4, head 1e-3": {"lr": 1e-4, "head_lr": 1e-3}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--max-length", type=int, default=64)
    args = p.parse_args(argv)
    from embedforge.models import load_model

    first_stage = argparse.Namespace(data_dir=args.data_dir, model="minilm", batch_size=64)
    train = Split("scifact", "train", first_stage, load_model("minilm"), None)
    pairs = mine_hybrid_pairs(train, 4, 30, 42)
    rows: dict[str, Any] = {}
    for name, rates in RUNS.items():
        config = RerankerConfig(max_length=args.max_length, max_steps=args.steps, **rates)
        out = CACHE / "rerank-head" / name.replace(" ", "").replace(",", "_")
        saved = json.loads((out / "embedforge_reranker.json").read_text()) if (out / "config.json").is_file() else None
        if saved is None or saved["config"] != json.loads(json.dumps(config.__dict__)) or saved["pairs"] != len(pairs) - saved["heldout"]["pairs"]:
            train_reranker("minilm", pairs, out, config)
            saved = json.loads((out / "embedforge_reranker.json").read_text())
        held = saved["heldout"]
        rows[name] = {"train_loss": round(saved["train_loss"], 4), "train_seconds": saved["train_seconds"],
                      "heldout_pairwise_accuracy": held["reranker"], "cosine_pairwise_accuracy": held["bi_encoder"],
                      "diff_ci95": held.get("ci95"), "recommended": saved["recommended"], "config": saved["config"]}
        print(name, rows[name], flush=True)
    any_held = next(iter(rows.values()))
    result = {"machine": machine(), "pairs": len(pairs), "steps": args.steps, "max_length": args.max_length, "runs": rows}
    path = write_result("rerank_head", result)
    lines = ["## Re-ranker head learning rate, `bench/rerank_head.py`", "",
             f"SciFact train: {len(pairs)} pairs (positives + 4 hybrid hard negatives each), 10% of the queries held out; "
             f"{args.steps} steps of 16 pairs at {args.max_length} tokens from MiniLM's embedding weights (a new head). "
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; commit {result['machine']['commit']}.", "",
             "| learning rates | training loss | held-out pairwise accuracy | starting model's cosine |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['train_loss']:.3f} | {r['heldout_pairwise_accuracy']:.3f} | {r['cosine_pairwise_accuracy']:.3f} |")
    lines += ["", "With one rate the model learns only the label prior (a loss near the entropy of 1 positive in 5, 0.50) "
              "and orders held-out pairs at chance; the head at its own rate learns. None of these short runs beats the "
              f"starting model's cosine ({any_held['cosine_pairwise_accuracy']:.3f}): that needs the full training of "
              "`bench/rerank_scifact.py`.", ""]
    update_section("rerank_head", "\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
