"""Near-duplicate photos: groups match the exact cosine reference; byte-identical copies always group; the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")

from PIL import Image  # noqa: E402
from scipy.sparse import coo_matrix  # noqa: E402
from scipy.sparse.csgraph import connected_components  # noqa: E402
from test_images import build_tiny_clip  # noqa: E402

from embedforge.cli import main  # noqa: E402
from embedforge.images import encode_images, list_images, load_image_model, open_image  # noqa: E402
from embedforge.images.duplicates import find_duplicate_images  # noqa: E402


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip-dup") / "plain", seed=5)


def make_photos(root: Path) -> Path:
    rng = np.random.default_rng(3)
    root.mkdir()
    base = Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8))
    base.save(root / "a.png")
    shutil.copy(root / "a.png", root / "a_copy.png")  # byte-identical
    base.resize((40, 30)).save(root / "a_small.jpg", quality=90)  # re-encoded and resized
    for name in ("b.png", "c.png", "d.webp"):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(root / name)
    Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8)).save(root / "flat.png")
    (root / "zz_broken.png").write_bytes(b"broken")
    return root


@pytest.mark.parametrize("threshold", [0.9, 0.99, 0.999])
def test_groups_match_the_exact_reference(tmp_path: Path, clip_dir: Path, threshold: float) -> None:
    folder = make_photos(tmp_path / "photos")
    model = load_image_model(clip_dir)
    groups = find_duplicate_images(model, folder, threshold)
    paths = [p for p in list_images(folder) if p.name != "zz_broken.png"]
    vectors = encode_images(model, [open_image(p) for p in paths])
    i, j = np.nonzero(np.triu(vectors @ vectors.T >= threshold, k=1))
    copy = (paths.index(folder / "a.png"), paths.index(folder / "a_copy.png"))
    rows, cols = np.r_[i, copy[0]], np.r_[j, copy[1]]
    _, comp = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(paths),) * 2), directed=False)
    expected = sorted(sorted(paths[k] for k in np.flatnonzero(comp == c)) for c in np.unique(comp) if (comp == c).sum() > 1)
    assert sorted([g.kept, *g.duplicates] for g in groups) == expected
    group = next(g for g in groups if g.kept == folder / "a.png")
    assert folder / "a_copy.png" in group.duplicates
    assert group.cosines[group.duplicates.index(folder / "a_copy.png")] == 1.0


def test_dedupe_images_cli(tmp_path: Path, clip_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_photos(tmp_path / "photos")
    out = tmp_path / "groups.jsonl"
    assert main(["dedupe-images", "--model", str(clip_dir), "--images", str(folder), "--output", str(out), "--threshold", "1.0"]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {"kept": str(folder / "a.png"), "duplicates": [str(folder / "a_copy.png")], "cosines": [1.0]} in lines
    assert "written to" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["dedupe-images", "--model", str(clip_dir), "--images", str(tmp_path / "empty"), "--output", str(tmp_path / "g2.jsonl")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(["dedupe-images", "--model", str(clip_dir), "--images", str(folder), "--output", str(tmp_path / "g.txt")]) == 2
    assert not (tmp_path / "g2.jsonl").exists() and not (tmp_path / "g.txt").exists()
