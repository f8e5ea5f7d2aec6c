"""Maps: projection, the self-contained HTML page (checked in headless Chromium), the PNG."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedforge import map as emap
from embedforge.errors import InputError
from embedforge.map import cluster_colors, project_2d, render_html, resolve_projection, write_html, write_png

CHROMIUM = Path("/usr/bin/chromium")


def embeddings(n: int = 60, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_pca_projection_matches_sklearn_up_to_sign_and_scale() -> None:
    from sklearn.decomposition import PCA

    x = embeddings()
    coords = project_2d(x, method="pca")
    assert coords.shape == (60, 2) and coords.dtype == np.float32
    assert coords.min() == 0.0 and np.allclose(coords.max(axis=0), 1.0)
    ref = PCA(n_components=2).fit_transform(x / np.linalg.norm(x, axis=1, keepdims=True))
    for axis in range(2):
        assert abs(np.corrcoef(coords[:, axis], ref[:, axis])[0, 1]) > 0.9999
    assert np.array_equal(coords, project_2d(x, method="pca"))  # deterministic


@pytest.mark.parametrize(("n", "d"), [(60, 16), (7, 3), (300, 32)])
def test_pca_projection_equals_the_svd_of_the_centred_unit_rows_up_to_sign(n: int, d: int) -> None:
    """The projection through scikit-learn gives the coordinates of the plain SVD (the PCA it replaced)."""
    x = embeddings(n, d, seed=n)
    unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float64)
    centred = unit - unit.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T  # (n, 2)
    ref = (ref - ref.min(axis=0)) / np.ptp(ref, axis=0)
    got = project_2d(x, method="pca").astype(np.float64)
    for axis in range(2):
        same, flipped = got[:, axis], 1.0 - got[:, axis]  # a sign flip mirrors the [0, 1] scale
        assert min(np.abs(same - ref[:, axis]).max(), np.abs(flipped - ref[:, axis]).max()) < 1e-5


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_projection_of_tiny_inputs(n: int) -> None:
    coords = project_2d(embeddings(n), method="auto")  # below UMAP_MIN_POINTS: PCA
    assert coords.shape == (n, 2) and np.isfinite(coords).all()


def test_projection_choice_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    assert resolve_projection("auto") == "pca"
    with pytest.raises(InputError, match="umap-learn"):
        resolve_projection("umap")
    with pytest.raises(InputError, match="unknown projection"):
        resolve_projection("tsne")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        project_2d(np.array([[np.nan, 1.0]] * 3))


@pytest.mark.slow
def test_umap_projection_is_seeded() -> None:
    pytest.importorskip("umap")
    x = embeddings(80)
    a, b = project_2d(x, method="umap", seed=3), project_2d(x, method="umap", seed=3)
    assert a.shape == (80, 2) and np.allclose(a, b)


def _payload(page: str) -> dict:
    match = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert match
    return json.loads(match.group(1))


def test_html_is_self_contained_and_escapes_texts() -> None:
    texts = [f"text {i}" for i in range(9)] + ['</script><script>alert("x")</script> & <b>bold</b>']
    labels = np.array([0, 0, 1, 1, 2, 2, -1, 0, 1, 2])
    page = render_html(project_2d(embeddings(10), method="pca"), texts, labels, keywords={0: ["card"]}, title="<t>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched
    assert "<script src" not in page and "http://" not in page and "https://" not in page
    assert "</script><script>alert" not in page and "<title>&lt;t&gt;</title>" in page
    data = _payload(page)
    assert data["t"] == texts and data["c"] == labels.tolist()
    assert {c["id"]: c["keywords"] for c in data["clusters"]}[0] == ["card"]
    assert [c["id"] for c in data["clusters"]] == [0, 1, 2, -1]


def test_colours_and_writes_are_atomic(tmp_path: Path) -> None:
    colors = cluster_colors(np.array([-1, 0, 1, 25]))
    assert colors[-1] == emap.NOISE_COLOR and colors[0] == emap.PALETTE[0]
    assert re.fullmatch(r"#[0-9a-f]{6}", colors[25]) and len(set(colors.values())) == 4
    out = write_html(tmp_path / "m.html", np.zeros((2, 2)), ["a", "b"])
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(InputError, match="coordinates"):
        write_html(tmp_path / "bad.html", np.zeros((3, 2)), ["a", "b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.html"]  # no temp files, no bad.html


def _blobs(k: int = 6, per: int = 40, radius: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` 2D blobs (sd 0.05) on a circle of ``radius`` plus a far one, ``per`` points each: (coords, labels)."""
    rng = np.random.default_rng(seed)
    angles = np.arange(k - 1) * 2 * np.pi / (k - 1)
    centres = np.concatenate([radius * np.stack([np.cos(angles), np.sin(angles)], axis=1), [[3.0, 3.0]]])
    coords = np.concatenate([c + 0.05 * rng.standard_normal((per, 2)) for c in centres])
    return coords, np.repeat(np.arange(k), per)


def test_png_label_texts_pick_the_largest_clusters() -> None:
    labels = np.array([2, 2, 2, 0, 0, 1, 1, 1, 1, -1, -1, -1, -1, -1])
    texts = emap.png_label_texts(labels, {1: ["card", "arrive", "late", "ignored"], 2: []}, max_labels=2)
    assert texts == {1: "card, arrive, late", 2: "cluster 2"}  # by size; no keywords -> its id; noise never
    assert emap.png_label_texts(labels, None, max_labels=10) == {1: "cluster 1", 2: "cluster 2", 0: "cluster 0"}


def _overlaps(boxes: list) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
            if boxes[i].x0 < boxes[j].x1 and boxes[j].x0 < boxes[i].x1
            and boxes[i].y0 < boxes[j].y1 and boxes[j].y0 < boxes[i].y1]


def test_png_labels_do_not_overlap(tmp_path: Path) -> None:
    """Crowded labels (12 clusters, 11 of them close together; written at their medians the labels
    overlap) come out of datamapplot's placement with disjoint boxes."""
    pytest.importorskip("datamapplot")
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation, Text

    coords, labels = _blobs(k=12, per=25, radius=0.3)
    keywords = {c: [f"keyword{c}", "transfer", "exchange", "unused"] for c in range(12)}
    fig = emap.render_png(coords, labels, keywords=keywords, title="crowded")
    try:
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        wanted = {f"keyword{c}, transfer, exchange" for c in range(12)}
        # the labels are Annotations (text + leader line); datamapplot's sizing helpers are invisible Texts
        drawn = [t for ax in fig.axes for t in ax.texts if isinstance(t, Annotation) and t.get_visible()]
        assert sorted(" ".join(t.get_text().split()) for t in drawn) == sorted(wanted)  # each label once
        boxes = [Text.get_window_extent(t, renderer) for t in drawn]  # the text's box, without its line
        assert _overlaps(boxes) == []
        assert _overlaps([boxes[0], boxes[0]]) == [(0, 1)]  # the check itself sees an overlap
    finally:
        plt.close(fig)


def test_overlapping_labels_give_way_to_earlier_ones() -> None:
    """The guarantee behind datamapplot's placement: a label overlapping an earlier (larger cluster's) one goes."""
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation

    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for text, x in (("big cluster", 0.2), ("overlaps big", 0.25), ("far away", 0.8)):
        ax.annotate(text, (x, 0.5), xytext=(x, 0.5), arrowprops={"arrowstyle": "-"})
    assert emap._drop_overlapping_labels(fig) == 1
    assert [t.get_text() for t in ax.texts if isinstance(t, Annotation)] == ["big cluster", "far away"]


def test_png_is_a_valid_picture_with_the_clusters_colours(tmp_path: Path) -> None:
    pytest.importorskip("datamapplot")
    from PIL import Image

    coords, labels = _blobs(k=4, per=30)
    labels[:5] = -1
    out = write_png(tmp_path / "m.png", coords, labels, keywords={0: ["alpha", "beta"]})
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.format == "PNG" and min(img.size) > 600
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    for hex_colour in (emap.PALETTE[0], emap.PALETTE[3]):
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - rgb).sum(axis=1) < 30).sum() > 50  # the clusters' dots are there


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_png_of_tiny_maps_and_a_single_cluster(n: int, tmp_path: Path) -> None:
    """No point, one point, one label: datamapplot's ring placement needs two labels; these still draw."""
    coords = np.random.default_rng(n).random((n, 2)) if n != 5 else np.zeros((5, 2))
    out = write_png(tmp_path / "m.png", coords, None, keywords={0: ["alone"]}, title="tiny")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt

    fig = emap.render_png(coords, None, keywords={0: ["alone"]})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_visible() and t.get_alpha() != 0]
    plt.close(fig)
    assert texts.count("alone") == (1 if n else 0)


def test_png_falls_back_to_matplotlib_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(sys.modules, "datamapplot", None)  # as if datamapplot were not installed
    coords, labels = _blobs(k=3, per=10)
    with caplog.at_level("WARNING", logger="embedforge.map"):
        out = write_png(tmp_path / "m.png", coords, labels, keywords={0: ["alpha", "beta"]})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    warned = [r.getMessage() for r in caplog.records if r.name == "embedforge.map"]
    assert len(warned) == 1 and "datamapplot" in warned[0] and "\n" not in warned[0]


def _chromium_dom(page: Path, tmp_path: Path, fragment: str = "") -> str:
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,700", "--dump-dom", page.as_uri() + fragment,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.mark.skipif(
    not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None,
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
)
def test_html_map_draws_points_in_headless_chromium(tmp_path: Path) -> None:
    n = 57
    texts = [("card payment " if i % 3 == 0 else "exchange rate ") + str(i) for i in range(n)]
    labels = np.arange(n) % 4
    page = write_html(tmp_path / "map.html", project_2d(embeddings(n), method="pca"), texts, labels)
    body = re.search(r"<body[^>]*>", _chromium_dom(page, tmp_path, "#q=card%20payment"))
    assert body, "no <body> in the dumped DOM"
    attrs = dict(re.findall(r'data-([a-z-]+)="(-?\d+)"', body.group(0)))
    assert attrs["points-drawn"] == str(n)
    assert attrs["matches"] == str(sum("card payment" in t for t in texts)) == "19"
    assert int(attrs["painted-pixels"]) > n * 10  # the canvas really holds the dots
