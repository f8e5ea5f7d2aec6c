"""What a bi-encoder second stage costs per query as embedforge runs it today (``search --rerank MODEL``).

``bench/rerank_scifact.py`` counts only the query's encoding for its ``bi-*`` options, as if the second
model's document vectors were made at index time. embedforge's :class:`~embedforge.rerank.model.BiEncoderReranker`
does not store them: it encodes the top N candidates at query time. This measures that cost on SciFact test's
first-stage candidates (the cached hybrid run of ``rerank_scifact.py``): seconds per query at depth N for each
model, with the models alternating across repetitions; the alternative a user has — no second stage — costs 0.

    python bench/rerank_bi_cost.py --first-model bench/cache/rerank-adapt --model multilingual-e5-small \\
        --model bench/cache/all-mpnet-base-v2 --queries 20 --depth 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, publish  # noqa: E402
from rerank_scifact import Split  # noqa: E402

from embedforge.rerank.model import load_cross_encoder, pair_scores  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--first-model", required=True, help="the first stage whose cached SciFact test run gives the candidates")
    p.add_argument("--model", action="append", required=True, help="a bi-encoder used as --rerank (repeatable)")
    p.add_argument("--queries", type=int, default=20, help="test queries re-ranked per repetition")
    p.add_argument("--depth", type=int, default=30, help="candidates re-scored per query (search's default)")
    p.add_argument("--max-length", type=int, default=256, help="document tokens (as rerank_scifact.py's --bi-max-length)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", default="rerank-bi-cost")
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    from embedforge.models import load_model

    split = Split("scifact", "test", args, lambda: load_model(args.first_model), None)
    pairs = [(split.qtexts[i], split.texts[int(r)]) for i in range(args.queries) for r in split.rows[i, : args.depth] if r >= 0]
    models: dict[str, Any] = {m: load_cross_encoder(m, max_length=args.max_length) for m in args.model}
    pair_scores(models[args.model[0]], pairs[:4])  # warm-up (threads, allocator), not timed
    seconds: dict[str, list[float]] = {m: [] for m in args.model}
    for rep in range(args.repeats):
        for m in args.model if rep % 2 == 0 else reversed(args.model):  # alternate the order: drift hits both
            t = time.perf_counter()
            pair_scores(models[m], pairs, batch_size=32)  # all queries' pairs at once, as search batches them
            seconds[m].append(time.perf_counter() - t)
            print(f"{m}: {seconds[m][-1]:.1f} s for {args.queries} queries × {args.depth}", file=sys.stderr)
    results = {"queries": args.queries, "depth": args.depth, "pairs": len(pairs), "max_length": args.max_length,
               "machine": machine(), "argv": sys.argv[1:] if argv is None else argv,
               "models": {m: {"seconds": [round(s, 2) for s in v],
                              "seconds_per_query": round(statistics.median(v) / args.queries, 3)} for m, v in seconds.items()}}
    m = results["machine"]
    lines = ["## Bi-encoder second stage: query-time cost, `bench/rerank_bi_cost.py`", "",
             f"`search --rerank MODEL` with an embedding model encodes the top {args.depth} candidates at query time "
             f"(SciFact test abstracts, {args.max_length} tokens; {args.queries} queries, {len(pairs)} pairs, batched as "
             f"search does; median of {args.repeats} alternating repetitions). No second stage costs 0. "
             f"Machine: {m['cpu']}, {m['cores']} cores; commit {m['commit']}.", "",
             "| model | s per query | queries/s |", "|---|---|---|"]
    for name, r in results["models"].items():
        lines.append(f"| {name} | {r['seconds_per_query']:.2f} | {1 / max(r['seconds_per_query'], 1e-9):.2f} |")
    table = "\n".join(lines) + "\n"
    publish("rerank_bi_cost", results, table, out=str(RESULTS / f"{args.output}.json"), markdown=not args.no_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
