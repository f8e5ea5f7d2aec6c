"""A compressed model with an ONNX backend is one model directory, everywhere.

``load_model`` of an ``embedforge compress --quantize onnx-int8`` output runs the int8 ONNX file;
every command that loads models (embed, index, search, serve) then uses it. Checked against the
exact references: the ONNX file run directly by onnxruntime (the backend adds nothing), the fp32
export against PyTorch (same numbers), and int8 against PyTorch fp32 (close, measured).
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from embedforge.cli import main  # noqa: E402
from embedforge.compress import CompressConfig, compress  # noqa: E402
from embedforge.encode import encode  # noqa: E402
from embedforge.models import load_model, read_manifest  # noqa: E402

WORDS = ["river", "engine", "garden", "bridge", "robot", "market", "winter", "letter", "castle", "forest"]
PROBE = ["the river near the castle", "a robot in the winter garden", "letters", "an old engine " * 12]


def texts(n: int) -> list[str]:
    pairs = itertools.islice(itertools.product(WORDS, WORDS, WORDS), n)
    return [f"the {a} near the {b} and a {c}" for a, b, c in pairs]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def int8_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "model"
    compress(str(tiny_model_dir), "texts", out, CompressConfig(quantize="onnx-int8"), texts=texts(60))
    return out


@pytest.fixture(scope="module")
def torch_ref(tiny_model_dir: Path) -> np.ndarray:
    return encode(load_model(tiny_model_dir), PROBE)  # (4, 32) the teacher, fp32 PyTorch


def run_onnx_directly(model_dir: Path, file: str, batch: list[str]) -> np.ndarray:
    """The reference for the backend: onnxruntime on the tokenizer's output, no embedforge code."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    session = ort.InferenceSession(str(model_dir / file), providers=["CPUExecutionProvider"])
    feats = tok(batch, padding=True, truncation=True, max_length=64, return_tensors="np")
    feeds = {i.name: np.asarray(feats[i.name], dtype=np.int64) for i in session.get_inputs()}
    return np.asarray(session.run(None, feeds)[0])


def test_load_model_runs_the_manifests_onnx_file(int8_dir: Path, torch_ref: np.ndarray) -> None:
    from embedforge.compress.backend import OnnxSentenceTransformer

    manifest = read_manifest(int8_dir)
    assert manifest is not None and manifest["backend"]["file"] == "onnx/model_qint8_dynamic.onnx"
    model = load_model(int8_dir)
    assert isinstance(model, OnnxSentenceTransformer) and model.onnx_file is not None
    got = encode(model, PROBE, batch_size=len(PROBE))
    ref = unit(run_onnx_directly(int8_dir, manifest["backend"]["file"], PROBE))
    np.testing.assert_allclose(got, ref, atol=1e-5)  # it is the int8 file that ran ...
    assert float(np.max(np.abs(got - torch_ref))) > 1e-6  # ... not the PyTorch weights
    cos = np.sum(got * torch_ref, axis=1)
    assert float(cos.min()) > 0.95  # int8 vs fp32 on a random tiny model; MiniLM: tests below (slow)


def test_fp32_export_matches_pytorch_and_fidelity_is_recorded(int8_dir: Path, torch_ref: np.ndarray) -> None:
    from embedforge.compress.backend import onnx_model

    fp32 = encode(onnx_model(int8_dir, "onnx/model.onnx"), PROBE)
    np.testing.assert_allclose(fp32, torch_ref, atol=1e-5)
    fid = read_manifest(int8_dir)["compress"]["fidelity"]  # type: ignore[index]
    assert fid["onnx-fp32"]["max_cosine_deviation_vs_torch"] < 1e-5
    assert fid["onnx-fp32"]["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < fid["onnx-int8"]["max_cosine_deviation_vs_torch"] < 0.05


def test_training_and_gradients_use_pytorch(int8_dir: Path, torch_ref: np.ndarray) -> None:
    import torch

    model = load_model(int8_dir)
    feats = model.tokenize(PROBE)
    with torch.enable_grad():  # e.g. a loss: the PyTorch weights, with gradients
        out = model(feats)["sentence_embedding"]
    assert out.requires_grad
    np.testing.assert_allclose(unit(out.detach().numpy()), torch_ref, atol=1e-5)
    model.train()  # the weights may change from here: the exported file is dropped for good
    model.eval()
    assert model.onnx_file is None  # type: ignore[attr-defined]
    np.testing.assert_allclose(encode(model, PROBE), torch_ref, atol=1e-5)


def test_pickles_for_worker_processes(int8_dir: Path) -> None:
    model = load_model(int8_dir)
    before = encode(model, PROBE)
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(encode(copy, PROBE), before, atol=1e-6)


def test_gpu_device_or_missing_onnxruntime_loads_pytorch(
    int8_dir: Path, torch_ref: np.ndarray, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.util

    from embedforge.compress.backend import OnnxSentenceTransformer, load_backend_model

    spec = read_manifest(int8_dir)["backend"]  # type: ignore[index]
    assert load_backend_model(str(int8_dir), spec, "cuda") is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with caplog.at_level(logging.WARNING):
        model = load_model(int8_dir)
    assert not isinstance(model, OnnxSentenceTransformer) and "onnxruntime" in caplog.text
    np.testing.assert_allclose(encode(model, PROBE), torch_ref, atol=1e-5)


def test_embed_index_search_use_the_compressed_model(int8_dir: Path, tmp_path: Path) -> None:
    docs = texts(30)
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n")
    assert main(["embed", "--model", str(int8_dir), "--input", str(tmp_path / "docs.txt"),
                 "--output", str(tmp_path / "v.npy")]) == 0
    vectors = np.load(tmp_path / "v.npy")
    np.testing.assert_allclose(vectors, encode(load_model(int8_dir), docs), atol=1e-5)
    with open(tmp_path / "corpus.jsonl", "w") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"_id": f"d{i}", "text": text}) + "\n")
    coll = tmp_path / "coll"
    assert main(["index", "--model", str(int8_dir), "--input", str(tmp_path / "corpus.jsonl"),
                 "--collection", str(coll), "--no-progress"]) == 0
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": docs[i]}) + "\n" for i in (3, 17)))
    assert main(["search", "--collection", str(coll), "--queries", str(tmp_path / "q.jsonl"),
                 "--output", str(tmp_path / "run.tsv"), "--top-k", "3"]) == 0
    run = [line.split("\t") for line in (tmp_path / "run.tsv").read_text().splitlines()]
    first = {row[0]: row[1] for row in run if row[2] == "1"}
    assert first == {"q3": "d3", "q17": "d17"}  # a document's own text finds it first


def test_server_answers_with_the_onnx_backend(int8_dir: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from embedforge.serve import ServeConfig, create_app
    from embedforge.serve.server import running_server

    expected = encode(load_model(int8_dir), PROBE, batch_size=len(PROBE))
    config = ServeConfig(model=str(int8_dir), batching=False)
    with running_server(create_app(config)) as url, httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/v1/embeddings", json={"model": int8_dir.name, "input": PROBE})
    assert response.status_code == 200, response.text
    got = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_compressing_a_compressed_model_teaches_with_its_pytorch_weights(int8_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    result = compress(str(int8_dir), "texts", out, CompressConfig(quantize="onnx-fp32"), texts=texts(60))
    assert result.fidelity["onnx-fp32"]["max_cosine_deviation_vs_torch"] < 1e-5
    assert result.fidelity["torch"]["mean_cosine"] == pytest.approx(1.0, abs=1e-6)  # PyTorch copied exactly
    # the teacher's held-out vectors were fp32 PyTorch, not int8 ONNX: the fp32 export matches them
    assert result.fidelity["onnx-fp32"]["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
