"""CLIP fine-tuning: the symmetric loss against its formula, a toy task learnt above chance, the CLI end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from test_images import build_tiny_clip  # noqa: E402
from test_images_lit import CAPTIONS, quadrant_image  # noqa: E402

from embedforge.cli import main  # noqa: E402
from embedforge.encode import encode  # noqa: E402
from embedforge.images import encode_images, load_image_model  # noqa: E402
from embedforge.images.finetune import ClipTuneConfig, clip_infonce, finetune_clip  # noqa: E402
from embedforge.models import read_manifest  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():  # noqa: ANN201
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_clip_infonce_is_clips_loss_when_captions_are_distinct() -> None:
    g = torch.Generator().manual_seed(0)
    u, t = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    logits = 10.0 * torch.nn.functional.normalize(u, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T
    labels = torch.arange(4)
    expected = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    assert float(clip_infonce(u, t, labels, 10.0)) == pytest.approx(float(expected), rel=1e-5)


def test_clip_infonce_counts_repeated_captions_as_one_candidate() -> None:
    g = torch.Generator().manual_seed(1)
    u, t = torch.randn(5, 8, generator=g), torch.randn(2, 8, generator=g)
    targets = torch.tensor([0, 1, 0, 1, 1])
    logits = (5.0 * torch.nn.functional.normalize(u, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T).double()
    i2t = -np.mean([float(logits[i, targets[i]] - torch.logsumexp(logits[i], 0)) for i in range(5)])
    t2i = -np.mean([float(torch.logsumexp(logits[targets == j, j], 0) - torch.logsumexp(logits[:, j], 0)) for j in range(2)])
    assert float(clip_infonce(u, t, targets, 5.0)) == pytest.approx((i2t + t2i) / 2, rel=1e-5)


COLOURS = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30)]


def colour_image(k: int, rng: np.random.Generator) -> Image.Image:
    """A noisy 16x16 image of colour ``k`` (a tiny random ViT separates colours within a few steps)."""
    pixels = np.clip(np.array(COLOURS[k]) + rng.normal(0, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def test_finetuning_a_tiny_clip_learns_a_toy_task(tmp_path: Path) -> None:
    model = load_image_model(build_tiny_clip(tmp_path / "clip", seed=1))
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 4
    test_labels = np.arange(40) % 4
    test_images = [colour_image(int(k), rng) for k in test_labels]

    def accuracy() -> float:
        vectors = encode_images(model, test_images)  # images never trained on
        return float(np.mean((vectors @ encode(model, CAPTIONS).T).argmax(axis=1) == test_labels))

    before = accuracy()
    report = finetune_clip(model, [colour_image(int(k), rng) for k in labels], [CAPTIONS[k] for k in labels],
                           ClipTuneConfig(epochs=6, batch_size=16, lr=3e-4, holdout=0.0, seed=0))
    assert report["pairs"] == 48 and report["steps"] == 18
    after = accuracy()
    assert after >= 0.9 and after > before, (before, after)  # chance is 0.25


def test_train_images_with_a_clip_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = build_tiny_clip(tmp_path / "clip", layout="st")
    rng = np.random.default_rng(2)
    (tmp_path / "img").mkdir()
    lines = ["image\tcaption"] + [f"q{i}.png\t{CAPTIONS[i % 4]}" for i in range(20)]
    for i in range(20):
        quadrant_image(i % 4, rng).save(tmp_path / "img" / f"q{i}.png")
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "tuned"
    args = ["train-images", "--clip-model", str(clip), "--pairs", str(tmp_path / "pairs.tsv"), "--image-root", str(tmp_path / "img"),
            "--output", str(out), "--epochs", "1", "--batch-size", "8"]
    assert main([*args, "--image-size", "32"]) == 2  # LiT-only option
    assert "--image-size applies to LiT" in capsys.readouterr().err
    assert not out.exists()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned the CLIP model on 18 pairs" in printed and "held out 2 pairs" in printed
    assert (read_manifest(out) or {})["training"]["objective"] == "clip-infonce"
    assert encode_images(load_image_model(out), [quadrant_image(0, rng)]).shape == (1, 16)
