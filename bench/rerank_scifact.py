"""Retrieve & re-rank: does a second stage beat the best first stage on SciFact (and not hurt off-domain)?

First stage: hybrid min-max score fusion of BM25 and the bundled MiniLM (dense, exact), top 100 —
the same library calls as ``embedforge search --mode hybrid``; runs and embeddings are cached in
bench/cache. Second-stage options, each re-scoring exactly the top N = 10 / 20 / 30 (search's default) / 50 / 100
first-stage candidates (``embedforge.rerank.model.rerank_candidates``, the code behind ``--rerank-depth``):

- ``ce-minilm``: a cross-encoder from MiniLM's weights (``train_reranker``), trained on SciFact
  *train* with hard negatives mined from the hybrid first stage (``ce-DIRNAME`` when ``--model`` is a
  directory, e.g. the adapted model: a cross-encoder started from its weights); ``--lrs`` is a small learning-rate
  search, picked on the trainer's held-out train queries (never on test);
- ``ce-large``: the same from ``--large-model`` (e.g. an all-mpnet-base-v2 directory), when given;
- ``bi-large``: ``--large-model`` as a bi-encoder re-scoring the candidates (cosine), when given;
- ``bi-DIRNAME``: each ``--bi-model`` (repeatable, e.g. multilingual-e5-small and all-mpnet-base-v2) the same way;
- ``prf-kK-bB``: with ``--prf``, dense Rocchio pseudo-relevance feedback with the first-stage model (no second
  model): the query vector plus B × the mean of its first K first-stage documents' vectors re-scores the candidates
  by cosine; K and B picked from ``--prf-k`` × ``--prf-beta`` on the held-out train queries;
- ``<option>+fused``: w·second + (1 − w)·first stage (both min-max normalised over the N
  candidates), w chosen per depth on the held-out train queries;
- ``all+fused``: the first stage and every option at once, one weight each (a 0.1 grid on the simplex),
  chosen per depth on the held-out train queries; the depth with the best held-out nDCG@10 is the
  pipeline "picked on held-out train", compared with the first stage by paired bootstrap — the
  honest headline, as the per-data-set "best" is picked on test. The same at search's default depth (30, fixed in
  the code, weights still from held-out train) is reported too: the pipeline a user gets. ``embedforge search --rerank A
  --rerank B --rerank-weights W0,WA,WB`` runs the same fusion.

``--first-model`` sets a first stage other than ``--model`` (e.g. the adapted model, the best SciFact
first stage); ``--cross-encoder DIR`` re-uses a cross-encoder trained before; ``--no-train`` skips training.

Reported per data set (SciFact test, msmarco-5k, dbpedia-5k; the last two have no training data):
nDCG@10 / Recall@100, second-stage queries/s (the depth-100 pass timed; smaller depths scale by
pairs), training time, device, the guardrail's verdict, and the paired bootstrap (95%) of the best
re-ranked pipeline against the first stage.

    python bench/rerank_scifact.py                                  # full run: hours on 2 CPU cores
    python bench/rerank_scifact.py --max-queries 5 --datasets scifact --train-max-steps 2 \\
        --train-max-pairs 64 --max-length 64 --depths 10 20 --no-markdown   # smoke test, ~1 min
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, machine, read_result, update_section, write_result  # noqa: E402
from search_scifact import cached_embeddings, load_beir, to_run  # noqa: E402

from embedforge.evaluate.metrics import ndcg_at_k, ndcg_per_query, paired_bootstrap, recall_at_k  # noqa: E402
from embedforge.index import exact_search  # noqa: E402
from embedforge.query import BM25Index, fuse  # noqa: E402
from embedforge.rerank.model import DEFAULT_RERANK_DEPTH, load_cross_encoder, pair_scores  # noqa: E402
from embedforge.rerank.train import (  # noqa: E402
    LabelledPairs,
    RerankerConfig,
    pairs_from_ranking,
    split_by_query,
    train_device,
    train_reranker,
)

DATASETS = ("scifact", "msmarco-5k", "dbpedia-5k")
DEPTHS = (10, 20, DEFAULT_RERANK_DEPTH, 50, 100)  # the issue's four and search's default
FIRST_K = 100  # first-stage candidates (Recall@100)
AS_GIVEN = "as given, no training"  # the record's note of a --bi-model nobody trained here
WEIGHTS = tuple(i / 10 for i in range(11))  # fusion weights searched on held-out train queries
MARKS = {"better beyond noise": "↑", "worse beyond noise": "↓"}  # table cells against the first stage (paired bootstrap, 95%)


class Split:
    """One BEIR split with its hybrid first stage: ids/texts of docs, queries, qrels, (scores, rows)."""

    def __init__(self, name: str, split: str, args: argparse.Namespace, model: Callable[[], Any], limit: int | None) -> None:
        """``model()`` returns the first-stage model; it is called only when the run is not cached. (A loaded
        SentenceTransformer is itself callable, so this takes the loader alone, never the model.)"""
        self.name, self.split = name, split
        self.ids, self.texts, queries, self.qrels = load_beir(Path(args.data_dir) / "retrieval" / name, split, limit)
        self.qids = sorted(queries)
        self.qtexts = [queries[q] for q in self.qids]
        key = hashlib.sha256("\0".join([args.first_model, name, split, *self.ids, *self.qids]).encode()).hexdigest()[:16]
        file = CACHE / f"rerank-first-{name}-{split}-{key}.npz"
        if file.is_file():
            z = np.load(file)
            self.scores, self.rows = z["scores"], z["rows"]
            return
        safe = "".join(c if c.isalnum() else "_" for c in args.first_model)[-40:]
        encoder = model()
        dvec = cached_embeddings(encoder, args.first_model, self.texts, f"{safe}-{name}-docs", args.batch_size)
        qvec = cached_embeddings(encoder, args.first_model, self.qtexts, f"{safe}-{name}-{split}-queries", args.batch_size)
        dense = exact_search(qvec, dvec, np.arange(len(self.ids), dtype=np.int64), FIRST_K)
        sparse = BM25Index.build(self.texts).search(self.qtexts, FIRST_K)
        self.scores, self.rows = fuse(dense, sparse, FIRST_K, "score")
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(file, scores=self.scores, rows=self.rows)

    def run(self, scores: np.ndarray, rows: np.ndarray) -> dict[str, dict[str, float]]:
        return to_run(self.qids, self.ids, rows, scores)


def mine_hybrid_pairs(train: Split, negatives: int, mine_depth: int, seed: int) -> LabelledPairs:
    """Positives from the train qrels; ``negatives`` per positive sampled from the hybrid first stage's first
    ``mine_depth`` non-relevant documents (hard: what the re-ranker will have to order) — the library's
    :func:`pairs_from_ranking` on the cached run, so these are the pairs ``train-reranker --mine-model`` mines."""
    config = RerankerConfig(negatives=negatives, mine_depth=mine_depth, seed=seed)
    relevant = [{d for d, g in train.qrels[q].items() if g > 0} for q in train.qids]
    return pairs_from_ranking(train.qtexts, relevant, train.ids, train.texts, train.rows[:, : mine_depth + 10], config,
                              "scifact qrels/train.tsv + hybrid negatives")


def train_option(base: str, pairs: LabelledPairs, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Train one cross-encoder per learning rate in ``--lrs`` (cached); keep the best on held-out train queries."""
    best: tuple[float, Path, dict[str, Any]] | None = None
    tried = []
    for lr in args.lrs:
        config = RerankerConfig(epochs=args.epochs, max_steps=args.train_max_steps, lr=lr, head_lr=args.head_lr,
                                max_length=args.max_length, batch_size=args.train_batch_size, seed=args.seed,
                                negatives=args.negatives, mine_depth=args.mine_depth)  # recorded in the manifest (mined here)
        key = hashlib.sha256(json.dumps([base, config.__dict__, pairs.first, pairs.second, pairs.labels]).encode()).hexdigest()[:12]
        path = CACHE / f"rerank-ce-{''.join(c if c.isalnum() else '_' for c in Path(base).name)}-{key}"
        if not (path / "config.json").is_file():
            train_reranker(base, pairs, path, config)
        info = json.loads((path / "embedforge_reranker.json").read_text())
        held = info.get("heldout") or {}
        tried.append({"lr": lr, "train_seconds": info.get("train_seconds"), "train_loss": info.get("train_loss"),
                      "heldout": held, "recommended": info.get("recommended"), "path": str(path)})
        score = float(held.get("reranker", 0.0))
        if best is None or score > best[0]:
            best = (score, path, info)
    assert best is not None
    return best[1], {"tried": tried, "chosen": str(best[1]), "device": best[2].get("device"),
                     "train_seconds": best[2].get("train_seconds"), "recommended": best[2].get("recommended"),
                     "recommended_reason": best[2].get("recommended_reason"), "config": best[2].get("config")}


def second_scores(option: str, scorer: Any, split: Split, depth: int, args: argparse.Namespace,
                  identity: str = "") -> tuple[np.ndarray, float]:
    """Second-stage scores of the top ``depth`` candidates, (n_queries, depth) float32 (NaN padded), and the
    seconds they took; cached in bench/cache under ``identity`` (the scorer) + the candidates, with the
    seconds measured when they were computed."""
    kind = "bi" if vector_option(option) else "ce"  # the identity names the scorer; the option's label may differ between runs
    key = hashlib.sha256(json.dumps([kind, identity, depth, args.max_length, split.qids,
                                     split.rows[:, :depth].tolist()]).encode()).hexdigest()[:16]
    file = CACHE / f"rerank-second-{key}.npz"
    if identity and file.is_file():
        z = np.load(file)
        return z["scores"], float(z["seconds"])
    scores, seconds = _second_scores(option, scorer, split, depth, args)
    if identity:
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(file, scores=scores, seconds=seconds)
    return scores, seconds


def _second_scores(option: str, scorer: Any, split: Split, depth: int, args: argparse.Namespace) -> tuple[np.ndarray, float]:
    n = len(split.qids)
    out = np.full((n, depth), np.nan, dtype=np.float32)
    t = time.perf_counter()
    if option.startswith("prf-"):  # the query-time cost: the feedback query and N dot products (no encoding beyond the first stage's)
        prf, qvec, dvec = scorer
        feedback = rocchio_queries(qvec, dvec, split.rows, prf.k, prf.beta)
        for i in range(n):
            rows = [int(r) for r in split.rows[i, :depth] if r >= 0]
            out[i, : len(rows)] = dvec[rows] @ feedback[i]
    elif option.startswith("bi-"):  # the query-time cost: encode the query (its documents' vectors are made at index time)
        from embedforge.encode import encode

        model, qvec, dvec, prefixed = scorer
        encode(model, prefixed, batch_size=args.batch_size, normalize=True)
        for i in range(n):
            rows = [int(r) for r in split.rows[i, :depth] if r >= 0]
            out[i, : len(rows)] = dvec[rows] @ qvec[i]
    else:
        pairs, where = [], []
        for i, q in enumerate(split.qtexts):
            for j, r in enumerate(split.rows[i, :depth]):
                if r >= 0:
                    pairs.append((q, split.texts[int(r)]))
                    where.append((i, j))
        scores = pair_scores(scorer.get() if isinstance(scorer, LazyCrossEncoder) else scorer, pairs, batch_size=args.ce_batch_size)
        for (i, j), s in zip(where, scores, strict=True):
            out[i, j] = s
    return out, time.perf_counter() - t


def vector_option(option: str) -> bool:
    """Whether an option scores by vectors (a bi-encoder or Rocchio feedback): its cost does not grow with depth."""
    return option.startswith(("bi-", "prf-"))


def rocchio_queries(qvec: np.ndarray, dvec: np.ndarray, rows: np.ndarray, k: int, beta: float) -> np.ndarray:
    """Dense Rocchio feedback queries (the library's :func:`embedforge.rerank.feedback.rocchio_queries`, what
    ``search --rerank prf`` runs) with each query's first ``k`` first-stage documents (``rows``, -1 padded)."""
    from embedforge.rerank.feedback import rocchio_queries as library_rocchio

    return library_rocchio(qvec, [dvec[[int(r) for r in rows[i, :k] if r >= 0]] for i in range(len(qvec))], beta)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = np.nanmin(x, axis=1, keepdims=True), np.nanmax(x, axis=1, keepdims=True)
    return (x - lo) / np.where(hi > lo, hi - lo, 1.0)


def reorder(split: Split, second: np.ndarray, depth: int, weight: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) after re-ranking the top ``depth`` (optionally fused with the first stage); the rest below."""
    top = second[:, :depth]
    if weight is not None:
        first = split.scores[:, :depth].astype(np.float64)
        top = weight * _minmax(top.astype(np.float64)) + (1 - weight) * _minmax(np.where(np.isnan(top), np.nan, first))
    rows = split.rows.copy()
    scores = np.zeros(rows.shape, dtype=np.float32)
    for i in range(len(rows)):
        valid = ~np.isnan(top[i])
        order = np.argsort(-np.where(valid, top[i], -np.inf), kind="stable")[: int(valid.sum())]
        rows[i, : len(order)] = split.rows[i, order]
        scores[i] = np.arange(rows.shape[1], 0, -1, dtype=np.float32)  # rank-preserving scores
    return scores, rows


def evaluate(split: Split, scores: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    run = split.run(scores, rows)
    return {"ndcg@10": round(ndcg_at_k(run, split.qrels, 10), 4), "recall@100": round(recall_at_k(run, split.qrels, 100), 4)}


def combine(split: Split, seconds: list[np.ndarray], depth: int, weights: tuple[float, ...]) -> np.ndarray:
    """weights[0]·first stage + Σ weights[i]·seconds[i-1] over the top ``depth`` (each min-max normalised per query),
    NaN where a candidate is missing: the fusion of several second stages at once (option ``all+fused``)."""
    top = [x[:, :depth].astype(np.float64) for x in seconds]
    missing = np.any([np.isnan(x) for x in top], axis=0)
    parts = [np.where(missing, np.nan, split.scores[:, :depth].astype(np.float64)), *(np.where(missing, np.nan, x) for x in top)]
    return np.sum([w * _minmax(x) for w, x in zip(weights, parts, strict=True)], axis=0)


def simplex(n: int, steps: int = 10) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` non-negative multiples of 1/steps summing to 1."""
    grid = [c for c in itertools.product(range(steps + 1), repeat=n - 1) if sum(c) <= steps]
    return [tuple(x / steps for x in (*c, steps - sum(c))) for c in grid]


def choose_weights(split: Split, second: np.ndarray, depths: list[int]) -> dict[int, float]:
    """Per depth, the fusion weight with the best nDCG@10 on ``split`` (held-out train queries)."""
    return {d: max(WEIGHTS, key=lambda w: ndcg_at_k(split.run(*reorder(split, second, d, w)), split.qrels, 10)) for d in depths}


def build_options(args: argparse.Namespace, model: Callable[[], Any]) -> tuple[dict[str, Any], dict[str, Any], Split | None]:
    """Scorers by option name, their training records, and the held-out train split for fusion weights."""
    limit = args.max_queries * 4 if args.max_queries else None
    train = Split("scifact", "train", args, model, limit)
    pairs = mine_hybrid_pairs(train, args.negatives, args.mine_depth, args.seed)
    if args.train_max_pairs is not None and len(pairs) > args.train_max_pairs:  # sampled here, so the hold-out below matches
        keep = sorted(random.Random(args.seed).sample(range(len(pairs)), args.train_max_pairs))
        pairs = LabelledPairs([pairs.first[i] for i in keep], [pairs.second[i] for i in keep], [pairs.labels[i] for i in keep], pairs.source)
    adapt_held: set[str] | None = None
    if args.weights_on_adapt_heldout:  # the train queries `embedforge adapt --pairs` holds out: no adapted model saw them
        from embedforge.adapt.config import AdaptConfig
        from embedforge.adapt.heldout import split_pairs
        from embedforge.adapt.inputs import QueryPairs, load_corpus, load_query_pairs, normalize

        folder = Path(args.data_dir) / "retrieval" / "scifact"
        qp = load_query_pairs(folder, load_corpus(folder))
        assert isinstance(qp, QueryPairs)
        adapt_held = set(split_pairs(qp, AdaptConfig())[1].queries)
        # ... and no cross-encoder trained here sees them either, so they stay fair for choosing fusion weights
        keep_pairs = [i for i, q in enumerate(pairs.first) if normalize(q) not in adapt_held]
        pairs = LabelledPairs([pairs.first[i] for i in keep_pairs], [pairs.second[i] for i in keep_pairs],
                              [pairs.labels[i] for i in keep_pairs], pairs.source + " (without adapt's held-out queries)")
    print(f"mined {len(pairs)} train pairs ({int(sum(pairs.labels))} positives) from the hybrid first stage", file=sys.stderr)
    scorers: dict[str, Any] = {}
    records: dict[str, Any] = {}
    start = "minilm" if args.model == "minilm" else "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(args.model).name)
    bases = [(f"ce-{start}", args.model)] + ([("ce-large", args.large_model)] if args.large_model else [])
    for name, base in bases if args.train else []:
        path, records[name] = train_option(base, pairs, args)
        scorers[name] = LazyCrossEncoder(str(path), args.max_length)
    for given in args.cross_encoder:  # trained before (e.g. by an earlier run of this script): used as they are
        name = "ce-" + Path(given).name
        info = json.loads((Path(given) / "embedforge_reranker.json").read_text())
        records[name] = {"chosen": str(Path(given).resolve()), "device": info.get("device"), "given": True,
                         "train_seconds": info.get("train_seconds"), "recommended": info.get("recommended"),
                         "recommended_reason": info.get("recommended_reason"), "config": info.get("config"),
                         "heldout": info.get("heldout"), "base_model": info.get("base_model")}
        scorers[name] = LazyCrossEncoder(given, args.max_length)
    from embedforge.models import load_model

    if args.large_model:
        scorers["bi-large"] = BiEncoder(load_model(args.large_model), str(args.large_model))
        records["bi-large"] = {"device": "cpu", "train_seconds": 0.0, "note": "used as given (adapt it first to compare option c)"}
    for bi_path, query_prefix, doc_prefix in bi_specs(args):
        option = "bi-" + Path(bi_path).name
        bi = load_model(bi_path)
        bi.max_seq_length = min(bi.max_seq_length or args.bi_max_length, args.bi_max_length)
        scorers[option] = BiEncoder(bi, bi_path, query_prefix, doc_prefix)
        records[option] = {"device": "cpu", "train_seconds": 0.0, "model": bi_path,
                           "prefixes": [query_prefix, doc_prefix], "note": AS_GIVEN}
        path = Path(bi_path) / "embedforge.json"
        manifest = json.loads(path.read_text()) if path.is_file() else {}
        if manifest.get("adapt"):  # a model `embedforge adapt` wrote (option c, adapted on SciFact train): its training and decision
            records[option].update({"train_seconds": (manifest.get("training") or {}).get("seconds"),
                                    "base_model": manifest.get("base_model"),
                                    "adapt": {k: manifest["adapt"].get(k) for k in ("chosen", "reason")},
                                    "note": "adapted by `embedforge adapt` (train seconds: the chosen candidate's training)"})
        if args.bi_note:  # what the markdown says of it (e.g. a candidate adapt trained but did not choose)
            records[option].update({"note": args.bi_note, "train_seconds": args.bi_train_seconds})
    if adapt_held is not None:
        from embedforge.adapt.inputs import normalize

        keep = [i for i, q in enumerate(train.qtexts) if normalize(q) in adapt_held]
        print(f"fusion weights chosen on the {len(keep)} train queries adapt holds out", file=sys.stderr)
    else:
        _, held = split_by_query(pairs, RerankerConfig().holdout, args.seed)
        held_q = set(held.first)
        keep = [i for i, q in enumerate(train.qtexts) if q in held_q]
    if not keep:
        return scorers, records, None
    train.qids = [train.qids[i] for i in keep]
    train.qrels = {q: train.qrels[q] for q in train.qids if q in train.qrels}  # averages run over the held-out queries only
    train.qtexts = [train.qtexts[i] for i in keep]
    train.scores, train.rows = train.scores[keep], train.rows[keep]
    return scorers, records, train


def bi_specs(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(model, query prefix, document prefix) per ``--bi-model``: the n-th ``--bi-query-prefix`` / ``--bi-doc-prefix``
    goes with the n-th model; none means no prefix for any, one means the same for all."""
    models = args.bi_model or []
    out = []
    for flag, given in (("--bi-query-prefix", args.bi_query_prefix), ("--bi-doc-prefix", args.bi_doc_prefix)):
        given = given or []
        if len(given) not in (0, 1, len(models)):
            raise ValueError(f"{flag} given {len(given)} times for {len(models)} --bi-model: give it once (all models), "
                             f"once per --bi-model in the same order, or not at all")
        out.append(given * len(models) if len(given) == 1 else given or [""] * len(models))
    if args.bi_note and len(models) != 1:
        raise ValueError(f"--bi-note describes one --bi-model; {len(models)} given")
    return list(zip(models, *out, strict=True))


def bi_identity(bi: BiEncoder, args: argparse.Namespace) -> str:
    """A bi-encoder's cache identity: the model, its prefixes and its max length (each changes the scores)."""
    return json.dumps([bi.name, bi.query_prefix, bi.doc_prefix, args.bi_max_length])


@dataclass
class LazyCrossEncoder:
    """A cross-encoder directory, loaded (on the training device) only when scores are not cached: a re-run
    from cached scores needs neither the weights nor the time to load them."""

    path: str
    max_length: int | None
    model: Any = None

    def get(self) -> Any:
        if self.model is None:
            self.model = load_cross_encoder(self.path, max_length=self.max_length, device=train_device())
        return self.model


def ce_identity(path: str) -> str:
    """A trained cross-encoder's cache identity: its folder's name and the digest of its manifest, not its absolute
    path, so scores computed on one machine (e.g. a GPU machine sent the tree) are found on another."""
    if not path:
        return ""
    manifest = Path(path) / "embedforge_reranker.json"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:12] if manifest.is_file() else "no-manifest"
    return f"{Path(path).name}:{digest}"


@dataclass
class BiEncoder:
    """A bi-encoder used as a second stage (option c): its cosine re-scores the first stage's candidates."""

    model: Any
    name: str
    query_prefix: str = ""
    doc_prefix: str = ""


def bi_scorer(bi: BiEncoder, split: Split, name: str, args: argparse.Namespace) -> tuple[Any, np.ndarray, np.ndarray, list[str]]:
    tag = "bi-" + "".join(c if c.isalnum() else "_" for c in bi.name)[-40:]
    # documents keyed by the corpus, not the split: SciFact's train and test share one (the digest tells corpora apart)
    dvec = cached_embeddings(bi.model, bi.name, [bi.doc_prefix + t for t in split.texts], f"{tag}-docs", args.batch_size)
    queries = [bi.query_prefix + t for t in split.qtexts]
    qvec = cached_embeddings(bi.model, bi.name, queries, f"{tag}-{name}-queries", args.batch_size)
    return bi.model, qvec, dvec, queries


@dataclass
class Rocchio:
    """Option ``prf``: dense Rocchio pseudo-relevance feedback with the first-stage model (Rocchio 1971; as a dense
    retriever's second stage in Li et al. 2022, "Pseudo relevance feedback with deep language models and dense
    retrievers: successes and pitfalls", and pyserini's ``--prf-method rocchio``). It needs no second model and no
    encoding beyond the first stage's: only the first stage's document vectors, which a flat collection stores."""

    k: int
    beta: float
    model: Callable[[], Any]  # the first-stage model's loader (used only for vectors not cached)
    name: str  # the first-stage model's name (cache keys)

    @property
    def option(self) -> str:
        return f"prf-k{self.k}-b{self.beta:g}"


def prf_scorer(prf: Rocchio, split: Split, args: argparse.Namespace) -> tuple[Rocchio, np.ndarray, np.ndarray]:
    """(prf, query vectors, document vectors) of the first-stage model, cached under Split's own keys."""
    safe = "".join(c if c.isalnum() else "_" for c in prf.name)[-40:]
    model = prf.model()
    dvec = cached_embeddings(model, prf.name, split.texts, f"{safe}-{split.name}-docs", args.batch_size)
    qvec = cached_embeddings(model, prf.name, split.qtexts, f"{safe}-{split.name}-{split.split}-queries", args.batch_size)
    return prf, qvec, dvec


def choose_rocchio(held: Split, model: Callable[[], Any], args: argparse.Namespace) -> tuple[Rocchio, list[dict[str, Any]]]:
    """K and beta from ``--prf-k`` × ``--prf-beta`` with the best held-out nDCG@10 of ``prf+fused`` at search's default
    depth (its weight chosen there too), and every combination's score, for the record."""
    depth = DEFAULT_RERANK_DEPTH
    tried = []
    for k, beta in itertools.product(args.prf_k, args.prf_beta):
        prf = Rocchio(k, beta, model, args.first_model)
        second = _second_scores(prf.option, prf_scorer(prf, held, args), held, depth, args)[0]
        w = choose_weights(held, second, [depth])[depth]
        tried.append({"k": k, "beta": beta, "weight": w,
                      "heldout_ndcg@10": round(float(ndcg_at_k(held.run(*reorder(held, second, depth, w)), held.qrels, 10)), 4)})
    best = max(tried, key=lambda t: t["heldout_ndcg@10"])
    return Rocchio(best["k"], best["beta"], model, args.first_model), tried


def bench_dataset(name: str, args: argparse.Namespace, model: Callable[[], Any], scorers: dict[str, Any], held: Split | None,
                  records: dict[str, Any]) -> dict[str, Any]:
    split = Split(name, "test", args, model, args.max_queries)
    print(f"{name}: {len(split.ids)} docs, {len(split.qids)} queries", file=sys.stderr)
    first = evaluate(split, split.scores, split.rows)
    per_query: dict[str, dict[str, float]] = {"first-stage": ndcg_per_query(split.run(split.scores, split.rows), split.qrels, 10)}
    out: dict[str, Any] = {"queries": len(split.qids), "docs": len(split.ids), "first-stage": first, "options": {}}
    deepest = max(args.depths)
    collected: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}  # option: (test scores, held-out train scores, seconds)
    held_best: tuple[float, int] | None = None  # (held-out nDCG@10, depth) of all+fused: the pipeline picked without test
    for option, scorer in scorers.items():
        if isinstance(scorer, Rocchio):
            identity = json.dumps(["rocchio", scorer.name, scorer.k, scorer.beta])
            s: Any = prf_scorer(scorer, split, args)
        elif isinstance(scorer, BiEncoder):
            identity, s = bi_identity(scorer, args), bi_scorer(scorer, split, name, args)
        else:
            identity, s = ce_identity(records[option].get("chosen", "")), scorer
        second, seconds = second_scores(option, s, split, deepest, args, identity)
        weights: dict[int, float] = {}
        if held is not None:
            hs = (prf_scorer(scorer, held, args) if isinstance(scorer, Rocchio)
                  else bi_scorer(scorer, held, "scifact-train", args) if isinstance(scorer, BiEncoder) else scorer)
            held_second = second_scores(option, hs, held, deepest, args, identity)[0]
            weights = choose_weights(held, held_second, list(args.depths))
            collected[option] = (second, held_second, seconds)
        for fused in (False, True):
            if fused and not weights:
                continue
            label = f"{option}+fused" if fused else option
            rows_out = {}
            for d in args.depths:
                r = evaluate(split, *reorder(split, second, d, weights[d] if fused else None))
                scale = 1.0 if vector_option(option) else d / deepest  # pairs scale with depth; a query encode does not
                r["queries_per_s"] = round(len(split.qids) / max(seconds * scale, 1e-9), 2)
                if fused:
                    r["weight"] = weights[d]
                rows_out[str(d)] = r
                per_query[f"{label}@{d}"] = ndcg_per_query(split.run(*reorder(split, second, d, weights[d] if fused else None)),
                                                            split.qrels, 10)
            out["options"][label] = rows_out
    if held is not None and collected:  # (d) with every second stage at once (one: its +fused again): one weight each, chosen on held-out train
        names = list(collected)
        grid = simplex(len(names) + 1)
        rows_out = {}
        for d in args.depths:
            def held_ndcg(w: tuple[float, ...], d: int = d) -> float:
                return float(ndcg_at_k(held.run(*reorder(held, combine(held, [collected[n][1] for n in names], d, w), d, None)),
                                       held.qrels, 10))
            w = max(grid, key=held_ndcg)
            if held_best is None or held_ndcg(w) > held_best[0]:
                held_best = (held_ndcg(w), d)
            fused = reorder(split, combine(split, [collected[n][0] for n in names], d, w), d, None)
            r = evaluate(split, *fused)
            cost = sum(collected[n][2] * (1.0 if vector_option(n) else d / deepest) for n in names)
            r["queries_per_s"] = round(len(split.qids) / max(cost, 1e-9), 2)
            r["weights"] = dict(zip(["first-stage", *names], w, strict=True))
            rows_out[str(d)] = r
            per_query[f"all+fused@{d}"] = ndcg_per_query(split.run(*fused), split.qrels, 10)
        out["options"]["all+fused"] = rows_out
        assert held_best is not None
    # every cell's paired bootstrap (95%) against the first stage, computed once: how many depths hold up, not only the picked one
    boot = {k: paired_bootstrap(per_query["first-stage"], v, seed=args.seed) for k, v in per_query.items() if k != "first-stage"}

    def headline(pipeline: str, note: str, **extra: Any) -> dict[str, Any]:
        diff, lo, hi = boot[pipeline]
        return {"pipeline": pipeline, **extra, "ndcg@10_diff": round(diff, 4), "ci95": [round(lo, 4), round(hi, 4)],
                "beats_first_stage": bool(lo > 0), "note": note}

    if held_best is not None:
        out["picked_on_heldout_vs_first_stage"] = headline(
            f"all+fused@{held_best[1]}", **{"heldout_ndcg@10": round(held_best[0], 4),
                                            "ndcg@10": out["options"]["all+fused"][str(held_best[1])]["ndcg@10"]},
            note="depth and weights chosen on held-out SciFact train queries, never on this test set")
        if str(DEFAULT_RERANK_DEPTH) in out["options"]["all+fused"]:  # fixed before any run: the depth a user gets (search/serve's default)
            out["at_default_depth_vs_first_stage"] = headline(
                f"all+fused@{DEFAULT_RERANK_DEPTH}", **{"ndcg@10": out["options"]["all+fused"][str(DEFAULT_RERANK_DEPTH)]["ndcg@10"]},
                note="depth = search's default --rerank-depth (fixed in the code, not chosen); weights chosen on held-out "
                     "SciFact train queries")
    out["vs_first_stage"] = {k: {"ndcg@10_diff": round(diff, 4), "ci95": [round(lo, 4), round(hi, 4)], "verdict": verdict(lo, hi)}
                             for k, (diff, lo, hi) in boot.items()}
    best = max(boot, key=lambda k: np.mean(list(per_query[k].values())), default=None)
    if best is not None:
        out["best_vs_first_stage"] = headline(best, note="best chosen on this test set: optimistic")
    return out


def verdict(lo: float, hi: float) -> str:
    """A paired bootstrap's 95% interval in words: better or worse beyond noise, or within it."""
    return "better beyond noise" if lo > 0 else "worse beyond noise" if hi < 0 else "within noise"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "## Retrieve & re-rank, `bench/rerank_scifact.py`",
        "",
        f"First stage: hybrid score fusion with `{results.get('first_model') or results['model']}` (top {FIRST_K}). Second stages re-score exactly the "
        f"top N. nDCG@10 / Recall@100 (second-stage queries/s; ↑ / ↓: better / worse than the first stage beyond noise, "
        f"paired bootstrap 95%, where the run recorded it). This run's device {results['device']}; "
        f"machine: {m['cpu']}, {m['cores']} cores{', ' + m['gpu'] if m.get('gpu') else ''}; commit {m['commit']}.",
        "",
    ]
    for name, ds in results["datasets"].items():
        depths = [str(d) for d in results["depths"]]
        lines += [f"**{name}** ({ds['queries']} queries): first stage {ds['first-stage']['ndcg@10']:.3f} / "
                  f"{ds['first-stage']['recall@100']:.3f}", "", "| option | " + " | ".join(f"N={d}" for d in depths) + " |",
                  "|---|" + "---|" * len(depths)]
        for option, rows in ds["options"].items():
            marks = {d: MARKS.get((ds.get("vs_first_stage") or {}).get(f"{option}@{d}", {}).get("verdict", ""), "") for d in depths}
            cells = [f"{rows[d]['ndcg@10']:.3f}{marks[d]} / {rows[d]['recall@100']:.3f} ({rows[d]['queries_per_s']:.1f} q/s)" for d in depths]
            lines.append(f"| {option} | " + " | ".join(cells) + " |")
        for key, lead in (("picked_on_heldout_vs_first_stage", "Picked on held-out train (depth and weights, no test data)"),
                          ("at_default_depth_vs_first_stage", "At search's default depth (weights on held-out train, depth not chosen)")):
            h = ds.get(key)
            if h:
                lines += ["", f"{lead}: {h['pipeline']}, {h['ndcg@10']:.3f}, {h['ndcg@10_diff']:+.3f} nDCG@10 vs the first stage "
                              f"(95% CI [{h['ci95'][0]:+.3f}, {h['ci95'][1]:+.3f}]; {verdict(*h['ci95'])})."]
        fused_rows = ds["options"].get("all+fused")
        if fused_rows:
            lines += ["", "all+fused weights (first stage, then each option above in order; chosen per depth on held-out train): "
                      + "; ".join(f"N={d}: " + ", ".join(f"{v:.1f}" for v in fused_rows[d]["weights"].values()) for d in depths) + "."]
        b = ds.get("best_vs_first_stage")
        if b:
            lines += ["", f"Best: {b['pipeline']}, {b['ndcg@10_diff']:+.3f} nDCG@10 vs the first stage "
                          f"(95% CI [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}]; {verdict(*b['ci95'])}; chosen on test, so optimistic)."]
        lines.append("")
    for option, rec in results["training"].items():
        if rec.get("prf"):
            lines.append(f"- {option}: dense Rocchio feedback with the first-stage model, K = {rec['prf']['k']} documents, "
                         f"beta = {rec['prf']['beta']:g}, chosen on the held-out train queries from K in {rec['prf']['k_grid']} × "
                         f"beta in {rec['prf']['beta_grid']} (prf+fused at depth {DEFAULT_RERANK_DEPTH}); no second model, "
                         "its queries/s counts the feedback query and the dot products")
            continue
        if "recommended" not in rec:
            if rec.get("adapt"):
                how = (f"adapted from {rec.get('base_model')} by `embedforge adapt` on SciFact train ({rec['adapt'].get('chosen')}, "
                       f"{rec.get('train_seconds')} s of training: {rec['adapt'].get('reason')})")
            elif rec.get("note", AS_GIVEN) != AS_GIVEN:
                how = f"({rec['note']}; {rec.get('train_seconds')} s of training)"
            else:
                how = AS_GIVEN
            lines.append(f"- {option}: {rec.get('model', option)} {how} (prefixes {rec.get('prefixes')}); its "
                         "queries/s counts encoding the queries, the documents' vectors being made at index time")
            continue
        lines.append(f"- {option}: {'given (trained by an earlier run), ' if rec.get('given') else ''}trained in "
                     f"{rec.get('train_seconds')} s on {rec.get('device')} "
                     f"({json.dumps({k: (rec.get('config') or {}).get(k) for k in ('epochs', 'lr', 'max_length', 'batch_size')})}); "
                     f"recommended by the guardrail: {rec.get('recommended')}" + (f" ({rec['recommended_reason']})" if rec.get("recommended_reason") else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--model", default="minilm", help="first-stage model and the cross-encoder's start (default: the bundled MiniLM)")
    p.add_argument("--first-model", help="first-stage model when it is not --model (e.g. the adapted model: the best "
                   "SciFact first stage); hard negatives are mined from its hybrid run")
    p.add_argument("--cross-encoder", action="append", default=[], metavar="DIR",
                   help="a cross-encoder trained before, used as it is (option ce-DIRNAME); repeatable")
    p.add_argument("--no-train", dest="train", action="store_false",
                   help="do not train ce-minilm (ce-DIRNAME)/ce-large (use --cross-encoder / --bi-model only)")
    p.add_argument("--large-model", help="a larger model directory (e.g. all-mpnet-base-v2) for options ce-large and bi-large")
    p.add_argument("--bi-model", action="append", help="another bi-encoder (e.g. multilingual-e5-small) re-scoring the candidates: option c "
                   "with a model that is not larger but different; fused with the first stage like the others")
    p.add_argument("--bi-query-prefix", action="append", help="prefix of queries for --bi-model (e5: 'query: '); "
                   "repeat it once per --bi-model, in the same order, when they differ")
    p.add_argument("--bi-max-length", type=int, default=256, help="--bi-model's max tokens (default 256, as the first stage)")
    p.add_argument("--bi-note", help="how --bi-model was made, for the record and BENCHMARKS.md (e.g. an adapt candidate)")
    p.add_argument("--bi-train-seconds", type=float, help="its training seconds, with --bi-note")
    p.add_argument("--bi-doc-prefix", action="append", help="prefix of documents for --bi-model (e5: 'passage: '); "
                   "repeat it once per --bi-model, in the same order, when they differ")
    p.add_argument("--prf", action="store_true", help="add option prf: dense Rocchio feedback with the first-stage model")
    p.add_argument("--prf-k", nargs="+", type=int, default=[1, 3, 5, 10], help="feedback documents to try (default 1 3 5 10)")
    p.add_argument("--prf-beta", nargs="+", type=float, default=[0.25, 0.5, 1.0, 2.0], help="feedback weights to try")
    p.add_argument("--weights-on-adapt-heldout", action="store_true",
                   help="choose fusion weights and depths on the SciFact train queries `embedforge adapt --pairs` holds out "
                        "(its default seed) instead of this script's own 10%% split: with adapted models, which trained on the rest")
    p.add_argument("--depths", nargs="+", type=int, default=list(DEPTHS))
    p.add_argument("--lrs", nargs="+", type=float, default=[RerankerConfig().lr], help="encoder learning rates to try (picked on held-out train)")
    p.add_argument("--head-lr", type=float, default=RerankerConfig().head_lr,
                   help="learning rate of the fresh head (default: train-reranker's)")
    p.add_argument("--epochs", type=float, default=3.0, help="training epochs over the mined train pairs")
    p.add_argument("--train-max-steps", type=int, default=-1, help="stop training after N steps (smoke tests)")
    p.add_argument("--train-max-pairs", type=int, help="train on at most N mined pairs (smoke tests)")
    p.add_argument("--train-batch-size", type=int, default=RerankerConfig().batch_size)
    p.add_argument("--negatives", type=int, default=RerankerConfig().negatives, help="hybrid hard negatives per positive")
    p.add_argument("--mine-depth", type=int, default=RerankerConfig().mine_depth, help="negatives come from the first stage's top N")
    p.add_argument("--max-length", type=int, default=RerankerConfig().max_length, help="cross-encoder max tokens")
    p.add_argument("--batch-size", type=int, default=64, help="bi-encoder batch")
    p.add_argument("--ce-batch-size", type=int, default=32, help="cross-encoder pairs per forward pass")
    p.add_argument("--max-queries", type=int, help="smoke test: this many test queries per data set and a small corpus")
    p.add_argument("--seed", type=int, default=RerankerConfig().seed)
    p.add_argument("--output", default="rerank", help="result name: bench/results/NAME.json")
    p.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    p.add_argument("--render", action="store_true",
                   help="run nothing: write BENCHMARKS.md's section from an earlier run's bench/results/NAME.json (--output NAME)")
    args = p.parse_args(argv)
    if args.render:
        earlier = read_result(args.output)
        if earlier is None:
            p.error(f"--render: no bench/results/{args.output}.json")
        update_section("rerank_scifact" if args.output == "rerank" else f"rerank_scifact_{args.output}", markdown(earlier))
        return 0
    if max(args.depths) > FIRST_K or min(args.depths) < 1:
        p.error(f"depths must be in 1..{FIRST_K}")
    try:
        bi_specs(args)
    except ValueError as e:
        p.error(str(e))

    from embedforge.models import load_model

    t0 = time.perf_counter()
    args.first_model = args.first_model or args.model
    model = functools.cache(lambda: load_model(args.first_model))  # the first-stage model, loaded only when a run is not cached
    scorers, training, held = build_options(args, model)
    if args.prf:
        if held is None:
            p.error("--prf picks K and beta on held-out train queries; this run has none")
        prf, tried = choose_rocchio(held, model, args)
        scorers = {prf.option: prf, **scorers}
        training[prf.option] = {"device": "cpu", "train_seconds": 0.0, "prf": {"k": prf.k, "beta": prf.beta, "k_grid": args.prf_k,
                                                                             "beta_grid": args.prf_beta, "tried": tried}}
    results: dict[str, Any] = {
        "model": args.model, "first_model": args.first_model, "large_model": args.large_model, "depths": sorted(args.depths), "device": train_device(),
        "max_queries": args.max_queries, "machine": machine(), "training": training, "argv": sys.argv[1:] if argv is None else argv,
        "datasets": {name: bench_dataset(name, args, model, scorers, held, training) for name in args.datasets},
    }
    results["seconds"] = round(time.perf_counter() - t0, 1)
    path = write_result(args.output if args.max_queries is None else f"{args.output}-smoke{args.max_queries}", results)
    table = markdown(results)
    if args.max_queries is None and not args.no_markdown:
        update_section("rerank_scifact" if args.output == "rerank" else f"rerank_scifact_{args.output}", table)
    print(table)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
