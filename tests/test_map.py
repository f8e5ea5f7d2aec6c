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


def test_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    coords = project_2d(embeddings(40), method="pca")
    labels = np.repeat([0, 1, 2, -1], 10)
    out = write_png(tmp_path / "m.png", coords, labels, keywords={0: ["alpha", "beta"]})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


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
