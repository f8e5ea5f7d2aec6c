"""embedforge: your own, data-specific sentence-embedding model."""

from __future__ import annotations

from embedforge.corpus import Document, PairData, read_documents, read_pairs, read_texts
from embedforge.encode import encode
from embedforge.errors import EmbedforgeError, InputError
from embedforge.models import load_model, read_manifest, resolve_model, save_model

__version__ = "0.1.0"

__all__ = [
    "Document",
    "EmbedforgeError",
    "InputError",
    "PairData",
    "__version__",
    "encode",
    "load_model",
    "read_documents",
    "read_manifest",
    "read_pairs",
    "read_texts",
    "resolve_model",
    "save_model",
]
