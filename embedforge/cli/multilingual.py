"""``embedforge mine-bitext`` — find the translations of one file's lines in another's."""

from __future__ import annotations

import argparse
import csv
import inspect
import math
import os
import sys
from typing import Any

from embedforge.errors import InputError
from embedforge.io import check_output
from embedforge.mine import mine_bitext

__all__ = ["register", "BITEXT_HEADER"]

_DEFAULTS = {name: p.default for name, p in inspect.signature(mine_bitext).parameters.items()}  # k, margin, threshold
BITEXT_HEADER = ["score", "source_index", "target_index", "source_text", "target_text"]
DEFAULT_PROMPT = "query"  # used when the model defines it: e5's advice for symmetric tasks such as bitext mining


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mine-bitext", help="translation pairs between two files (margin scoring, one-to-one), written as TSV"
    )
    p.add_argument("--model", required=True, help="a multilingual model: 'multilingual-e5-small', a directory or a hub id")
    p.add_argument("--source", required=True, help="SRC: txt (one text per line), jsonl/csv/tsv/parquet (a text column)")
    p.add_argument("--target", required=True, help="TGT: the texts to find translations among, same formats")
    p.add_argument("--output", required=True,
                   help="PAIRS.tsv: score, source_index, target_index, source_text, target_text "
                        "(0-based row numbers: line - 1 in a .txt), best first")
    p.add_argument("--text-field", help="column holding the text in table files (default: text/sentence/content/body)")
    p.add_argument("--margin", choices=["ratio", "distance", "absolute"], default=_DEFAULTS["margin"],
                   help="ratio / distance: cosine against the mean of the k nearest neighbours on both sides "
                        "(Artetxe & Schwenk 2019); absolute: plain cosine (default: %(default)s)")
    p.add_argument("--k", type=int, default=_DEFAULTS["k"], help="neighbours in the margin (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=_DEFAULTS["threshold"],
                   help="keep pairs scoring at least T (ratio margins near 1 are ambiguous; ~1.06 is a usual "
                        "cut; default: every one-to-one pair)")
    p.add_argument("--prompt-name", help=f"the model's prompt to prepend to every text (default: {DEFAULT_PROMPT!r} "
                                         "when the model defines one, as e5 does: 'query: ')")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: %(default)s)")
    p.set_defaults(func=cmd_mine_bitext)


def _prompt(model: Any, name: str | None) -> str | None:
    prompts: dict[str, str] = dict(getattr(model, "prompts", None) or {})
    if name is None:
        return prompts.get(DEFAULT_PROMPT) or None
    if name not in prompts:
        known = ", ".join(sorted(prompts)) or "none"
        raise InputError(f"--prompt-name: the model has no prompt {name!r} (its prompts: {known})")
    return prompts[name] or None


def cmd_mine_bitext(args: argparse.Namespace) -> int:
    from embedforge.corpus import read_texts
    from embedforge.encode import encode
    from embedforge.io import atomic_write
    from embedforge.models import load_model

    model_path = args.model if os.path.exists(args.model) else None
    out = check_output(args.output, inputs=[args.source, args.target, model_path], suffixes=(".tsv",))
    if args.k < 1:
        raise InputError(f"--k must be >= 1, got {args.k}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise InputError(f"--threshold must be a finite number, got {args.threshold}")
    source = read_texts(args.source, text_field=args.text_field)  # bad files fail here, before the model loads
    target = read_texts(args.target, text_field=args.text_field)
    model = load_model(args.model)
    prompt = _prompt(model, args.prompt_name)
    progress = sys.stderr.isatty() and len(source) + len(target) > 1000
    x = encode(model, source, batch_size=args.batch_size, prompt=prompt, show_progress=progress)  # (n_src, d)
    y = encode(model, target, batch_size=args.batch_size, prompt=prompt, show_progress=progress)  # (n_tgt, d)
    i, j, score = mine_bitext(x, y, k=args.k, margin=args.margin, threshold=args.threshold)
    with atomic_write(out) as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(BITEXT_HEADER)
        for a, b, s in zip(i.tolist(), j.tolist(), score.tolist(), strict=True):
            writer.writerow([f"{s:.4f}", a, b, source[a], target[b]])
    cut = f", threshold {args.threshold}" if args.threshold is not None else ""
    print(f"{len(i)} pairs from {len(source)} source and {len(target)} target texts "
          f"(margin {args.margin}, k={args.k}{cut}) -> {out}")
    return 0
