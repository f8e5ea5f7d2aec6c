"""Retrieval quality of every search pipeline on SciFact (and msmarco-5k / dbpedia-5k off-domain).

Pipelines: BM25 (bm25s, stemmed), dense (exact search), hybrid RRF (k=60), hybrid min-max score
fusion, and with a cross-encoder: dense + rerank, hybrid + rerank (the top ``--rerank-top``
candidates re-scored; the rest of the top 100 keep their order below them). Metrics: nDCG@10
and Recall@100 (trec_eval conventions, ``embedforge.evaluate.metrics``), on the test qrels.

It calls the same library functions as ``Collection.search`` (``BM25Index``, ``exact_search``,
``fuse``, ``rerank_scores``) on in-memory arrays. Embeddings are cached in bench/cache, keyed by
model, data set and document ids.

    python bench/search_scifact.py                              # full run (see BENCHMARKS.md for timings)
    python bench/search_scifact.py --limit 40 --datasets scifact  # smoke test, seconds
    python bench/search_scifact.py --reranker auto              # train a re-ranker on SciFact train first
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, machine, update_section, write_result  # noqa: E402

from embedforge.corpus import join_title, read_documents, read_records  # noqa: E402
from embedforge.evaluate.metrics import ndcg_at_k, recall_at_k  # noqa: E402
from embedforge.index import exact_search  # noqa: E402
from embedforge.query import BM25Index, fuse  # noqa: E402
from embedforge.rerank.model import rerank_scores  # noqa: E402

DATASETS = ("scifact", "msmarco-5k", "dbpedia-5k")
DEPTH = 100  # candidates per pipeline (Recall@100)


def load_beir(folder: Path, split: str, limit: int | None) -> tuple[list[str], list[str], dict[str, str], dict[str, dict[str, int]]]:
    """(doc ids, doc texts "title. text", queries {id: text}, qrels) — limited to ``limit`` queries."""
    docs = read_documents(folder)
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) >= 3 and row[2].strip().lstrip("-").isdigit():
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {str(r["_id"]): str(r["text"]) for _, r in read_records(folder / "queries.jsonl") if str(r["_id"]) in qrels}
    qrels = {q: j for q, j in qrels.items() if q in queries}
    if limit is not None:  # smoke test: a few queries, their judged docs plus the first 10*limit docs
        keep_q = sorted(qrels)[:limit]
        qrels = {q: qrels[q] for q in keep_q}
        queries = {q: queries[q] for q in keep_q}
        judged = {d for j in qrels.values() for d in j}
        docs = [d for i, d in enumerate(docs) if d.id in judged or i < 10 * limit]
    ids = [d.id for d in docs]
    texts = [join_title(d.title, d.text) for d in docs]
    return ids, texts, queries, qrels


def cached_embeddings(model: Any, model_name: str, texts: list[str], key: str, batch_size: int) -> np.ndarray:
    from embedforge.encode import encode

    digest = hashlib.sha256(("\0".join([model_name, *texts])).encode()).hexdigest()[:16]
    file = CACHE / f"{key}-{digest}.npy"
    if file.is_file():
        return np.load(file)
    vectors = encode(model, texts, batch_size=batch_size, normalize=True, show_progress=len(texts) > 1000)
    from embedforge.io import save_npy

    save_npy(file, vectors)
    return vectors


def to_run(qids: list[str], ids: list[str], rows: np.ndarray, scores: np.ndarray) -> dict[str, dict[str, float]]:
    return {q: {ids[r]: float(s) for r, s in zip(rr, ss, strict=True) if r >= 0} for q, rr, ss in zip(qids, rows, scores, strict=True)}


def reranked(ce: Any, qtexts: list[str], texts: list[str], rows: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score the first ``top`` rows of each result with ``ce``; the rest keep their order below."""
    out_r = rows.copy()
    out_s = np.zeros(rows.shape, dtype=np.float32)
    for i, q in enumerate(qtexts):
        valid = [int(r) for r in rows[i] if r >= 0]
        head, tail = valid[:top], valid[top:]
        scores = rerank_scores(ce, q, [texts[r] for r in head])
        order = [head[j] for j in np.argsort(-scores, kind="stable")]
        final = order + tail
        out_r[i, : len(final)] = final
        out_s[i, : len(final)] = np.arange(len(final), 0, -1, dtype=np.float32)  # rank-preserving scores
    return out_s, out_r


def evaluate(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], seconds: float) -> dict[str, float]:
    return {"ndcg@10": ndcg_at_k(run, qrels, 10), "recall@100": recall_at_k(run, qrels, 100), "seconds": round(seconds, 2)}


def bench_dataset(name: str, args: argparse.Namespace, models: dict[str, Any], ce: Any) -> dict[str, dict[str, float]]:
    ids, texts, queries, qrels = load_beir(Path(args.data_dir) / "retrieval" / name, "test", args.limit)
    qids = sorted(queries)
    qtexts = [queries[q] for q in qids]
    print(f"{name}: {len(ids)} docs, {len(qids)} queries", file=sys.stderr)
    out: dict[str, dict[str, float]] = {}
    t = time.perf_counter()
    bm25 = BM25Index.build(texts)
    sparse = bm25.search(qtexts, DEPTH)
    out["bm25"] = evaluate(to_run(qids, ids, sparse[1], sparse[0]), qrels, time.perf_counter() - t)
    for label, model in models.items():
        tag = "" if label == "base" else f" ({label})"
        t = time.perf_counter()
        safe = "".join(c if c.isalnum() else "_" for c in label)
        dvec = cached_embeddings(model, args.model if label == "base" else args.adapted_model, texts, f"{safe}-{name}-docs", args.batch_size)
        qvec = cached_embeddings(model, args.model if label == "base" else args.adapted_model, qtexts, f"{safe}-{name}-queries", args.batch_size)
        dense = exact_search(qvec, dvec, np.arange(len(ids), dtype=np.int64), DEPTH)
        t_dense = time.perf_counter() - t
        out["dense" + tag] = evaluate(to_run(qids, ids, dense[1], dense[0]), qrels, t_dense)
        hybrid = {}
        for fusion in ("rrf", "score"):
            t = time.perf_counter()
            hybrid[fusion] = fuse(dense, sparse, DEPTH, fusion)
            out[f"hybrid-{fusion}{tag}"] = evaluate(to_run(qids, ids, hybrid[fusion][1], hybrid[fusion][0]), qrels, t_dense + time.perf_counter() - t)
        if ce is not None:
            # the default fusion (score); dense + rerank for the base model only (each re-rank of SciFact
            # is ~9,000 cross-encoder passes at 256 tokens, ~7 min on 2 cores)
            pipes = [("dense", dense), ("hybrid-score", hybrid["score"])] if label == "base" else [("hybrid-score", hybrid["score"])]
            for pipe, (_, rows) in pipes:
                t = time.perf_counter()
                s, r = reranked(ce, qtexts, texts, rows, args.rerank_top)
                out[f"{pipe}+rerank{tag}"] = evaluate(to_run(qids, ids, r, s), qrels, time.perf_counter() - t)
    return out


def get_reranker(args: argparse.Namespace) -> Any:
    if not args.reranker:
        return None
    from embedforge.rerank.model import load_cross_encoder

    path = Path(args.reranker)
    if args.reranker == "auto":
        from embedforge.rerank.train import RerankerConfig, mine_beir_pairs, train_reranker

        steps = f"-{args.reranker_steps}steps" if args.reranker_steps > 0 else ""
        path = CACHE / f"reranker-{''.join(c if c.isalnum() else '_' for c in args.model)}-scifact-train{steps}"
        if not (path / "config.json").is_file():
            # a full epoch is 288 steps of 16 pairs at 256 tokens: ~26 min on 2 cores
            config = RerankerConfig(epochs=1.0, max_steps=args.reranker_steps, max_length=args.max_length, batch_size=16)
            t = time.perf_counter()
            pairs = mine_beir_pairs(Path(args.data_dir) / "retrieval" / "scifact", "train", config)
            train_reranker(args.model, pairs, path, config)
            print(f"trained the re-ranker on {len(pairs)} pairs in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return load_cross_encoder(path, max_length=args.max_length)


def markdown_table(results: dict[str, Any]) -> str:
    """The BENCHMARKS.md section: one row per pipeline, nDCG@10 / Recall@100 per data set."""
    m = results["machine"]
    names = list(results["datasets"])
    pipes: list[str] = []
    for rows in results["datasets"].values():
        pipes += [p for p in rows if p not in pipes]
    lines = [
        "## Search quality, `bench/search_scifact.py`",
        "",
        f"Model `{results['model']}`; re-ranker `{results.get('reranker') or 'none'}`"
        + (f" ({results['reranker_steps']} training steps of 16 pairs)" if results.get("reranker_steps", -1) > 0 else "")
        + f" (top {results['rerank_top']} re-scored); adapted model `{results.get('adapted_model') or 'none'}`. "
        f"nDCG@10 / Recall@100 on the test qrels. Machine: {m['cpu']}, {m['cores']} cores; commit {m['commit']}.",
        "",
        "| pipeline | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for pipe in pipes:
        cells = []
        for name in names:
            r = results["datasets"][name].get(pipe)
            cells.append(f"{r['ndcg@10']:.3f} / {r['recall@100']:.3f}" if r else "–")
        lines.append(f"| {pipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--model", default="minilm", help="base model (default: the bundled MiniLM)")
    p.add_argument("--adapted-model", help="also run dense / hybrid pipelines with this (adapted) model")
    p.add_argument("--reranker", help="cross-encoder directory, or 'auto' to train one on SciFact train (cached)")
    p.add_argument("--rerank-top", type=int, default=30, help="candidates re-scored per query (default 30)")
    p.add_argument("--reranker-steps", type=int, default=-1,
                   help="with --reranker auto: stop training after this many steps of 16 pairs (default: one epoch)")
    p.add_argument("--max-length", type=int, default=256, help="cross-encoder max tokens")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, help="smoke test: this many queries per data set and a small corpus")
    p.add_argument("--output", default="search_scifact", help="result name: bench/results/NAME.json")
    p.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    args = p.parse_args(argv)

    from embedforge.models import load_model

    models = {"base": load_model(args.model)}
    if args.adapted_model:
        models["adapted"] = load_model(args.adapted_model)
    ce = get_reranker(args)
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "model": args.model,
        "adapted_model": args.adapted_model,
        "reranker": args.reranker,
        "reranker_steps": args.reranker_steps,
        "rerank_top": args.rerank_top,
        "limit": args.limit,
        "machine": machine(),
        "datasets": {name: bench_dataset(name, args, models, ce) for name in args.datasets},
    }
    results["seconds"] = round(time.perf_counter() - t0, 1)
    name = args.output if args.limit is None else f"{args.output}-limit{args.limit}"
    path = write_result(name, results)
    table = markdown_table(results)
    if args.limit is None and not args.no_markdown:
        update_section("search_scifact", table)
    print(table)
    print(f"wrote {path}", file=sys.stderr)
    print(json.dumps({k: v for k, v in results.items() if k == "seconds"}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
