"""OpenVINO: the exported ONNX graph converted to OpenVINO IR (fp32), and calibrated int8 with NNCF.

Built on the plain ``openvino`` runtime and ``nncf`` (both install beside our torch and
transformers); ``optimum-intel`` is not used because it replaces torch with a CUDA build and
downgrades transformers (issue 15). The input is the fp32 ONNX file of
:func:`embedforge.compress.onnx.export_onnx` — the whole pipeline up to ``sentence_embedding`` —
so the IR, like the ONNX file, includes pooling, any PCA layer and the normalisation.

``int8`` is NNCF's post-training quantisation (``nncf.quantize``, transformer model type: int8
weights *and* activations, with scales calibrated on real inputs — here batches of the user's own
training texts, never the held-out slice the fidelity is measured on). Unlike onnxruntime's
dynamic int8 the activation scales are fixed, so a text's vector does not depend on its batch.

:class:`embedforge.compress.backend.OnnxSentenceTransformer` runs the ``.xml`` file inside the
model's own ``SentenceTransformer`` when the manifest names the ``openvino`` backend.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedforge.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["OV_DIR", "FP32_XML", "INT8_XML", "require_openvino", "convert_openvino", "quantize_openvino",
           "compile_openvino"]

logger = logging.getLogger(__name__)

OV_DIR = "openvino"
FP32_XML = "model.xml"  # + model.bin beside it
INT8_XML = "model_int8.xml"
CALIBRATION_TEXTS = 300  # NNCF's default subset size; more changed nothing measurable on MiniLM
CALIBRATION_BATCH = 16


def require_openvino(variant: str) -> None:
    """One clear :class:`InputError` unless the runtime (and, for int8, NNCF) is importable."""
    needed = ["openvino"] + (["nncf"] if variant.endswith("int8") else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"--quantize {variant} needs {' and '.join(missing)}: pip install 'embedforge[compress]'")


def convert_openvino(onnx_file: str | os.PathLike[str], xml: str | os.PathLike[str]) -> None:
    """The fp32 ONNX file as OpenVINO IR (``xml`` + its ``.bin``), weights kept in fp32."""
    import openvino as ov

    target = Path(xml)
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_file)), str(target), compress_to_fp16=False)


def quantize_openvino(
    onnx_file: str | os.PathLike[str], xml: str | os.PathLike[str], model: SentenceTransformer, texts: Sequence[str]
) -> None:
    """NNCF post-training int8 of the fp32 graph, calibrated on ``texts`` tokenised by ``model``'s tokenizer."""
    import nncf
    import numpy as np
    import openvino as ov

    calib_texts = list(texts)[:CALIBRATION_TEXTS]
    if not calib_texts:
        raise InputError("openvino-int8 needs training texts to calibrate on")
    ov_model = ov.convert_model(str(onnx_file))
    names = {i.get_any_name() for i in ov_model.inputs}
    length = int(model.max_seq_length or 512)
    batches = []
    for start in range(0, len(calib_texts), CALIBRATION_BATCH):
        enc = model.tokenizer(calib_texts[start:start + CALIBRATION_BATCH], padding=True, truncation=True,
                              max_length=length, return_tensors="np")
        batches.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items() if k in names})
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)  # "dataset smaller than the subset size" etc. are expected here
    try:
        quantized = nncf.quantize(ov_model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(batches))
    finally:
        nncf_logger.setLevel(level)
    target = Path(xml)
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(target), compress_to_fp16=False)


def compile_openvino(xml: str | os.PathLike[str], threads: int) -> Any:
    """The IR compiled for the CPU with ``threads`` inference threads (an ``openvino.CompiledModel``)."""
    import openvino as ov

    core = ov.Core()
    return core.compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": max(1, threads)})
