"""A picture of a corpus: 2D projection, a self-contained interactive HTML page, a PNG.

* :func:`project_2d` — UMAP (cosine, seeded) when ``umap-learn`` is installed, else PCA.
* :func:`render_html` / :func:`write_html` — one HTML file (the page is ``static/map.html``), no network: the data sits inline as
  JSON and a small inline script draws the points on a ``<canvas>``. Hover shows a text and its
  cluster's keywords (an image map: the image's thumbnail and file name), colour = cluster, a
  search box (or ``#q=word`` in the URL) highlights the texts containing a string; ``#tip=i``
  opens point i's hover card. When drawn the script sets ``data-points-drawn``, ``data-matches``
  and ``data-painted-pixels`` on ``<body>`` so a headless browser can check the result.
* :func:`render_png` / :func:`write_png` — a static picture drawn by ``datamapplot`` (labels placed
  without overlap), plain matplotlib when datamapplot is not installed.

Every file is written atomically.
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
import json
import logging
import os
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from embedforge.errors import InputError
from embedforge.io import atomic_write
from embedforge.vectors import as_embeddings

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

__all__ = ["Projection", "resolve_projection", "project_2d", "cluster_colors", "thumbnail_jpeg", "render_html", "write_html", "png_label_texts", "render_png", "write_png"]

logger = logging.getLogger(__name__)

Projection = Literal["auto", "umap", "pca"]
UMAP_MIN_POINTS = 16  # below this UMAP's neighbour graph is degenerate; PCA is used instead
HOVER_TEXT_CHARS = 600  # texts are cut to this many characters in the HTML page
THUMBNAIL_SIDE = 64  # px, longest side of an image's hover thumbnail in the HTML page
THUMBNAIL_QUALITY = 70  # JPEG quality of the thumbnails: ~1.5-3 KB each, base64 included
MAX_THUMBNAILS = 5000  # images past this many (in folder order) show their name only: the page stays < ~15 MB
NOISE_COLOR = "#b0b0b0"
PNG_MAX_LABELS = 30  # clusters labelled in the PNG, largest first (at 40, 6 Banking77 labels touched)
PNG_LABEL_WORDS = 3  # keywords per PNG label
PNG_LABEL_WRAP = 24  # characters per PNG label line
PNG_FIGSIZE = (12.0, 12.0)  # inches; at PNG_DPI a 1200 x 1200 px picture before cropping
PNG_DPI = 100
PNG_SCALE = 20.0  # [0, 1] coordinates are scaled to UMAP's usual extent before datamapplot draws them
# 20 distinguishable colours; clusters past 20 get golden-angle hues (see cluster_colors)
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
    "#31a354", "#756bb1", "#636363", "#fd8d3c",
)  # fmt: skip


def resolve_projection(method: Projection = "auto") -> str:
    """``"umap"`` or ``"pca"``: ``auto`` is UMAP when ``umap-learn`` imports, else PCA."""
    if method not in ("auto", "umap", "pca"):
        raise InputError(f"unknown projection {method!r}; expected auto, umap or pca")
    if method == "pca":
        return "pca"
    try:
        import umap  # noqa: F401
    except ImportError as err:
        if method == "umap":
            raise InputError("projection 'umap' needs umap-learn: pip install 'embedforge[explore]'") from err
        return "pca"
    return "umap"


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components (n, 2) float64 of ``x`` (n, dim); zero columns where there are fewer."""
    from sklearn.decomposition import PCA

    n, dim = x.shape
    components = min(2, n - 1, dim)  # a single point has no direction of variance
    if components < 1:
        return np.zeros((n, 2))
    coords = PCA(n_components=components, svd_solver="full").fit_transform(x.astype(np.float64))  # (n, components)
    return np.pad(coords, ((0, 0), (0, 2 - components)))


def project_2d(emb: np.ndarray, *, method: Projection = "auto", seed: int = 0) -> np.ndarray:
    """2D coordinates (n, 2) float32 for embeddings (n, dim), scaled into [0, 1] on each axis.

    UMAP: ``UMAP(n_components=2, n_neighbors=min(15, n-1), min_dist=0.1, metric="cosine",
    random_state=seed)`` (seeded, hence single-threaded and reproducible). PCA: scikit-learn's
    ``PCA(n_components=2, svd_solver="full")`` of the L2-normalised rows, each axis's sign fixed so
    that its largest coordinate is positive. Fewer than :data:`UMAP_MIN_POINTS` points use PCA.
    """
    x = as_embeddings(emb, normalize=True)  # (n, dim) float32, unit rows
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32)
    chosen = resolve_projection(method)
    if chosen == "umap" and n >= UMAP_MIN_POINTS:
        import umap

        reducer = umap.UMAP(
            n_components=2, n_neighbors=min(15, n - 1), min_dist=0.1, metric="cosine", random_state=seed
        )
        with warnings.catch_warnings():  # "n_jobs overridden by random_state": seeded on purpose
            warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
            coords = np.asarray(reducer.fit_transform(x), dtype=np.float64)
    else:
        coords = _pca_2d(x)
        signs = np.sign(coords[np.argmax(np.abs(coords), axis=0), [0, 1]])  # a fixed sign per axis
        coords = coords * np.where(signs == 0, 1, signs)
    lo, span = coords.min(axis=0), np.ptp(coords, axis=0)
    return ((coords - lo) / np.where(span > 0, span, 1.0)).astype(np.float32)


def cluster_colors(labels: np.ndarray) -> dict[int, str]:
    """A hex colour per label: :data:`PALETTE` in order, golden-angle hues past it, grey for ``-1``."""
    out: dict[int, str] = {}
    for c in sorted(set(np.asarray(labels).tolist())):
        if c < 0:
            out[c] = NOISE_COLOR
        elif c < len(PALETTE):
            out[c] = PALETTE[c]
        else:
            r, g, b = colorsys.hls_to_rgb((c * 0.618033988749895) % 1.0, 0.45, 0.65)
            out[c] = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    return out


def _check(coords: np.ndarray, n: int, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != n:
        raise InputError(f"expected coordinates of shape ({n}, 2), got {xy.shape}")
    lab = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    if lab.shape != (n,):
        raise InputError(f"expected {n} labels, got shape {lab.shape}")
    return xy, lab


def thumbnail_jpeg(image: Image.Image, side: int = THUMBNAIL_SIDE, quality: int = THUMBNAIL_QUALITY) -> str:
    """A small JPEG of ``image`` (longest side ``side`` px, RGB) as base64 text, for a ``data:`` URI."""
    small = image.convert("RGB")
    small.thumbnail((side, side))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality, optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_html(
    coords: np.ndarray,
    texts: Sequence[str],
    labels: np.ndarray | None = None,
    *,
    keywords: Mapping[int, Sequence[str]] | None = None,
    title: str = "embedforge map",
    thumbnails: Sequence[str | None] | None = None,
) -> str:
    """The interactive page as one HTML string (inline data and script, nothing fetched).

    ``thumbnails`` (an image map): per point a base64 JPEG (:func:`thumbnail_jpeg`) or None; hover
    shows it above the text (the image's file name), inline as a ``data:`` URI.
    """
    xy, lab = _check(coords, len(texts), labels)
    if thumbnails is not None and len(thumbnails) != len(texts):
        raise InputError(f"expected {len(texts)} thumbnails, got {len(thumbnails)}")
    colors = cluster_colors(lab)
    sizes = {c: int((lab == c).sum()) for c in colors}
    data = {
        "x": np.round(xy[:, 0], 5).tolist(),
        "y": np.round(xy[:, 1], 5).tolist(),
        "t": [t if len(t) <= HOVER_TEXT_CHARS else t[: HOVER_TEXT_CHARS - 1] + "…" for t in texts],
        "c": lab.tolist(),
        "clusters": [
            {"id": c, "color": colors[c], "size": sizes[c], "keywords": list((keywords or {}).get(c, []))}
            for c in sorted(colors, key=lambda c: (c < 0, c))
        ],
        "noun": "texts" if thumbnails is None else "images",
        "img": None if thumbnails is None else list(thumbnails),
    }
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # inside <script> only "</" could end the element early; \u escapes keep the JSON valid
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    payload = payload.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    template = resources.files("embedforge").joinpath("static/map.html").read_text(encoding="utf-8")  # the page, two slots
    return template.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


def write_html(
    path: str | os.PathLike[str],
    coords: np.ndarray,
    texts: Sequence[str],
    labels: np.ndarray | None = None,
    *,
    keywords: Mapping[int, Sequence[str]] | None = None,
    title: str = "embedforge map",
    thumbnails: Sequence[str | None] | None = None,
) -> Path:
    """Write :func:`render_html`'s page to ``path`` atomically; returns the path."""
    page = render_html(coords, texts, labels, keywords=keywords, title=title, thumbnails=thumbnails)
    with atomic_write(path) as f:
        f.write(page)
    return Path(path)


def png_label_texts(
    labels: np.ndarray, keywords: Mapping[int, Sequence[str]] | None = None, max_labels: int = PNG_MAX_LABELS
) -> dict[int, str]:
    """The PNG's label per cluster, for the ``max_labels`` largest (ties: lower id): its first
    :data:`PNG_LABEL_WORDS` keywords, or ``"cluster c"`` when it has none; noise gets no label."""
    lab = np.asarray(labels, dtype=np.int64)
    ids, counts = np.unique(lab[lab >= 0], return_counts=True)
    order = sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda ic: (-ic[1], ic[0]))
    out: dict[int, str] = {}
    for c, _ in order[: max(max_labels, 0)]:
        words = list((keywords or {}).get(c, []))[:PNG_LABEL_WORDS]
        out[c] = ", ".join(words) if words else f"cluster {c}"
    return out


def render_png(
    coords: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    keywords: Mapping[int, Sequence[str]] | None = None,
    title: str = "embedforge map",
    max_labels: int = PNG_MAX_LABELS,
) -> Figure:
    """The static map as a matplotlib ``Figure`` (Agg; the caller saves and closes it).

    With ``datamapplot`` (the ``explore`` extra): its ``render_plot``, colours from
    :func:`cluster_colors` (as in the HTML page), the labels of :func:`png_label_texts` placed by
    datamapplot around the points with leader lines so that no two overlap, system fonts only
    (nothing is downloaded). Without it: a plain matplotlib scatter plot, labels at each cluster's
    median (they may overlap), and one warning.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
    except ImportError as err:
        raise InputError("the PNG map needs matplotlib: pip install 'embedforge[explore]'") from err
    xy, lab = _check(coords, len(coords), labels)
    texts = png_label_texts(lab, keywords, max_labels)
    if len(xy) == 0:
        return _render_png_matplotlib(xy, lab, texts, title)  # an empty frame with its title
    try:
        import datamapplot
    except ImportError:
        logger.warning("datamapplot is not installed: drawing the PNG with plain matplotlib, labels may overlap "
                       "(pip install 'embedforge[explore]')")
        return _render_png_matplotlib(xy, lab, texts, title)
    colors = cluster_colors(lab)
    if len(xy):  # datamapplot's glow and label radii suit UMAP-sized maps: scale to [0, PNG_SCALE]
        span = np.ptp(xy, axis=0)
        xy = (xy - xy.min(axis=0)) / np.where(span > 0, span, 1.0) * PNG_SCALE
    # datamapplot's ring placement needs two labels (one gives NaN directions): a lone label is added below
    ids = list(texts) if len(texts) > 1 else []
    locations = np.array([np.median(xy[lab == c], axis=0) for c in ids]).reshape(-1, 2)  # (labels, 2)
    with warnings.catch_warnings():  # datamapplot's and numba's warnings are not the user's to act on
        warnings.simplefilter("ignore")
        fig, ax = datamapplot.render_plot(
            xy, [colors[c] for c in lab.tolist()],
            [textwrap.fill(texts[c], PNG_LABEL_WRAP, break_long_words=False) for c in ids],
            locations, np.array([int((lab == c).sum()) for c in ids]),
            title=title, title_keywords={"fontsize": 18, "fontweight": "bold"}, figsize=PNG_FIGSIZE, dpi=PNG_DPI,
            point_size=float(np.clip(60_000 / max(len(xy), 1), 6, 60)), alpha=0.85, noise_color=NOISE_COLOR,
            use_system_fonts=True, font_family="DejaVu Sans", label_over_points=False, dynamic_label_size=False,
        )
    for c, text in texts.items() if not ids else ():
        ax.annotate(text, np.median(xy[lab == c], axis=0), xytext=(0, 14), textcoords="offset points",
                    ha="center", fontsize=12, fontfamily="DejaVu Sans")
    dropped = _drop_overlapping_labels(fig)
    if dropped:
        logger.info("dropped %d PNG labels that datamapplot could not place clear of larger clusters' labels", dropped)
    return fig


def _drop_overlapping_labels(fig: Figure) -> int:
    """Remove every label (an ``Annotation``) whose text box overlaps an earlier one; returns how many.

    datamapplot's ring placement keeps labels apart in most maps but not always (6 of 40 Banking77
    labels touched); labels are created largest cluster first, so a smaller cluster's label gives way.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Annotation, Text

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()  # run the layout engine: boxes measured as they will be saved
    renderer = canvas.get_renderer()
    kept: list = []
    dropped = 0
    for ax in fig.axes:
        for label in [t for t in ax.texts if isinstance(t, Annotation) and t.get_visible()]:
            box = Text.get_window_extent(label, renderer)  # the text alone, not its leader line
            if any(box.overlaps(other) for other in kept):
                label.remove()
                dropped += 1
            else:
                kept.append(box)
    return dropped


def _render_png_matplotlib(xy: np.ndarray, lab: np.ndarray, texts: Mapping[int, str], title: str) -> Figure:
    """The fallback without datamapplot: scatter, labels at cluster medians, limits at the 0.5-99.5 % quantiles."""
    from matplotlib.figure import Figure

    colors = cluster_colors(lab)
    fig = Figure(figsize=PNG_FIGSIZE, dpi=PNG_DPI)
    ax = fig.add_subplot(1, 1, 1)
    size = float(np.clip(6000 / max(len(xy), 1), 4, 40))
    ax.scatter(xy[:, 0], xy[:, 1], s=size, c=[colors[c] for c in lab.tolist()], alpha=0.8, linewidths=0)
    for c, text in texts.items():
        mx, my = np.median(xy[lab == c], axis=0)
        ax.annotate(text, (mx, my), fontsize=8, ha="center",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colors[c], "alpha": 0.8})
    if len(xy) >= 20:
        lo, hi = np.quantile(xy, 0.005, axis=0), np.quantile(xy, 0.995, axis=0)
        pad = (hi - lo) * 0.05
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def write_png(
    path: str | os.PathLike[str],
    coords: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    keywords: Mapping[int, Sequence[str]] | None = None,
    title: str = "embedforge map",
    max_labels: int = PNG_MAX_LABELS,
) -> Path:
    """:func:`render_png`'s picture written atomically as PNG (cropped to what is drawn); returns the path."""
    fig = render_png(coords, labels, keywords=keywords, title=title, max_labels=max_labels)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.15)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)  # datamapplot draws on a pyplot figure; free it
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return Path(path)
