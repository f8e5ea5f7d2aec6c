"""``embedforge mine | dedupe | cluster | map`` — explore a corpus with a model (cluster, map: or a folder of images)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

from embedforge.errors import InputError
from embedforge.io import check_output
from embedforge.map import MAX_THUMBNAILS, PNG_MAX_LABELS, THUMBNAIL_SIDE

__all__ = ["register"]

METHOD_CHOICES = ["kmeans", "agglomerative", "community", "hdbscan"]
IMAGE_CHUNK = 256  # images decoded and embedded at a time by map / cluster --images (bounds memory)


def _common(p: argparse.ArgumentParser, input_required: bool = True, model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required, help="'minilm', a model directory or a hub id")
    p.add_argument("--input", required=input_required, help="txt (one text per line), jsonl/csv/tsv/parquet (a text column)")
    p.add_argument("--text-field", help="column holding the text (default: text/sentence/content/body)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")


def _images_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", metavar="FOLDER", help="instead of --input: a folder of png / jpg / webp images "
                                                      "(read recursively); --model is then a CLIP model or one made by train-images")
    p.add_argument("--collection", metavar="DIR",
                   help="instead of --input / --images: a collection made by `embedforge index` (texts or images), "
                        "its stored vectors (no --model: nothing is embedded again)")


def _cluster_args(p: argparse.ArgumentParser, default_method: str = "kmeans") -> None:
    p.add_argument("--k", type=int, help="number of clusters (kmeans, agglomerative); default: chosen by silhouette")
    p.add_argument("--method", choices=METHOD_CHOICES, default=default_method, help=f"default {default_method}")
    p.add_argument("--threshold", type=float, default=0.75, help="community: cosine to the centre (default 0.75)")
    p.add_argument("--min-cluster-size", type=int, default=5, help="community, hdbscan (default 5)")
    p.add_argument("--seed", type=int, default=0)


def register(subparsers: Any) -> None:
    from embedforge.cli.multilingual import add_bitext_options

    p = subparsers.add_parser(
        "mine", help="find paraphrase / near-duplicate pairs in --input, or translations with --bitext SRC TGT; TSV"
    )
    _common(p, input_required=False)
    p.add_argument("--bitext", nargs=2, metavar=("SRC", "TGT"),
                   help="translation mining instead of paraphrases: find each SRC line's translation among TGT's "
                        "(margin scoring, one-to-one; same as `embedforge mine-bitext`)")
    p.add_argument("--output", required=True, help="PAIRS.tsv: score, i, j, text_i, text_j (0-based row numbers); "
                                                   "with --bitext: score, source_index, target_index, source_text, target_text")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float,
                       help="all pairs with cosine >= T; with --bitext: pairs whose margin score >= T")
    group.add_argument("--top-k", type=int, help="each text's K most similar others (default 10; not with --bitext)")
    add_bitext_options(p)
    p.add_argument("--max-pairs", type=int, help="keep only the best N pairs")
    p.add_argument("--search", choices=["auto", "exact", "faiss"], default="auto",
                   help="exact up to 100k texts, faiss IVF above (default auto)")
    p.set_defaults(func=cmd_mine)

    p = subparsers.add_parser("dedupe", help="drop near-duplicate texts, keep the first of each group")
    _common(p)
    p.add_argument("--output", required=True, help="DEDUPED.txt (one text per line) or .jsonl ({\"text\": …})")
    p.add_argument("--threshold", type=float, default=0.95, help="cosine at or above which texts merge (default 0.95)")
    p.add_argument("--report", help="REPORT.jsonl: one line per merged group (kept text, removed texts, scores)")
    p.set_defaults(func=cmd_dedupe)

    p = subparsers.add_parser("cluster", help="cluster texts into topics with keywords and central examples, "
                                              "or a folder of images (--images) with a CLIP model")
    _common(p, input_required=False, model_required=False)
    _images_arg(p)
    p.add_argument("--output", required=True, help="CLUSTERS.jsonl: one line per text (index, cluster, text) "
                                                   "or per image (index, cluster, image: its path in the folder)")
    p.add_argument("--summary", help="also write a JSON summary per cluster (size, keywords, examples; "
                                     "images: example file names, no keywords)")
    _cluster_args(p)
    p.set_defaults(func=cmd_cluster)

    p = subparsers.add_parser("map", help="an interactive HTML map (and a PNG) of the texts, or of a folder of "
                                          "images (--images), coloured by cluster")
    _common(p, input_required=False, model_required=False)
    _images_arg(p)
    p.add_argument("--output", required=True, help="MAP.html (self-contained, works offline; images: hover shows "
                                                   f"a {THUMBNAIL_SIDE} px thumbnail, for the first {MAX_THUMBNAILS} images)")
    p.add_argument("--png", help="also write a static PNG picture (datamapplot: labels placed without overlap; "
                                 f"the largest {PNG_MAX_LABELS} clusters labelled)")
    p.add_argument("--projection", choices=["auto", "umap", "pca"], default="auto",
                   help="auto: UMAP when umap-learn is installed, else PCA")
    p.add_argument("--title", help="page title (default: the input file name)")
    _cluster_args(p)
    p.set_defaults(func=cmd_map)


def _check_output(args: argparse.Namespace, option: str, suffixes: tuple[str, ...], *others: Path | None) -> Path:
    """The path of ``option`` checked before any work: writable, the right suffix, neither the input,
    the model nor an output named before it (``others``)."""
    model = args.model if args.model is not None and os.path.exists(args.model) else None
    images, collection = getattr(args, "images", None), getattr(args, "collection", None)
    return check_output(getattr(args, option.removeprefix("--").replace("-", "_")),
                        inputs=[args.input, images, collection, model, *others], suffixes=suffixes, option=option)


def _one_source(args: argparse.Namespace) -> None:
    """Exactly one of --input (texts), --images (a folder) and --collection, checked before anything is read;
    --model with the first two, not with --collection (its vectors are stored)."""
    given = [name for name in ("input", "images", "collection") if getattr(args, name, None) is not None]
    if len(given) != 1:
        raise InputError("give one of --input FILE (texts), --images FOLDER (images) or --collection DIR"
                         + (f", not {'both' if len(given) == 2 else 'all of'} {' and '.join('--' + g for g in given)}"
                            if given else ""))
    if args.collection is not None and args.model is not None:
        raise InputError("--collection uses the vectors stored in it; drop --model")
    if args.collection is None and args.model is None:
        raise InputError("--model is required with --input / --images")


def _load_collection(args: argparse.Namespace, *, thumbnails: bool = False
                     ) -> tuple[list[str], Any, list[str | None] | None]:
    """The documents of ``--collection``: (texts — an image's path in its folder —, stored vectors (n, dim),
    thumbnails for an image collection (read from the files its metadata names; None where gone) or None)."""
    from embedforge.collection import IMAGE_MODALITY, Collection
    from embedforge.map import thumbnail_jpeg

    if args.text_field is not None:
        raise InputError("--text-field applies to --input texts, not to --collection")
    if args.k is not None and args.k < 1:
        raise InputError(f"--k must be >= 1, got {args.k}")
    coll = Collection.open(args.collection)
    try:
        n = len(coll)
        if n < max(2, args.k or 0):
            raise InputError(f"clustering{f' into --k {args.k}' if args.k else ''} needs at least "
                             f"{max(2, args.k or 0)} documents, the collection holds {n}", args.collection)
        hits = [coll.hit(row, 0.0) for row in range(n)]
        vectors = coll.vectors()  # (n, dim), unit rows
        images = coll.manifest.get("modality") == IMAGE_MODALITY
    finally:
        coll.close()
    texts = [h.text or h.id for h in hits]
    if not images:
        return texts, vectors, None
    thumbs: list[str | None] = []
    missing = 0
    if thumbnails:
        from embedforge.images.read import open_image

        for h in hits[:MAX_THUMBNAILS]:
            try:
                thumbs.append(thumbnail_jpeg(open_image(str(h.metadata.get("path", "")))))
            except (InputError, OSError):
                thumbs.append(None)
                missing += 1
        thumbs += [None] * (n - len(thumbs))
        if missing:
            print(f"warning: {missing} image files named by the collection could not be read: no thumbnail for them",
                  file=sys.stderr)
    else:
        thumbs = [None] * n
    return texts, vectors, thumbs


def _load(args: argparse.Namespace, *, clustering: bool = False) -> tuple[list[str], Any]:
    """Read and check the texts first (cheap errors before the model loads), then embed them."""
    from embedforge.cluster import validate_texts
    from embedforge.corpus import read_texts
    from embedforge.encode import encode
    from embedforge.models import load_model

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    texts = read_texts(args.input, text_field=args.text_field)
    if clustering:
        try:
            texts = validate_texts(texts, args.k)
        except InputError as err:
            raise InputError(err.message, args.input) from None
    model = load_model(args.model)
    emb = encode(model, texts, batch_size=args.batch_size, show_progress=len(texts) > 1000 and sys.stderr.isatty())
    return texts, emb


def _load_images(args: argparse.Namespace, *, thumbnails: bool = False) -> tuple[list[str], Any, list[str | None]]:
    """The images of ``--images``: (paths relative to the folder, embeddings (n, dim), thumbnails).

    The folder is listed first and the model checked next (a text model is refused), so mistakes
    cost no encoding. Images are read (skip-with-a-warning, as ``index --images``) and embedded
    in chunks, so memory holds one chunk of decoded images; ``thumbnails`` keeps a base64 JPEG
    for each of the first :data:`~embedforge.map.MAX_THUMBNAILS` images read (None past them).
    """
    import numpy as np

    from embedforge.images.model import encode_images, load_image_model
    from embedforge.images.read import list_images, read_images
    from embedforge.map import thumbnail_jpeg

    if args.text_field is not None:
        raise InputError("--text-field applies to --input texts, not to --images")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.k is not None and args.k < 1:
        raise InputError(f"--k must be >= 1, got {args.k}")
    folder = Path(args.images)
    files = list_images(folder)
    if len(files) < max(2, args.k or 0):
        raise InputError(f"clustering{f' into --k {args.k}' if args.k else ''} needs at least "
                         f"{max(2, args.k or 0)} images, found {len(files)}", folder)
    model = load_image_model(args.model)
    names: list[str] = []
    thumbs: list[str | None] = []
    chunks = []
    for start in range(0, len(files), IMAGE_CHUNK):
        images = []
        for path, image in read_images(files[start:start + IMAGE_CHUNK]):
            if image is None:
                continue  # read_images warned, naming the file
            names.append(path.relative_to(folder).as_posix())
            thumbs.append(thumbnail_jpeg(image) if thumbnails and len(thumbs) < MAX_THUMBNAILS else None)
            images.append(image)
        chunks.append(encode_images(model, images, batch_size=args.batch_size))  # (kept, dim)
    if len(names) < 2:
        raise InputError(f"clustering needs at least 2 readable images, got {len(names)}", folder)
    if args.k is not None and args.k > len(names):
        raise InputError(f"--k {args.k} clusters need at least {args.k} images, got {len(names)}", folder)
    return names, np.concatenate(chunks), thumbs


def cmd_mine(args: argparse.Namespace) -> int:
    from embedforge.io import atomic_write
    from embedforge.mine import paraphrase_mining_embeddings

    if args.bitext is not None:
        if args.input is not None:
            raise InputError("give --input (paraphrases within one file) or --bitext SRC TGT (translations), not both")
        if args.top_k is not None or args.max_pairs is not None or args.search != "auto":
            raise InputError("--top-k, --max-pairs and --search are for paraphrase mining; --bitext pairs each "
                             "source line with at most one target line (use --threshold to cut)")
        from embedforge.cli.multilingual import cmd_mine_bitext

        args.source, args.target = args.bitext
        return cmd_mine_bitext(args)
    if args.input is None:
        raise InputError("mine needs --input FILE (paraphrases) or --bitext SRC TGT (translations)")
    out = _check_output(args, "--output", (".tsv",))
    top_k = None if args.threshold is not None else (10 if args.top_k is None else args.top_k)
    if top_k is not None and top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {top_k}")
    if args.threshold is not None and not -1 <= args.threshold <= 1:
        raise InputError(f"--threshold is a cosine similarity in [-1, 1], got {args.threshold}")
    texts, emb = _load(args)
    i, j, score = paraphrase_mining_embeddings(
        emb, top_k=top_k, threshold=args.threshold, max_pairs=args.max_pairs, method=args.search,
        show_progress=sys.stderr.isatty() and len(texts) > 20_000,
    )
    with atomic_write(out) as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["score", "i", "j", "text_i", "text_j"])
        for a, b, s in zip(i.tolist(), j.tolist(), score.tolist(), strict=True):
            writer.writerow([f"{s:.4f}", a, b, texts[a], texts[b]])
    print(f"{len(i)} pairs among {len(texts)} texts -> {out}")
    return 0


def cmd_dedupe(args: argparse.Namespace) -> int:
    from embedforge.io import atomic_write
    from embedforge.mine import dedupe

    out = _check_output(args, "--output", (".txt", ".jsonl"))
    report = _check_output(args, "--report", (".jsonl",), out) if args.report else None
    if not -1 <= args.threshold <= 1:
        raise InputError(f"--threshold is a cosine similarity in [-1, 1], got {args.threshold}")
    texts, emb = _load(args)
    kept, groups = dedupe(texts, emb, args.threshold)
    flattened = 0
    with atomic_write(out) as f:
        for idx in kept.tolist():
            if out.suffix.lower() == ".jsonl":
                f.write(json.dumps({"text": texts[idx]}, ensure_ascii=False) + "\n")
            else:
                text = texts[idx]
                if "\n" in text or "\r" in text:
                    flattened += 1
                    text = " ".join(text.splitlines())
                f.write(text + "\n")
    if report is not None:
        with atomic_write(report) as f:
            for group in groups:
                head, rest = group[0], group[1:]
                f.write(json.dumps({
                    "kept": head,
                    "kept_text": texts[head],
                    "removed": rest,
                    "removed_texts": [texts[r] for r in rest],
                    "scores": [round(float(emb[head] @ emb[r]), 4) for r in rest],  # cosine to the kept text
                }, ensure_ascii=False) + "\n")
    removed = len(texts) - len(kept)
    note = f" ({flattened} multi-line texts joined into one line)" if flattened else ""
    print(f"kept {len(kept)} of {len(texts)} texts; removed {removed} in {len(groups)} groups -> {out}{note}")
    return 0


def _clustering(args: argparse.Namespace, texts: list[str], emb: Any, images: bool) -> Any:
    from embedforge.cluster import cluster_embeddings

    if args.k is not None and args.k < 1:
        raise InputError(f"--k must be >= 1, got {args.k}")
    return cluster_embeddings(
        texts, emb, method=args.method, k=args.k, threshold=args.threshold,
        min_cluster_size=args.min_cluster_size, seed=args.seed, keywords=not images,
    )


def _print_summary(result: Any, texts: list[str], images: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.k} clusters ({result.method})")
    columns = ("cluster", "size", "example images (most central first)") if images else (
        "cluster", "size", "keywords", "most central text")
    for col in columns:
        table.add_column(col)
    sizes = {c: int((result.labels == c).sum()) for c in result.keywords}
    for c in sorted(result.keywords)[:30]:
        examples = [texts[e] for e in result.examples.get(c, [])]
        if images:
            table.add_row(str(c), str(sizes[c]), ", ".join(examples))
        else:
            table.add_row(str(c), str(sizes[c]), ", ".join(result.keywords[c][:6]), (examples or [""])[0][:80])
    noise = int((result.labels < 0).sum())
    Console(stderr=False).print(table)
    if noise:
        print(f"{noise} {'images' if images else 'texts'} in no cluster (noise)")


def cmd_cluster(args: argparse.Namespace) -> int:
    from embedforge.io import atomic_write, write_json

    _one_source(args)
    out = _check_output(args, "--output", (".jsonl",))
    summary = _check_output(args, "--summary", (".json",), out) if args.summary else None
    images = args.images is not None
    if args.collection is not None:
        texts, emb, marks = _load_collection(args)
        images = marks is not None
    else:
        texts, emb = _load_images(args)[:2] if images else _load(args, clustering=True)
    result = _clustering(args, texts, emb, images)
    field = "image" if images else "text"  # an image's "text" is its path relative to --images
    with atomic_write(out) as f:
        for idx, (text, label) in enumerate(zip(texts, result.labels.tolist(), strict=True)):
            f.write(json.dumps({"index": idx, "cluster": label, field: text}, ensure_ascii=False) + "\n")
    if summary is not None:
        write_json(summary, {
            "method": result.method,
            "k": result.k,
            "noise": int((result.labels < 0).sum()),
            "clusters": [
                {"cluster": c, "size": int((result.labels == c).sum()),
                 **({} if images else {"keywords": result.keywords.get(c, [])}),
                 "examples": [{"index": e, field: texts[e]} for e in result.examples.get(c, [])]}
                for c in sorted(result.keywords)
            ],
        })
    _print_summary(result, texts, images)
    print(f"{len(texts)} {field}s in {result.k} clusters -> {out}")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from embedforge.map import project_2d, resolve_projection, write_html, write_png

    _one_source(args)
    out = _check_output(args, "--output", (".html", ".htm"))
    png = _check_output(args, "--png", (".png",), out) if args.png else None
    projection = resolve_projection(args.projection)
    if png is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError("--png needs matplotlib: pip install 'embedforge[explore]'") from None
    thumbs: list[str | None] | None = None
    if args.collection is not None:
        texts, emb, thumbs = _load_collection(args, thumbnails=True)
    elif args.images is not None:
        texts, emb, thumbs = _load_images(args, thumbnails=True)
    else:
        texts, emb = _load(args, clustering=True)
    result = _clustering(args, texts, emb, images=thumbs is not None)
    coords = project_2d(emb, method="umap" if projection == "umap" else "pca")
    noun = "texts" if thumbs is None else "images"
    title = args.title or f"{Path(args.input or args.images or args.collection).name}: {len(texts)} {noun}, {result.k} clusters"
    if png is not None:  # an image cluster is labelled by its most central file's name
        names = {c: [texts[e] for e in result.examples.get(c, [])[:1]] for c in result.keywords}
        write_png(png, coords, result.labels, keywords=result.keywords if thumbs is None else names, title=title)
    write_html(out, coords, texts, result.labels, keywords=result.keywords, title=title, thumbnails=thumbs)
    extra = f" and {png}" if png else ""
    print(f"{len(texts)} {noun}, {result.k} clusters, {projection.upper()} projection -> {out}{extra}")
    if thumbs is not None and len(texts) > MAX_THUMBNAILS:
        print(f"thumbnails for the first {MAX_THUMBNAILS} images only; hovering the other "
              f"{len(texts) - MAX_THUMBNAILS} shows their file names")
    return 0
