"""LiT: the InfoNCE objective on random tensors, a toy task learnt above chance, train-images end to end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from embedforge.cli import main  # noqa: E402
from embedforge.encode import encode  # noqa: E402
from embedforge.errors import InputError  # noqa: E402
from embedforge.images import encode_images, load_image_model  # noqa: E402
from embedforge.images.lit import LiTConfig, lit_infonce, read_pairs, train_lit  # noqa: E402
from embedforge.models import load_model, read_manifest  # noqa: E402

# captions of the four classes: different words, so even a random tiny BERT gives them distinct vectors
CAPTIONS = ["apple", "mountain river at dawn", "quantum physics lecture notes", "red bicycle"]
TOY = LiTConfig(image_size=16, patch_size=2, widths=(8, 16), depths=(1, 1), epochs=25, batch_size=16, lr=1e-2,
                shift=0, holdout=0.0, seed=0)


@pytest.fixture(autouse=True)
def one_thread():  # noqa: ANN201
    """Tiny models train ~10x faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quadrant_image(k: int, rng: np.random.Generator) -> Image.Image:
    """Noise with a bright 6x6 square in quadrant ``k`` (0 top-left .. 3 bottom-right) of a 16x16 image."""
    pixels = (rng.random((16, 16, 3)) * 80).astype(np.uint8)
    r, c = divmod(k, 2)
    pixels[1 + 8 * r : 7 + 8 * r, 1 + 8 * c : 7 + 8 * c] = 255
    return Image.fromarray(pixels)


def test_lit_infonce_matches_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    u, t = torch.randn(5, 8, generator=g), torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)
    targets = torch.tensor([0, 2, 1, 1, 0])
    un = u / u.norm(dim=1, keepdim=True)
    logits = 20.0 * un @ t.T
    expected = -(logits[torch.arange(5), targets] - torch.logsumexp(logits, dim=1)).mean()
    assert float(lit_infonce(u, t, targets, 20.0)) == pytest.approx(float(expected), rel=1e-5)


def test_lit_learns_a_toy_task_above_chance(tiny_hf_dir: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 4
    images = [quadrant_image(int(k), rng) for k in labels]
    text = load_model(tiny_hf_dir)
    model, report = train_lit(text, images, [CAPTIONS[k] for k in labels], replace(TOY, holdout=0.25))
    assert report["pairs"] == 48 and report["distinct_captions"] == 4
    assert report["heldout"]["pairs"] == 16 and report["heldout"]["chance"] == 0.25
    assert report["heldout"]["image_to_caption_recall@1"] >= 0.75
    test_labels = np.arange(40) % 4
    vectors = encode_images(model, [quadrant_image(int(k), rng) for k in test_labels])  # unseen images
    caption_vectors = encode(text, CAPTIONS)
    accuracy = float(np.mean((vectors @ caption_vectors.T).argmax(axis=1) == test_labels))
    assert accuracy >= 0.75, accuracy  # chance is 0.25
    # the text side is locked: the combined model embeds texts exactly as the text model does
    np.testing.assert_allclose(encode(model, CAPTIONS), caption_vectors, atol=1e-6)


def test_read_pairs_refuses_paths_outside_the_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "pairs.tsv").write_text("image\tcaption\na.png\tfine\n../secret.png\tescape\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"pairs.tsv:3: image path '../secret.png' leaves the image root"):
        read_pairs(tmp_path / "pairs.tsv", tmp_path / "root")
    (tmp_path / "bad.tsv").write_text("file\ttext\na.png\tx\n", encoding="utf-8")
    with pytest.raises(InputError, match="expected columns image and caption"):
        read_pairs(tmp_path / "bad.tsv", tmp_path / "root")


def test_train_images_cli_end_to_end(tmp_path: Path, tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "photos"
    root.mkdir()
    lines = ["image\tcaption"]
    for i in range(24):
        quadrant_image(i % 4, rng).save(root / f"q{i}.png")
        lines.append(f"q{i}.png\t{CAPTIONS[i % 4]}")
    (root / "broken.png").write_bytes(b"not a png")
    lines.append("broken.png\ta broken file")
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "lit"
    code = main(["train-images", "--text-model", str(tiny_hf_dir), "--pairs", str(tmp_path / "pairs.tsv"),
                 "--image-root", str(root), "--output", str(out), "--epochs", "2", "--image-size", "16", "--holdout", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "trained an image encoder on 24 pairs" in printed and "skipped 1 unreadable" in printed
    assert (read_manifest(out) or {})["training"]["objective"] == "lit"
    # an existing output is never replaced silently, and the image folder is never an output
    again = ["train-images", "--text-model", str(tiny_hf_dir), "--pairs", str(tmp_path / "pairs.tsv"), "--image-root", str(root)]
    assert main([*again, "--output", str(out)]) == 2
    assert main([*again, "--output", str(root), "--overwrite"]) == 2
    assert "already exists" in capsys.readouterr().err and (root / "q0.png").is_file()
    model = load_image_model(out)  # a plain sentence-transformers directory: loads with no custom code
    assert model.supports("image") and model.supports("text")
    # index the folder with the trained model, then query by text and by image through the CLI
    assert main(["index", "--model", str(out), "--images", str(root), "--collection", str(tmp_path / "coll")]) == 0
    assert main(["search", "--collection", str(tmp_path / "coll"), "--query", CAPTIONS[0], "--top-k", "3"]) == 0
    assert main(["search", "--collection", str(tmp_path / "coll"), "--image", str(root / "q0.png"), "--top-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "indexed the images of" in printed and "(24 images in all" in printed
    assert "  1.   1.0000  q0.png  16x16" in printed
