"""ONNX export (fp32) and dynamic int8 quantisation, and an encoder that runs the exported file.

The whole sentence-transformers pipeline (transformer, pooling, any ``Dense`` PCA layer,
``Normalize``) is exported as one graph from ``input_ids``/``attention_mask``(/``token_type_ids``)
to ``sentence_embedding``, with ``torch.onnx.export`` on a small wrapper that passes the inputs to
the model by keyword (the export traces positional tensors; sentence-transformers modules take a
features dict). ``onnxruntime.quantization.quantize_dynamic`` then stores the weights of the
matrix multiplications as int8 (one scale per output channel) and quantises activations per batch
at run time — so a text's int8 vector depends slightly on the batch it is encoded in. Optimum's ONNX
exporter is not used: it pins an older transformers that breaks sentence-transformers.

:class:`embedforge.compress.backend.OnnxSentenceTransformer` runs the exported file inside the
model's own ``SentenceTransformer`` (same tokenizer, truncation and batching), which is how every
command loads a compressed model whose manifest names an ONNX backend.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedforge.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "ONNX_DIR",
    "FP32_FILE",
    "INT8_FILE",
    "require_onnx",
    "export_onnx",
    "quantize_int8",
]

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"  # sub-folder of the model directory (where sentence-transformers' own ONNX backend looks)
FP32_FILE = "model.onnx"
INT8_FILE = "model_qint8_dynamic.onnx"
OPSET = 17  # LayerNorm as one op; supported by every onnxruntime of the last years
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def require_onnx() -> None:
    """Raise one clear :class:`InputError` unless ``onnx`` and ``onnxruntime`` are importable."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"--quantize onnx-int8 needs {' and '.join(missing)}: pip install 'embedforge[compress]'"
        )


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, tensors: str) -> dict[str, Any]:
    return dict(tokenizer(list(texts), padding=True, truncation="longest_first", max_length=max_length,
                          return_tensors=tensors))


def export_onnx(model: SentenceTransformer, path: str | os.PathLike[str]) -> list[str]:
    """Write ``model`` (all modules, through ``sentence_embedding``) as an fp32 ONNX file; returns the input names."""
    import torch

    class _ByKeyword(torch.nn.Module):
        def __init__(self, inner: Any, names: list[str]) -> None:
            super().__init__()
            self.inner = inner
            self.names = names

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features = dict(zip(self.names, tensors, strict=True))
            return self.inner(features)["sentence_embedding"]  # (batch, dim)

    tokenizer = model.tokenizer
    # two texts of different lengths, so the traced graph contains the padding path
    sample = _tokenize(tokenizer, ["a short text", "a somewhat longer text for the export, with padding"],
                       model.max_seq_length or 512, "pt")
    names = [n for n in INPUT_NAMES if n in sample]
    wrapper = _ByKeyword(model, names).eval()
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, tuple(sample[n] for n in names), str(target), input_names=names,
            output_names=["sentence_embedding"], dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )
    return names


def quantize_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Dynamic int8 quantisation of an fp32 ONNX file (weights int8, activations quantised per batch).

    Weights get one scale per output channel (``per_channel``): on 600 STS-B test sentences the
    bundled MiniLM's int8 vectors had mean cosine 0.993 (min 0.987) to fp32 this way, against 0.97
    with one scale per tensor (onnxruntime's default), 0.98 with uint8 weights and 0.88 with
    ``reduce_range`` (measured on this project's 2-core AVX2 machines).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
