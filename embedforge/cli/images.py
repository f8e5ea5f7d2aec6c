"""``embedforge train-images``, and the image halves of ``index --images`` and ``search --image``.

``index`` and ``search`` themselves live in :mod:`embedforge.cli.search`; they hand image work
to the functions here, so both commands keep one set of options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from embedforge.errors import InputError

__all__ = ["register", "cmd_index_images", "cmd_search_image", "refuse_texts_into_images"]


def register(subparsers: Any) -> None:
    from embedforge.images.finetune import ClipTuneConfig
    from embedforge.images.lit import LiTConfig

    lit, clip = LiTConfig(), ClipTuneConfig()
    p = subparsers.add_parser(
        "train-images",
        help="train on your (image, caption) pairs: a CNN into your locked text model's space (LiT), or fine-tune a CLIP model",
    )
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--text-model", help="LiT: the locked text model ('minilm', a model directory or a hub id); "
                       "a small CNN image encoder is trained into its space")
    start.add_argument("--clip-model", help="fine-tune this CLIP model (directory or hub id), both towers, symmetric InfoNCE")
    p.add_argument("--pairs", required=True, help="csv / tsv / jsonl with columns image (path under --image-root) and caption")
    p.add_argument("--image-root", required=True, help="folder the pairs' image paths are relative to")
    p.add_argument("--output", required=True, help="directory for the model (written only when done)")
    p.add_argument("--epochs", type=int, help=f"passes over the pairs (default: LiT {lit.epochs}, CLIP {clip.epochs})")
    p.add_argument("--batch-size", type=int, help=f"pairs per step (default: LiT {lit.batch_size}, CLIP {clip.batch_size})")
    p.add_argument("--lr", type=float, help=f"AdamW learning rate (default: LiT {lit.lr}, CLIP {clip.lr})")
    p.add_argument("--image-size", type=int, help=f"LiT only: CNN input side in pixels (default {lit.image_size})")
    p.add_argument("--holdout", type=float, default=lit.holdout, help="share of pairs held out to report image -> caption recall@1")
    p.add_argument("--seed", type=int, default=lit.seed)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=cmd_train_images)

    from embedforge.images.duplicates import DEFAULT_THRESHOLD

    p = subparsers.add_parser("dedupe-images", help="report groups of near-duplicate photos (nothing is deleted)")
    p.add_argument("--model", required=True, help="a CLIP (or train-images) model: directory or hub id")
    p.add_argument("--images", required=True, metavar="FOLDER", help="folder of png / jpg / webp images (read recursively)")
    p.add_argument("--output", required=True, help="GROUPS.jsonl: one line per group (kept, duplicates, cosines)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"cosine at or above which images group (default {DEFAULT_THRESHOLD}); byte-identical files always do")
    p.set_defaults(func=cmd_dedupe_images)


def cmd_train_images(args: argparse.Namespace) -> int:
    import os
    from dataclasses import replace

    from embedforge.images.finetune import ClipTuneConfig, finetune_images
    from embedforge.images.lit import LiTConfig, train_images
    from embedforge.io import check_output

    if not 0 <= args.holdout < 1:
        raise InputError(f"--holdout must be in [0, 1), got {args.holdout}")
    model = args.clip_model or args.text_model
    check_output(args.output, inputs=[args.pairs, args.image_root, model if os.path.exists(model) else None], directory=True)
    given = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}.items() if v is not None}
    given.update(holdout=args.holdout, seed=args.seed)
    if args.clip_model:
        if args.image_size is not None:
            raise InputError("--image-size applies to LiT (--text-model); a CLIP model keeps its own image size")
        out, report = finetune_images(args.clip_model, args.pairs, args.image_root, args.output, replace(ClipTuneConfig(), **given),
                                      overwrite=args.overwrite)
        what = "fine-tuned the CLIP model"
    else:
        if args.image_size is not None:
            given["image_size"] = args.image_size
        out, report = train_images(args.text_model, args.pairs, args.image_root, args.output, replace(LiTConfig(), **given),
                                   overwrite=args.overwrite)
        what = "trained an image encoder"
    print(f"{what} on {report['pairs']} pairs ({report['distinct_captions']} distinct captions) "
          f"in {report['seconds']:.0f} s, final loss {report['final_loss']:.3f}; saved to {out}")
    if report.get("skipped_images"):
        print(f"skipped {report['skipped_images']} unreadable images (named in the warnings above)")
    held = report.get("heldout")
    if held:
        before = held.get("image_to_caption_recall@1_before")
        print(f"held out {held['pairs']} pairs: image -> caption recall@1 {held['image_to_caption_recall@1']:.3f}"
              + (f" (before {before:.3f})" if before is not None else "") + f", chance {held['chance']:.3f}")
    return 0


def cmd_dedupe_images(args: argparse.Namespace) -> int:
    import json

    from embedforge.images.duplicates import find_duplicate_images
    from embedforge.images.model import load_image_model
    from embedforge.images.read import list_images
    from embedforge.io import atomic_write, check_output

    out = check_output(args.output, inputs=[args.images], suffixes=(".jsonl",))
    if not -1.0 <= args.threshold <= 1.0:
        raise InputError(f"--threshold must be a cosine in [-1, 1], got {args.threshold}")
    list_images(args.images)  # a folder with no images fails before the model loads
    groups = find_duplicate_images(load_image_model(args.model), args.images, args.threshold)
    with atomic_write(out) as f:
        for g in groups:
            f.write(json.dumps({"kept": str(g.kept), "duplicates": [str(p) for p in g.duplicates],
                                "cosines": list(g.cosines)}, ensure_ascii=False) + "\n")
    removable = sum(len(g.duplicates) for g in groups)
    print(f"{len(groups)} groups of near-duplicates ({removable} images could go); written to {out}")
    return 0


def refuse_texts_into_images(collection: str | Path) -> None:
    """InputError when ``collection`` is an image collection (texts are not added to one)."""
    from embedforge.collection import Collection
    from embedforge.images.collection import is_image_collection

    if (Path(collection) / "CURRENT").exists() and is_image_collection(Collection.open(collection)):
        raise InputError("is an image collection; texts and images are not mixed (index the texts into another directory)",
                         collection)


def cmd_index_images(args: argparse.Namespace) -> int:
    from embedforge.collection import INDEX_CHUNK
    from embedforge.images.collection import ImageIndexConfig, index_images

    if args.query_prefix or args.document_prefix:
        raise InputError("--query-prefix and --document-prefix apply to texts, not to --images")
    if args.processes != 1 or args.limit is not None:
        raise InputError("--processes and --limit apply to texts, not to --images")
    config = ImageIndexConfig(index_spec=args.index, batch_size=args.batch_size, chunk_size=args.chunk_size or INDEX_CHUNK, upsert=args.upsert)
    coll = index_images(args.collection, args.model, args.images, config=config,
                        show_progress=not args.no_progress and sys.stderr.isatty())
    print(f"indexed the images of {args.images} into {args.collection} ({len(coll)} images in all, index {coll.manifest['index']})")
    return 0


def cmd_search_image(coll: Any, args: argparse.Namespace, write_run: Any) -> int:
    """``search --image FILE``: image -> image (image collection) or image -> text (text collection, same CLIP model)."""
    from embedforge.images.collection import search_by_image
    from embedforge.query import where_from_json

    if args.mode != "dense" or args.rerank or args.fusion:
        raise InputError("an --image query is searched by its vector only (--mode dense, no --rerank or --fusion)")
    where = where_from_json(args.where, '{"width": {"$gte": 512}}')
    hits = search_by_image(coll, [args.image], top_k=args.top_k, where=where)[0]
    if args.output:
        write_run(args.output, [("query", hits)])
    for rank, hit in enumerate(hits, 1):
        text = " ".join(hit.text.split())
        size = f"  {hit.metadata['width']}x{hit.metadata['height']}" if "width" in hit.metadata else ""
        print(f"{rank:>3}. {hit.score:8.4f}  {hit.id}{size}  {'' if text == hit.id else text[:100]}".rstrip())
    if not hits:
        print("no results")
    return 0
