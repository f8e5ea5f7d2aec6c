"""``embedforge index``, ``embedforge search`` and ``embedforge train-reranker``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from embedforge.errors import InputError
from embedforge.fusion import weights_from_flags
from embedforge.query import where_from_json

__all__ = ["register", "read_queries", "write_run"]

QUERY_BATCH = 256  # queries encoded and searched per batch


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from embedforge.rerank.model import DEFAULT_RERANK_DEPTH

    p = subparsers.add_parser("index", help="embed a corpus into a collection on disk (resumable)")
    p.add_argument("--model", required=True, help="'minilm', a model directory or a hub id")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--input", help="corpus: .txt/.jsonl/.csv/.tsv/.parquet or a BEIR folder / corpus.jsonl")
    what.add_argument("--images", metavar="FOLDER", help="a folder of png / jpg / webp images (needs a CLIP model as --model)")
    p.add_argument("--collection", required=True, help="collection directory (created, or added to)")
    p.add_argument("--index", default="auto", help="index spec: auto (default), exact, Flat, HNSW32, IVF1024,PQ32, int8, binary, milvus[:URI]")
    p.add_argument("--query-prefix", default="", help="prepended to every query (asymmetric models, e.g. 'query: ')")
    p.add_argument("--document-prefix", default="", help="prepended to every document (e.g. 'passage: ')")
    p.add_argument("--upsert", action="store_true", help="replace documents whose id is already in the collection")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument("--chunk-size", type=int, help="documents per checkpoint (resume granularity; default 4096 when indexing "
                   "--input or --images; for --rerank-vectors 4096 or a 16th of the documents to encode, whichever is more: at most 16 saves)")
    p.add_argument("--processes", type=int, default=1,
                   help="encode with this many worker processes (for many-core machines; default 1)")
    p.add_argument("--limit", type=int, help="index only the first N documents (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--rerank-vectors", metavar="MODEL", action="append",
                   help="also store every document's vector for this embedding model used as a re-ranker (search --rerank "
                        "MODEL then encodes only the query); repeatable; without --input, for the collection as it is")
    p.add_argument("--rerank-max-length", type=int, metavar="N",
                   help="tokens per document for --rerank-vectors, at most the model's own limit (its default); "
                        "search --rerank uses the stored vectors only with the same --rerank-max-length")
    p.set_defaults(func=cmd_index)

    p = subparsers.add_parser("search", help="query a collection: a queries file to a TREC run, or one --query")
    p.add_argument("--collection", required=True, help="collection directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--queries", help="queries.jsonl (BEIR: _id, text) or a csv/tsv with id,text")
    source.add_argument("--query", help="one query; prints a readable result list")
    source.add_argument("--image", metavar="FILE", help="one image query (a collection embedded with a CLIP model)")
    p.add_argument("--top-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--output", help="RUN.tsv: query-id, doc-id, rank, score per line (required with --queries)")
    p.add_argument("--mode", choices=["dense", "bm25", "hybrid"], default="dense")
    p.add_argument("--fusion", choices=["rrf", "score"], default=None, help="hybrid fusion (default score: min-max normalised, measured better on 2 of 3 data sets)")
    p.add_argument("--rerank", metavar="DIR", action="append", help="re-rank the top candidates with this cross-encoder, or with this "
                   "embedding model's cosine (a sentence-transformers embedding model's directory or a bundled name, its prompts "
                   "applied), or 'prf' (Rocchio feedback with the collection's own vectors: nothing to load; prf:K,BETA); "
                   "repeat it to fuse several with --rerank-weights")
    p.add_argument("--rerank-weights", metavar="W0,W1,...", help="fuse instead of replace: min-max score fusion of the first "
                   "stage (W0) and each --rerank in order (W1, ...) over the re-scored candidates; e.g. 0.5,0.5")
    p.add_argument("--rerank-depth", type=int, metavar="N", default=None,
                   help=f"first-stage candidates re-scored per query: exactly N, whatever --top-k; the rest keep the "
                        f"first stage's order below them (default {DEFAULT_RERANK_DEPTH})")
    p.add_argument("--rerank-top", type=int, metavar="N", default=None, help="deprecated: the old name of --rerank-depth")
    p.add_argument("--rerank-max-length", type=int, metavar="N",
                   help="max tokens each --rerank model reads (a cross-encoder: query + document; an embedding model: "
                        "each document), at most the model's own limit (its default)")
    p.add_argument("--where", help='metadata filter as JSON, e.g. \'{"lang": "en", "year": {"$gte": 2020}}\'')
    p.add_argument("--limit", type=int, help="search only the first N queries (smoke tests)")
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("train-reranker", help="train a cross-encoder re-ranker on labelled pairs")
    p.add_argument("--model", required=True, help="initial weights: 'minilm', a model directory or a hub id")
    p.add_argument("--train-file", required=True, help="pairs (csv/tsv/jsonl: query,document,label or sentence1,sentence2,score) or a BEIR folder")
    p.add_argument("--output", required=True, help="directory for the cross-encoder (written only when done)")
    p.add_argument("--split", default="train", help="BEIR folder: the qrels split to train on (default train)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after N optimiser steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-5, help="learning rate of the encoder (default 2e-5)")
    p.add_argument("--head-lr", type=float,
                   help="learning rate of the classification head (default: 1e-3 when the head is new, as when "
                        "starting from an embedding model; --lr when starting from a cross-encoder)")
    p.add_argument("--max-length", type=int, default=256, help="max tokens of query + document")
    p.add_argument("--negatives", type=int, default=4, help="BEIR folder: hard negatives per positive (default 4)")
    p.add_argument("--mine-depth", type=int, default=30, help="BEIR folder: negatives come from the first stage's top N (default 30)")
    p.add_argument("--mine-model", metavar="MODEL",
                   help="BEIR folder: mine negatives from the hybrid first stage (BM25 + MODEL's dense search, as "
                        "search --mode hybrid) instead of BM25 alone; e.g. the model you search with")
    p.add_argument("--max-pairs", type=int, help="train on a seeded sample of at most N pairs")
    p.add_argument("--holdout", type=float, default=0.1,
                   help="share of queries held out to check the re-ranker against the model's own cosine (default 0.1; 0 = none)")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_train_reranker)


def cmd_index(args: argparse.Namespace) -> int:
    from embedforge.cli.images import cmd_index_images, refuse_texts_into_images
    from embedforge.collection import INDEX_CHUNK
    from embedforge.ingest import index_corpus
    from embedforge.models import load_model

    if args.images is not None:
        if args.rerank_vectors:
            raise InputError("--rerank-vectors stores text re-rankers' vectors; an image collection has none")
        return cmd_index_images(args)
    if args.input is None and not args.rerank_vectors:
        raise InputError("index needs --input (a corpus) or --images (a folder), or --rerank-vectors MODEL for a collection")
    if args.input is None:
        ignored = [flag for flag, on in (("--upsert", args.upsert), ("--limit", args.limit is not None),
                                         ("--processes", args.processes != 1), ("--index", args.index != "auto"),
                                         ("--query-prefix", bool(args.query_prefix)), ("--document-prefix", bool(args.document_prefix)))
                   if on]
        if ignored:
            raise InputError(f"{', '.join(ignored)} apply to indexing --input; without --input, index only stores "
                             "--rerank-vectors for the collection as it is")
    if args.rerank_max_length is not None and (args.rerank_max_length < 1 or not args.rerank_vectors):
        raise InputError(f"--rerank-max-length is the length --rerank-vectors stores at (>= 1), got {args.rerank_max_length}"
                         + ("" if args.rerank_vectors else " without --rerank-vectors"))
    if args.chunk_size is not None and args.chunk_size < 1:
        raise InputError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    refuse_texts_into_images(args.collection)
    progress = not args.no_progress and sys.stderr.isatty()
    rerankers = _rerank_encoders(args)  # before indexing: a typo or a cross-encoder fails now, not after hours
    if args.input is not None:
        coll = index_corpus(
            args.collection, args.model, args.input, limit=args.limit, index_spec=args.index, query_prefix=args.query_prefix,
            document_prefix=args.document_prefix, upsert=args.upsert, batch_size=args.batch_size,
            chunk_size=args.chunk_size or INDEX_CHUNK, show_progress=progress, processes=args.processes,
        )
        print(f"indexed {args.input} into {args.collection} ({len(coll)} documents in all, index {coll.manifest['index']})")
    else:
        from embedforge.collection import Collection

        coll = Collection.open(args.collection)
        coll.model(load_model(args.model))  # the collection's own model, or a clear error: --model names it, as when indexing
    for name, reranker in rerankers:
        done = coll.store_rerank_vectors(name, reranker=reranker, batch_size=args.batch_size, chunk_size=args.chunk_size,
                                         show_progress=progress)
        length = f" --rerank-max-length {args.rerank_max_length}" if args.rerank_max_length is not None else ""
        print(f"stored {name}'s vectors for re-ranking ({done} documents encoded, {len(coll) - done} already stored); "
              f"search --rerank {name}{length} now encodes only the query")
    return 0


def _rerank_encoders(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """``index --rerank-vectors``: each model loaded as a re-ranker whose document vectors can be
    stored, or an InputError that names it (a missing directory, a cross-encoder)."""
    from embedforge.rerank.model import load_bi_encoder_reranker

    out = []
    for name in args.rerank_vectors or []:
        try:
            out.append((name, load_bi_encoder_reranker(name, max_length=args.rerank_max_length)))
        except InputError as err:
            raise InputError(f"--rerank-vectors {name}: {err}") from None
    return out


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """(query id, text) pairs from a BEIR queries.jsonl (``_id``, ``text``) or a table with id/text columns."""
    from embedforge.corpus import read_records

    rows = read_records(path)
    names = rows[0][1].keys()
    id_col = next((c for c in ("_id", "id", "query_id", "query-id", "qid") if c in names), None)
    text_col = next((c for c in ("text", "query") if c in names), None)
    if id_col is None or text_col is None:
        raise InputError(f"expected query columns _id (or id) and text (found: {', '.join(names)})", path)
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        qid, text = str(row.get(id_col, "")).strip(), row.get(text_col)
        if not qid or not isinstance(text, str) or not text.strip():
            raise InputError(f"empty query id or text (columns {id_col}, {text_col})", path, line)
        if qid in seen:
            raise InputError(f"duplicate query id {qid!r} (first on line {seen[qid]})", path, line)
        seen[qid] = line
        out.append((qid, text))
    return out


def write_run(path: str | Path, run: list[tuple[str, list[Any]]]) -> None:
    """TREC-style run lines ``query-id<TAB>doc-id<TAB>rank<TAB>score`` (rank from 1), atomically."""
    from embedforge.io import atomic_write

    with atomic_write(path) as f:
        for qid, hits in run:
            for rank, hit in enumerate(hits, 1):
                f.write(f"{qid}\t{hit.id}\t{rank}\t{hit.score:.6f}\n")


def _search_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    where = where_from_json(args.where)
    out: dict[str, Any] = {"top_k": args.top_k, "mode": args.mode, "where": where, **_rerank_kwargs(args)}
    if args.fusion:
        out["fusion"] = args.fusion
    return out


def _rerank_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``rerank`` (loaded) and its depth; one warning line when the re-ranker is not recommended."""
    from embedforge.rerank.model import DEFAULT_RERANK_DEPTH, load_cross_encoder, not_recommended_reason

    depth = args.rerank_depth
    if args.rerank_top is not None:
        print("warning: --rerank-top is deprecated; use --rerank-depth (exactly N candidates re-scored)", file=sys.stderr)
        depth = args.rerank_top if depth is None else depth
    depth = DEFAULT_RERANK_DEPTH if depth is None else depth
    if depth < 1:
        raise InputError(f"--rerank-depth must be >= 1, got {depth}")
    weights = weights_from_flags(args.rerank_weights, len(args.rerank or []), "--rerank")  # checked before any model loads
    if args.rerank_max_length is not None and not args.rerank:
        raise InputError("--rerank-max-length is the length each --rerank model reads; without --rerank it does nothing")
    if not args.rerank:
        return {}
    if args.rerank_max_length is not None and args.rerank_max_length < 1:
        raise InputError(f"--rerank-max-length must be >= 1, got {args.rerank_max_length}")
    rerank = [load_cross_encoder(d, max_length=args.rerank_max_length) for d in args.rerank]
    if args.rerank_max_length is not None and all(getattr(r, "needs_collection", False) for r in rerank):
        raise InputError("--rerank-max-length is the length each --rerank model reads; prf reads no text, so it does nothing")
    for i, d in enumerate(args.rerank):
        reason = not_recommended_reason(d)
        if reason and weights is None:
            print(f"warning: {d} is not a recommended re-ranker; it will likely lower quality: {reason}", file=sys.stderr)
        elif reason and weights is not None:
            print(f"warning: {d} is not recommended on its own ({reason}); here it is fused with weight {weights[i + 1]:g}",
                  file=sys.stderr)
    out: dict[str, Any] = {"rerank": rerank if len(rerank) > 1 else rerank[0], "rerank_top": depth}
    if weights is not None:
        out["rerank_weights"] = weights
    return out


def _note_unstored(coll: Any, args: argparse.Namespace, kwargs: dict[str, Any]) -> None:
    """One line per embedding-model re-ranker whose document vectors this collection does not store:
    each query then encodes its candidates, which ``index --rerank-vectors`` does once instead."""
    from embedforge.rerank.model import BiEncoderReranker

    loaded = kwargs.get("rerank")
    for name, reranker in zip(args.rerank or [], loaded if isinstance(loaded, list) else [loaded], strict=False):
        if isinstance(reranker, BiEncoderReranker) and coll.stored_reranker(reranker) is reranker:
            print(f"note: {name}'s document vectors are not stored in {args.collection}, so every query encodes its "
                  f"{kwargs['rerank_top']} candidates with it; store them once with: embedforge index --collection "
                  f"{args.collection} --model {coll.manifest['model']} --rerank-vectors {name}"
                  + (f" --rerank-max-length {args.rerank_max_length}" if args.rerank_max_length is not None else ""), file=sys.stderr)


def cmd_search(args: argparse.Namespace) -> int:
    from embedforge.collection import Collection

    if args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    coll = Collection.open(args.collection)
    if args.image is not None:
        from embedforge.cli.images import cmd_search_image

        return cmd_search_image(coll, args, write_run)
    kwargs = _search_kwargs(args)
    _note_unstored(coll, args, kwargs)
    if args.query is not None:
        hits = coll.search([args.query], **kwargs)[0]
        if args.output:
            write_run(args.output, [("query", hits)])
        for rank, hit in enumerate(hits, 1):
            text = " ".join(hit.text.split())
            print(f"{rank:>3}. {hit.score:8.4f}  {hit.id}  {text[:100]}{'…' if len(text) > 100 else ''}")
        if not hits:
            print("no results")
        return 0
    if not args.output:
        raise InputError("--queries needs --output RUN.tsv")
    queries = read_queries(args.queries)
    if args.limit is not None:
        queries = queries[: max(0, args.limit)]
    run: list[tuple[str, list[Any]]] = []
    for start in range(0, len(queries), QUERY_BATCH):
        batch = queries[start : start + QUERY_BATCH]
        results = coll.search([t for _, t in batch], **kwargs)
        run.extend((qid, hits) for (qid, _), hits in zip(batch, results, strict=True))
    write_run(args.output, run)
    print(f"wrote {sum(len(h) for _, h in run)} results for {len(run)} queries to {args.output}")
    return 0


def cmd_train_reranker(args: argparse.Namespace) -> int:
    from embedforge.rerank.train import (
        RerankerConfig,
        mine_beir_pairs,
        read_labelled_pairs,
        reranker_info,
        train_reranker,
    )

    config = RerankerConfig(
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
        max_length=args.max_length, negatives=args.negatives, mine_depth=args.mine_depth, max_pairs=args.max_pairs,
        holdout=args.holdout, seed=args.seed,
    )
    source = Path(args.train_file)
    if args.mine_model and not source.is_dir():
        raise InputError("--mine-model mines negatives from a BEIR folder; a pairs file brings its own", source)
    pairs = mine_beir_pairs(source, args.split, config, args.mine_model) if source.is_dir() else read_labelled_pairs(source)
    out = train_reranker(args.model, pairs, args.output, config)
    info = reranker_info(out) or {}
    print(f"trained a re-ranker on {info.get('pairs', len(pairs))} pairs; saved to {out}")
    held = info.get("heldout")
    if held:
        base = "n/a" if held["bi_encoder"] is None else f"{held['bi_encoder']:.3f}"
        print(f"held out {held['pairs']} pairs of {held['queries']} queries: {held['metric']} re-ranker {held['reranker']:.3f}, "
              f"starting model's cosine {base}")
    if info.get("recommended") is False:
        print(f"warning: saved as not recommended: {info.get('recommended_reason')}; search --rerank will warn and "
              "serve will refuse it without --force-reranker (train longer, or on more pairs)")
    elif info.get("recommended"):
        ci = (held or {}).get("ci95") or [float("nan")] * 2
        print(f"recommended: it beats the starting model's cosine on the held-out queries (95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}])")
    return 0
