"""Load a compressed model with the fast encoder its manifest names.

A compressed directory always holds PyTorch weights; when its manifest has
``"backend": {"name": "onnx", "file": "onnx/model_qint8_dynamic.onnx", ...}`` (onnxruntime) or
``"backend": {"name": "openvino", "file": "openvino/model_int8.xml", ...}`` (OpenVINO IR),
:func:`embedforge.models.load_model` (through :func:`load_backend_model`, looked up by name so
``models.py`` stays below this package) returns an :class:`OnnxSentenceTransformer`: the ordinary
``SentenceTransformer`` of that directory whose inference forward pass runs that file instead of
PyTorch. Everything else is the PyTorch model's — tokenizer, ``max_seq_length``, modules (so
:func:`~embedforge.models.model_info` and collection checks see the same model), ``encode`` with
its length-sorted batches — so every command (``embed``, ``index``, ``search``, ``cluster``,
``serve``, ``evaluate``, ``adapt``) uses the fast backend without knowing it exists.

Why not sentence-transformers' own ``backend="onnx"``: it loads through ``optimum``, whose ONNX
package pins an older transformers that breaks sentence-transformers here (issue 15), and it expects
a graph ending at the transformer's token embeddings; ours ends at ``sentence_embedding`` (pooling,
a PCA ``Dense`` layer and ``Normalize`` included, :mod:`embedforge.compress.onnx`).

The graph returns ``sentence_embedding`` only (token embeddings need ``use_pytorch()``). The ONNX
file holds the weights as they were exported. The PyTorch path is used instead whenever
gradients are on (training) and for good once the model is put into training mode (``.train()``):
after that the weights change and the file no longer matches them.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from embedforge.errors import InputError

__all__ = ["OnnxSentenceTransformer", "backend_spec", "load_backend_model", "onnx_model"]

logger = logging.getLogger(__name__)

RUNTIMES = ("onnx", "openvino")  # manifest backend names: onnxruntime runs .onnx files, OpenVINO .xml IR
_SESSION_LOCK = threading.Lock()  # one session per model, also when a server encodes from several threads


def backend_spec(manifest: dict[str, Any] | None) -> dict[str, str] | None:
    """The manifest's ``backend`` entry (``name``, ``file``, ``variant``), or ``None`` for plain PyTorch."""
    spec = (manifest or {}).get("backend")
    if not spec:
        return None
    if not isinstance(spec, dict) or spec.get("name") not in RUNTIMES or not spec.get("file"):
        raise InputError(f"unknown backend in the model manifest: {spec!r} "
                         f"(expected name {' or '.join(map(repr, RUNTIMES))} and a file)")
    return {k: str(v) for k, v in spec.items()}


class OnnxSentenceTransformer(SentenceTransformer):
    """A ``SentenceTransformer`` whose inference forward pass runs an exported graph on the CPU:
    an ONNX file through onnxruntime, or an OpenVINO IR (``.xml``) through OpenVINO."""

    onnx_file: str | None = None  # the graph's path; None: plain PyTorch
    _onnx_session: Any = None  # created on first use (not pickled: pool workers make their own)
    _onnx_inputs: tuple[str, ...] = ()

    @property
    def runtime(self) -> str | None:
        """``"onnx"``, ``"openvino"`` (by the file's suffix), or ``None`` when PyTorch runs."""
        if self.onnx_file is None:
            return None
        return "openvino" if self.onnx_file.endswith(".xml") else "onnx"

    def attach_onnx(self, file: str | os.PathLike[str]) -> None:
        """Run ``file`` (``.onnx`` or OpenVINO ``.xml``) for inference from now on (until training mode)."""
        if str(file).endswith(".xml"):
            import openvino  # noqa: F401  (fail here, at load time, when it is missing)
        else:
            import onnxruntime  # noqa: F401
        self.onnx_file = str(file)
        self._onnx_session = None

    def use_pytorch(self) -> None:
        """Run the PyTorch weights from now on (e.g. to compress or export this model again)."""
        self.onnx_file, self._onnx_session = None, None

    def _session(self) -> Any:
        """The onnxruntime session or OpenVINO compiled model, made on first use with as many threads as
        torch would use here (so ``serve``'s ``torch_threads`` and the per-worker threads of an encode
        pool apply to it too)."""
        with _SESSION_LOCK:
            if self._onnx_session is None:
                if self.runtime == "openvino":
                    from embedforge.compress.openvino import compile_openvino

                    compiled = compile_openvino(str(self.onnx_file), torch.get_num_threads())
                    self._onnx_inputs = tuple(i.get_any_name() for i in compiled.inputs)
                    self._onnx_session = compiled
                else:
                    import onnxruntime as ort

                    options = ort.SessionOptions()
                    options.intra_op_num_threads = torch.get_num_threads()
                    session = ort.InferenceSession(str(self.onnx_file), options, providers=["CPUExecutionProvider"])
                    self._onnx_inputs = tuple(i.name for i in session.get_inputs())
                    self._onnx_session = session
            return self._onnx_session

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        session = self._session()
        if self.runtime == "openvino":
            # one infer request per call: a compiled model's default request is not safe across threads
            request = session.create_infer_request()
            request.infer(feeds)
            return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # copy: the request's buffer
        return session.run(None, feeds)[0]

    def train(self, mode: bool = True) -> Any:
        if mode and self.onnx_file is not None:
            logger.info("training mode: %s is no longer used, the PyTorch weights are", self.onnx_file)
            self.use_pytorch()
        return super().train(mode)

    def forward(self, input: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if self.onnx_file is None or self.training or torch.is_grad_enabled() or "input_ids" not in input:
            return super().forward(input, **kwargs)
        self._session()
        feeds = {n: input[n].detach().cpu().numpy().astype(np.int64, copy=False) for n in self._onnx_inputs}
        vectors = self._run(feeds)  # (batch, dim) float32
        out = dict(input)
        out["sentence_embedding"] = torch.from_numpy(vectors).to(input["input_ids"].device)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state["_onnx_session"] = None
        return state


def onnx_model(directory: str | os.PathLike[str], file: str, device: str = "cpu") -> OnnxSentenceTransformer:
    """The model in ``directory`` with its inference forward pass running ``directory/file`` (ONNX or OpenVINO IR)."""
    path = (Path(directory) / file).resolve()
    if not path.is_file():
        raise InputError("the model's manifest names this backend file, which is missing", path)
    try:
        model = OnnxSentenceTransformer(str(directory), device=device, local_files_only=True)
    except Exception as err:  # a directory that looks like a model but does not load
        first = (str(err).strip().splitlines() or [""])[0]
        raise InputError(f"could not load the model: {type(err).__name__}: {first}", directory) from err
    model.attach_onnx(path)
    return model


def load_backend_model(directory: str, spec: dict[str, Any], device: str) -> SentenceTransformer | None:
    """The hook :func:`embedforge.models.load_model` calls for a manifest with a ``backend`` entry.

    ``None`` (load the PyTorch model) on a GPU device — the ONNX / OpenVINO files are for CPUs — and,
    with a warning, when the runtime is not installed: the directory's PyTorch weights still work.
    """
    checked = backend_spec({"backend": spec})
    if checked is None or device != "cpu":
        return None
    try:
        if checked["name"] == "openvino":
            from embedforge.compress.openvino import require_openvino

            require_openvino("openvino-fp32")  # running the IR needs the runtime only
        else:
            from embedforge.compress.onnx import require_onnx

            require_onnx()
    except InputError as err:
        logger.warning("%s; loading the PyTorch weights of %s instead", err, directory)
        return None
    return onnx_model(directory, checked["file"], device=device)
