"""Rocchio feedback (``search --rerank prf``) through the product's own path, against the first stage alone.

For each data set (SciFact test, msmarco-5k, dbpedia-5k) a collection of ``--first-model`` is built from its
cached document vectors (the ones ``bench/rerank_scifact.py`` made; encoded here if missing) and every test
query is searched with ``Collection.search`` (= ``embedforge search``), hybrid, four ways: the first stage
alone (what a user has without a second stage), ``prf`` alone (depth 30), and ``prf`` fused with the first
stage (``--rerank-weights 0.7,0.3``, the weight ``bench/rerank_scifact.py --prf`` picked on adapt's held-out
SciFact train queries) at depth 30 (search's default) and 50. nDCG@10 with a paired bootstrap against the
first stage. Then on SciFact the time per query (one query per search, as a user or a server request) of
the first stage alone and of the fused ``prf``, in alternating order per repetition.

    python bench/rerank_prf_search.py --first-model bench/cache/rerank-adapt
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

DATASETS = ("scifact", "msmarco-5k", "dbpedia-5k")
WAYS: dict[str, dict[str, Any]] = {
    "first stage only": {},
    "prf alone, depth 30": {"rerank": "prf", "rerank_top": 30},
    "prf fused 0.7/0.3, depth 30": {"rerank": "prf", "rerank_top": 30, "rerank_weights": [0.7, 0.3]},
    "prf fused 0.7/0.3, depth 50": {"rerank": "prf", "rerank_top": 50, "rerank_weights": [0.7, 0.3]},
}
TIMED = ("first stage only", "prf fused 0.7/0.3, depth 30")


def build_collection(args: argparse.Namespace, name: str, ids: list[str], texts: list[str]) -> Collection:
    """The data set's collection from the first stage's cached document vectors (cached on disk)."""
    from embedforge.models import load_model

    key = hashlib.sha256("\0".join([args.first_model, *ids]).encode()).hexdigest()[:12]
    path = CACHE / f"prf-{name}-{key}"
    if not (path / "CURRENT").is_file():
        first = load_model(args.first_model)
        safe = "".join(c if c.isalnum() else "_" for c in args.first_model)[-40:]
        vectors = cached_embeddings(first, args.first_model, texts, f"{safe}-{name}-docs", args.batch_size)
        coll = Collection.create(path, args.first_model, model=first, index_spec="exact")
        coll.add([{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)], vectors=vectors)
        coll.save()
    return Collection.open(path)


def quality(coll: Collection, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    qids = sorted(q for q in queries if q in qrels)
    per_query = {}
    for way, opts in WAYS.items():
        results = coll.search([queries[q] for q in qids], top_k=10, mode="hybrid", **opts)
        per_query[way] = ndcg_per_query({q: {h.id: h.score for h in r} for q, r in zip(qids, results, strict=True)}, qrels, 10)
    base = per_query["first stage only"]
    out: dict[str, Any] = {"queries": len(qids), "documents": len(coll)}
    for way, per in per_query.items():
        row: dict[str, Any] = {"ndcg@10": round(float(np.mean([per[q] for q in base])), 4)}
        if way != "first stage only":
            diff, lo, hi = paired_bootstrap([base[q] for q in base], [per[q] for q in base])
            row.update({"diff": round(diff, 4), "ci95": [round(lo, 4), round(hi, 4)],
                        "verdict": "better beyond noise" if lo > 0 else "worse beyond noise" if hi < 0 else "within noise"})
        out[way] = row
    return out


def timing(coll: Collection, timed: list[str], repeats: int) -> dict[str, Any]:
    for way in TIMED:
        coll.search(timed[:1], top_k=10, mode="hybrid", **WAYS[way])  # warm-up: model threads, BM25
    seconds: dict[str, list[float]] = {w: [] for w in TIMED}
    for rep in range(repeats):
        for way in TIMED if rep % 2 == 0 else tuple(reversed(TIMED)):
            per = []
            for q in timed:
                t = time.perf_counter()
                coll.search([q], top_k=10, mode="hybrid", **WAYS[way])
                per.append(time.perf_counter() - t)
            seconds[way].append(statistics.median(per))
            print(f"{way}: {statistics.median(per) * 1000:.1f} ms per query (median of {len(per)})", file=sys.stderr)
    return {"queries_timed": len(timed), "repeats": repeats,
            "seconds_per_query": {w: [round(s, 5) for s in v] for w, v in seconds.items()},
            "median_seconds_per_query": {w: round(statistics.median(v), 5) for w, v in seconds.items()}}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "## Rocchio feedback through `search --rerank prf`, `bench/rerank_prf_search.py`", "",
        f"Collections of `{results['first_model']}` (exact index), hybrid first stage, every test query through "
        f"`Collection.search` (what `embedforge search` runs). nDCG@10; against the first stage alone, paired bootstrap 95%. "
        f"Machine: {m['cpu']}, {m['cores']} cores; commit {m['commit']}.", "",
        "| way | " + " | ".join(f"{n} ({d['queries']} q)" for n, d in results["datasets"].items()) + " |",
        "|---|" + "---:|" * len(results["datasets"]),
    ]
    for way in WAYS:
        cells = []
        for d in results["datasets"].values():
            r = d[way]
            cells.append(f"{r['ndcg@10']:.3f}" + (f" ({r['diff']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}])" if "diff" in r else ""))
        lines.append(f"| {way} | " + " | ".join(cells) + " |")
    t = results["timing"]
    med = t["median_seconds_per_query"]
    lines += ["", f"Time per query on SciFact (one query per search, {t['queries_timed']} queries, {t['repeats']} alternating "
                  "repetitions, median of medians): " + "; ".join(f"{w} {s * 1000:.1f} ms" for w, s in med.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--first-model", required=True, help="the collections' model (first stage)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--queries", type=int, default=30, help="SciFact test queries timed per repetition, one search each")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", default="rerank-prf-search")
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    results: dict[str, Any] = {"first_model": args.first_model, "ways": WAYS, "datasets": {}, "machine": machine(),
                               "argv": sys.argv[1:] if argv is None else argv}
    for name in args.datasets:
        ids, texts, queries, qrels = load_beir(Path(args.data_dir) / "retrieval" / name, "test", None)
        coll = build_collection(args, name, ids, texts)
        results["datasets"][name] = quality(coll, queries, qrels)
        print(f"{name}: {results['datasets'][name]}", file=sys.stderr)
        if name == args.datasets[0]:
            timed = [queries[q] for q in sorted(q for q in queries if q in qrels)[: args.queries]]
            results["timing"] = timing(coll, timed, args.repeats)
    publish("rerank_prf_search", results, markdown(results), out=str(RESULTS / f"{args.output}.json"), markdown=not args.no_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
