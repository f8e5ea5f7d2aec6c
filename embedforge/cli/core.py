"""``embedforge evaluate | train | embed | info`` — the foundation commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from embedforge.errors import InputError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="STS12-16, STS-B, SICK-R (Spearman x100) + alignment/uniformity")
    p.add_argument("--model", required=True, help="'minilm', a model directory or a hub id")
    p.add_argument("--data-dir", default="../shared/data", help="folder holding sts/ (default: ../shared/data)")
    p.add_argument("--json", dest="json_out", help="also write the flat results to this JSON file")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("train", help="train SimCSE (unsupervised or supervised) or TSDAE")
    p.add_argument("--model", required=True, help="base model: 'minilm', a directory or a hub id")
    p.add_argument("--mode", choices=["unsup", "sup", "tsdae"], default="unsup",
                   help="unsup: SimCSE on texts; sup: pairs/triplets; tsdae: denoising auto-encoder on texts (needs an LM head)")
    p.add_argument("--decoder", metavar="DIR", help="tsdae: masked-LM checkpoint to decode with (default: the model's own LM head)")
    p.add_argument("--train-file", required=True, help="unsup / tsdae: one text per line; sup: csv/tsv/jsonl pairs or triplets")
    p.add_argument("--output", required=True, help="directory for the trained model (written only when done)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after N optimiser steps (overrides --epochs)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64, help="texts per batch per process (default 64)")
    p.add_argument("--lr", type=float, default=3e-5, help="learning rate (paper: 3e-5 unsup, 5e-5 sup)")
    p.add_argument("--max-length", type=int, default=32, help="max tokens per text (paper: 32)")
    p.add_argument("--pooler", choices=["cls", "cls_mlp", "mean"], default=None,
                   help="default: keep a sentence-transformers model's pooling; cls_mlp (unsup) / cls (sup) otherwise")
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--hard-negative-weight", type=float, default=1.0, help="alpha of the paper's Eq. 5 (default 1)")
    p.add_argument("--warmup-ratio", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dev", help="dev pairs for choosing the best checkpoint: a scored-pairs file, or a data dir (STS-B dev)")
    p.add_argument("--eval-steps", type=int, default=250, help="evaluate on --dev every N steps (paper: 250)")
    p.add_argument("--save-steps", type=int, default=250, help="checkpoint every N steps (for resuming)")
    p.add_argument("--allow-duplicates", action="store_true", help="allow the same text twice in a batch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("embed", help="embed texts to a .npy file (float32, one row per text)")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, help="txt (one text per line), jsonl/csv/tsv/parquet (a text column)")
    p.add_argument("--output", required=True, help="output .npy path")
    p.add_argument("--text-field", help="column holding the text (default: text/sentence/content/body)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int)
    p.add_argument("--no-normalize", action="store_true", help="keep raw vectors (default: L2-normalised)")
    p.set_defaults(func=cmd_embed)

    p = subparsers.add_parser("info", help="show a model's manifest (pooling, dimension, training, evaluation)")
    p.add_argument("--model", required=True)
    p.set_defaults(func=cmd_info)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from embedforge.evaluate.sts import evaluate_sts, format_sts_table
    from embedforge.io import write_json
    from embedforge.models import load_model

    if args.json_out and Path(args.json_out).is_dir():
        raise InputError("is a directory; expected a JSON file path", args.json_out)
    model = load_model(args.model)
    results = evaluate_sts(model, args.data_dir, batch_size=args.batch_size)
    Console().print(format_sts_table(results, title=f"STS evaluation of {args.model}"))
    if args.json_out:
        write_json(args.json_out, results)
    return 0


def _dev_set(spec: str) -> Any:
    from embedforge.corpus import read_pairs
    from embedforge.evaluate.sts import load_stsb
    from embedforge.train.trainer import DevSet

    path = Path(spec)
    if path.is_dir():
        data = load_stsb(path, "dev")
        return DevSet(list(data.sentences1), list(data.sentences2), [float(s) for s in data.scores])
    pairs = read_pairs(path)
    if pairs.scores is None:
        raise InputError("dev pairs need a score column (e.g. sentence1,sentence2,score)", path)
    return DevSet(pairs.sent0, pairs.sent1, pairs.scores)


def cmd_train(args: argparse.Namespace) -> int:
    from embedforge.config import SimCSEConfig
    from embedforge.train.trainer import train_simcse

    if args.decoder and args.mode != "tsdae":
        raise InputError("--decoder applies only to --mode tsdae")
    try:
        config = SimCSEConfig(
            mode=args.mode, pooler=args.pooler, temperature=args.temperature,
            hard_negative_weight=args.hard_negative_weight, max_length=args.max_length, learning_rate=args.lr,
            batch_size=args.batch_size, epochs=args.epochs, max_steps=args.max_steps,
            warmup_ratio=args.warmup_ratio, seed=args.seed, eval_steps=args.eval_steps,
            save_steps=args.save_steps, no_duplicates=not args.allow_duplicates, decoder=args.decoder,
        )
    except ValueError as err:
        raise InputError(str(err)) from None
    dev = _dev_set(args.dev) if args.dev else None
    result = train_simcse(
        args.model, args.train_file, args.output, config, dev=dev, overwrite=args.overwrite,
        show_progress=not args.no_progress,
    )
    best = f", best dev Spearman {result.best_dev * 100:.2f}" if result.best_dev is not None else ""
    print(
        f"trained {result.loss} ({result.pooler} pooling) for {result.steps} steps in {result.seconds:.0f}s "
        f"({result.rows_per_second:.1f} examples/s{best}) -> {result.output}"
    )
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from embedforge.corpus import read_texts
    from embedforge.encode import encode
    from embedforge.io import save_npy
    from embedforge.models import load_model

    out = Path(args.output)
    if out.is_dir():
        raise InputError("is a directory; expected a .npy file path", out)
    texts = read_texts(args.input, text_field=args.text_field)
    model = load_model(args.model)
    emb = encode(model, texts, batch_size=args.batch_size, max_length=args.max_length,
                 normalize=not args.no_normalize, show_progress=True)
    save_npy(out, emb)
    print(f"embedded {len(texts)} texts -> {out} {emb.shape} float32")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from embedforge.models import load_model, model_info, read_manifest, resolve_model

    resolved = resolve_model(args.model)
    manifest = read_manifest(resolved) if Path(resolved).is_dir() else None
    info = {"model": args.model, "path": resolved, **model_info(load_model(args.model))}
    if manifest:
        info["manifest"] = manifest
    print(json.dumps(info, indent=2, default=str))
    return 0
