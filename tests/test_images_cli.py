"""``embedforge index --images`` and ``search --image`` with a tiny random CLIP model; bad input exits 2, leaves nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("PIL")

from conftest import DATA_DIR  # noqa: E402
from test_images import build_tiny_clip, make_folder  # noqa: E402

from embedforge.cli import main  # noqa: E402
from embedforge.collection import Collection  # noqa: E402

PHOTOS = DATA_DIR / "images" / "images"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip-cli") / "st", layout="st")


def test_index_and_search_images(tmp_path: Path, clip_dir: Path, capsys: pytest.CaptureFixture[str],
                                 caplog: pytest.LogCaptureFixture) -> None:
    folder = make_folder(tmp_path / "photos")
    coll = tmp_path / "coll"
    with caplog.at_level(logging.WARNING):
        assert main(["index", "--model", str(clip_dir), "--images", str(folder), "--collection", str(coll)]) == 0
    assert "broken.jpg" in caplog.text
    assert "(6 images in all" in capsys.readouterr().out
    assert main(["search", "--collection", str(coll), "--image", str(folder / "img3.png"), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("  1.   1.0000  img3.png  30x29")
    assert main(["search", "--collection", str(coll), "--query", "a photo of a cat", "--top-k", "6"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    # a second run adds nothing new: the same images are refused as duplicates unless --upsert
    assert main(["index", "--model", str(clip_dir), "--images", str(folder), "--collection", str(coll)]) == 2
    assert "duplicate id" in capsys.readouterr().err
    assert main(["index", "--model", str(clip_dir), "--images", str(folder), "--collection", str(coll), "--upsert"]) == 0
    assert len(Collection.open(coll)) == 6


def test_image_to_text_through_the_cli(tmp_path: Path, clip_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [line.split("\t") for line in (DATA_DIR / "images" / "captions.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    corpus = tmp_path / "captions.jsonl"
    corpus.write_text("".join(json.dumps({"_id": r[0], "text": r[1]}) + "\n" for r in rows), encoding="utf-8")
    assert main(["index", "--model", str(clip_dir), "--input", str(corpus), "--collection", str(tmp_path / "texts"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "--collection", str(tmp_path / "texts"), "--image", str(PHOTOS / "coffee.png"), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.split()[2].endswith((".png", ".jpg")) for line in lines)  # caption ids are file names


def test_bad_input_exits_2_and_leaves_nothing(tmp_path: Path, clip_dir: Path, tiny_hf_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["index", "--model", str(clip_dir), "--images", str(tmp_path / "empty"), "--collection", str(tmp_path / "c1")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert not (tmp_path / "c1").exists()
    # a text-only model cannot index images ...
    folder = make_folder(tmp_path / "photos", n=3)
    assert main(["index", "--model", str(tiny_hf_dir), "--images", str(folder), "--collection", str(tmp_path / "c2")]) == 2
    assert "embeds texts only" in capsys.readouterr().err
    assert not (tmp_path / "c2").exists()
    # ... nor answer an image query
    texts = tmp_path / "texts.txt"
    texts.write_text("one text\nanother text\n", encoding="utf-8")
    assert main(["index", "--model", str(tiny_hf_dir), "--input", str(texts), "--collection", str(tmp_path / "t"), "--no-progress"]) == 0
    assert main(["search", "--collection", str(tmp_path / "t"), "--image", str(folder / "img0.png")]) == 2
    assert "embeds texts only" in capsys.readouterr().err
    # texts are not added to an image collection, nor images to a text one
    assert main(["index", "--model", str(clip_dir), "--images", str(folder), "--collection", str(tmp_path / "i")]) == 0
    before = sorted(p.name for p in (tmp_path / "i").iterdir())
    assert main(["index", "--model", str(clip_dir), "--input", str(texts), "--collection", str(tmp_path / "i")]) == 2
    assert "is an image collection" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "i").iterdir()) == before
    # an image query is dense only
    assert main(["search", "--collection", str(tmp_path / "i"), "--image", str(folder / "img0.png"), "--mode", "hybrid"]) == 2
    assert "searched by its vector only" in capsys.readouterr().err
    assert main(["search", "--collection", str(tmp_path / "i"), "--image", str(tmp_path / "missing.png")]) == 2
    assert "no such image file" in capsys.readouterr().err
