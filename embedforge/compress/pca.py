"""Dimension reduction by PCA, stored in the model as a ``sentence_transformers.models.Dense`` layer.

Fitted on the model's own vectors of the user's texts ``X`` ``(n, d)``:

    mu = mean_i x_i,    X - mu = U S V^T,    W = V[:, :k]^T  (k, d), rows orthonormal
    y  = W (x - mu) = W x + b,    b = -W mu

so a ``Dense(d, k)`` layer with weight ``W``, bias ``b`` and the identity activation placed after
the model's last module makes ``encode`` return the PCA coordinates (then unit-normalised again
when the model normalised before: cosine on the reduced vectors is what every command uses).
Storing it as a layer, not a side file, keeps the result a normal sentence-transformers directory.
The SVD is numpy's (exact, deterministic up to the sign of each component, which is fixed here so
the largest-magnitude coordinate of each component is positive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embedforge.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["PCAFit", "fit_pca", "pca_transform", "add_pca_layer", "min_pca_texts"]


def min_pca_texts(dim: int) -> int:
    """Texts needed to fit ``dim`` components: ``dim + 1`` (``n`` centred rows span at most ``n - 1``)."""
    return dim + 1


@dataclass(frozen=True)
class PCAFit:
    components: np.ndarray  # (k, d) float64, orthonormal rows, by decreasing variance
    mean: np.ndarray  # (d,) float64
    explained_variance_ratio: float  # share of the total variance the k components keep

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])


def fit_pca(x: np.ndarray, dim: int) -> PCAFit:
    """The top ``dim`` principal components of the rows of ``x`` ``(n, d)``."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if not 1 <= dim <= d:
        raise InputError(f"PCA dimension must be 1..{d} (the model's dimension), got {dim}")
    if n < min_pca_texts(dim):
        raise InputError(f"PCA to {dim} dimensions needs at least {min_pca_texts(dim)} texts to fit on, got {n}")
    mean = x.mean(axis=0)  # (d,)
    centred = x - mean  # (n, d)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(n, d), d)
    comps = vt[:dim]  # (k, d)
    signs = np.sign(comps[np.arange(dim), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    var = s**2
    ratio = float(var[:dim].sum() / var.sum()) if var.sum() > 0 else 1.0
    return PCAFit(components=comps, mean=mean, explained_variance_ratio=ratio)


def pca_transform(x: np.ndarray, fit: PCAFit) -> np.ndarray:
    """``(x - mu) W^T`` ``(n, k)`` float64: the reference the ``Dense`` layer must reproduce."""
    return (np.asarray(x, dtype=np.float64) - fit.mean) @ fit.components.T


def add_pca_layer(model: SentenceTransformer, fit: PCAFit) -> SentenceTransformer:
    """Append the PCA as a ``Dense`` layer (identity activation; then ``Normalize`` if the model ends with one).

    Returns a new model sharing the original's modules; the original is unchanged.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense, Normalize

    modules = list(model)
    normalize = bool(modules) and isinstance(modules[-1], Normalize)
    d = fit.components.shape[1]
    weight = torch.tensor(fit.components, dtype=torch.float32)  # (k, d)
    bias = torch.tensor(-fit.components @ fit.mean, dtype=torch.float32)  # (k,)
    dense = Dense(d, fit.dim, bias=True, activation_function=torch.nn.Identity(), init_weight=weight, init_bias=bias)
    new = modules + [dense] + ([Normalize()] if normalize else [])
    out = SentenceTransformer(modules=new, device=str(model.device))
    out.max_seq_length = model.max_seq_length
    return out
