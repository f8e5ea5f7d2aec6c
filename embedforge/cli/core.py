"""``embedforge evaluate | train | embed | info`` — the foundation commands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from embedforge.config import MODES, POOLERS
from embedforge.errors import InputError
from embedforge.io import DATA_ENV, DEV_DATA_DIR, check_output, require_data_dir

try:  # the training settings' class (TrainConfig; called SimCSEConfig before the loss registry)
    from embedforge.config import TrainConfig  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    from embedforge.config import SimCSEConfig as TrainConfig  # type: ignore[assignment]

__all__ = ["register", "TRAIN_FIELDS"]

_TRAIN = TrainConfig()  # the defaults of every training option


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="STS12-16, STS-B, SICK-R (Spearman x100) + alignment/uniformity")
    p.add_argument("--model", required=True, help="'minilm', a model directory or a hub id")
    p.add_argument("--data-dir", help=f"folder holding sts/ (default: ${DATA_ENV}, else {DEV_DATA_DIR} when it exists)")
    p.add_argument("--json", dest="json_out", help="also write the flat results to this JSON file")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: %(default)s)")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("train", help="train SimCSE (unsupervised or supervised) or TSDAE")
    p.add_argument("--model", required=True, help="base model: 'minilm', a directory or a hub id")
    p.add_argument("--mode", choices=MODES, default=_TRAIN.mode,
                   help="unsup: SimCSE on texts; sup: pairs/triplets; tsdae: denoising auto-encoder on texts "
                        "(needs an LM head) (default: %(default)s)")
    p.add_argument("--decoder", metavar="DIR", help="tsdae: masked-LM checkpoint to decode with (default: the model's own LM head)")
    p.add_argument("--train-file", required=True, help="unsup / tsdae: one text per line; sup: csv/tsv/jsonl pairs or triplets")
    p.add_argument("--output", required=True, help="directory for the trained model (written only when done)")
    p.add_argument("--max-steps", type=int, default=_TRAIN.max_steps,
                   help="stop after N optimiser steps (overrides --epochs; default: %(default)s, i.e. use --epochs)")
    p.add_argument("--epochs", type=float, default=_TRAIN.epochs, help="passes over the training file (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=_TRAIN.batch_size, help="texts per batch per process (default: %(default)s)")
    p.add_argument("--lr", type=float, default=_TRAIN.learning_rate,
                   help="learning rate (paper: 3e-5 unsup, 5e-5 sup; default: %(default)s)")
    p.add_argument("--max-length", type=int, default=_TRAIN.max_length, help="max tokens per text (paper: 32; default: %(default)s)")
    p.add_argument("--pooler", choices=POOLERS, default=_TRAIN.pooler,
                   help="default: keep a sentence-transformers model's pooling; cls_mlp (unsup) / cls (sup) otherwise")
    p.add_argument("--temperature", type=float, default=_TRAIN.temperature, help="tau: logits are cos/tau (default: %(default)s)")
    p.add_argument("--hard-negative-weight", type=float, default=_TRAIN.hard_negative_weight,
                   help="alpha of the paper's Eq. 5 (default: %(default)s)")
    p.add_argument("--warmup-ratio", type=float, default=_TRAIN.warmup_ratio, help="share of steps warming up (default: %(default)s)")
    p.add_argument("--seed", type=int, default=_TRAIN.seed, help="default: %(default)s")
    p.add_argument("--dev", help="dev pairs for choosing the best checkpoint: a scored-pairs file, or a data dir (STS-B dev)")
    p.add_argument("--eval-steps", type=int, default=_TRAIN.eval_steps,
                   help="evaluate on --dev every N steps (paper: 250; default: %(default)s)")
    p.add_argument("--save-steps", type=int, default=_TRAIN.save_steps, help="checkpoint every N steps, for resuming (default: %(default)s)")
    p.add_argument("--allow-duplicates", action="store_true", default=not _TRAIN.no_duplicates,
                   help="allow the same text twice in a batch")
    p.add_argument("--matryoshka-dims", type=_dims, default=_TRAIN.matryoshka_dims, metavar="D,D,...",
                   help="Matryoshka training: also train the first D dimensions for each D (e.g. 384,256,128,64), "
                        "so vectors can be cut to any of them (default: off)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("embed", help="embed texts to a .npy file (float32, one row per text)")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, help="txt (one text per line), jsonl/csv/tsv/parquet (a text column)")
    p.add_argument("--output", required=True, help="output .npy path")
    p.add_argument("--text-field", help="column holding the text (default: text/sentence/content/body)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: %(default)s)")
    p.add_argument("--max-length", type=int, help="max tokens per text (default: the model's own)")
    p.add_argument("--no-normalize", action="store_true", help="keep raw vectors (default: L2-normalised)")
    p.set_defaults(func=cmd_embed)

    p = subparsers.add_parser("info", help="show a model's manifest (pooling, dimension, training, evaluation)")
    p.add_argument("--model", required=True)
    p.set_defaults(func=cmd_info)


# Every option that sets a TrainConfig field, as (option dest, field): the defaults above come from
# TrainConfig() and cmd_train passes them back (a test checks that the two agree).
TRAIN_FIELDS = (
    ("mode", "mode"), ("pooler", "pooler"), ("temperature", "temperature"),
    ("hard_negative_weight", "hard_negative_weight"), ("max_length", "max_length"), ("lr", "learning_rate"),
    ("batch_size", "batch_size"), ("epochs", "epochs"), ("max_steps", "max_steps"), ("warmup_ratio", "warmup_ratio"),
    ("seed", "seed"), ("eval_steps", "eval_steps"), ("save_steps", "save_steps"), ("decoder", "decoder"),
    ("matryoshka_dims", "matryoshka_dims"),
)


def _dims(text: str) -> tuple[int, ...]:
    """``"384,256,128"`` -> ``(384, 256, 128)``; argparse turns the ValueError into one clear line."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _local(path: str | None) -> str | None:
    """A model argument as a path when it names an existing local file or folder (else a name or hub id)."""
    return path if path and os.path.exists(path) else None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from embedforge.evaluate.sts import evaluate_sts, format_sts_table
    from embedforge.io import write_json
    from embedforge.models import load_model

    data_dir = require_data_dir(args.data_dir)
    if args.json_out:
        check_output(args.json_out, inputs=[data_dir, _local(args.model)], suffixes=(".json",), option="--json")
    model = load_model(args.model)
    results = evaluate_sts(model, data_dir, batch_size=args.batch_size)
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
    from embedforge.train.trainer import train_simcse

    if args.decoder and args.mode != "tsdae":
        raise InputError("--decoder applies only to --mode tsdae")
    try:
        config = TrainConfig(
            **{field: getattr(args, dest) for dest, field in TRAIN_FIELDS}, no_duplicates=not args.allow_duplicates
        )
    except ValueError as err:
        raise InputError(str(err)) from None
    check_output(args.output, inputs=[args.train_file, args.dev, _local(args.model), _local(args.decoder)], directory=True)
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

    out = check_output(args.output, inputs=[args.input, _local(args.model)], suffixes=(".npy",))
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
