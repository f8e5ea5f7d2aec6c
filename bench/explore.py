"""Explore benchmark: paraphrase detection, clustering quality and paraphrase-mining speed.

Per model (``--models minilm [DIR ...]``, e.g. the base model and an adapted one):

* MSRP test (1,725 pairs): average precision and best F1 of the cosine score for "is a paraphrase";
* Banking77 test (3,080 queries, 77 intents): k-means with k = 77 and with automatic k
  (:func:`embedforge.cluster.choose_k`): V-measure and ARI against the intents;
* AG News test (7,600 news, 4 classes; text = title + description): k-means with k = 4.

Mining (top-10 neighbours per text): our exact and faiss paths vs. sentence-transformers'
``paraphrase_mining_embeddings`` on the same embeddings: seconds, and the recall of our pairs
against theirs. On 100,000 *synthetic* structured vectors (clustered on the sphere with planted
near-duplicates, seeded; encoding 100k real texts takes ~16 min on this machine) and on the real
Banking77 train+test embeddings (13,083 texts) of the first model.

    .venv/bin/python bench/explore.py --data-dir ../shared/data [--models minilm DIR] [--limit 300]

Results: bench/results/explore.json and a Markdown table on stdout (``--update-benchmarks``
also writes it into BENCHMARKS.md). Embeddings are cached under bench/cache/ (git-ignored),
keyed by model and data, so a re-run only re-times the mining. With ``--limit`` (a smoke test)
the JSON goes to bench/cache/explore-smoke.json instead.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import CACHE, machine, update_section, write_result

from embedforge.cluster import assign_clusters, choose_k
from embedforge.encode import encode
from embedforge.io import save_npy, write_json
from embedforge.mine import paraphrase_mining_embeddings
from embedforge.models import load_model, resolve_model

TOP_K = 10  # neighbours per text in the mining comparison


def read_msrp(data: Path, limit: int | None) -> tuple[list[str], list[str], np.ndarray]:
    """MSRP test: tab-separated ``Quality, #1 ID, #2 ID, #1 String, #2 String`` with a BOM and CRLF;
    no quoting (strings hold bare quotes)."""
    path = data / "paraphrase" / "msrp" / "msr-para-test.tsv"
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], [r for r in rows[1:] if r]
    assert header[0] == "Quality" and all(len(r) == 5 for r in body), "unexpected MSRP layout"
    body = body[:limit] if limit else body
    return [r[3] for r in body], [r[4] for r in body], np.array([int(r[0]) for r in body])


def read_banking(data: Path, split: str, limit: int | None) -> tuple[list[str], list[str]]:
    with open(data / "clustering" / "banking77" / f"{split}.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if limit and limit < len(rows):  # the file is sorted by intent: sample, don't cut
        keep = np.sort(np.random.default_rng(0).choice(len(rows), limit, replace=False))
        rows = [rows[i] for i in keep]
    return [r["text"] for r in rows], [r["category"] for r in rows]


def read_ag_news(data: Path, limit: int | None) -> tuple[list[str], list[str]]:
    """AG News test: headerless ``class, title, description``; backslashes stand for line breaks."""
    with open(data / "clustering" / "ag_news" / "test.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows = rows[:limit] if limit else rows
    texts = [re.sub(r"\s+", " ", f"{title}. {desc}".replace("\\", " ")).strip() for _, title, desc in rows]
    return texts, [cls for cls, _, _ in rows]


def cached_encode(model: Any, model_name: str, texts: list[str], tag: str) -> np.ndarray:
    """Embeddings from bench/cache/ when this model + these texts were encoded before."""
    key = hashlib.sha1((resolve_model(model_name) + "\0" + "\n".join(texts)).encode()).hexdigest()[:16]
    path = CACHE / "explore" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(model_name).name)}-{tag}-{key}.npy"
    if path.is_file():
        return np.load(path)
    emb = encode(model, texts, batch_size=64, show_progress=len(texts) > 1000)
    save_npy(path, emb)
    return emb


def paraphrase_scores(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    cos = (a * b).sum(axis=1)  # rows are unit vectors
    precision, recall, thresholds = precision_recall_curve(labels, cos)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    return {
        "average_precision": float(average_precision_score(labels, cos)),
        "best_f1": float(f1[best]),
        "best_threshold": float(thresholds[best]),
        "pairs": len(labels),
    }


def clustering_scores(emb: np.ndarray, truth: list[str], k: int | None) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, v_measure_score

    start = time.perf_counter()
    chosen = choose_k(emb) if k is None else k
    labels = assign_clusters(emb, method="kmeans", k=chosen)
    return {
        "k": chosen,
        "v_measure": float(v_measure_score(truth, labels)),
        "ari": float(adjusted_rand_score(truth, labels)),
        "seconds": round(time.perf_counter() - start, 2),
    }


def evaluate_model(name: str, data: Path, limit: int | None, *, mining: bool) -> tuple[dict[str, Any], np.ndarray | None]:
    """Quality numbers for one model, plus (``mining``) its Banking77 train+test embeddings."""
    model = load_model(name)
    s1, s2, para = read_msrp(data, limit)
    unique = sorted(set(s1) | set(s2))
    emb = cached_encode(model, name, unique, "msrp-test")
    row = {t: i for i, t in enumerate(unique)}
    out: dict[str, Any] = {
        "msrp": paraphrase_scores(emb[[row[t] for t in s1]], emb[[row[t] for t in s2]], para)
    }
    texts, intents = read_banking(data, "test", limit)
    bank_test = cached_encode(model, name, texts, "banking77-test")
    out["banking77"] = {"k=77": clustering_scores(bank_test, intents, min(77, len(texts))),
                        "auto": clustering_scores(bank_test, intents, None), "texts": len(texts)}
    texts, classes = read_ag_news(data, limit)
    emb = cached_encode(model, name, texts, "ag_news-test")
    out["ag_news"] = {"k=4": clustering_scores(emb, classes, 4), "texts": len(texts)}
    if not mining:
        return out, None
    train, _ = read_banking(data, "train", limit)
    return out, np.vstack([cached_encode(model, name, train, "banking77-train"), bank_test])


def synthetic(n: int, d: int = 384, dup_frac: float = 0.05, seed: int = 0) -> np.ndarray:
    """Unit vectors around n/100 random centres (within-cluster cosine ≈ 0.5) with a ``dup_frac``
    share of planted near-duplicates (cosine ≈ 0.99 to another vector)."""
    rng = np.random.default_rng(seed)
    clusters = max(10, n // 100)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)
    m = int(dup_frac * n)
    src, dst = rng.integers(0, n, m), rng.choice(n, m, replace=False)
    x[dst] = x[src] + 0.1 * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def time_mining(emb: np.ndarray, label: str) -> dict[str, Any]:
    """Ours (exact, faiss) vs. sentence-transformers on the same embeddings, top-10 per text."""
    import torch
    from sentence_transformers.util import paraphrase_mining_embeddings as st_mining

    result: dict[str, Any] = {"data": label, "n": len(emb), "dim": emb.shape[1], "top_k": TOP_K}
    start = time.perf_counter()
    theirs = st_mining(torch.from_numpy(emb), top_k=TOP_K, max_pairs=10**8)
    result["st_seconds"] = round(time.perf_counter() - start, 2)
    ref = {(int(i), int(j)) for _, i, j in theirs}
    result["pairs"] = len(ref)
    for method in ("exact", "faiss"):
        start = time.perf_counter()
        i, j, _ = paraphrase_mining_embeddings(emb, top_k=TOP_K, method=method)  # type: ignore[arg-type]
        result[f"{method}_seconds"] = round(time.perf_counter() - start, 2)
        ours = set(zip(i.tolist(), j.tolist(), strict=True))
        result[f"{method}_recall_vs_st"] = round(len(ours & ref) / max(len(ref), 1), 4)
    print(f"mining {label}: {result}", flush=True)
    return result


def markdown_table(results: dict[str, Any]) -> str:
    """Two Markdown tables: quality per model, then mining time and recall."""
    m0 = results["machine"]
    lines = [
        "## Explore: paraphrase detection, clustering, mining (`bench/explore.py`)",
        "",
        f"Machine: {m0.get('cpu')}, {m0.get('cores')} cores, no GPU; torch {m0.get('torch')}; commit {m0.get('commit')}. "
        "MSRP test: cosine scores as paraphrase detector (AP, best F1). Clustering: k-means on normalised embeddings, "
        "V-measure and ARI × 100 against the labels; auto k = silhouette over a geometric grid (see cluster.choose_k).",
        "",
        "| model | MSRP AP | MSRP best F1 | Banking77 V (k=77) | ARI (k=77) | auto k | V (auto) | ARI (auto) "
        "| AG News V (k=4) | ARI (k=4) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        m, b, a = r["msrp"], r["banking77"], r["ag_news"]["k=4"]
        lines.append(
            f"| {name} | {m['average_precision'] * 100:.1f} | {m['best_f1'] * 100:.1f} "
            f"| {b['k=77']['v_measure'] * 100:.1f} | {b['k=77']['ari'] * 100:.1f} | {b['auto']['k']} "
            f"| {b['auto']['v_measure'] * 100:.1f} | {b['auto']['ari'] * 100:.1f} "
            f"| {a['v_measure'] * 100:.1f} | {a['ari'] * 100:.1f} |"
        )
    lines += [
        "",
        f"Paraphrase mining, top-{TOP_K} neighbours per text, seconds on {results['machine'].get('cores')} CPU cores "
        "(recall = share of sentence-transformers' pairs we also return):",
        "",
        "| data | texts | dim | sentence-transformers s | ours exact s | recall | ours faiss IVF s | recall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["mining"]:
        lines.append(
            f"| {r['data']} | {r['n']:,} | {r['dim']} | {r['st_seconds']:.1f} | {r['exact_seconds']:.1f} "
            f"| {r['exact_recall_vs_st']:.3f} | {r['faiss_seconds']:.1f} | {r['faiss_recall_vs_st']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data", type=Path)
    parser.add_argument("--models", nargs="+", default=["minilm"], help="'minilm' and/or model directories")
    parser.add_argument("--limit", type=int, help="smoke test: at most N rows per data set, N*10 synthetic vectors")
    parser.add_argument("--synthetic-n", type=int, default=100_000)
    parser.add_argument("--update-benchmarks", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()

    info = machine()
    info["note"] = "CPU only, 2 cores shared with other work; times are wall-clock"
    results: dict[str, Any] = {"machine": info, "limit": args.limit, "models": {}, "mining": []}
    banking_full = None
    for name in args.models:
        start = time.perf_counter()
        first = banking_full is None
        results["models"][name], full = evaluate_model(name, args.data_dir, args.limit, mining=first)
        results["models"][name]["seconds"] = round(time.perf_counter() - start, 1)
        banking_full = full if first else banking_full
        print(f"{name}: {results['models'][name]}", flush=True)
    n_syn = min(args.synthetic_n, args.limit * 10) if args.limit else args.synthetic_n
    results["mining"].append(time_mining(synthetic(n_syn), f"synthetic (clustered, seeded, {n_syn:,})"))
    assert banking_full is not None
    results["mining"].append(time_mining(banking_full, f"Banking77 train+test ({args.models[0]})"))
    table = markdown_table(results)
    if args.limit:  # a smoke test: keep bench/results/ for full runs
        path = CACHE / "explore-smoke.json"
        write_json(path, results)
    else:
        path = write_result("explore", results)
    if args.update_benchmarks and not args.limit:
        update_section("explore", table)
    print(table)
    print(f"\n-> {path}")


if __name__ == "__main__":
    main()
