"""LiT on scikit-learn's digits: train a small CNN into the bundled MiniLM's space, then search held-out digits by text.

What it shows: the ``train-images`` path end to end on data that is on disk here. MiniLM stays
locked; a randomly initialised ConvNeXt (3 stages, ~0.2 M parameters) learns to put each 8x8 digit
where MiniLM puts a caption of it ("a handwritten seven", "the digit 7", ...). Evaluation is on
held-out digits (never trained on) with held-out caption wordings (never seen verbatim):

* text -> image: for each digit and each held-out wording, precision@10 and average precision
  (over the whole held-out ranking) where every held-out image of that digit is relevant;
* image -> image: each held-out digit queries the others; precision@10 of the same digit;
* against chance (0.1), raw-pixel cosine (64-d, image -> image only: pixels cannot read a text
  query) and the same CNN untrained (random weights), all measured in this run.

Held-out digits are written as PNG files and indexed with ``index_images`` (the real path); the
text queries go through ``Collection.search``. It proves the training path, not real-world photo
quality. Run: ``.venv/bin/python bench/images.py`` (about 2 minutes on one core of a shared 2-core box).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, read_result, update_section, write_result

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# wordings the encoder is trained on ...
TRAIN_TEMPLATES = [
    "a handwritten {w}", "the digit {n}", "the number {w}", "a hand-drawn {n}", "the numeral {w}",
    "a scanned digit: {n}", "{w}, written by hand", "a small image of the number {n}", "digit {w}",
    "someone wrote a {n}", "a pen-written {w}", "a grayscale {n}",
]
# ... and wordings it never sees; the text -> image queries use these
HELDOUT_TEMPLATES = [
    "a picture of a handwritten {w}", "the figure {n} drawn by a person", "a {w} scribbled on paper",
    "an image showing the number {w}", "{n}", "handwriting of the digit {w}",
]


def digits_split(templates: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any, list[str]]:
    """scikit-learn's digits for the LiT runs: (pixels (1797, 8, 8) in 0..16, labels, train ids, test ids
    (70 / 30, stratified, seed 0), pixels -> RGB PIL image, one seeded caption per training digit)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels, labels = digits.images, digits.target  # (1797, 8, 8) in 0..16, (1797,)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.3, random_state=0, stratify=labels)
    to_image = lambda a: Image.fromarray((a * (255 / 16)).astype(np.uint8)).convert("RGB")  # noqa: E731
    rng = np.random.default_rng(0)
    captions = [templates[rng.integers(len(templates))].format(w=WORDS[y], n=y) for y in labels[train_idx]]
    return pixels, labels, train_idx, test_idx, to_image, captions


def precision_at(relevant_ranked: np.ndarray, k: int) -> float:
    """Mean precision@k over queries; ``relevant_ranked`` is (queries, ranked docs) bool."""
    return float(relevant_ranked[:, :k].mean())


def mean_average_precision(relevant_ranked: np.ndarray) -> float:
    """Mean over queries of AP over the full ranking: sum_r P@r * rel_r / |relevant|."""
    hits = relevant_ranked.astype(np.float64)
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    return float(((precision * hits).sum(axis=1) / hits.sum(axis=1).clip(min=1)).mean())


def image_to_image(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out same-digit precision@k of L2-normalised ``vectors`` (cosine)."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]
    return float((labels[top] == labels[:, None]).mean())


def text_to_image(text_vectors: np.ndarray, query_labels: np.ndarray, image_vectors: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    order = np.argsort(-(text_vectors @ image_vectors.T), axis=1, kind="stable")  # (q, n)
    relevant = labels[order] == query_labels[:, None]
    return {"precision@10": precision_at(relevant, 10), "mAP": mean_average_precision(relevant)}


def markdown(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md section, from a result dict (``--markdown-only`` re-renders a saved one)."""
    t2i, i2i, report = result["text_to_image_heldout_wordings"], result["image_to_image_precision@10"], result["training"]
    cfg, seen, m = report["config"], result["text_to_image_training_wordings"], result["machine"]
    examples = ", ".join(f'"{t.format(w="seven", n=7)}"' for t in result["data"]["heldout_wordings"][:3])
    return f"""## Image search: LiT on scikit-learn digits, `bench/images.py`

A randomly initialised ConvNeXt (3 stages, widths {list(cfg["widths"])}, {cfg["image_size"]} px input) trained for
{cfg["epochs"]} epochs so each 8x8 digit lands on the **locked** bundled MiniLM's vector of its caption (InfoNCE,
scale {cfg["scale"]}). {result["data"]["train_images"]} training digits captioned with {len(result["data"]["train_wordings"])}
wordings; evaluated on {result["data"]["heldout_images"]} held-out digits with {len(result["data"]["heldout_wordings"])} wordings
never seen in training ({examples}, ...), indexed as PNG files with `index_images` and searched through
`Collection.search`. Training {report["seconds"]:.0f} s with {m["torch_threads"]} torch thread on a shared
{m["cores"]}-core machine ({m["cpu"]}); indexing {result["indexing"]["images_per_second"]} images/s
(read, decode, embed, save).

| held-out digits | text→image P@10 | text→image mAP | image→image P@10 |
|---|---|---|---|
| LiT (trained) | {t2i["lit"]["precision@10"]:.3f} | {t2i["lit"]["mAP"]:.3f} | {i2i["lit"]:.3f} |
| same CNN, untrained | {t2i["untrained_cnn"]["precision@10"]:.3f} | {t2i["untrained_cnn"]["mAP"]:.3f} | {i2i["untrained_cnn"]:.3f} |
| raw pixels (64-d), cosine | n/a (no text side) | n/a | {i2i["raw_pixels_cosine"]:.3f} |
| chance | 0.100 | {t2i["chance"]["mAP"]:.3f} | 0.100 |

The training wordings as queries (same held-out digits): P@10 {seen["precision@10"]:.3f}, mAP {seen["mAP"]:.3f}, so unseen
wordings cost little. This proves the training path on data that is on disk here, not photo-search quality: no
CLIP weights exist offline, so real CLIP retrieval quality is not measured in this repository.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="override LiTConfig.epochs (smoke runs)")
    parser.add_argument("--output", default="images", help="results name (bench/results/NAME.json)")
    parser.add_argument("--markdown-only", action="store_true", help="re-render BENCHMARKS.md from bench/results/NAME.json")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on the shared 2-core box 2 threads ran 6-10x slower per step)")
    args = parser.parse_args()
    if args.markdown_only:
        saved = read_result(args.output)
        if saved is None:
            raise SystemExit(f"no bench/results/{args.output}.json to render")
        update_section("images", markdown(saved))
        return

    import torch

    torch.set_num_threads(args.threads)
    from embedforge.encode import encode
    from embedforge.images import ImageIndexConfig, encode_images, index_images
    from embedforge.images.lit import LiTConfig, _image_encoder, train_lit
    from embedforge.models import load_model, save_model

    pixels, labels, train_idx, test_idx, to_image, captions = digits_split(TRAIN_TEMPLATES)
    # 8x8 digits: a 16 px input and a stride-2 stem (16 -> 8 -> 4 -> 2); the default 64 px is for photos
    config = LiTConfig(image_size=16, patch_size=2, epochs=args.epochs or 40, holdout=0.0)

    text_model = load_model("minilm")
    model, report = train_lit(text_model, [to_image(pixels[i]) for i in train_idx], captions, config)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model(model, Path(tmp) / "lit-digits", base_model="minilm", training={"objective": "lit", **report})
        folder = Path(tmp) / "heldout"
        folder.mkdir()
        for i in test_idx:
            to_image(pixels[i]).save(folder / f"{labels[i]}_{i:04d}.png")
        started = time.perf_counter()
        coll = index_images(Path(tmp) / "coll", str(model_dir), folder, model=model, config=ImageIndexConfig())
        index_seconds = time.perf_counter() - started
        queries = [(t.format(w=WORDS[y], n=y), y) for t in HELDOUT_TEMPLATES for y in range(10)]
        seen = [(t.format(w=WORDS[y], n=y), y) for t in TRAIN_TEMPLATES for y in range(10)]

        def run(qs: list[tuple[str, int]]) -> dict[str, float]:
            relevant = []
            for text, y in qs:
                hits = coll.search([text], top_k=len(coll), model=model)[0]
                relevant.append([int(h.id.split("_")[0]) == y for h in hits])
            rel = np.array(relevant)
            return {"precision@10": precision_at(rel, 10), "mAP": mean_average_precision(rel)}

        lit_heldout, lit_seen = run(queries), run(seen)

    # baselines on the same held-out digits, all in this run
    test_images = [to_image(pixels[i]) for i in test_idx]
    test_labels = labels[test_idx]
    lit_vectors = encode_images(model, test_images)
    raw = pixels[test_idx].reshape(len(test_idx), -1).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True).clip(min=1e-12)
    cnn, processor, projection = _image_encoder(config, lit_vectors.shape[1])  # same seed: the weights training started from
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(processor(test_images, return_tensors="np")["pixel_values"]), dtype=torch.float32)
        untrained = torch.nn.functional.normalize(projection(cnn.eval()(pixel_values=x).pooler_output), dim=-1).numpy()
    query_vectors = encode(text_model, [q for q, _ in queries], normalize=True)
    query_labels = np.array([y for _, y in queries])

    result: dict[str, Any] = {
        "data": {"dataset": "sklearn digits (8x8)", "train_images": len(train_idx), "heldout_images": len(test_idx),
                 "train_wordings": TRAIN_TEMPLATES, "heldout_wordings": HELDOUT_TEMPLATES},
        "text_model": "minilm (locked)",
        "training": report,
        "text_to_image_heldout_wordings": {
            "lit": lit_heldout,
            "untrained_cnn": text_to_image(query_vectors, query_labels, untrained, test_labels),
            "chance": {"precision@10": 0.1, "mAP": float(np.mean([np.mean(test_labels == y) for y in range(10)]))},
            "raw_pixels": None,  # a pixel vector cannot be compared with a text query
        },
        "text_to_image_training_wordings": lit_seen,
        "image_to_image_precision@10": {
            "lit": image_to_image(lit_vectors, test_labels),
            "raw_pixels_cosine": image_to_image(raw, test_labels),
            "untrained_cnn": image_to_image(untrained, test_labels),
            "chance": 0.1,
        },
        "indexing": {"images": len(test_idx), "seconds": round(index_seconds, 2),
                     "images_per_second": round(len(test_idx) / index_seconds, 1)},
        "machine": machine(),
    }
    write_result(args.output, result)
    md = markdown(result)
    if args.epochs is None and args.output == "images":  # smoke runs leave BENCHMARKS.md alone
        update_section("images", md)
    print(md)


if __name__ == "__main__":
    main()
