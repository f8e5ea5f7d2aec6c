"""Train a cross-encoder re-ranker from labelled pairs (``embedforge train-reranker``).

No pretrained cross-encoder can be downloaded here, so the re-ranker starts from an embedding
model's transformer weights (sentence-transformers converts a SentenceTransformer directory into
a ``CrossEncoder`` with a fresh 1-logit head, trained at its own higher rate: see :data:`FRESH_HEAD_LR`)
and learns relevance with binary cross-entropy:

    L = −[y log σ(s) + (1 − y) log(1 − σ(s))],   s = f([CLS] query [SEP] document [SEP])

on labelled pairs with y ∈ [0, 1] (graded scores are divided by the largest grade). Training is
sentence-transformers' ``CrossEncoderTrainer`` + ``BinaryCrossEntropyLoss``; we add the data
readers, hard-negative mining for BEIR folders (BM25 or, with a model, the hybrid first stage), CUDA with
mixed precision when present, and
the guardrail (:mod:`embedforge.rerank.check`): the held-out verdict saved as ``recommended``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedforge.errors import InputError
from embedforge.rerank.check import check_reranker, ranking_agreement
from embedforge.rerank.model import MANIFEST_NAME

__all__ = [
    "RerankerConfig",
    "check_reranker",
    "LabelledPairs",
    "read_labelled_pairs",
    "mine_beir_pairs",
    "pairs_from_ranking",
    "split_by_query",
    "ranking_agreement",
    "train_reranker",
    "MANIFEST_NAME",
]

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "embedforge-reranker/1"

# (first text, second text, label) header spellings, in order of preference
PAIR_HEADERS = (
    ("query", "document", "label"),
    ("sentence1", "sentence2", "score"),
    ("query", "passage", "label"),
    ("text1", "text2", "label"),
    ("text1", "text2", "score"),
)


@dataclass(frozen=True)
class RerankerConfig:
    epochs: float = 1.0  # passes over the pairs
    max_steps: int = -1  # stop after N optimiser steps (overrides epochs when > 0)
    batch_size: int = 16  # pairs per step; a CPU-sized default
    lr: float = 2e-5  # AdamW learning rate of the encoder, the usual for fine-tuning BERT-sized cross-encoders
    head_lr: float | None = None  # learning rate of the head (pooler + classifier); None: FRESH_HEAD_LR for a new head, else lr
    warmup_ratio: float = 0.1  # linear warm-up over this fraction of the steps
    max_length: int = 256  # tokens of query + document (SciFact abstracts average ~300 words)
    negatives: int = 4  # BEIR mining: hard negatives per positive
    mine_depth: int = 30  # BEIR mining: negatives are drawn from the first stage's (BM25's or hybrid) top N non-relevant documents
    max_pairs: int | None = None  # keep at most this many pairs (a seeded sample), None = all
    holdout: float = 0.1  # share of queries (all their pairs) held out to check the result; 0 = none
    seed: int = 42  # data sampling and training


@dataclass(frozen=True)
class LabelledPairs:
    first: list[str]
    second: list[str]
    labels: list[float]  # in [0, 1]
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)


def read_labelled_pairs(path: str | os.PathLike[str]) -> LabelledPairs:
    """Pairs from a csv / tsv / jsonl / parquet table with one of the :data:`PAIR_HEADERS`."""
    from embedforge.corpus import read_records

    path = Path(path)
    rows = read_records(path)
    names = list(rows[0][1])
    header = next((h for h in PAIR_HEADERS if all(c in names for c in h)), None)
    if header is None:
        expected = "; ".join(",".join(h) for h in PAIR_HEADERS)
        raise InputError(f"missing pair columns: expected one of [{expected}] (found: {', '.join(names)})", path)
    a, b, y = header
    first, second, labels = [], [], []
    for line, row in rows:
        for col in (a, b):
            if not isinstance(row.get(col), str) or not row[col].strip():
                raise InputError(f"empty or non-text {col!r}", path, line)
        try:
            label = float(row[y])
        except (TypeError, ValueError):
            raise InputError(f"column {y!r} holds {row[y]!r}, expected a number", path, line) from None
        if label < 0:
            raise InputError(f"negative {y!r} {label}; expected a relevance >= 0", path, line)
        first.append(row[a])
        second.append(row[b])
        labels.append(label)
    top = max(labels)
    if top > 1:  # graded (e.g. STS 0-5): scale to [0, 1]
        labels = [v / top for v in labels]
    if len(set(labels)) < 2:
        raise InputError("all labels are equal; a re-ranker needs relevant and non-relevant pairs", path)
    return LabelledPairs(first, second, labels, str(path))


def mine_beir_pairs(folder: str | os.PathLike[str], split: str = "train", config: RerankerConfig = RerankerConfig(),
                    mine_model: str | None = None) -> LabelledPairs:
    """Positives from ``qrels/{split}.tsv`` and hard negatives mined from a BEIR folder.

    For every judged query: each relevant document is a positive (label 1); ``negatives`` per
    positive are sampled (seeded) from the first stage's top ``mine_depth`` documents that are not
    judged relevant (label 0); random documents fill in when it finds too few. The first stage is
    BM25, or with ``mine_model`` the hybrid one (BM25 and that model's exact dense search, min-max
    score fusion over each retriever's top ``max(k, CANDIDATES)``, as ``search --mode hybrid``; the
    model's own ``query`` / ``document`` prompts, e.g. e5's): negatives like those the re-ranker
    will have to order behind the positives at search time.
    """
    import csv

    from embedforge.corpus import join_title, read_documents, read_records
    from embedforge.query import BM25Index

    folder = Path(folder)
    if config.negatives < 1 or config.mine_depth < 1:
        raise InputError(f"negatives and mine depth must be at least 1 (got {config.negatives}, {config.mine_depth})")
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        raise InputError(f"no qrels for split {split!r}; expected qrels/{split}.tsv", folder)
    docs = read_documents(folder)
    texts = [join_title(d.title, d.text) for d in docs]
    row_of = {d.id: i for i, d in enumerate(docs)}
    queries = {str(r.get("_id")): str(r.get("text", "")) for _, r in read_records(folder / "queries.jsonl")}
    relevant: dict[str, set[str]] = {}
    with open(qrels_file, encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if line == 1 and not row[-1].strip().lstrip("-").isdigit():
                continue  # header
            if len(row) < 3:
                raise InputError("expected query-id, corpus-id, score", qrels_file, line)
            if int(row[2]) > 0 and row[0] in queries and row[1] in row_of:
                relevant.setdefault(row[0], set()).add(row[1])
    if not relevant:
        raise InputError("no judged query with a known document", qrels_file)
    qids = sorted(relevant)
    qtexts = [queries[q] for q in qids]
    bm25 = BM25Index.build(texts)
    k = config.mine_depth + 10
    top = bm25.search(qtexts, k)[1] if mine_model is None else _hybrid_rows(mine_model, texts, qtexts, bm25, k)
    how = "BM25" if mine_model is None else f"hybrid ({mine_model})"
    return pairs_from_ranking(qtexts, [relevant[q] for q in qids], [d.id for d in docs], texts, top,
                              config, f"{folder} qrels/{split}.tsv + {how} negatives")


def pairs_from_ranking(queries: list[str], relevant: list[set[str]], doc_ids: list[str], texts: list[str], ranked: Any,
                       config: RerankerConfig, source: str) -> LabelledPairs:
    """Labelled pairs from a first stage's ranking: per query, each relevant document (label 1) with ``negatives``
    documents sampled (seeded) from the first ``mine_depth`` non-relevant rows of ``ranked`` (n_queries, k; -1
    padded), random documents filling in when it found too few (label 0). ``bench/rerank_scifact.py`` mines from
    its cached first stage with this too, so the benchmark's pairs are the CLI's."""
    rng = random.Random(config.seed)
    row_of = {d: i for i, d in enumerate(doc_ids)}
    first, second, labels = [], [], []
    for query, pos, rows in zip(queries, relevant, ranked, strict=True):
        pool = [int(r) for r in rows if r >= 0 and doc_ids[int(r)] not in pos][: config.mine_depth]
        if len(pool) < config.negatives:  # few documents share a word with the query: add random ones
            others = [r for r in range(len(doc_ids)) if doc_ids[r] not in pos and r not in pool]
            pool += rng.sample(others, min(config.negatives - len(pool), len(others)))
        for doc_id in sorted(d for d in pos if d in row_of):
            first.append(query)
            second.append(texts[row_of[doc_id]])
            labels.append(1.0)
            for r in rng.sample(pool, min(config.negatives, len(pool))):
                first.append(query)
                second.append(texts[r])
                labels.append(0.0)
    return LabelledPairs(first, second, labels, source)


def _hybrid_rows(model_name: str, texts: list[str], queries: list[str], bm25: Any, k: int) -> Any:
    """Rows of the hybrid top ``k`` per query, as ``search --mode hybrid`` ranks them: ``model_name``'s exact cosine
    search (with its own query / document prompts) and ``bm25`` (the corpus' BM25Index), each ``max(k, CANDIDATES)``
    deep, min-max fused."""
    import numpy as np

    from embedforge.encode import encode
    from embedforge.index import exact_search
    from embedforge.models import load_model
    from embedforge.query import CANDIDATES, fuse

    try:
        model = load_model(model_name)
    except Exception as err:
        raise InputError(f"cannot load the model to mine negatives with ({model_name!r}): {type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}") from None
    prompts = getattr(model, "prompts", None) or {}
    logger.info("mining negatives with the hybrid first stage: encoding %d documents with %s", len(texts), model_name)
    docs = encode(model, texts, normalize=True, show_progress=True, prompt=prompts.get("document", prompts.get("passage")))
    wide = max(k, CANDIDATES)  # what search --mode hybrid fuses: min-max normalisation depends on the depth
    dense = exact_search(encode(model, queries, normalize=True, prompt=prompts.get("query")), docs,
                         np.arange(len(texts), dtype=np.int64), wide)
    return fuse(dense, bm25.search(queries, wide), k, "score")[1]


def _sample(pairs: LabelledPairs, limit: int | None, seed: int) -> LabelledPairs:
    if limit is None or len(pairs) <= limit:
        return pairs
    idx = sorted(random.Random(seed).sample(range(len(pairs)), limit))
    return LabelledPairs([pairs.first[i] for i in idx], [pairs.second[i] for i in idx], [pairs.labels[i] for i in idx], pairs.source)


def split_by_query(pairs: LabelledPairs, fraction: float, seed: int) -> tuple[LabelledPairs, LabelledPairs]:
    """(train, held out): a seeded ``fraction`` of the distinct first texts (queries), with all their
    pairs, is held out, so no held-out query is seen in training. Fewer than 10 queries: no hold-out."""
    queries = sorted(set(pairs.first))
    n_out = int(round(len(queries) * fraction))
    if fraction <= 0 or len(queries) < 10 or n_out < 1:
        return pairs, LabelledPairs([], [], [], pairs.source)
    out = set(random.Random(seed).sample(queries, n_out))
    keep = [i for i, q in enumerate(pairs.first) if q not in out]
    held = [i for i, q in enumerate(pairs.first) if q in out]

    def take(idx: list[int]) -> LabelledPairs:
        return LabelledPairs([pairs.first[i] for i in idx], [pairs.second[i] for i in idx], [pairs.labels[i] for i in idx], pairs.source)

    return take(keep), take(held)


def _warmup(ratio: float) -> dict[str, Any]:
    """transformers v5 takes the warm-up ratio as a float ``warmup_steps``; v4 as ``warmup_ratio``."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"warmup_steps": ratio} if major >= 5 else {"warmup_ratio": ratio}


def train_device() -> str:
    """``cuda`` when a CUDA device is present (trained with mixed precision), else ``cpu``."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - a core dependency
        return "cpu"


def train_reranker(
    model_name: str, pairs: LabelledPairs, output: str | os.PathLike[str], config: RerankerConfig = RerankerConfig()
) -> Path:
    """Fine-tune a cross-encoder initialised from ``model_name`` on ``pairs``; save it at ``output``.

    ``output`` is written atomically (a complete directory or nothing) and holds a standard
    sentence-transformers CrossEncoder plus ``embedforge_reranker.json`` (config, data, base, the
    held-out check and ``recommended``: see :mod:`embedforge.rerank.check`).
    """
    import time

    import datasets
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from embedforge.io import atomic_dir, write_json
    from embedforge.models import resolve_model
    from embedforge.rerank.model import cap_max_length

    if len(pairs) < 2:
        raise InputError(f"need at least 2 labelled pairs, got {len(pairs)}")
    if not 0 <= config.holdout < 1:
        raise InputError(f"holdout must be in [0, 1), got {config.holdout}")
    pairs = _sample(pairs, config.max_pairs, config.seed)
    pairs, held = split_by_query(pairs, config.holdout, config.seed)
    if len(set(pairs.labels)) < 2:
        raise InputError("after holding out queries, the training pairs all have one label; add pairs or pass holdout 0")

    resolved = resolve_model(model_name)
    max_length = cap_max_length(resolved, config.max_length) if Path(resolved).is_dir() else config.max_length
    device = train_device()
    fresh_head = not has_trained_head(resolved)
    head_lr = config.head_lr if config.head_lr is not None else (FRESH_HEAD_LR if fresh_head else config.lr)
    import torch

    torch.manual_seed(config.seed)  # the fresh head's initialisation, so a run is reproducible
    try:
        model = CrossEncoder(resolved, num_labels=1, max_length=max_length, device=device, local_files_only=Path(resolved).is_dir())
    except Exception as err:
        raise InputError(f"cannot start a cross-encoder from {model_name!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    data = datasets.Dataset.from_dict({"query": pairs.first, "document": pairs.second, "label": pairs.labels})
    target = Path(output)
    started = time.perf_counter()
    with atomic_dir(target) as tmp:
        cuda = device == "cuda"
        args = CrossEncoderTrainingArguments(
            output_dir=str(tmp / "checkpoints"),
            num_train_epochs=config.epochs,
            max_steps=config.max_steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.lr,
            **_warmup(config.warmup_ratio),
            seed=config.seed,
            save_strategy="no",
            report_to="none",
            logging_steps=50,
            use_cpu=not cuda,
            bf16=cuda and _bf16_ok(),
            fp16=cuda and not _bf16_ok(),
            dataloader_num_workers=0,
        )
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model),
                                      optimizers=(_optimizer(model, config, head_lr), None))  # type: ignore[arg-type]
        result = trainer.train()
        train_seconds = time.perf_counter() - started
        import shutil

        shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
        model.save(str(tmp))
        heldout = check_reranker(model_name, model, held, seed=config.seed) if len(held) else None
        recommended = bool(heldout and heldout.get("recommended"))
        reason = None if recommended else (
            heldout.get("reason", "") if heldout else "not checked: no queries were held out (holdout 0)")
        if not recommended:
            logger.warning("the re-ranker is saved as not recommended: %s; search will warn and serve will refuse it "
                           "unless forced", reason)
        write_json(
            tmp / MANIFEST_NAME,
            {
                "format": MANIFEST_FORMAT,
                "base_model": model_name,
                "pairs": len(pairs),
                "positives": int(sum(1 for v in pairs.labels if v >= 0.5)),
                "source": pairs.source,
                "config": dataclasses.asdict(config),
                "head_lr": head_lr,
                "fresh_head": fresh_head,
                "device": device,
                "train_seconds": round(train_seconds, 1),
                "train_loss": float(getattr(result, "training_loss", float("nan"))),
                "heldout": heldout,
                "recommended": recommended,
                "recommended_reason": reason,
            },
        )
    return target


HEAD_PARTS = ("classifier", "pooler", "score")  # parameter-name parts of a sequence-classification head
# The head's rate when it is new. Measured (bench/rerank_head.py): SciFact train pairs, 100 steps, held-out
# pairwise accuracy 0.535 with the head at the encoder's 2e-5 (about chance: the model learns only the label
# prior), 0.672 with the head at 1e-3, 0.575 with the head at 1e-3 and the encoder at 1e-4.
FRESH_HEAD_LR = 1e-3


def has_trained_head(model_dir: str | os.PathLike[str]) -> bool:
    """Whether ``model_dir`` is already a sequence classifier (its config.json names a
    ``...ForSequenceClassification`` architecture), i.e. its head is trained, not new."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def _optimizer(model: Any, config: RerankerConfig, head_lr: float) -> Any:
    """AdamW with the head (pooler + classifier) at ``head_lr`` and the encoder at ``config.lr``.

    The defect this fixes: the head of a cross-encoder started from an embedding model is new (a
    random classifier, a pooler the embedding model never trained); at the encoder's fine-tuning
    rate it moves too slowly to learn anything in the few hundred steps a CPU affords, and the
    model stays at the label prior (SciFact: chance after a full epoch). sentence-transformers'
    trainer gives every parameter one rate; this is the second parameter group it lacks.
    """
    import torch

    head: list[Any] = []
    body: list[Any] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (head if any(part in name.split(".") for part in HEAD_PARTS) else body).append(param)
    if not head:
        raise InputError("no classification head found to give --head-lr to (expected parameters named classifier/pooler)")
    return torch.optim.AdamW([{"params": body, "lr": config.lr}, {"params": head, "lr": head_lr}], weight_decay=0.0)  # the trainer's own decay


def _bf16_ok() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def reranker_info(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The embedforge manifest of a trained re-ranker directory, if any."""
    file = Path(path) / MANIFEST_NAME
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
