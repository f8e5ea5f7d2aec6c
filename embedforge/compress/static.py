"""Static embeddings: model2vec's distillation of a transformer into one vector per token.

model2vec (``model2vec.distill``) embeds every vocabulary token with the teacher, reduces the token
vectors by PCA and weights them; a sentence is then the mean of its tokens' vectors, with no
transformer at all. The result is stored as sentence-transformers' ``StaticEmbedding`` module (+
``Normalize``), so it is a normal model directory. Enormous speed, a large quality loss (the issue
measured STS-B 66.1 against the teacher's 82.0): a row of the table, not a default.
"""

from __future__ import annotations

import importlib.util
import tempfile
from typing import TYPE_CHECKING, Any

from embedforge.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["require_model2vec", "distill_static"]


def require_model2vec() -> None:
    """Raise one clear :class:`InputError` unless ``model2vec``'s distillation can be imported."""
    if importlib.util.find_spec("model2vec") is None:
        raise InputError("--static needs model2vec: pip install model2vec skeletoken")
    try:
        import model2vec.distill  # noqa: F401
    except ImportError as err:
        raise InputError(f"--static needs model2vec's distillation ({err}): pip install model2vec skeletoken") from None


def distill_static(model_dir: str, pca_dims: int) -> SentenceTransformer:
    """A ``StaticEmbedding`` + ``Normalize`` model distilled from the transformer in ``model_dir``.

    It has no token limit (``max_seq_length`` is infinite and cannot be set: a mean of token vectors).
    """
    require_model2vec()
    from model2vec.distill import distill
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, StaticEmbedding

    static: Any = distill(model_name=model_dir, pca_dims=pca_dims)
    with tempfile.TemporaryDirectory(prefix="embedforge-static-") as tmp:  # from_model2vec reads a saved model
        static.save_pretrained(tmp)
        module = StaticEmbedding.from_model2vec(tmp)
    return SentenceTransformer(modules=[module, Normalize()], device="cpu")
