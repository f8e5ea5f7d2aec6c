"""Compression steps on tiny random models: layer selection, PCA as a Dense layer, ONNX fp32 / int8."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from embedforge.compress.layers import count_layers, layer_list, make_student, spread_layers
from embedforge.compress.pca import add_pca_layer, fit_pca, pca_transform
from embedforge.errors import InputError

SUBJECTS = ["the cat", "a dog", "my neighbour", "the committee", "a small robot", "the river", "our team"]
VERBS = ["watches", "ignores", "builds", "paints", "follows", "measures"]
OBJECTS = ["the moon", "a red bridge", "old maps", "the quiet garden", "new engines", "fresh bread in the morning"]


def sentences(n: int) -> list[str]:
    combos = itertools.product(SUBJECTS, VERBS, OBJECTS)
    return [f"{s} {v} {o}" for s, v, o in itertools.islice(combos, n)]


@pytest.fixture(scope="module")
def teacher4(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A 4-layer tiny BERT with mean pooling and Normalize."""
    from conftest import build_tiny_bert
    from sentence_transformers import SentenceTransformer, models

    hf = build_tiny_bert(tmp_path_factory.mktemp("t4") / "hf", layers=4, seed=3)
    transformer = models.Transformer(str(hf), max_seq_length=64)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")


def test_spread_layers() -> None:
    assert spread_layers(6, 3) == [0, 2, 5]
    assert spread_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert spread_layers(6, 1) == [0]
    assert spread_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(InputError, match="only|choose"):
        spread_layers(4, 5)


def test_make_student_keeps_chosen_layers_and_leaves_teacher(teacher4) -> None:  # type: ignore[no-untyped-def]
    import torch

    student = make_student(teacher4, [0, 3])
    assert count_layers(student) == 2 and count_layers(teacher4) == 4
    assert student[0].auto_model.config.num_hidden_layers == 2
    t_layers, s_layers = layer_list(teacher4)[0], layer_list(student)[0]
    for name, value in s_layers[1].state_dict().items():
        assert torch.equal(value, t_layers[3].state_dict()[name])
    texts = sentences(5)
    assert student.encode(texts).shape == teacher4.encode(texts).shape


def test_student_roundtrips_through_save(teacher4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from embedforge.models import load_model, save_model

    student = make_student(teacher4, [1])
    save_model(student, tmp_path / "s", base_model="t4")
    loaded = load_model(tmp_path / "s")
    assert count_layers(loaded) == 1
    texts = sentences(6)
    np.testing.assert_allclose(loaded.encode(texts), student.encode(texts), atol=1e-6)


def test_pca_layer_output_equals_pca_of_teacher(teacher4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from embedforge.models import load_model, save_model

    fit_texts, test_texts = sentences(120)[:100], sentences(150)[120:]
    fit = fit_pca(teacher4.encode(fit_texts), 8)
    reduced = add_pca_layer(teacher4, fit)
    ref = pca_transform(teacher4.encode(test_texts), fit)  # (n, 8)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)  # the model normalised before, so it does after
    got = reduced.encode(test_texts)
    assert got.shape == (30, 8)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # it is a normal model directory: the layer survives save / load
    save_model(reduced, tmp_path / "pca", base_model="t4")
    np.testing.assert_allclose(load_model(tmp_path / "pca").encode(test_texts), ref, atol=1e-5)


def test_pca_components_orthonormal_and_checked() -> None:
    x = np.random.default_rng(0).normal(size=(50, 10))
    fit = fit_pca(x, 4)
    np.testing.assert_allclose(fit.components @ fit.components.T, np.eye(4), atol=1e-10)
    assert 0 < fit.explained_variance_ratio < 1
    assert fit_pca(x, 10).explained_variance_ratio == pytest.approx(1.0)
    with pytest.raises(InputError, match="dimension"):
        fit_pca(x, 11)
    with pytest.raises(InputError, match="at least 5 texts"):
        fit_pca(x[:4], 4)


def test_onnx_fp32_matches_torch_and_int8_reports_deviation(teacher4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    from embedforge.compress.backend import onnx_model
    from embedforge.compress.onnx import export_onnx, quantize_int8
    from embedforge.compress.run import _max_cos_dev
    from embedforge.encode import encode
    from embedforge.models import save_model

    model = add_pca_layer(teacher4, fit_pca(teacher4.encode(sentences(60)), 16))  # the whole pipeline exports
    out = save_model(model, tmp_path / "m", base_model="t4")
    export_onnx(model, out / "onnx" / "model.onnx")
    quantize_int8(out / "onnx" / "model.onnx", out / "onnx" / "int8.onnx")
    texts = sentences(80)[40:] + ["one", "a much longer text " * 20]  # batches of other sizes and lengths
    ref = model.encode(texts)
    fp32 = onnx_model(out, "onnx/model.onnx")
    assert fp32.get_sentence_embedding_dimension() == 16 and fp32.max_seq_length == 64
    got = encode(fp32, texts, batch_size=7, normalize=False)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert _max_cos_dev(got, ref) < 1e-4
    assert encode(fp32, [], batch_size=4).shape == (0, 16)
    dev8 = _max_cos_dev(encode(onnx_model(out, "onnx/int8.onnx"), texts, batch_size=7), ref)
    assert 0.0 < dev8 < 0.2  # reported, not a promise; a random tiny model is no quantisation benchmark


def test_pca_fit_equals_sklearn() -> None:
    """The exact reference: scikit-learn's full-SVD PCA (components equal up to each one's sign)."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12)) + rng.normal(size=12)  # correlated, off-centre
    fit = fit_pca(x, 5)
    ref = PCA(n_components=5, svd_solver="full").fit(x)
    signs = np.sign(np.sum(fit.components * ref.components_, axis=1))  # (5,) +-1
    np.testing.assert_allclose(fit.components, ref.components_ * signs[:, None], atol=1e-8)
    np.testing.assert_allclose(pca_transform(x, fit), ref.transform(x) * signs, atol=1e-8)
    assert fit.explained_variance_ratio == pytest.approx(float(ref.explained_variance_ratio_.sum()), abs=1e-10)


def test_layer_distillation_moves_the_student_towards_the_teacher(teacher4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The student's MSE to the teacher's vectors on texts it never saw drops with training.

    A random tiny teacher's vectors barely differ from text to text, so its 1-layer student starts
    nearly on top of it; the kept layer is perturbed first, so there is a distance to close.
    """
    import torch

    from embedforge.compress.layers import distill

    texts = sentences(252)
    train, held = texts[:200], texts[200:]
    targets = teacher4.encode(train)  # (200, 32)
    student = make_student(teacher4, [0])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in layer_list(student)[0][0].parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = teacher4.encode(held)

    def mse() -> float:
        return float(np.mean((student.encode(held) - ref) ** 2))

    before = mse()
    result = distill(student, train, targets, tmp_path / "work", epochs=3, batch_size=16, learning_rate=1e-4, seed=0)
    after = mse()
    assert result.steps == 39 and result.resumed_from is None
    assert after < 0.25 * before, (before, after)  # measured: 1.3e-3 -> 8.8e-5
