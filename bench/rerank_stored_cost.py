"""A bi-encoder second stage with its document vectors stored at index time, against encoding the candidates
at query time, through the product's own path (``Collection.search`` = ``search --rerank MODEL``, /v1/search).

On SciFact (5,183 abstracts) a collection is built with the first-stage model (its cached document vectors),
then ``Collection.store_rerank_vectors(MODEL)`` stores the second model's vectors (``index --rerank-vectors``;
the one-time cost is timed). Test queries are then searched one at a time (as a user or a server request
does), hybrid, re-ranked at ``--depth`` with ``--weights``, three ways in alternating order per repetition:
the first stage alone (what a user has without a second stage), the second stage encoding the candidates
(what embedforge did before), and the stored vectors. The two second-stage ways must give the same hits and
scores (checked, max difference recorded). nDCG@10 over all test queries of the stored way and of the first
stage alone (both through ``Collection.search``), with a paired bootstrap.

    python bench/rerank_stored_cost.py --first-model bench/cache/rerank-adapt --model multilingual-e5-small
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, RESULTS, machine, publish  # noqa: E402
from search_scifact import cached_embeddings, load_beir  # noqa: E402

from embedforge.collection import Collection  # noqa: E402
from embedforge.evaluate.metrics import ndcg_per_query, paired_bootstrap  # noqa: E402
from embedforge.rerank.model import load_cross_encoder  # noqa: E402


class QueryTime:
    """The re-ranker without its stored vectors: anything that is not a BiEncoderReranker is used as given."""

    def __init__(self, reranker: Any) -> None:
        self.reranker = reranker
        self.method = reranker.method

    def predict(self, pairs: Any, batch_size: int = 32, **kwargs: Any) -> Any:
        return self.reranker.predict(pairs, batch_size=batch_size, **kwargs)


def build_collection(args: argparse.Namespace, ids: list[str], texts: list[str]) -> tuple[Collection, float | None]:
    """The SciFact collection with the first stage's cached vectors and ``--model``'s stored ones (cached on disk)."""
    from embedforge.models import load_model

    key = hashlib.sha256("\0".join([args.first_model, args.model, str(args.max_length), *ids]).encode()).hexdigest()[:12]
    path = CACHE / f"stored-scifact-{key}"
    if not (path / "CURRENT").is_file():
        first = load_model(args.first_model)
        safe = "".join(c if c.isalnum() else "_" for c in args.first_model)[-40:]
        vectors = cached_embeddings(first, args.first_model, texts, f"{safe}-scifact-docs", args.batch_size)
        coll = Collection.create(path, args.first_model, model=first, index_spec="exact")
        coll.add([{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)], vectors=vectors)
        coll.save()
    coll = Collection.open(path)
    timing = path.parent / f"{path.name}.store-seconds"
    t = time.perf_counter()
    done = coll.store_rerank_vectors(args.model, max_length=args.max_length, batch_size=args.batch_size, show_progress=True)
    if done == len(coll):
        timing.write_text(f"{time.perf_counter() - t:.1f}\n")
    seconds = float(timing.read_text()) if timing.is_file() else None
    return Collection.open(path), seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--first-model", required=True, help="the collection's model (first stage)")
    p.add_argument("--model", required=True, help="the embedding model used as --rerank")
    p.add_argument("--max-length", type=int, default=256, help="document tokens of the second stage")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--weights", default="0.5,0.5", help="first stage, second stage (README's e5 line)")
    p.add_argument("--queries", type=int, default=10, help="test queries timed per repetition, one search each")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", default="rerank-stored-cost")
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    ids, texts, queries, qrels = load_beir(Path(args.data_dir) / "retrieval" / "scifact", "test", None)
    qids = sorted(queries)
    coll, store_seconds = build_collection(args, ids, texts)
    reranker = load_cross_encoder(args.model, max_length=args.max_length)
    assert type(coll.stored_reranker(reranker)).__name__ == "StoredVectorsReranker", "the stored vectors were not matched"
    ways: dict[str, dict[str, Any]] = {
        "first stage only": {},
        "second stage, candidates encoded per query": {"rerank": QueryTime(reranker), "rerank_top": args.depth, "rerank_weights": weights},
        "second stage, vectors stored at index time": {"rerank": reranker, "rerank_top": args.depth, "rerank_weights": weights},
    }
    timed = [queries[q] for q in qids[: args.queries]]
    for opts in ways.values():
        coll.search(timed[:1], top_k=10, mode="hybrid", **opts)  # warm-up: model threads, the fingerprint, BM25
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    hits: dict[str, list[Any]] = {}
    for rep in range(args.repeats):
        for way in list(ways) if rep % 2 == 0 else list(reversed(ways)):
            per = []
            got = []
            for q in timed:
                t = time.perf_counter()
                got.append(coll.search([q], top_k=10, mode="hybrid", **ways[way])[0])
                per.append(time.perf_counter() - t)
            seconds[way].append(statistics.median(per))
            hits[way] = got
            print(f"{way}: {statistics.median(per) * 1000:.1f} ms per query (median of {len(per)})", file=sys.stderr)
    a, b = hits["second stage, candidates encoded per query"], hits["second stage, vectors stored at index time"]
    same_ids = all([h.id for h in x] == [h.id for h in y] for x, y in zip(a, b, strict=True))
    max_diff = max(abs(h.score - g.score) for x, y in zip(a, b, strict=True) for h, g in zip(x, y, strict=True))
    # quality over every test query, both through Collection.search
    per_query: dict[str, dict[str, float]] = {}
    for way in ("first stage only", "second stage, vectors stored at index time"):
        results = coll.search([queries[q] for q in qids], top_k=10, mode="hybrid", **ways[way])
        run = {q: {h.id: h.score for h in r} for q, r in zip(qids, results, strict=True)}
        per_query[way] = ndcg_per_query(run, qrels, 10)
    base, new = per_query["first stage only"], per_query["second stage, vectors stored at index time"]
    diff, lo, hi = paired_bootstrap([base[q] for q in sorted(base)], [new[q] for q in sorted(base)])  # new - base
    results = {
        "collection": {"documents": len(coll), "first_model": args.first_model, "second_model": args.model, "max_length": args.max_length},
        "store_seconds": store_seconds, "depth": args.depth, "weights": weights, "queries_timed": len(timed), "repeats": args.repeats,
        "seconds_per_query": {w: [round(s, 4) for s in v] for w, v in seconds.items()},
        "median_seconds_per_query": {w: round(statistics.median(v), 4) for w, v in seconds.items()},
        "stored_equals_query_time": {"same_hits": same_ids, "max_score_difference": max_diff},
        "ndcg10": {"first stage only": round(float(np.mean(list(base.values()))), 4),
                   "second stage (stored)": round(float(np.mean(list(new.values()))), 4),
                   "difference": round(diff, 4), "ci95": [round(lo, 4), round(hi, 4)], "queries": len(base)},
        "machine": machine(), "argv": sys.argv[1:] if argv is None else argv,
    }
    m, med, nd = results["machine"], results["median_seconds_per_query"], results["ndcg10"]
    store = f"{store_seconds / 60:.1f} min" if store_seconds is not None else "not timed (stored by an earlier run)"
    lines = [
        "## Bi-encoder second stage with stored vectors, `bench/rerank_stored_cost.py`", "",
        f"SciFact ({len(coll)} abstracts) in a collection of `{args.first_model}`; second stage `{args.model}` "
        f"({args.max_length} tokens), hybrid first stage, depth {args.depth}, weights {args.weights}. One query per search "
        f"(median over {len(timed)} test queries, median of {args.repeats} alternating repetitions). "
        f"Machine: {m['cpu']}, {m['cores']} cores; commit {m['commit']}.", "",
        "| way | ms per query | queries/s |", "|---|---|---|",
    ]
    for w, s in med.items():
        lines.append(f"| {w} | {s * 1000:.1f} | {1 / max(s, 1e-9):.1f} |")
    lines += [
        "",
        f"Storing the vectors (`index --rerank-vectors`, once): {store}. Stored and per-query encoding give the same hits: "
        f"{same_ids}; largest score difference {max_diff:.1e}.",
        f"nDCG@10 over the {nd['queries']} test queries, both through `Collection.search`: first stage {nd['first stage only']:.3f}, "
        f"with the second stage {nd['second stage (stored)']:.3f} ({nd['difference']:+.3f}, 95% CI [{nd['ci95'][0]:+.3f}, "
        f"{nd['ci95'][1]:+.3f}]).",
    ]
    table = "\n".join(lines) + "\n"
    publish("rerank_stored_cost", results, table, out=str(RESULTS / f"{args.output}.json"), markdown=not args.no_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
