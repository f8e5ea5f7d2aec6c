"""``embedforge adapt`` against real judgments: does the label-free estimate rank the candidates the way
SciFact's qrels do, is the chosen model never below the base, and what do labelled pairs buy?

Three parts, each one ``adapt`` call (candidates kept) followed by a real evaluation of every model:

* ``scifact`` — SciFact corpus only (label-free): simcse, title, crops, ict. Real metric: nDCG@10 and
  Recall@100 on the 300 test queries over the full corpus (dense, and hybrid RRF with BM25).
* ``pairs`` — the same corpus with SciFact's train qrels as labelled pairs: the supervised
  candidate; its test nDCG@10 beside OpenAI text-embedding-3-small's published 0.734 (MTEB).
* ``banking77`` — Banking77 train texts (label-free); real metric: same-intent retrieval on the
  test texts (leave-one-out MAP@10, P@1, nDCG@10 with intent labels adapt never sees).
* ``banking77-labels`` — the same texts plus 10 labelled texts per intent (770, as ``make demo``
  gives them): the supervised candidate on same-intent pairs, judged on its held-out labelled texts.

* ``scifact-panel`` — no adapt call: a panel of models whose real differences the 300 test queries
  *can* resolve (the base with 5/4/3/2 layers or 128/64 tokens, a fine-tune on the train pairs, an
  over-heated unsupervised SimCSE, BM25), each scored on adapt's own label-free held-out set and on
  the real qrels — the validation of the estimate itself, apart from the near-tied candidates.

Agreement: Kendall τ over {base + candidates} between the label-free estimate (each candidate's
gain on the tasks it does not train on; base = 0) and the real nDCG@10 (MAP@10 on Banking77), and
the same per construction and for the naive all-task mean, to show which construction tracks. τ
over near-tied models measures mostly noise, so every pair of models is also compared both ways by
paired bootstrap: of the pairs the real metric separates, how many the estimate orders the same way;
of the pairs the estimate separates (the only ones adapt acts on), how many the real metric confirms.

Embeddings are cached under bench/cache/adapt*/ keyed by the model's weights and the texts; each
part's adapt output is kept there, so a re-run skips finished parts and resumes an interrupted one.
Parts run alone are merged into bench/results/adapt_scifact.json beside the parts of earlier runs,
each with the commit and machine it was measured on.

    python bench/adapt_scifact.py                     # full run, ~85 min on 2 CPU cores
    python bench/adapt_scifact.py --smoke             # a few hundred documents, small budgets (~25 min)
    python bench/adapt_scifact.py --parts banking77   # one part
    python bench/adapt_scifact.py --parts scifact-panel   # the estimate's validation, ~40 min
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, machine, read_result, update_section, write_result  # noqa: E402

from embedforge.adapt import AdaptConfig, LabelledTexts, QueryPairs, adapt, load_query_pairs, work_dir  # noqa: E402
from embedforge.adapt.inputs import digest, doc_text  # noqa: E402
from embedforge.corpus import Document, read_documents, read_records  # noqa: E402

PANEL = "scifact-panel"
PARTS = ("scifact", "pairs", "banking77", "banking77-labels", PANEL)
# ~95 min with the real evaluations
BUDGET_MINUTES = {"scifact": 30.0, "pairs": 20.0, "banking77": 10.0, "banking77-labels": 6.0}
PER_INTENT = 10  # labelled texts per intent in banking77-labels (make demo's default)
OPENAI_3_SMALL_SCIFACT = 0.734  # text-embedding-3-small, SciFact nDCG@10, MTEB results repository
START = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{(time.perf_counter() - START) / 60:5.1f} min] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def load_scifact(folder: Path, smoke: bool) -> tuple[list[Document], dict[str, str], dict[str, dict[str, int]], QueryPairs]:
    """(documents, test queries, test qrels, train pairs); smoke: ~300 documents, 30 test queries."""
    docs = read_documents(folder)
    queries = {str(r["_id"]): str(r["text"]) for _, r in read_records(folder / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) >= 3 and row[2].strip().isdigit() and int(row[2]) > 0:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    pairs = load_query_pairs(folder, docs)
    assert isinstance(pairs, QueryPairs)  # a BEIR folder gives (query, document) pairs, not labelled texts
    if smoke:
        qrels = {q: qrels[q] for q in sorted(qrels)[:30]}
        keep = {d for j in qrels.values() for d in j} | set(pairs.doc_ids[:120])
        docs = [d for i, d in enumerate(docs) if d.id in keep or i < 300 - len(keep)]
        rows = list(range(min(120, len(pairs))))
        pairs = QueryPairs([pairs.queries[i] for i in rows], [pairs.docs[i] for i in rows],
                           [pairs.doc_ids[i] for i in rows], pairs.source)
    return docs, {q: queries[q] for q in qrels}, qrels, pairs


def load_banking(folder: Path, smoke: bool) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """((train text, intent) rows, test texts, test intents); smoke: 400 train / 300 test."""
    train = [(str(r["text"]), str(r["category"])) for _, r in read_records(folder / "train.csv")]
    test = [(str(r["text"]), str(r["category"])) for _, r in read_records(folder / "test.csv")]
    if smoke:
        train, test = train[::25][:400], test[::10][:300]
    return train, [t for t, _ in test], [y for _, y in test]


# ---------------------------------------------------------------- embeddings and metrics


def model_key(model: str) -> str:
    weights = Path(model) / "model.safetensors"
    if not weights.is_file():
        return "".join(c if c.isalnum() else "_" for c in model)
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def embed(model: str, texts: list[str], tag: str, cache: Path, max_length: int) -> np.ndarray:
    from embedforge.encode import encode
    from embedforge.io import save_npy
    from embedforge.models import load_model

    file = cache / f"emb-{tag}-{model_key(model)}-{digest(texts)}-{max_length}.npy"
    if file.is_file():
        return np.load(file)
    t = time.perf_counter()
    vectors = encode(load_model(model), texts, batch_size=32, max_length=max_length, show_progress=len(texts) > 1000)
    save_npy(file, vectors)
    say(f"  encoded {len(texts):,} {tag} texts in {time.perf_counter() - t:.0f}s")
    return vectors


def retrieval(qvec: np.ndarray, dvec: np.ndarray, sparse: tuple[np.ndarray, np.ndarray] | None, ids: list[str],
              qids: list[str], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    from embedforge.evaluate.metrics import ndcg_at_k, recall_at_k
    from embedforge.index import exact_search
    from embedforge.query import fuse

    def run(scores: np.ndarray, rows: np.ndarray) -> dict[str, dict[str, float]]:
        return {q: {ids[r]: float(s) for r, s in zip(rr, ss, strict=True) if r >= 0} for q, rr, ss in zip(qids, rows, scores, strict=True)}

    dense = exact_search(qvec, dvec, np.arange(len(ids), dtype=np.int64), 100)
    out = {"ndcg@10": ndcg_at_k(run(*dense), qrels, 10), "recall@100": recall_at_k(run(*dense), qrels, 100)}
    if sparse is not None:
        hybrid = fuse(dense, sparse, 100, "rrf")
        out["hybrid_ndcg@10"] = ndcg_at_k(run(*hybrid), qrels, 10)
    return out


def ranked_per_query(scores: np.ndarray, rows: np.ndarray, ids: list[str], qids: list[str],
                     qrels: dict[str, dict[str, int]]) -> np.ndarray:
    """nDCG@10 of every test query (in ``qids`` order) from ranked corpus rows: the paired-bootstrap input."""
    from embedforge.evaluate.metrics import ndcg_per_query

    run = {q: {ids[r]: float(s) for r, s in zip(rr, ss, strict=True) if r >= 0} for q, rr, ss in zip(qids, rows, scores, strict=True)}
    got = ndcg_per_query(run, qrels, 10)
    return np.array([got[q] for q in qids])


def dense_per_query(qvec: np.ndarray, dvec: np.ndarray, ids: list[str], qids: list[str],
                    qrels: dict[str, dict[str, int]]) -> np.ndarray:
    """:func:`ranked_per_query` of exact dense search."""
    from embedforge.index import exact_search

    return ranked_per_query(*exact_search(qvec, dvec, np.arange(len(ids), dtype=np.int64), 10), ids, qids, qrels)


def heldout_scores(work: Path, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per-query label-free scores adapt saved in its work folder for each of ``names`` that has them."""
    from embedforge.adapt.state import read_scores

    found = {n: read_scores(work, n) for n in names}
    return {n: dict(s.label_free) for n, s in found.items() if s is not None}


def same_intent(emb: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Leave-one-out same-intent retrieval: P@1, MAP@10 and nDCG@10 (binary relevance = same intent)."""
    from embedforge.evaluate.metrics import same_label_retrieval

    return same_label_retrieval(emb, labels, k=10)


def kendall(estimate: dict[str, float], real: dict[str, float]) -> dict[str, Any]:
    from scipy.stats import kendalltau

    names = [n for n in real if n in estimate]
    if len(names) < 3:
        return {"tau": None, "p": None, "n": len(names)}
    res = kendalltau([estimate[n] for n in names], [real[n] for n in names])
    if not np.isfinite(res.statistic):  # one side all tied: no ranking to agree with
        return {"tau": None, "p": None, "n": len(names)}
    return {"tau": round(float(res.statistic), 3), "p": round(float(res.pvalue), 3), "n": len(names)}


def agreement(report: dict[str, Any], real: dict[str, float]) -> dict[str, Any]:
    """τ of the decision's estimate, the naive all-task mean and every single construction vs the real metric."""
    trained = {n: c for n, c in report["candidates"].items() if c["status"] == "trained"}
    judged = {"base": 0.0} | {n: c["label_free_gain"][0] for n, c in trained.items() if c["label_free_gain"]}
    tasks = list(report["heldout"]["tasks"])
    naive = {"base": 0.0} | {n: float(np.mean([c["task_gains"][t][0] for t in tasks])) for n, c in trained.items()}
    out = {"judged": kendall(judged, real), "all_tasks_mean": kendall(naive, real)}
    for t in tasks:
        out[t] = kendall({"base": 0.0} | {n: c["task_gains"][t][0] for n, c in trained.items()}, real)
    labelled = {"base": 0.0} | {n: c["labelled_gain"][0] for n, c in trained.items() if c["labelled_gain"]}
    if len(labelled) > 1:
        out["labelled"] = kendall(labelled, real)
    return out


# ---------------------------------------------------------------- parts


def run_adapt(part: str, model: str, corpus: list[Document], config: AdaptConfig, cache: Path, args: argparse.Namespace,
              pairs: QueryPairs | LabelledTexts | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """adapt once (or reuse a finished run): (report, {name: model path})."""
    import json

    out = cache / part / "model"
    report_file = out / "adapt-report" / "report.json"
    if not report_file.is_file():
        say(f"{part}: adapt with budget {config.budget_seconds / 60:.0f} min ({len(corpus):,} documents)")
        adapt(model, corpus, out, config, pairs=pairs, data_dir=args.data_dir, overwrite=True)
    else:
        say(f"{part}: reusing the finished adapt run in {out}")
    report = json.loads(report_file.read_text())
    models = {"base": model} | {n: str(work_dir(out) / "models" / n) for n, c in report["candidates"].items() if c["status"] == "trained"}
    return report, models


def row(report: dict[str, Any], name: str, real: dict[str, float]) -> dict[str, Any]:
    cand = report["candidates"].get(name, {})
    lf = report["models"].get(name, {}).get("label_free", {})
    return {**{k: round(v, 4) for k, v in real.items()}, "label_free": {t: v[0] for t, v in lf.items()},
            "label_free_gain": cand.get("label_free_gain"), "labelled_gain": cand.get("labelled_gain"),
            "judged_on": cand.get("judged_on"), "steps": cand.get("steps"), "train_seconds": cand.get("train_seconds")}


def part_scifact(part: str, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    from embedforge.query import BM25Index

    docs, queries, qrels, pairs = load_scifact(Path(args.data_dir) / "retrieval" / "scifact", args.smoke)
    labelled = part == "pairs"
    config = AdaptConfig(
        budget_seconds=args.budget.get(part, BUDGET_MINUTES[part]) * 60, keep_candidates=True,
        candidates=("supervised",) if labelled else ("simcse", "title", "crops", "ict"),
        max_length=args.max_length, **args.overrides,
    )
    report, models = run_adapt(part, args.model, docs, config, cache, args, pairs if labelled else None)
    ids, texts = [d.id for d in docs], [doc_text(d) for d in docs]
    qids = sorted(queries)
    qtexts = [queries[q] for q in qids]
    sparse = BM25Index.build(texts).search(qtexts, 100)
    rows: dict[str, Any] = {}
    real: dict[str, float] = {}
    per_query: dict[str, np.ndarray] = {}
    for name, path in models.items():
        say(f"{part}: real evaluation of {name}")
        dvec = embed(path, texts, "scifact-docs", cache, args.max_length)
        qvec = embed(path, qtexts, "scifact-queries", cache, args.max_length)
        metrics = retrieval(qvec, dvec, sparse, ids, qids, qrels)
        real[name] = metrics["ndcg@10"]
        rows[name] = row(report, name, metrics)
        per_query[name] = dense_per_query(qvec, dvec, ids, qids, qrels)
    from embedforge.evaluate.metrics import ndcg_at_k, recall_at_k


    run = {q: {ids[r]: float(s) for r, s in zip(rr, ss, strict=True) if r >= 0} for q, rr, ss in zip(qids, sparse[1], sparse[0], strict=True)}
    bm25 = {"ndcg@10": ndcg_at_k(run, qrels, 10), "recall@100": recall_at_k(run, qrels, 100)}
    rows["bm25"] = row(report, "bm25", bm25)
    chosen = report["decision"]["chosen"]
    out = {"documents": len(docs), "queries": len(qids), "models": rows, "chosen": chosen,
           "decision": report["decision"]["reason"], "notes": report["decision"]["notes"],
           "chosen_not_below_base": real[chosen] >= real["base"] - 1e-9, "agreement": agreement(report, real),
           "plan": report["plan"]["summary"], "adapt_seconds": report["seconds"]}
    if not labelled:
        est = heldout_scores(work_dir(cache / part / "model"), list(models))
        judged = {n: list(report["candidates"][n]["judged_on"]) for n in est if n != "base"}
        out["pairs"] = pair_agreement(est, per_query, [n for n in models if n in est], config.n_resamples, judged)
    if labelled:
        out["openai_text_embedding_3_small"] = OPENAI_3_SMALL_SCIFACT
    return out


def part_banking(part: str, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    from embedforge.demo import labelled_texts

    train, test_texts, test_labels = load_banking(Path(args.data_dir) / "clustering" / "banking77", args.smoke)
    docs = [Document(str(i), t) for i, (t, _) in enumerate(train)]
    labelled = labelled_texts(train, PER_INTENT) if part == "banking77-labels" else None
    config = AdaptConfig(budget_seconds=args.budget.get(part, BUDGET_MINUTES[part]) * 60, keep_candidates=True,
                         candidates=("supervised",) if labelled else ("simcse", "crops", "ict"), max_length=64,
                         **args.overrides)
    report, models = run_adapt(part, args.model, docs, config, cache, args, labelled)
    rows, real = {}, {}
    for name, path in models.items():
        say(f"{part}: real evaluation of {name}")
        metrics = same_intent(embed(path, test_texts, "banking77-test", cache, 64), test_labels)
        real[name] = metrics["MAP@10"]
        rows[name] = row(report, name, metrics)
    chosen = report["decision"]["chosen"]
    return {"documents": len(docs), "test_texts": len(test_texts), "models": rows, "chosen": chosen,
            "decision": report["decision"]["reason"], "notes": report["decision"]["notes"],
            "chosen_not_below_base": real[chosen] >= real["base"] - 1e-9, "agreement": agreement(report, real),
            "plan": report["plan"]["summary"], "adapt_seconds": report["seconds"]}


# ---------------------------------------------------------------- the validation panel

PANEL_LAYERS = (5, 4, 3, 2)  # encoder layers kept (the bundled MiniLM has 6)
PANEL_LENGTHS = (128, 64)  # tokens per text, base model


def _panel_models(args: argparse.Namespace, cache: Path, docs: list[Document], pairs: QueryPairs,
                  train_rows: list[int]) -> dict[str, tuple[str, int, float | None]]:
    """{name: (model path, max_length, train seconds)}: the base, cheaper variants of it and two trained ones.

    Variants with fewer layers or fewer tokens need no training and lose real quality by known amounts
    (a spread the real metric resolves); ``pairs-ft`` (SciFact train pairs, in-batch negatives) is a
    real gain; ``simcse-hot`` (unsupervised SimCSE at 5x adapt's learning rate) a realistic loss.
    """
    from embedforge.config import SimCSEConfig
    from embedforge.io import atomic_write
    from embedforge.models import load_model
    from embedforge.train.trainer import train_simcse

    folder = cache / "panel"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[str, int, float | None]] = {"base": (args.model, args.max_length, None)}
    out |= {f"base@{n}tok": (args.model, n, None) for n in PANEL_LENGTHS if n < args.max_length}
    for k in PANEL_LAYERS:
        target = folder / f"layers-{k}"
        if not (target / "model.safetensors").is_file():
            m = load_model(args.model)
            enc = m[0].auto_model
            enc.encoder.layer = enc.encoder.layer[:k]
            enc.config.num_hidden_layers = k
            m.save(str(target))
        out[f"layers-{k}"] = (str(target), args.max_length, None)
    train_texts = [doc_text(docs[i]) for i in train_rows]
    jobs = {
        # 2 epochs of the 919 (claim, abstract) train pairs, no hard negatives (issue 6 measured 0.673)
        "pairs-ft": ("pairs.csv", SimCSEConfig(mode="sup", learning_rate=2e-5, batch_size=32, epochs=2.0,
                                                 max_length=args.max_length, warmup_ratio=0.1, seed=42, save_steps=1000)),
        "simcse-hot": ("texts.txt", SimCSEConfig(mode="unsup", learning_rate=5e-5, batch_size=32,
                                                   max_steps=8 if args.smoke else 80,
                                                   max_length=128, seed=42, save_steps=1000)),
    }
    for name, (file, config) in jobs.items():
        target = folder / name
        seconds_file = target / "train_seconds.txt"
        if not seconds_file.is_file():
            data = folder / file
            with atomic_write(data) as f:
                if file.endswith(".csv"):
                    w = csv.writer(f)
                    w.writerow(["sent0", "sent1"])
                    w.writerows(zip(pairs.queries, pairs.docs, strict=True))
                else:
                    f.write("\n".join(t.replace("\n", " ") for t in train_texts) + "\n")
            say(f"panel: training {name}")
            t = time.perf_counter()
            train_simcse(args.model, data, target, config, show_progress=sys.stderr.isatty())
            seconds_file.write_text(f"{time.perf_counter() - t:.1f}\n")
        out[name] = (str(target), args.max_length, float(seconds_file.read_text()))
    return out


def _resolved(interval: list[float]) -> bool:
    """(Δ, lo, hi) whose interval excludes 0."""
    return interval[1] > 0 or interval[2] < 0


def pair_agreement(est: dict[str, dict[str, np.ndarray]], real: dict[str, np.ndarray], names: list[str],
                   n_resamples: int, judged: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Every pair of models: the estimate's and the real paired-bootstrap difference, and how often they agree.

    ``est[name][task]`` are per-query label-free scores, ``real[name]`` per-query real ones (same
    queries for every model). A pair is judged on the tasks both are judged on (``judged``; default
    every task), as :func:`embedforge.adapt.choose.decide` compares a winner with its runner-up.

    ``resolved_real``: pairs whose real difference excludes 0 — share the estimate orders the same way.
    ``claims``: pairs the estimate separates (interval excludes 0) — share the real metric confirms
    (point estimate, same sign) and how many it contradicts beyond noise: the guardrail acts only on claims.
    """
    from embedforge.adapt.choose import stratified_paired_bootstrap as boot

    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = [x for x in (judged or {}).get(a, list(est[a])) if x in (judged or {}).get(b, list(est[b]))]
            if not shared:
                continue
            e = boot([est[a][x] for x in shared], [est[b][x] for x in shared], n_resamples=n_resamples)
            r = boot([real[a]], [real[b]], n_resamples=n_resamples)
            pairs.append({"a": a, "b": b, "tasks": shared, "estimate": [round(x, 3) for x in e], "real": [round(x, 3) for x in r]})

    real_res = [p for p in pairs if _resolved(p["real"])]
    claims = [p for p in pairs if _resolved(p["estimate"])]
    same = lambda p: np.sign(p["estimate"][0]) == np.sign(p["real"][0])  # noqa: E731
    return {
        "pairs": pairs,
        "resolved_real": len(real_res), "resolved_real_agree": sum(map(same, real_res)),
        "claims": len(claims), "claims_confirmed": sum(map(same, claims)),
        "claims_contradicted": sum(1 for p in claims if _resolved(p["real"]) and not same(p)),
    }


def part_panel(part: str, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Does the label-free estimate track SciFact's real qrels where real differences are resolvable?"""
    from embedforge.adapt.heldout import bm25_scores, evaluate_model, label_free_set, split_corpus
    from embedforge.models import load_model
    from embedforge.query import BM25Index

    docs, queries, qrels, pairs = load_scifact(Path(args.data_dir) / "retrieval" / "scifact", args.smoke)
    config = AdaptConfig(max_length=args.max_length, **args.overrides)
    split = split_corpus(docs, config, protected={i for i in pairs.doc_ids if i})  # as adapt splits with --pairs
    ids, texts = [d.id for d in docs], [doc_text(d) for d in docs]
    eval_set = label_free_set(docs, split.heldout, idf_texts=texts, seed=config.seed)
    tasks = [t.name for t in eval_set.tasks]
    models = _panel_models(args, cache, docs, pairs, split.train)
    qids = sorted(queries)
    qtexts = [queries[q] for q in qids]
    est: dict[str, dict[str, np.ndarray]] = {}
    real: dict[str, np.ndarray] = {}
    seconds: dict[str, float | None] = {}
    for name, (path, length, train_s) in models.items():
        say(f"{part}: {name}")
        est_file = cache / "panel" / f"heldout-{model_key(path)}-{length}-{digest(eval_set.docs)}.npz"
        if est_file.is_file():
            est[name] = dict(np.load(est_file))
        else:
            est[name] = evaluate_model(load_model(path), eval_set, batch_size=32, max_length=length)
            np.savez(est_file, **est[name])
        dvec = embed(path, texts, "scifact-docs", cache, length)
        qvec = embed(path, qtexts, "scifact-queries", cache, length)
        real[name] = dense_per_query(qvec, dvec, ids, qids, qrels)
        seconds[name] = train_s
    sparse = BM25Index.build(texts).search(qtexts, 10)
    est["bm25"], real["bm25"] = bm25_scores(eval_set), ranked_per_query(*sparse, ids, qids, qrels)
    dense = list(models)
    summary = {n: {"ndcg@10": round(float(real[n].mean()), 4),
                   "label_free": {t: round(100 * float(est[n][t].mean()), 2) for t in tasks},
                   "label_free_mean": round(100 * float(np.mean([est[n][t].mean() for t in tasks])), 2),
                   "train_seconds": seconds.get(n)} for n in [*dense, "bm25"]}
    taus = {}
    for label, names in (("dense", dense), ("dense+bm25", [*dense, "bm25"])):
        real_mean = {n: summary[n]["ndcg@10"] for n in names}
        taus[label] = {"all_tasks_mean": kendall({n: summary[n]["label_free_mean"] for n in names}, real_mean)}
        taus[label] |= {t: kendall({n: summary[n]["label_free"][t] for n in names}, real_mean) for t in tasks}
    agree = pair_agreement(est, real, dense, config.n_resamples)
    return {"documents": len(docs), "queries": len(qids), "heldout": len(split.heldout), "tasks": tasks,
            "models": summary, "kendall": taus, "pairs": agree}


def panel_markdown(res: dict[str, Any]) -> list[str]:
    """The BENCHMARKS.md lines of the panel part: the table, τ per construction, the pair agreement."""
    tasks = res["tasks"]
    measured = res.get("measured", {})
    lines = ["", f"### {PANEL}: does the label-free estimate track the real metric? ({res['documents']:,} documents)", "",
             f"Measured at commit {measured.get('commit', '?')} ({measured.get('cpu', '?')}). Models with real, "
             "resolvable differences instead of adapt's near-tied candidates: the base with fewer layers or fewer "
             "tokens (no training), `pairs-ft` (2 epochs on SciFact's train pairs, a real gain) and `simcse-hot` "
             "(unsupervised SimCSE at 5e-5, 5x adapt's rate). Label-free = nDCG@10 × 100 on the "
             f"{res['heldout']} held-out documents adapt would use; real = nDCG@10 on the {res['queries']} test queries.", "",
             "| model | real ndcg@10 | label-free mean | " + " | ".join(tasks) + " | train s |",
             "|---|---|---|" + "---|" * (len(tasks) + 1)]
    for name, r in res["models"].items():
        train = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "–"
        lines.append(f"| {name} | {r['ndcg@10']:.3f} | {r['label_free_mean']:.1f} | "
                     + " | ".join(f"{r['label_free'][t]:.1f}" for t in tasks) + f" | {train} |")
    for label, taus in res["kendall"].items():
        lines.append("")
        lines.append(f"Kendall τ with the real nDCG@10, {label} ({taus['all_tasks_mean']['n']} models): "
                     + ", ".join(f"{k} {v['tau']:+.2f} (p {v['p']:.3f})" if v["tau"] is not None else f"{k} n/a"
                                 for k, v in taus.items()) + ".")
    return lines + pairs_markdown(res["pairs"], "dense models")


def pairs_markdown(p: dict[str, Any], what: str) -> list[str]:
    """The pair-agreement sentence and every pair on which the two disagree beyond the estimate's noise."""
    lines = ["", f"Pairs of {what} ({len(p['pairs'])}): the real metric separates {p['resolved_real']} "
             f"(paired bootstrap over the test queries, 95%), and the label-free estimate orders "
             f"{p['resolved_real_agree']} of them the same way. The label-free estimate separates {p['claims']} pairs; "
             f"the real metric agrees in direction on {p['claims_confirmed']} and contradicts beyond noise "
             f"{p['claims_contradicted']}."]
    wrong = [q for q in p["pairs"] if _resolved(q["estimate"]) and np.sign(q["estimate"][0]) == -np.sign(q["real"][0])]
    for q in wrong:  # stratified_paired_bootstrap(a, b) is b − a
        lines.append(f"Disagreement: {q['b']} − {q['a']}: label-free {q['estimate'][0]:+.2f} [{q['estimate'][1]:+.2f}, "
                     f"{q['estimate'][2]:+.2f}], real {q['real'][0]:+.2f} [{q['real'][1]:+.2f}, {q['real'][2]:+.2f}].")
    return lines


# ---------------------------------------------------------------- output


def _gain(g: list[float] | None) -> str:
    return "–" if not g else f"{g[0]:+.2f} [{g[1]:+.2f}, {g[2]:+.2f}]"


def markdown_table(results: dict[str, Any]) -> str:
    """The BENCHMARKS.md section: per part, real metrics beside the label-free estimate, τ and the decision."""
    m = results["machine"]
    lines = [
        "## Adapt, `bench/adapt_scifact.py`",
        "",
        f"Base `{results['model']}`. Real metrics on judgments adapt never sees; label-free Δ = gain over the base in "
        f"nDCG@10 points on held-out pseudo-queries of the tasks the candidate does not train on (95% CI). "
        f"Machine: {m['cpu']}, {m['cores']} cores; commit {m['commit']}; this invocation {results['seconds'] / 60:.0f} min "
        f"(finished adapt runs and cached embeddings are reused; `train s` is each candidate's own training time).",
    ]
    if results.get("note"):
        lines += ["", f"Note: {results['note']}"]
    for part, res in results["parts"].items():
        if part == PANEL:
            lines += panel_markdown(res)
            continue
        banking = part.startswith("banking77")
        metric_cols = ["MAP@10", "P@1", "ndcg@10"] if banking else ["ndcg@10", "recall@100", "hybrid_ndcg@10"]
        labelled = any(r.get("labelled_gain") for r in res["models"].values())
        measured = res.get("measured", m)
        lines += ["", f"### {part}: {res['documents']:,} documents" + (" + labelled data" if labelled else ""), "",
                  f"Measured at commit {measured.get('commit', '?')} ({measured.get('cpu', '?')}); "
                  + (f"adapt took {res['adapt_seconds'] / 60:.1f} min." if res["adapt_seconds"] >= 30
                     else "the adapt run was finished in an earlier invocation."), "",
                  "| model | " + " | ".join(metric_cols) + " | label-free Δ | " + ("labelled Δ | " if labelled else "") + "steps | train s |",
                  "|---|" + "---|" * (len(metric_cols) + 3 + labelled)]
        for name, r in res["models"].items():
            mark = " **(chosen)**" if name == res["chosen"] else ""
            cells = [f"{r[c]:.3f}" if c in r else "–" for c in metric_cols]
            lines.append(f"| {name}{mark} | " + " | ".join(cells) + f" | {_gain(r['label_free_gain'])} | "
                         + (f"{_gain(r['labelled_gain'])} | " if labelled else "") + f"{r['steps'] or '–'} | "
                         + (f"{r['train_seconds']:.0f} |" if r.get("train_seconds") else "– |"))
        ag = res["agreement"]
        taus = ", ".join(f"{k} {v['tau']:+.2f}" if v["tau"] is not None else f"{k} n/a" for k, v in ag.items())
        lines += ["", f"Decision: **{res['chosen']}** — {res['decision']}. Chosen not below the base: "
                  f"{'yes' if res['chosen_not_below_base'] else '**no**'}. Kendall τ with the real metric ({ag['judged']['n']} models): {taus}."]
        lines += [f"Note: {n}" for n in res["notes"]]
        if "pairs" in res:
            lines += pairs_markdown(res["pairs"], "models")
        if "openai_text_embedding_3_small" in res:
            lines.append(f"OpenAI text-embedding-3-small (published): nDCG@10 {res['openai_text_embedding_3_small']:.3f}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--model", default="minilm")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--budget", action="append", default=[], metavar="PART=MIN",
                   help=f"adapt budget in minutes for one part, e.g. scifact=30 (defaults: {BUDGET_MINUTES})")
    p.add_argument("--max-length", type=int, default=256, help="SciFact tokens per document (Banking77 uses 64)")
    p.add_argument("--smoke", action="store_true", help="a few hundred documents, 6-8 minute budgets, 64 tokens")
    p.add_argument("--note", default="", help="a sentence for BENCHMARKS.md about this run")
    args = p.parse_args(argv)
    args.budget = {k: float(v) for k, v in (b.split("=", 1) for b in args.budget)}
    args.overrides = {}
    cache = CACHE / "adapt"
    if args.smoke:
        # set-up (base evaluation + one probe per candidate) alone takes 2-3 min on 2 busy cores
        args.budget = {"scifact": 8.0, "pairs": 6.0, "banking77": 6.0} | args.budget
        args.max_length = 64
        args.overrides = {"batch_size": 16, "min_steps": 2, "probe_steps": 3, "n_resamples": 500, "heldout_max": 60}
        cache = CACHE / "adapt-smoke"
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    results: dict[str, Any] = {"model": args.model, "smoke": args.smoke, "machine": machine(), "note": args.note, "parts": {}}
    unknown = [x for x in parts if x not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; expected some of {', '.join(PARTS)}")
    name = "adapt_scifact-smoke" if args.smoke else "adapt_scifact"
    earlier = read_result(name) or {}
    results["note"] = args.note or earlier.get("note", "")
    if earlier.get("model", args.model) == args.model:  # parts measured before, each with its own commit
        for part, res in earlier.get("parts", {}).items():
            res.setdefault("measured", earlier.get("machine", {}))
            results["parts"][part] = res
    for part in PARTS:
        if part in parts:
            run = part_panel if part == PANEL else part_banking if part.startswith("banking77") else part_scifact
            results["parts"][part] = {**run(part, args, cache), "measured": machine()}
            say(f"{part}: done")
    results["parts"] = {p_: results["parts"][p_] for p_ in PARTS if p_ in results["parts"]}
    results["seconds"] = round(time.perf_counter() - START, 1)
    path = write_result(name, results)
    table = markdown_table(results)
    if not args.smoke:
        update_section("adapt_scifact", table)
    print(table)
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
