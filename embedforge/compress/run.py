"""``compress``: teacher model + the user's texts -> a smaller / faster model directory with its fidelity.

Order: check everything that can be checked before any work (options against the teacher, the
number of texts, the backend installed), split off the held-out texts, then run what the config
asks for — static distillation, or layer reduction, PCA and ONNX export/quantisation, each on the
previous step's result — and measure the label-free fidelity of every backend on the held-out
texts. The work happens in ``OUTPUT.partial/`` (distillation checkpoints there: re-running the same
command resumes); ``OUTPUT`` appears only at the end, complete.

The result is a normal sentence-transformers directory (PyTorch weights, so every command can load
it) with an ``onnx/`` sub-folder when ONNX was asked for, and manifest entries: ``compress``
(teacher, method, layers kept, dimension, quantisation, measured fidelity, the config) and
``backend`` (which ONNX file :func:`embedforge.models.load_model` runs for inference, through
:mod:`embedforge.compress.backend`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.compress.config import CompressConfig
from embedforge.compress.fidelity import fidelity, knn_overlap
from embedforge.errors import InputError
from embedforge.io import replace_dir, save_npy, write_json
from embedforge.vectors import l2_normalize

__all__ = ["CompressResult", "compress", "split_holdout", "holdout_size"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompressResult:
    output: Path
    method: list[str]
    dimension: int
    layers: int | None  # transformer layers of the result (None for static)
    backend: str  # "torch", "onnx-fp32", "onnx-int8", "openvino-fp32" or "openvino-int8": the manifest's fast path
    fidelity: dict[str, dict[str, float]] = field(default_factory=dict)  # backend -> numbers
    seconds: float = 0.0


def holdout_size(n: int, config: CompressConfig) -> int:
    """How many of ``n`` texts are held out: ``holdout * n`` within ``[min_holdout, max_holdout]``."""
    return int(min(config.max_holdout, max(config.min_holdout, round(config.holdout * n))))


def split_holdout(texts: list[str], config: CompressConfig) -> tuple[list[str], list[str]]:
    """(train, held out): a seeded shuffle of the distinct texts, the held-out slice taken first."""
    unique = list(dict.fromkeys(texts))
    need = config.min_holdout + 2
    if len(unique) < need:
        raise InputError(
            f"compress needs at least {need} distinct texts ({config.min_holdout} held out for the fidelity "
            f"check, 2 to train on), got {len(unique)}"
        )
    random.Random(config.seed).shuffle(unique)
    k = min(holdout_size(len(unique), config), len(unique) - 2)
    return unique[k:], unique[:k]


def _check(config: CompressConfig, teacher: Any, n_train: int) -> int | None:
    """Every option against the loaded teacher; returns the teacher's layer count (None for non-transformers)."""
    from embedforge.compress.layers import count_layers
    from embedforge.compress.pca import min_pca_texts
    from embedforge.models import embedding_dim

    try:
        total: int | None = count_layers(teacher)
    except InputError:
        if config.layers is not None:
            raise
        total = None  # not a transformer (e.g. static): only PCA / ONNX apply
    if config.layers is not None and total is not None and config.layers > total:
        raise InputError(f"--layers {config.layers}: the teacher has only {total} transformer layers")
    dim = embedding_dim(teacher)
    if config.dim is not None:
        if config.dim > dim:
            raise InputError(f"--dim {config.dim} is larger than the model's dimension {dim}")
        if not config.static and n_train < min_pca_texts(config.dim):
            raise InputError(
                f"--dim {config.dim}: PCA needs at least {min_pca_texts(config.dim)} training texts "
                f"(after holding out the fidelity slice), got {n_train}"
            )
    return total


def _work_dir(output: Path, key: dict[str, Any]) -> Path:
    """``OUTPUT.partial``, kept when it was made for the same inputs (so a rerun resumes), else emptied."""
    work = output.with_name(output.name + ".partial")
    stamp = json.dumps(key, sort_keys=True, default=str)
    marker = work / "inputs.json"
    if work.is_dir() and (not marker.is_file() or marker.read_text() != stamp):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(stamp)
    return work


def _cached(path: Path, compute: Any, rows: int) -> np.ndarray:
    if path.is_file():
        arr = np.load(path)
        if len(arr) == rows:
            return arr
    arr = compute()
    save_npy(path, arr)
    return arr


def compress(
    model_name: str,
    train_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: CompressConfig | None = None,
    *,
    texts: list[str] | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
) -> CompressResult:
    """Compress ``model_name`` as ``config`` says, trained/fitted on the texts of ``train_file``; save at ``output``.

    ``texts`` (already read) replaces reading ``train_file``, which is then only recorded.
    """
    from embedforge.corpus import read_texts
    from embedforge.encode import encode
    from embedforge.models import MANIFEST_NAME, embedding_dim, load_model, read_manifest, save_model

    config = config or CompressConfig()
    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError("already exists; choose another --output or pass --overwrite", out)
    if config.quantize is not None:
        from embedforge.compress.onnx import require_onnx

        require_onnx()  # every backend starts from the exported ONNX file
        if config.quantize.startswith("openvino"):
            from embedforge.compress.openvino import require_openvino

            require_openvino(config.quantize)
    if config.static:
        from embedforge.compress.static import require_model2vec

        require_model2vec()
    all_texts = read_texts(train_file) if texts is None else texts
    train, held = split_holdout(all_texts, config)
    teacher = load_model(model_name)
    from embedforge.compress.backend import OnnxSentenceTransformer

    if isinstance(teacher, OnnxSentenceTransformer):  # a compressed model with an ONNX backend: its PyTorch weights teach
        teacher.use_pytorch()
    total_layers = _check(config, teacher, len(train))

    start = time.perf_counter()
    digest = hashlib.sha256("\n".join(all_texts).encode("utf-8", "surrogatepass")).hexdigest()
    work = _work_dir(out, {"model": str(model_name), "texts": digest, "config": config.to_dict()})
    t_held = _cached(work / "teacher_holdout.npy", lambda: encode(teacher, held, normalize=False), len(held))
    info: dict[str, Any] = {"teacher": str(model_name), "method": config.method, "train_texts": len(train),
                            "holdout_texts": len(held), "teacher_layers": total_layers,
                            "teacher_dimension": embedding_dim(teacher), "config": config.to_dict()}
    pca = None
    if config.static:
        from embedforge.compress.static import distill_static
        from embedforge.models import resolve_model

        student = distill_static(resolve_model(model_name), config.dim or config.static_dim)
    else:
        student = teacher
        if config.layers is not None:
            from embedforge.compress.layers import distill, make_student, spread_layers

            keep = spread_layers(int(total_layers or 0), config.layers)
            t_train = _cached(work / "teacher_train.npy", lambda: encode(teacher, train, normalize=False), len(train))
            student = make_student(teacher, keep)
            saved_length = int(student.max_seq_length or 512)
            if config.max_length is not None:
                student.max_seq_length = min(config.max_length, saved_length)
            result = distill(student, train, t_train, work / "checkpoints", epochs=config.epochs,
                             batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed,
                             show_progress=show_progress)
            student.max_seq_length = saved_length
            info["layers"] = {"kept": keep, "count": len(keep), "steps": result.steps,
                              "seconds": round(result.seconds, 2), "final_loss": result.final_loss,
                              "resumed_from": result.resumed_from}
        if config.dim is not None:
            from embedforge.compress.pca import add_pca_layer, fit_pca

            pca = fit_pca(encode(student, train, normalize=False), config.dim)
            student = add_pca_layer(student, pca)
            info["pca"] = {"dimension": pca.dim, "explained_variance_ratio": pca.explained_variance_ratio}

    proj = {} if pca is None else {"projection": pca.components, "mean": pca.mean}
    s_held = encode(student, held, normalize=False)
    fid: dict[str, dict[str, float]] = {"torch": _fidelity(s_held, t_held, config.knn_k, proj)}
    staged = work / "model"
    if staged.exists():
        shutil.rmtree(staged)
    save_model(student, staged, base_model=str(model_name), training={"compress": config.to_dict()})
    backend = "torch"
    if config.quantize is not None:
        from embedforge.compress.backend import onnx_model
        from embedforge.compress.onnx import FP32_FILE, INT8_FILE, ONNX_DIR, export_onnx, quantize_int8

        fp32 = staged / ONNX_DIR / FP32_FILE
        export_onnx(student, fp32)
        files = {"onnx-fp32": f"{ONNX_DIR}/{FP32_FILE}"}
        if config.quantize == "onnx-int8":
            quantize_int8(fp32, staged / ONNX_DIR / INT8_FILE)
            files["onnx-int8"] = f"{ONNX_DIR}/{INT8_FILE}"
        if config.quantize.startswith("openvino"):
            from embedforge.compress.openvino import (
                FP32_XML,
                INT8_XML,
                OV_DIR,
                convert_openvino,
                quantize_openvino,
            )

            convert_openvino(fp32, staged / OV_DIR / FP32_XML)
            files["openvino-fp32"] = f"{OV_DIR}/{FP32_XML}"
            if config.quantize == "openvino-int8":
                quantize_openvino(fp32, staged / OV_DIR / INT8_XML, student, train)  # calibrated on training texts
                files["openvino-int8"] = f"{OV_DIR}/{INT8_XML}"
        for name, rel in files.items():
            o_held = encode(onnx_model(staged, rel), held, normalize=False)  # as every command will run it
            fid[name] = _fidelity(o_held, t_held, config.knn_k, proj)
            fid[name]["max_cosine_deviation_vs_torch"] = _max_cos_dev(o_held, s_held)
        backend = config.quantize
        info["onnx_files"] = files
    info.update({"dimension": embedding_dim(student), "backend": backend, "fidelity": fid})
    manifest = read_manifest(staged) or {}
    manifest["compress"] = info
    if backend != "torch":
        manifest["backend"] = {"name": backend.split("-")[0], "file": info["onnx_files"][backend], "variant": backend}
    write_json(staged / MANIFEST_NAME, manifest)
    replace_dir(staged, out)
    shutil.rmtree(work, ignore_errors=True)
    layers_now = None if config.static else (config.layers or total_layers)
    return CompressResult(output=out, method=config.method, dimension=int(info["dimension"]), layers=layers_now,
                          backend=backend, fidelity=fid, seconds=time.perf_counter() - start)


def _fidelity(student: np.ndarray, teacher: np.ndarray, k: int, proj: dict[str, np.ndarray]) -> dict[str, float]:
    """:func:`fidelity`; without a projection between two dimensions (a static model) only the k-NN overlap."""
    if not proj and student.shape[1] != teacher.shape[1]:  # no common space for a cosine
        return {f"knn_overlap@{k}": knn_overlap(student, teacher, min(k, len(student) - 1)),
                "holdout_texts": float(len(student))}
    return fidelity(student, teacher, k=k, **proj)


def _max_cos_dev(a: np.ndarray, b: np.ndarray) -> float:
    """``max_i |cos(a_i, b_i) - 1|``."""
    an, bn = l2_normalize(a, dtype=np.float64), l2_normalize(b, dtype=np.float64)
    return float(np.max(np.abs(np.sum(an * bn, axis=1) - 1.0)))


