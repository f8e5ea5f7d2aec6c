"""Label-free fidelity: how closely a compressed model reproduces its teacher on the user's own texts.

Two numbers, both computed on a held-out slice of the texts the user gave (never trained on):

* **mean cosine** between the student's and the teacher's vector of each text,
  ``mean_i cos(s_i, t_i)``; 1.0 is a perfect copy. When the student's dimension differs from the
  teacher's (a PCA layer), the student's vectors are first mapped back into the teacher's space
  by the projection's transpose (``s_i W``; ``W`` has orthonormal rows) and compared with the
  *centred* teacher vectors ``t_i - mu``: the cosine is then the share of each vector's length that
  survives the projection.
* **k-NN overlap**: for each held-out text, the fraction of its ``k`` nearest neighbours (exact,
  cosine, itself excluded) that the student and the teacher agree on, averaged over texts:
  ``mean_i |N_s(i) ∩ N_t(i)| / k``. It needs no common dimension and measures what search and
  clustering see.

Pure functions on arrays (exact k-NN by a dense similarity matrix, fine for the few thousand
held-out texts this is meant for); :func:`fidelity` bundles them into one ``dict[str, float]``.
"""

from __future__ import annotations

import numpy as np

from embedforge.errors import InputError
from embedforge.vectors import l2_normalize

__all__ = ["mean_cosine", "knn_ids", "knn_overlap", "fidelity"]


def _unit(x: np.ndarray) -> np.ndarray:
    return l2_normalize(x, dtype=np.float64)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """``mean_i cos(a_i, b_i)`` for two ``(n, d)`` arrays of the same shape (rows need not be unit)."""
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"mean_cosine needs two (n, d) arrays of one shape, got {a.shape} and {b.shape}")
    if len(a) == 0:
        raise InputError("mean_cosine needs at least one row")
    return float(np.mean(np.sum(_unit(a) * _unit(b), axis=1)))


def knn_ids(x: np.ndarray, k: int) -> np.ndarray:
    """Exact cosine k nearest neighbours of every row among the other rows: ``(n, k)`` int64 ids.

    Ties are broken by the lower id (a stable sort), so the result is deterministic.
    """
    n = len(x)
    if not 1 <= k < n:
        raise InputError(f"k nearest neighbours need 1 <= k < n texts, got k={k}, n={n}")
    unit = _unit(x)
    sims = unit @ unit.T  # (n, n)
    np.fill_diagonal(sims, -np.inf)  # a text is not its own neighbour
    order = np.argsort(-sims, axis=1, kind="stable")  # (n, n)
    return np.ascontiguousarray(order[:, :k], dtype=np.int64)


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """``mean_i |N_a(i) ∩ N_b(i)| / k`` with ``N`` the exact cosine k-NN of row ``i`` (itself excluded).

    ``a`` and ``b`` embed the same ``n`` texts, in any two dimensions.
    """
    if len(a) != len(b):
        raise InputError(f"knn_overlap needs the same texts on both sides, got {len(a)} and {len(b)} rows")
    ids_a, ids_b = knn_ids(a, k), knn_ids(b, k)
    shared = [len(set(ra.tolist()) & set(rb.tolist())) for ra, rb in zip(ids_a, ids_b, strict=True)]
    return float(np.mean(shared)) / k


def fidelity(
    student: np.ndarray,
    teacher: np.ndarray,
    *,
    k: int = 10,
    projection: np.ndarray | None = None,
    mean: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean cosine and k-NN overlap of ``student`` ``(n, d_s)`` against ``teacher`` ``(n, d_t)``.

    ``projection`` ``(d_s, d_t)`` with ``mean`` ``(d_t,)`` maps a reduced student back to the
    teacher's space (see the module docstring); it is required when ``d_s != d_t``. ``k`` is
    lowered to ``n - 1`` for a tiny hold-out; the key always names the ``k`` asked for.
    """
    if len(student) != len(teacher):
        raise InputError(f"fidelity needs the same texts on both sides, got {len(student)} and {len(teacher)}")
    if len(student) < 2:
        raise InputError("fidelity needs at least 2 held-out texts")
    if projection is not None:
        s_back = np.asarray(student, dtype=np.float64) @ np.asarray(projection, dtype=np.float64)  # (n, d_t)
        t_ref = np.asarray(teacher, dtype=np.float64) - (0.0 if mean is None else np.asarray(mean, dtype=np.float64))
        cos = mean_cosine(s_back, t_ref)
    elif student.shape[1] != teacher.shape[1]:
        raise InputError(
            f"student dimension {student.shape[1]} differs from the teacher's {teacher.shape[1]}: pass its projection"
        )
    else:
        cos = mean_cosine(student, teacher)
    return {
        "mean_cosine": cos,
        f"knn_overlap@{k}": knn_overlap(student, teacher, min(k, len(student) - 1)),
        "holdout_texts": float(len(student)),
    }
