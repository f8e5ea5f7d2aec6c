"""``embedforge adapt`` — fit a model to a corpus within a time budget, keep it only if it measurably wins."""

from __future__ import annotations

import argparse
from typing import Any

from embedforge.errors import InputError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "adapt",
        help="try several adaptations of a model to your corpus, keep the one measured to beat the base",
        description=(
            "Hold out part of the corpus, train candidates (unsupervised SimCSE, title<->body, random crops, "
            "sentence<->rest, TSDAE where the base has a decoder head, and supervised on --pairs with mined hard negatives) within --budget, measure each "
            "against the base on held-out data with bootstrap intervals, and write the winner - or the base when "
            "nothing wins beyond noise - to --output with a report. Re-run the same command to resume."
        ),
    )
    p.add_argument("--model", required=True, help="base model: 'minilm', a model directory or a hub id")
    p.add_argument("--corpus", required=True, help="txt (one document per line), jsonl/csv/tsv/parquet (text, optional title/id) or a BEIR folder")
    p.add_argument("--output", required=True, help="directory for the chosen model (written only at the end, atomically)")
    p.add_argument("--pairs", help="labelled (query, document) pairs: a csv/jsonl table or a BEIR folder (queries.jsonl + qrels/train.tsv); "
                   "or labelled texts: a table with text and label columns (same label = relevant)")
    p.add_argument("--budget", default="20m", help="wall-clock budget for the whole run, e.g. 20m, 90s, 1h30m (default 20m)")
    p.add_argument("--report", help="directory for report.md, report.json and chart.png (default: OUTPUT/adapt-report)")
    p.add_argument("--data-dir", default="../shared/data", help="folder holding sts/STSBenchmark for the forgetting check (skipped if absent)")
    p.add_argument("--candidates", help="comma-separated subset of simcse,title,crops,ict,tsdae,supervised (default: all that apply)")
    p.add_argument("--tsdae-decoder", metavar="DIR",
                   help="masked-LM checkpoint of the base's architecture for TSDAE's decoder (default: the base's own LM head; "
                        "TSDAE is skipped when there is none)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-length", type=int, default=256, help="tokens per document (default 256)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per training step (default 32)")
    p.add_argument("--keep-candidates", action="store_true", help="keep every trained candidate in OUTPUT.adapt-work")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--restart", action="store_true", help="discard the saved progress of an interrupted run")
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(args: argparse.Namespace) -> int:
    from embedforge.adapt import AdaptConfig, adapt, discard_work, parse_budget

    kwargs: dict[str, Any] = {
        "budget_seconds": parse_budget(args.budget), "seed": args.seed, "max_length": args.max_length,
        "batch_size": args.batch_size, "keep_candidates": args.keep_candidates,
        "tsdae_decoder": args.tsdae_decoder,
    }
    if args.candidates:
        kwargs["candidates"] = tuple(c.strip() for c in args.candidates.split(",") if c.strip())
    try:
        config = AdaptConfig(**kwargs)
    except ValueError as err:
        raise InputError(str(err)) from None
    if args.restart and discard_work(args.output):
        print(f"adapt: discarded the saved progress for {args.output}")
    result = adapt(
        args.model, args.corpus, args.output, config, pairs=args.pairs, report_dir=args.report,
        data_dir=args.data_dir, overwrite=args.overwrite,
    )
    chosen = "the base model (nothing beat it beyond noise)" if result.chosen == "base" else result.chosen
    print(f"chose {chosen}: {result.decision.reason}")
    print(f"model -> {result.output}; report -> {result.report_dir / 'report.md'} ({result.seconds / 60:.1f} min)")
    return 0
