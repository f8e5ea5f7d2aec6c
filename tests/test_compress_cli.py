"""``embedforge compress`` end to end on a tiny model: options combine, bad input is one line and exit 2."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import embedforge.cli as cli

WORDS = ["river", "engine", "garden", "bridge", "robot", "market", "winter", "letter", "castle", "forest"]


def write_texts(path: Path, n: int) -> Path:
    pairs = itertools.islice(itertools.product(WORDS, WORDS, WORDS), n)
    path.write_text("\n".join(f"the {a} near the {b} and a {c}" for a, b, c in pairs) + "\n")
    return path


@pytest.fixture()
def run(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    assert "embedforge.cli.compress" in cli.COMMAND_MODULES

    def _run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["compress", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run


def _one_error_line(err: str) -> bool:
    """Exactly one error line and no traceback (loading progress bars may precede it)."""
    return "Traceback" not in err and sum(line.startswith("embedforge compress: error:") for line in err.splitlines()) == 1


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not any(p.name.startswith(out.name) for p in out.parent.iterdir())


@pytest.mark.parametrize(
    ("extra", "n_texts", "message"),
    [
        (["--layers", "3"], 40, "only 2 transformer layers"),
        (["--dim", "33"], 40, "larger than the model's dimension 32"),
        (["--dim", "30"], 45, "PCA needs at least 31 training texts"),
        (["--layers", "0"], 40, "layers must be >= 1"),
        ([], 40, "nothing to do"),
        (["--dim", "4"], 5, "at least 23 distinct texts"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    run, tiny_model_dir: Path, tmp_path: Path, extra: list[str], n_texts: int, message: str  # type: ignore[no-untyped-def]
) -> None:
    texts = write_texts(tmp_path / "texts.txt", n_texts)
    out = tmp_path / "out"
    code, _, err = run("--model", str(tiny_model_dir), "--train-file", str(texts), "--output", str(out), *extra)
    assert code == 2
    assert message in err and _one_error_line(err)
    assert _nothing_written(out)


@pytest.mark.parametrize(("flag", "package"), [(["--quantize", "onnx-int8"], "onnxruntime"), (["--static"], "model2vec")])
def test_backend_not_installed(
    run, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tmp_path: Path, flag: list[str], package: str  # type: ignore[no-untyped-def]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    texts = write_texts(tmp_path / "texts.txt", 40)
    out = tmp_path / "out"
    code, _, err = run("--model", str(tiny_model_dir), "--train-file", str(texts), "--output", str(out), *flag)
    assert code == 2 and f"needs {package}" in err and "pip install" in err
    assert _one_error_line(err) and _nothing_written(out)


def test_existing_output_is_refused(run, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    texts = write_texts(tmp_path / "texts.txt", 40)
    (tmp_path / "out").mkdir()
    code, _, err = run("--model", str(tiny_model_dir), "--train-file", str(texts), "--output", str(tmp_path / "out"),
                       "--dim", "8")
    assert code == 2 and "already exists" in err


def test_layers_pca_int8_combined(run, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    from embedforge.compress.backend import OnnxSentenceTransformer
    from embedforge.compress.layers import count_layers
    from embedforge.encode import encode
    from embedforge.models import load_model, read_manifest

    texts = write_texts(tmp_path / "texts.txt", 120)
    out = tmp_path / "small"
    code, stdout, err = run("--model", str(tiny_model_dir), "--train-file", str(texts), "--output", str(out),
                            "--layers", "1", "--dim", "8", "--quantize", "onnx-int8", "--epochs", "1",
                            "--batch-size", "16", "--no-progress")
    assert code == 0, err
    assert "mean cosine" in stdout and "onnx-int8" in stdout
    assert not (tmp_path / "small.partial").exists()
    manifest = read_manifest(out)
    assert manifest is not None
    info = manifest["compress"]
    assert info["method"] == ["layers", "pca", "onnx-int8"]
    assert info["layers"]["kept"] == [0] and info["teacher_layers"] == 2
    assert info["dimension"] == 8 and manifest["dimension"] == 8
    assert info["teacher"] == str(tiny_model_dir)
    assert manifest["backend"] == {"name": "onnx", "file": "onnx/model_qint8_dynamic.onnx", "variant": "onnx-int8"}
    assert set(info["fidelity"]) == {"torch", "onnx-fp32", "onnx-int8"}
    assert info["fidelity"]["onnx-fp32"]["max_cosine_deviation_vs_torch"] < 1e-4
    for numbers in info["fidelity"].values():
        assert -1.0 <= numbers["mean_cosine"] <= 1.0 and 0.0 <= numbers["knn_overlap@10"] <= 1.0
    # every command loads it with the manifest's int8 backend; its PyTorch weights agree with it
    model = load_model(out)
    assert isinstance(model, OnnxSentenceTransformer) and count_layers(model) == 1
    sample = ["the river near the castle", "a letter"]
    fast = encode(model, sample)
    assert fast.shape == (2, 8)
    model.use_pytorch()
    assert float(np.min(np.sum(encode(model, sample) * fast, axis=1))) > 0.9
    assert json.loads((out / "embedforge.json").read_text())["compress"]["config"]["layers"] == 1


def test_pca_only_and_overwrite(run, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from embedforge.compress.backend import OnnxSentenceTransformer
    from embedforge.models import load_model, read_manifest

    texts = write_texts(tmp_path / "texts.txt", 60)
    out = tmp_path / "pca"
    args = ["--model", str(tiny_model_dir), "--train-file", str(texts), "--output", str(out), "--dim", "4"]
    assert run(*args)[0] == 0
    assert run(*args, "--overwrite")[0] == 0
    manifest = read_manifest(out)
    assert manifest is not None and manifest["compress"]["backend"] == "torch" and "backend" not in manifest
    assert not isinstance(load_model(out), OnnxSentenceTransformer)
    torch_fid = manifest["compress"]["fidelity"]["torch"]
    assert 0.0 < torch_fid["mean_cosine"] <= 1.0 + 1e-9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pca", "texts.txt"]


def test_static_runs_end_to_end_with_model2vec(run, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """model2vec's real distillation of the tiny model (~15 s): another dimension, fidelity by k-NN overlap
    only, a loadable directory whose sentence vector is the normalised mean of its tokens' vectors."""
    pytest.importorskip("model2vec.distill")
    from sentence_transformers.models import StaticEmbedding

    from embedforge.models import load_model, read_manifest

    texts = write_texts(tmp_path / "texts.txt", 60)
    out = tmp_path / "static"
    code, stdout, err = run("--model", str(tiny_model_dir), "--train-file", str(texts), "--output", str(out),
                            "--static", "--dim", "16", "--no-progress")
    assert code == 0, err
    assert "mean cosine" not in stdout and "10-NN overlap" in stdout
    info = read_manifest(out)["compress"]  # type: ignore[index]
    assert info["method"] == ["static"] and info["dimension"] == 16
    assert set(info["fidelity"]["torch"]) == {"knn_overlap@10", "holdout_texts"}  # no common space for a cosine
    model = load_model(out)
    got = model.encode(["the river near the castle"], normalize_embeddings=True)
    assert got.shape == (1, 16)
    static = model[0]
    assert isinstance(static, StaticEmbedding)
    ids = static.tokenizer.encode("the river near the castle", add_special_tokens=False).ids
    mean = static.embedding.weight.detach().numpy()[ids].mean(axis=0)
    mean = mean.astype(np.float64)  # model2vec stores the token vectors in fp16: compare at its precision
    np.testing.assert_allclose(got[0], mean / np.linalg.norm(mean), atol=2e-3)  # no transformer: a mean of token rows
