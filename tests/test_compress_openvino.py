"""``compress --quantize openvino-fp32|openvino-int8``: the IR runs inside the model's own SentenceTransformer.

References: the IR run directly by OpenVINO on the tokenizer's output (the backend adds nothing),
PyTorch fp32 (the fp32 IR gives the same numbers), and NNCF int8 against PyTorch (close, measured
in the manifest). The tiny random model stands in for MiniLM; the real model is in bench/compress.py.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

from embedforge.cli import main  # noqa: E402
from embedforge.compress import CompressConfig, compress  # noqa: E402
from embedforge.encode import encode  # noqa: E402
from embedforge.models import load_model, read_manifest  # noqa: E402
from tests.test_compress_backend import PROBE, texts, unit  # noqa: E402


@pytest.fixture(scope="module")
def ov_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ov") / "model"
    compress(str(tiny_model_dir), "texts", out, CompressConfig(quantize="openvino-int8"), texts=texts(60))
    return out


@pytest.fixture(scope="module")
def torch_ref(tiny_model_dir: Path) -> np.ndarray:
    return encode(load_model(tiny_model_dir), PROBE)


def run_ir_directly(model_dir: Path, file: str, batch: list[str]) -> np.ndarray:
    import openvino as ov
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    compiled = ov.Core().compile_model(str(model_dir / file), "CPU")
    feats = tok(batch, padding=True, truncation=True, max_length=64, return_tensors="np")
    feeds = {i.get_any_name(): np.asarray(feats[i.get_any_name()], dtype=np.int64) for i in compiled.inputs}
    return np.asarray(compiled(feeds)[compiled.output(0)])


def test_load_model_runs_the_int8_ir(ov_dir: Path, torch_ref: np.ndarray) -> None:
    from embedforge.compress.backend import OnnxSentenceTransformer

    manifest = read_manifest(ov_dir)
    assert manifest is not None
    assert manifest["backend"] == {"name": "openvino", "file": "openvino/model_int8.xml", "variant": "openvino-int8"}
    model = load_model(ov_dir)
    assert isinstance(model, OnnxSentenceTransformer) and model.runtime == "openvino"
    got = encode(model, PROBE, batch_size=len(PROBE))
    np.testing.assert_allclose(got, unit(run_ir_directly(ov_dir, "openvino/model_int8.xml", PROBE)), atol=1e-5)
    assert float(np.max(np.abs(got - torch_ref))) > 1e-6  # the int8 graph ran, not PyTorch
    assert float(np.sum(got * torch_ref, axis=1).min()) > 0.9
    # static activation scales: a text's vector does not depend on the batch it is encoded in
    one_by_one = np.vstack([encode(model, [t]) for t in PROBE])
    np.testing.assert_allclose(one_by_one, got, atol=2e-3)


def test_fp32_ir_matches_pytorch_and_fidelity_is_recorded(ov_dir: Path, torch_ref: np.ndarray) -> None:
    from embedforge.compress.backend import onnx_model

    # fp32 throughout; OpenVINO's fused kernels (GELU, layer norm) round differently: ~3e-5 per component
    np.testing.assert_allclose(encode(onnx_model(ov_dir, "openvino/model.xml"), PROBE), torch_ref, atol=1e-4)
    fid = read_manifest(ov_dir)["compress"]["fidelity"]  # type: ignore[index]
    assert set(fid) == {"torch", "onnx-fp32", "openvino-fp32", "openvino-int8"}
    assert fid["openvino-fp32"]["max_cosine_deviation_vs_torch"] < 1e-5
    assert 0.0 < fid["openvino-int8"]["max_cosine_deviation_vs_torch"] < 0.1


def test_pickles_and_threads(ov_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = load_model(ov_dir)
    before = encode(model, PROBE)
    np.testing.assert_allclose(encode(pickle.loads(pickle.dumps(model)), PROBE), before, atol=1e-6)
    with ThreadPoolExecutor(4) as pool:  # the server encodes from several threads
        results = list(pool.map(lambda _: encode(model, PROBE, batch_size=len(PROBE)), range(8)))
    for r in results:
        np.testing.assert_allclose(r, before, atol=1e-6)


def test_missing_nncf_is_one_line_and_nothing_written(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    train = tmp_path / "texts.txt"
    train.write_text("\n".join(texts(60)) + "\n", encoding="utf-8")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    out = tmp_path / "out"
    code = main(["compress", "--model", str(tiny_model_dir), "--train-file", str(train), "--output", str(out),
                 "--quantize", "openvino-int8"])
    err = capsys.readouterr().err
    assert code == 2 and "openvino-int8 needs nncf: pip install 'embedforge[compress]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]
