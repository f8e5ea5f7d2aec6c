"""``embedforge adapt`` — fit a model to a corpus within a time budget, keep it only if it measurably wins."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from embedforge.adapt.config import AdaptConfig
from embedforge.errors import InputError
from embedforge.io import DATA_ENV, DEV_DATA_DIR, check_output, default_data_dir

__all__ = ["register", "ADAPT_FIELDS", "format_budget", "progress_lines"]

_ADAPT = AdaptConfig()  # the defaults of every adapt option

# Every option that sets an AdaptConfig field, as (option dest, field); a test checks the defaults agree.
# (--budget is budget_seconds as text, --candidates the tuple as a comma-separated list; both also tested.)
ADAPT_FIELDS = (
    ("seed", "seed"), ("max_length", "max_length"), ("batch_size", "batch_size"),
    ("keep_candidates", "keep_candidates"), ("tsdae_decoder", "tsdae_decoder"),
)


def format_budget(seconds: float) -> str:
    """Seconds as the budget text ``--budget`` reads: ``1200`` -> ``"20m"``, ``5400`` -> ``"1h30m"``."""
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        return f"{seconds}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v) or "0s"


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
    p.add_argument("--budget", default=format_budget(_ADAPT.budget_seconds or 1200.0),
                   help="wall-clock budget for the whole run (20m, 90s, 1h30m), work per candidate (300steps, 1epoch: "
                        "every machine trains the same amount, only the time differs), or both (20m,1epoch: whichever "
                        "ends first) (default: %(default)s)")
    p.add_argument("--report", help="directory for report.md, report.json and chart.png (default: OUTPUT/adapt-report)")
    p.add_argument("--data-dir", help=f"folder holding sts/STSBenchmark for the forgetting check (default: ${DATA_ENV}, "
                                      f"else {DEV_DATA_DIR} when it exists; skipped without one)")
    p.add_argument("--candidates", help=f"comma-separated subset of {','.join(_ADAPT.candidates)} (default: all that apply)")
    p.add_argument("--tsdae-decoder", metavar="DIR",
                   help="masked-LM checkpoint of the base's architecture for TSDAE's decoder (default: the base's own LM head; "
                        "TSDAE is skipped when there is none)")
    p.add_argument("--seed", type=int, default=_ADAPT.seed, help="the split, the pseudo-queries and training (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=_ADAPT.max_length, help="tokens per document (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=_ADAPT.batch_size, help="pairs per training step (default: %(default)s)")
    p.add_argument("--keep-candidates", action="store_true", default=_ADAPT.keep_candidates,
                   help="keep every trained candidate in OUTPUT.adapt-work")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--restart", action="store_true", help="discard the saved progress of an interrupted run")
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(args: argparse.Namespace) -> int:
    from embedforge.adapt import adapt, discard_work, work_dir
    from embedforge.adapt.planner import read_budget

    kwargs: dict[str, Any] = {field: getattr(args, dest) for dest, field in ADAPT_FIELDS}
    kwargs.update(read_budget(args.budget).config_fields())
    if args.candidates:
        kwargs["candidates"] = tuple(c.strip() for c in args.candidates.split(",") if c.strip())
    try:
        config = AdaptConfig(**kwargs)
    except ValueError as err:
        raise InputError(str(err)) from None
    data_dir = args.data_dir or default_data_dir()
    model = args.model if os.path.exists(args.model) else None
    inputs = [args.corpus, args.pairs, model, args.tsdae_decoder, data_dir]
    check_output(args.output, inputs=inputs, directory=True)
    check_output(work_dir(args.output), inputs=inputs, directory=True, option="--output (its OUTPUT.adapt-work)")
    if args.report:
        check_output(args.report, inputs=inputs, directory=True, option="--report")
    if args.restart and discard_work(args.output):
        print(f"adapt: discarded the saved progress for {args.output}")
    with progress_lines():
        result = adapt(
            args.model, args.corpus, args.output, config, pairs=args.pairs, report_dir=args.report,
            data_dir=data_dir, overwrite=args.overwrite,
        )
    if result.chosen != "base":
        chosen = result.chosen
    elif result.decision.reason.startswith("undertrained"):
        chosen = "the base model (the candidates were not trained enough to tell)"
    else:
        chosen = "the base model (nothing beat it beyond noise)"
    print(f"chose {chosen}: {result.decision.reason}")
    print(f"model -> {result.output}; report -> {result.report_dir / 'report.md'} ({result.seconds / 60:.1f} min)")
    return 0


class _Progress(logging.Handler):
    """``adapt: message`` on stderr for each progress record of the library (it logs, the CLI prints)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"adapt: {record.getMessage()}", file=sys.stderr, flush=True)
        except Exception:  # pragma: no cover - logging must never break the run
            self.handleError(record)


@contextlib.contextmanager
def progress_lines() -> Iterator[None]:
    """Show the ``embedforge.adapt`` loggers' INFO records as ``adapt: ...`` lines during a run."""
    logger = logging.getLogger("embedforge.adapt")
    handler = _Progress(logging.INFO)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not twice when -v also sends INFO to the root handler
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
