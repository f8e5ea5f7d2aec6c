"""Draw the README's map pictures with the real commands: ``docs/digits-map.png`` and ``docs/banking77-map.png``.

* digits: scikit-learn's 8x8 digits (offline). No CLIP model is available offline, so a LiT image
  encoder is trained into the bundled MiniLM's space on 70 % of the digits (as ``bench/images.py``
  does: captions such as "a handwritten seven", 40 epochs, a 16 px input); the other 30 %, never
  trained on, are written as PNG files and drawn by ``embedforge map --images FOLDER --k 10``.
  Each cluster is labelled with its most central file, named ``DIGIT_INDEX.png``, so the labels
  show which digit a cluster holds; the script prints the clusters' purity against the true digits.
* banking77: ``embedforge map --model minilm --input test.csv --k 77`` on the Banking77 test set
  (``$EMBEDFORGE_DATA/clustering/banking77``).

Both PNGs are reduced to 256 colours (Pillow) to stay small. Run: ``python bench/map_pictures.py [--only digits]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TEMPLATES = ["a handwritten {w}", "the digit {n}", "the number {w}", "a hand-drawn {n}", "digit {w}", "a scanned {n}"]


def shrink(src: Path, dst: Path) -> int:
    """``src`` as a 256-colour PNG at ``dst``; returns its size in bytes."""
    from PIL import Image

    with Image.open(src) as img:
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    return dst.stat().st_size


def digits(tmp: Path, epochs: int) -> None:
    import torch
    from images import digits_split

    from embedforge.cli import main
    from embedforge.images.lit import LiTConfig, train_lit
    from embedforge.models import load_model, save_model

    torch.set_num_threads(1)  # bench/images.py: on a shared 2-core box more threads ran slower
    pixels, labels, train_idx, test_idx, to_image, captions = digits_split(TEMPLATES)
    config = LiTConfig(image_size=16, patch_size=2, epochs=epochs, holdout=0.0)
    model, report = train_lit(load_model("minilm"), [to_image(pixels[i]) for i in train_idx], captions, config)
    model_dir = save_model(model, tmp / "lit-digits", base_model="minilm", training={"objective": "lit", **report})
    print(f"LiT: {report['pairs']} pairs, {report['seconds']:.0f} s, final loss {report['final_loss']:.3f}")
    folder = tmp / "digits"
    folder.mkdir()
    for i in test_idx:
        to_image(pixels[i]).save(folder / f"{labels[i]}_{i:04d}.png")
    html, png = tmp / "digits.html", tmp / "digits.png"
    title = f"{len(test_idx)} held-out scikit-learn digits, LiT image encoder, k-means k = 10"
    code = main(["map", "--model", str(model_dir), "--images", str(folder), "--k", "10", "--output", str(html),
                 "--png", str(png), "--title", title])
    if code:
        raise SystemExit(code)
    page = html.read_text(encoding="utf-8")
    payload = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    truth, found = np.array([int(t.split("_")[0]) for t in payload["t"]]), np.array(payload["c"])
    purity = sum(np.bincount(truth[found == c]).max() for c in set(found.tolist())) / len(truth)
    print(f"cluster purity against the true digits: {purity:.3f} (10 clusters, {len(truth)} digits); "
          f"HTML map {html.stat().st_size / 1e3:.0f} KB")
    print(f"docs/digits-map.png: {shrink(png, DOCS / 'digits-map.png') / 1e3:.0f} KB")


def banking77(tmp: Path, data_dir: Path) -> None:
    from embedforge.cli import main

    html, png = tmp / "banking77.html", tmp / "banking77.png"
    code = main(["map", "--model", "minilm", "--input", str(data_dir / "clustering" / "banking77" / "test.csv"),
                 "--k", "77", "--output", str(html), "--png", str(png),
                 "--title", "Banking77 test set (3,080 texts), all-MiniLM-L6-v2, k-means k = 77"])
    if code:
        raise SystemExit(code)
    print(f"docs/banking77-map.png: {shrink(png, DOCS / 'banking77-map.png') / 1e3:.0f} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["digits", "banking77"], help="draw one picture (default both)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("EMBEDFORGE_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--epochs", type=int, default=40, help="LiT epochs for the digits model")
    args = parser.parse_args()
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "digits"):
            digits(Path(tmp), args.epochs)
        if args.only in (None, "banking77"):
            banking77(Path(tmp), args.data_dir)


if __name__ == "__main__":
    main()
