"""``embedforge mine-bitext`` (also ``embedforge mine --bitext SRC TGT``) — find the translations of one file's lines in another's;
``embedforge distill-multilingual`` — make a model multilingual by distillation into a multilingual student."""

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

__all__ = ["register", "BITEXT_HEADER", "add_bitext_options", "cmd_mine_bitext"]

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
    p.add_argument("--threshold", type=float, default=_DEFAULTS["threshold"],
                   help="keep pairs scoring at least T (ratio margins near 1 are ambiguous; ~1.06 is a usual "
                        "cut; default: every one-to-one pair)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: %(default)s)")
    add_bitext_options(p)
    p.set_defaults(func=cmd_mine_bitext)
    _register_distill(subparsers)


def add_bitext_options(p: argparse.ArgumentParser) -> None:
    """The options translation mining adds (shared by ``mine-bitext`` and ``mine --bitext``)."""
    p.add_argument("--margin", choices=["ratio", "distance", "absolute"], default=_DEFAULTS["margin"],
                   help="translation mining: ratio / distance: cosine against the mean of the k nearest "
                        "neighbours on both sides (Artetxe & Schwenk 2019); absolute: plain cosine (default: %(default)s)")
    p.add_argument("--k", type=int, default=_DEFAULTS["k"],
                   help="translation mining: neighbours in the margin (default: %(default)s)")
    p.add_argument("--prompt-name", help=f"translation mining: the model's prompt to prepend to every text (default: "
                                         f"{DEFAULT_PROMPT!r} when the model defines one, as e5 does: 'query: ')")


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


def _register_distill(subparsers: Any) -> None:
    from embedforge.multilingual.distill import PROJECTIONS, TRAIN_MODES, DistillConfig

    d = DistillConfig()  # every default below is read from here
    p = subparsers.add_parser(
        "distill-multilingual",
        help="make a model multilingual: train a multilingual student to put an English sentence and its "
             "translation on the teacher's vector of the English (Reimers & Gurevych 2020)",
    )
    p.add_argument("--teacher", required=True, help="the model to copy: 'minilm', your trained model's directory, a hub id")
    p.add_argument("--student", required=True, help="a multilingual model to train: 'multilingual-e5-small', a directory")
    p.add_argument("--parallel", required=True, nargs="+", metavar="PAIRS.tsv",
                   help="english<TAB>translation per line (more translations as more columns), or mine-bitext's "
                        "output; one file per language (its name labels the language in the report)")
    p.add_argument("--output", required=True, help="directory for the student (written only when done)")
    p.add_argument("--english", metavar="TEXTS",
                   help="English texts of your domain (txt, or a table with a text column): the student also learns "
                        "to reproduce the teacher on them, which keeps its English close to the teacher's")
    p.add_argument("--heldout-fraction", type=float, default=d.heldout_fraction,
                   help="English strings held out, with their translations, for the EN->X evaluation (default: %(default)s)")
    p.add_argument("--epochs", type=float, default=d.epochs, help="passes over the pairs (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="> 0: stop after this many steps (default: epochs)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.learning_rate, help="learning rate (default: %(default)s)")
    p.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio, help="share of steps warming up (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=d.max_length, help="tokens per text (default: %(default)s)")
    p.add_argument("--save-steps", type=int, default=d.save_steps, help="checkpoint every N steps, for resuming (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="held-out split and shuffling (default: %(default)s)")
    p.add_argument("--prompt-name", default=d.prompt,
                   help="prompt of each model to use where it defines one (default: %(default)r; e5: 'query: ')")
    p.add_argument("--train", choices=TRAIN_MODES, default=d.train,
                   help="all: fine-tune the whole student (Reimers & Gurevych); head: keep the student's encoder and "
                        "fit only a Dense projection after it, in closed form (least squares of the English and its "
                        "translations onto the teacher's English vectors; seconds, no steps) (default: %(default)s)")
    p.add_argument("--projection", choices=PROJECTIONS, default=d.projection,
                   help="a Dense layer after the student, started as the least-squares map of its English vectors "
                        "onto the teacher's: auto when their dimensions differ, always (also when they match: "
                        "training starts at the best linear copy of the teacher), never (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_distill_multilingual)


def _labels(paths: list[str]) -> list[str]:
    """The language label of each parallel file: its name without suffix, or the path when names repeat."""
    from pathlib import Path

    stems = [Path(p).stem for p in paths]
    return stems if len(set(stems)) == len(stems) else list(paths)


def cmd_distill_multilingual(args: argparse.Namespace) -> int:
    from embedforge.multilingual.distill import DistillConfig, distill_multilingual, read_parallel

    local = [m if os.path.exists(m) else None for m in (args.teacher, args.student)]
    check_output(args.output, inputs=[*args.parallel, *local, args.english], directory=True)
    if os.path.exists(args.output) and not args.overwrite:
        raise InputError("--output: already exists; choose another or pass --overwrite", args.output)
    config = DistillConfig(
        learning_rate=args.lr, batch_size=args.batch_size, epochs=args.epochs, max_steps=args.max_steps,
        warmup_ratio=args.warmup_ratio, max_length=args.max_length, heldout_fraction=args.heldout_fraction,
        seed=args.seed, save_steps=args.save_steps, prompt=args.prompt_name or None, projection=args.projection,
        train=args.train,
    )
    if len(set(args.parallel)) != len(args.parallel):
        raise InputError("--parallel: the same file is given twice")
    parallel = {label: read_parallel(path) for label, path in zip(_labels(args.parallel), args.parallel, strict=True)}
    english: list[str] = []
    if args.english:
        from embedforge.corpus import read_texts

        english = read_texts(args.english)  # bad files fail here, before any model loads
    result = distill_multilingual(args.teacher, args.student, parallel, args.output, config,
                                  overwrite=args.overwrite, show_progress=not args.no_progress, english=english)
    resumed = f", resumed from {result.resumed_from}" if result.resumed_from else ""
    print(f"distilled {args.teacher} into {args.student}: {result.train_pairs} pairs, {result.steps} steps in "
          f"{result.seconds:.0f}s{resumed}{' (with a Dense projection onto the teacher space)' if result.projection else ''}")
    if result.heldout:
        print(f"held-out EN->X top-1 on {result.heldout_strings} English strings (before -> after; teacher):")
        for lang, r in result.heldout.items():
            print(f"  {lang}: {r['top1_before']:.3f} -> {r['top1_after']:.3f}; {r['teacher_top1']:.3f} "
                  f"(MSE x100 {r['mse_before'] * 100:.3f} -> {r['mse_after'] * 100:.3f}, n={int(r['n'])})")
    print(f"-> {result.output}")
    return 0
