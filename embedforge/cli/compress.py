"""``embedforge compress`` — a smaller / faster model from a teacher and your texts, with its fidelity."""

from __future__ import annotations

import argparse
from typing import Any

from embedforge.errors import InputError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    from embedforge.compress.config import QUANTIZE, CompressConfig

    d = CompressConfig()
    p = subparsers.add_parser(
        "compress", help="fewer layers (distilled), PCA dimensions, ONNX / OpenVINO int8 or static embeddings; reports fidelity"
    )
    p.add_argument("--model", required=True, help="teacher: 'minilm', a model directory or a hub id")
    p.add_argument("--train-file", required=True, help="your texts (one per line, or a text column); a slice is held out")
    p.add_argument("--output", required=True, help="directory for the compressed model (written only when done)")
    p.add_argument("--layers", type=int, default=d.layers, help="keep N transformer layers, trained to copy the teacher")
    p.add_argument("--dim", type=int, default=d.dim, help="reduce to D dimensions by PCA fitted on your texts")
    p.add_argument("--quantize", choices=QUANTIZE, default=d.quantize,
                   help="run on a faster CPU runtime: ONNX (onnxruntime; int8: dynamic quantisation) or OpenVINO "
                        "(int8: calibrated on your texts with NNCF); the -fp32 variants only convert")
    p.add_argument("--static", action="store_true", help="model2vec static embeddings (fastest, much lower quality)")
    p.add_argument("--epochs", type=float, default=d.epochs, help=f"layer distillation epochs (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"distillation batch (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.learning_rate, help=f"distillation learning rate (default {d.learning_rate})")
    p.add_argument("--holdout", type=float, default=d.holdout, help=f"share of texts held out for fidelity (default {d.holdout})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compress)


def cmd_compress(args: argparse.Namespace) -> int:
    from embedforge.compress import CompressConfig, compress

    if args.layers is None and args.dim is None and args.quantize is None and not args.static:
        raise InputError("nothing to do: give --layers, --dim, --quantize or --static")
    try:
        config = CompressConfig(
            layers=args.layers, dim=args.dim, quantize=args.quantize, static=args.static, epochs=args.epochs,
            batch_size=args.batch_size, learning_rate=args.lr, holdout=args.holdout, seed=args.seed,
        )
    except ValueError as err:
        raise InputError(str(err)) from None
    result = compress(args.model, args.train_file, args.output, config, overwrite=args.overwrite,
                      show_progress=not args.no_progress)
    k = config.knn_k
    for backend, numbers in result.fidelity.items():
        dev = numbers.get("max_cosine_deviation_vs_torch")
        extra = f", max |cos-1| vs PyTorch {dev:.2e}" if dev is not None else ""
        cos = numbers.get("mean_cosine")
        cos_text = f"mean cosine {cos:.4f}, " if cos is not None else ""
        print(f"fidelity ({backend}, {int(numbers['holdout_texts'])} held-out texts): {cos_text}"
              f"{k}-NN overlap {numbers[f'knn_overlap@{k}']:.3f}{extra}")
    layers = f", {result.layers} layers" if result.layers is not None else ""
    print(f"compressed ({' + '.join(result.method)}{layers}, dimension {result.dimension}, backend {result.backend}) "
          f"in {result.seconds:.0f}s -> {result.output}")
    return 0
