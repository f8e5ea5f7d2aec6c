"""``embedforge map | cluster --images FOLDER`` with a tiny random CLIP model: thumbnails, file-name
examples instead of keywords; wrong input or model exits 2 with one line and writes nothing."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")

from PIL import Image  # noqa: E402
from test_images import build_tiny_clip  # noqa: E402
from test_map import CHROMIUM, _chromium_dom  # noqa: E402

from embedforge.cli import main  # noqa: E402
from embedforge.errors import InputError  # noqa: E402
from embedforge.map import THUMBNAIL_SIDE, render_html, thumbnail_jpeg  # noqa: E402

DARK = [f"dark/d{i}.png" for i in range(4)]
LIGHT = [f"light/l{i}.jpg" for i in range(4)]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"), seed=1)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """Two looks, four images each: near-black and near-white noise (100 x 80), plus an unreadable file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for names, base in ((DARK, 20), (LIGHT, 235)):
        for name in names:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(base + rng.integers(-15, 16, (80, 100, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name)
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _payload(page: str) -> dict:
    match = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert match
    return json.loads(match.group(1))


def _decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def test_thumbnail_is_a_small_jpeg() -> None:
    thumb = _decode(thumbnail_jpeg(Image.new("RGBA", (300, 200), (10, 200, 30, 255))))
    assert thumb.format == "JPEG" and thumb.size == (THUMBNAIL_SIDE, 43) and thumb.mode == "RGB"
    assert np.abs(np.asarray(thumb)[20, 20].astype(int) - [10, 200, 30]).max() < 12  # the colour survives
    with pytest.raises(InputError, match="thumbnails"):
        render_html(np.zeros((2, 2)), ["a", "b"], thumbnails=["x"])


def test_cluster_images_groups_look_alikes_and_names_files(clip_dir, photos, tmp_path, capsys, caplog) -> None:  # type: ignore[no-untyped-def]
    out, summary = tmp_path / "clusters.jsonl", tmp_path / "summary.json"
    code, stdout, err = run(capsys, "cluster", "--model", str(clip_dir), "--images", str(photos), "--k", "2",
                            "--output", str(out), "--summary", str(summary))
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["image"] for r in rows] == sorted(DARK + LIGHT)  # folder order; broken.png skipped
    assert all(set(r) == {"index", "cluster", "image"} for r in rows)
    groups = {frozenset(r["image"] for r in rows if r["cluster"] == c) for c in (0, 1)}
    assert groups == {frozenset(DARK), frozenset(LIGHT)}
    report = json.loads(summary.read_text(encoding="utf-8"))
    assert report["k"] == 2
    for cluster in report["clusters"]:
        assert "keywords" not in cluster and len(cluster["examples"]) == 3
        members = {r["image"] for r in rows if r["cluster"] == cluster["cluster"]}
        assert {e["image"] for e in cluster["examples"]} <= members
    assert "example images" in stdout and "keywords" not in stdout
    assert re.search(r"(dark/d\d\.png|light/l\d\.jpg)", stdout)
    assert "8 images in 2 clusters" in stdout
    assert any("broken.png" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")  # named, skipped


def test_map_images_embeds_thumbnails_and_draws(clip_dir, photos, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import embedforge.map as emap

    drawn: dict = {}
    real = emap.write_png

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        drawn.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(emap, "write_png", spy)
    out, png = tmp_path / "map.html", tmp_path / "map.png"
    code, stdout, err = run(capsys, "map", "--model", str(clip_dir), "--images", str(photos), "--k", "2",
                            "--output", str(out), "--png", str(png))
    assert code == 0, err
    assert "8 images, 2 clusters" in stdout
    page = out.read_text(encoding="utf-8")
    assert "https://" not in page and "http://" not in page  # nothing fetched, the thumbnails are inline
    data = _payload(page)
    assert data["t"] == sorted(DARK + LIGHT) and data["noun"] == "images"
    assert all(c["keywords"] == [] for c in data["clusters"])
    thumbs = [_decode(b) for b in data["img"]]
    assert all(t.format == "JPEG" and t.size == (THUMBNAIL_SIDE, 51) for t in thumbs)  # 100 x 80 -> 64 x 51
    brightness = [float(np.asarray(t).mean()) for t in thumbs]
    assert [b > 128 for b in brightness] == [name.startswith("light") for name in data["t"]]  # each its own image
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = drawn["keywords"]  # the PNG labels each cluster with its most central file's name
    assert sorted(labels) == [0, 1] and all(len(v) == 1 and v[0] in data["t"] for v in labels.values())
    assert {labels[c][0].split("/")[0] for c in labels} == {"dark", "light"}
    if CHROMIUM.exists():
        body = re.search(r"<body[^>]*>", _chromium_dom(out, tmp_path, "#q=dark"))
        assert body
        attrs = dict(re.findall(r'data-([a-z-]+)="(-?\d+)"', body.group(0)))
        assert attrs["points-drawn"] == "8" and attrs["matches"] == "4"
        dom = _chromium_dom(out, tmp_path, "#tip=5")  # point 5's hover card: its thumbnail, then its name
        card = re.search(r'<div id="tip"[^>]*>(.*?)</div>', dom, re.S)
        assert card and 'style="display: block' in card.group(0)
        src = re.search(r'<img src="data:image/jpeg;base64,([^"]+)"', card.group(1))
        assert src and src.group(1) == data["img"][5] and data["t"][5] in card.group(1)


def test_map_images_caps_the_thumbnails(clip_dir, photos, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import embedforge.cli.explore as explore

    monkeypatch.setattr(explore, "MAX_THUMBNAILS", 3)
    out = tmp_path / "map.html"
    code, stdout, err = run(capsys, "map", "--model", str(clip_dir), "--images", str(photos), "--k", "2",
                            "--output", str(out))
    assert code == 0, err
    img = _payload(out.read_text(encoding="utf-8"))["img"]
    assert [b is not None for b in img] == [True] * 3 + [False] * 5
    assert "thumbnails for the first 3 images only" in stdout


@pytest.mark.parametrize("case", ["text model", "file not folder", "both", "neither", "empty folder", "texts as images",
                                  "k above images"])
def test_wrong_input_or_model_exits_2_and_writes_nothing(  # type: ignore[no-untyped-def]
    case, clip_dir, tiny_model_dir, photos, tmp_path, capsys
) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("a card\nan exchange rate\na fee\n", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    source = {
        "text model": ["--images", str(photos)],
        "file not folder": ["--images", str(texts)],
        "both": ["--images", str(photos), "--input", str(texts)],
        "neither": [],
        "empty folder": ["--images", str(tmp_path / "empty")],
        "texts as images": ["--images", str(tmp_path)],  # only texts.txt and sub-folders without images ...
        "k above images": ["--images", str(photos), "--k", "10"],  # 8 images (and a broken file)
    }[case]
    if case == "texts as images":
        for p in photos.rglob("*"):  # ... so remove the photos under tmp_path
            if p.is_file():
                p.unlink()
    model = tiny_model_dir if case == "text model" else clip_dir
    before = sorted(p for p in tmp_path.rglob("*"))
    for command, output in (("map", "m.html"), ("cluster", "c.jsonl")):
        code, stdout, err = run(capsys, command, "--model", str(model), *source, "--output", str(tmp_path / output))
        assert code == 2, (command, stdout, err)
        ours = [line for line in err.splitlines() if line.startswith("embedforge")]  # not the weights' progress bar
        assert len(ours) == 1 and ours[0].startswith(f"embedforge {command}: error:"), err
        expected = {"text model": "embeds texts only", "file not folder": "not a folder",
                    "both": "not both", "neither": "--images FOLDER", "empty folder": "no images found",
                    "texts as images": "no images found", "k above images": "needs at least 10 images, found 9"}[case]
        assert expected in ours[0]
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written


def test_cluster_and_map_of_a_collection_use_its_stored_vectors(clip_dir, photos, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``--collection DIR``: an image collection clusters like its folder (same vectors, no model given) and
    maps with a thumbnail per image read from the files its metadata names; a text collection like --input."""
    coll = tmp_path / "coll"
    assert main(["index", "--model", str(clip_dir), "--images", str(photos), "--collection", str(coll)]) == 0
    from_folder, from_coll = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert run(capsys, "cluster", "--model", str(clip_dir), "--images", str(photos), "--k", "2",
               "--output", str(from_folder))[0] == 0
    code, stdout, err = run(capsys, "cluster", "--collection", str(coll), "--k", "2", "--output", str(from_coll))
    assert code == 0, err
    rows = [json.loads(line) for line in from_coll.read_text(encoding="utf-8").splitlines()]
    folder_rows = [json.loads(line) for line in from_folder.read_text(encoding="utf-8").splitlines()]
    by_image = {r["image"]: r["cluster"] for r in folder_rows}
    assert sorted(r["image"] for r in rows) == sorted(by_image)
    same = {(by_image[r["image"]], r["cluster"]) for r in rows}
    assert len(same) == 2 and len({a for a, _ in same}) == 2  # the same partition (labels may be renamed)
    assert "example images" in stdout
    page = tmp_path / "map.html"
    code, _, err = run(capsys, "map", "--collection", str(coll), "--k", "2", "--output", str(page))
    assert code == 0, err
    data = _payload(page.read_text(encoding="utf-8"))
    assert all(t for t in data["img"]) and len(data["img"]) == len(rows)
    # a text collection: the stored vectors cluster as its texts do through --input
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"{w} card payment {i}\n" if i % 2 else f"{w} exchange rate {i}\n"
                             for i, w in enumerate(["a", "the", "my", "one", "new", "old"])), encoding="utf-8")
    tcoll = tmp_path / "tcoll"
    assert main(["index", "--model", str(clip_dir), "--input", str(texts), "--collection", str(tcoll)]) == 0
    a, b = tmp_path / "ta.jsonl", tmp_path / "tb.jsonl"
    assert run(capsys, "cluster", "--model", str(clip_dir), "--input", str(texts), "--k", "2", "--output", str(a))[0] == 0
    assert run(capsys, "cluster", "--collection", str(tcoll), "--k", "2", "--output", str(b))[0] == 0
    ra = [json.loads(line) for line in a.read_text(encoding="utf-8").splitlines()]
    rb = [json.loads(line) for line in b.read_text(encoding="utf-8").splitlines()]
    assert {r["text"] for r in rb} == {r["text"] for r in ra}
    pair = {r["text"]: r["cluster"] for r in ra}
    assert len({(pair[r["text"]], r["cluster"]) for r in rb}) == 2


def test_collection_source_errors(clip_dir, photos, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    coll = tmp_path / "coll"
    assert main(["index", "--model", str(clip_dir), "--images", str(photos), "--collection", str(coll)]) == 0
    before = sorted(p for p in tmp_path.rglob("*"))
    cases = [
        (["--collection", str(coll), "--model", str(clip_dir)], "drop --model"),
        (["--collection", str(tmp_path / "nope")], "nope"),
        (["--collection", str(coll), "--images", str(photos)], "not both"),
        (["--collection", str(coll), "--k", "20"], "needs at least 20 documents, the collection holds 8"),
        (["--images", str(photos)], "--model is required"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, "cluster", *argv, "--output", str(tmp_path / "c.jsonl"))
        ours = [line for line in err.splitlines() if line.startswith("embedforge")]
        assert code == 2 and len(ours) == 1 and message in ours[0], (argv, err)
    assert sorted(p for p in tmp_path.rglob("*")) == before
