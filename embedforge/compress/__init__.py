"""Compress a model: fewer layers, fewer dimensions, int8 ONNX, static embeddings; writes a normal model dir.

:func:`compress` runs the steps a :class:`CompressConfig` asks for and measures the result's
label-free fidelity to the teacher on held-out texts (:mod:`embedforge.compress.fidelity`).
"""

from __future__ import annotations

from embedforge.compress.config import QUANTIZE, CompressConfig
from embedforge.compress.run import CompressResult, compress

__all__ = ["CompressConfig", "CompressResult", "QUANTIZE", "compress"]
