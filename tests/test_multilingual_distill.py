"""Multilingual distillation on tiny random models: reading parallel files, the held-out split, the
student moving onto the teacher, a projection between dimensions, resuming, bad input (exit 2)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_bert
from transformers import TrainerCallback

from embedforge.cli import main
from embedforge.errors import InputError
from embedforge.multilingual.distill import (
    DistillConfig,
    distill_multilingual,
    embedding_mse,
    read_parallel,
    split_heldout,
    translation_top1,
)
from embedforge.train.trainer import partial_dir

# A toy language: every English word spelt backwards (its own word pieces, nothing shared with English).
WORDS = ["cat", "dog", "house", "river", "green", "small", "runs", "eats", "red", "tree",
         "bird", "sings", "old", "man", "woman", "child", "sun", "moon", "blue", "fast"]
_rng = random.Random(0)
ENGLISH = sorted({" ".join(_rng.sample(WORDS, 3)) for _ in range(150)})
TOY = [(e, " ".join(w[::-1] for w in e.split())) for e in ENGLISH]


def fast(**kw: object) -> DistillConfig:
    base: dict[str, object] = {"batch_size": 16, "learning_rate": 3e-3, "max_steps": 2, "warmup_ratio": 0.0,
                               "heldout_fraction": 0.2, "save_steps": 1000, "max_length": 16}
    return DistillConfig(**{**base, **kw})  # type: ignore[arg-type]


def _sentence_model(path: Path, *, hidden: int, seed: int, prompts: dict[str, str] | None = None) -> Path:
    from sentence_transformers import SentenceTransformer, models

    from embedforge.models import embedding_dim, save_model

    hf = build_tiny_bert(path.with_name(path.name + "-hf"), hidden=hidden, seed=seed)
    transformer = models.Transformer(str(hf), max_seq_length=64)
    pooling = models.Pooling(embedding_dim(transformer), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu", prompts=prompts)
    save_model(model, path, base_model="tiny-random-bert")
    return path


@pytest.fixture(scope="module")
def static_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random word vectors, mean-pooled: a teacher whose sentences are far apart. (The tiny random BERT's
    vectors of any two sentences have cosine ~0.94, so no student could separate them by matching it.)"""
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.models import StaticEmbedding
    from transformers import AutoTokenizer

    from embedforge.models import resolve_model, save_model

    tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    weights = np.random.default_rng(0).standard_normal((tok.vocab_size, 32)).astype(np.float32)
    model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=weights), models.Normalize()], device="cpu")
    out = tmp_path_factory.mktemp("static-teacher") / "model"
    save_model(model, out, base_model="random-static")
    return out


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sentence_model(tmp_path_factory.mktemp("student") / "s32", hidden=32, seed=1)


@pytest.fixture(scope="module")
def distilled(static_teacher: Path, student_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("distilled") / "model"
    return distill_multilingual(str(static_teacher), str(student_dir), {"xx": TOY}, out, fast(max_steps=25),
                                show_progress=False)


# --- reading ----------------------------------------------------------------------------------------

def test_reads_tsv_with_several_translations_and_mine_bitext_output(tmp_path: Path) -> None:
    f = tmp_path / "de.tsv"
    f.write_text("the cat\tdie Katze\tle chat\r\nsay \"hi\"\tsag \"hallo\"\n", encoding="utf-8")
    assert read_parallel(f) == [("the cat", "die Katze"), ("the cat", "le chat"), ('say "hi"', 'sag "hallo"')]
    mined = tmp_path / "mined.tsv"  # csv-quoted, as `embedforge mine-bitext` writes it
    mined.write_text('score\tsource_index\ttarget_index\tsource_text\ttarget_text\n'
                     '1.2\t0\t3\tsay "hi"\t"sag ""hallo"""\n', encoding="utf-8")
    assert read_parallel(mined) == [('say "hi"', 'sag "hallo"')]


@pytest.mark.parametrize(("content", "line", "message"), [
    ("a b\tx y\nonly english\n", 2, "1 column"),
    ("a b\tx y\n\nc d\tz w\n", 2, "empty line"),
    ("a b\t \n", 1, "column 2 is empty"),
    ("", None, "empty file"),
    ("\n\n", None, "empty file"),
])
def test_bad_parallel_files_name_the_line(tmp_path: Path, content: str, line: int | None, message: str) -> None:
    f = tmp_path / "bad.tsv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as err:
        read_parallel(f)
    assert err.value.path == str(f) and err.value.line == line


# --- held-out split and metrics ---------------------------------------------------------------------

def test_heldout_strings_are_absent_from_training_in_every_language() -> None:
    en = [f"sentence number {i}" for i in range(40)]
    parallel = {"de": [(e, f"Satz {e}") for e in en], "fr": [(e, f"phrase {e}") for e in en[:30]]}
    train, held = split_heldout(parallel, 0.25, seed=3)
    held_en = {e for pairs in held.values() for e, _ in pairs}
    assert len(held_en) == 10 and {e for e, _ in held["de"]} == held_en
    trained = {text for pairs in train.values() for pair in pairs for text in pair}
    assert not trained & held_en and not trained & {t for pairs in held.values() for _, t in pairs}
    assert sum(len(p) for p in train.values()) + sum(len(p) for p in held.values()) == 70
    assert split_heldout(parallel, 0.25, seed=3) == (train, held)  # seeded
    assert split_heldout(parallel, 0.0, seed=3)[1] == {"de": [], "fr": []}


def test_top1_and_mse_on_arrays() -> None:
    x = np.eye(4, dtype=np.float32)
    assert translation_top1(x, x) == 1.0
    assert translation_top1(x, x[[1, 0, 2, 3]]) == 0.5
    assert embedding_mse(x, x) == 0.0 and embedding_mse(x, np.zeros_like(x)) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        translation_top1(x, x[:3])


def test_evaluation_of_a_student_not_yet_projected(tiny_model_dir: Path, tmp_path: Path) -> None:
    from embedforge.models import load_model
    from embedforge.multilingual.distill import evaluate_translation

    student = load_model(_sentence_model(tmp_path / "s48", hidden=48, seed=2))
    res = evaluate_translation(load_model(tiny_model_dir), student, {"xx": TOY[:10], "yy": []})
    assert set(res) == {"xx", "mean"} and res["xx"]["n"] == 10
    assert 0 <= res["xx"]["top1"] <= 1 and 0 <= res["xx"]["teacher_top1"] <= 1
    assert np.isnan(res["xx"]["mse"])  # 48 student dimensions against 32 of the teacher


# --- training ---------------------------------------------------------------------------------------

def test_translations_move_onto_the_teachers_vectors(distilled, static_teacher: Path, student_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from embedforge.encode import encode
    from embedforge.models import load_model, read_manifest

    r = distilled.heldout["xx"]
    assert r["n"] == 30 == distilled.heldout_strings and distilled.steps == 25 and not distilled.projection
    assert r["mse_after"] < 0.6 * r["mse_before"]
    assert r["top1_before"] < 0.3 and r["top1_after"] > r["top1_before"] + 0.3
    # measured independently of the library: held-out translations end up nearer the teacher's English
    _, held = split_heldout({"xx": TOY}, 0.2, 42)
    en, tr = [e for e, _ in held["xx"]], [t for _, t in held["xx"]]
    teacher_en = encode(load_model(static_teacher), en)
    before = np.sum(encode(load_model(student_dir), tr) * teacher_en, axis=1)  # (n,) cosines
    after = np.sum(encode(load_model(distilled.output), tr) * teacher_en, axis=1)
    assert after.mean() > before.mean() + 0.1
    manifest = read_manifest(distilled.output) or {}
    assert manifest["training"]["objective"] == "multilingual-distillation-mse"
    assert manifest["training"]["teacher"] == str(static_teacher)
    assert manifest["evaluation"]["heldout_translation"]["xx"]["top1_after"] == r["top1_after"]
    assert not partial_dir(distilled.output).exists()


def test_a_student_of_another_dimension_gets_a_projection(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers.models import Dense

    from embedforge.encode import encode
    from embedforge.models import load_model

    student = _sentence_model(tmp_path / "s48", hidden=48, seed=2, prompts={"query": "query: "})  # as e5
    pairs = tmp_path / "xx.tsv"
    pairs.write_text("".join(f"{e}\t{t}\n" for e, t in TOY[:40]), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["distill-multilingual", "--teacher", str(tiny_model_dir), "--student", str(student),
                 "--parallel", str(pairs), "--output", str(out), "--max-steps", "2", "--batch-size", "8",
                 "--heldout-fraction", "0.2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Dense projection" in printed and "held-out EN->X top-1 on 8 English strings" in printed and "  xx: " in printed
    model = load_model(out)
    assert any(isinstance(m, Dense) for m in model)
    assert encode(model, ["a cat"]).shape == (1, 32) and model.prompts["query"] == "query: "


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes(tiny_model_dir: Path, student_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    config = fast(max_steps=4, save_steps=2, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        distill_multilingual(str(tiny_model_dir), str(student_dir), {"xx": TOY[:40]}, out, config,
                             show_progress=False, callbacks=[Interrupt()])
    work = partial_dir(out)
    assert not out.exists() and (work / "checkpoint-2").is_dir()
    before = json.loads((work / "distill.json").read_text())["before"]
    result = distill_multilingual(str(tiny_model_dir), str(student_dir), {"xx": TOY[:40]}, out, config,
                                  show_progress=False)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-2")
    assert result.steps == 4 and out.is_dir() and not work.exists()
    assert result.heldout["xx"]["top1_before"] == before["xx"]["top1"]  # the first run's measurement


def test_command_defaults_are_the_configs() -> None:
    from embedforge.cli import build_parser

    args = build_parser().parse_args(["distill-multilingual", "--teacher", "t", "--student", "s", "--parallel", "p.tsv",
                                      "--output", "o"])
    d = DistillConfig()
    assert (args.lr, args.batch_size, args.epochs, args.max_steps, args.warmup_ratio, args.max_length,
            args.heldout_fraction, args.seed, args.save_steps, args.prompt_name, args.projection) == (
        d.learning_rate, d.batch_size, d.epochs, d.max_steps, d.warmup_ratio, d.max_length,
        d.heldout_fraction, d.seed, d.save_steps, d.prompt, d.projection)


# --- the command on bad input -----------------------------------------------------------------------

@pytest.mark.parametrize(("content", "where"), [
    ("a b\tx y\nonly english\n", ":2: 1 column"),
    ("a b\tx y\n\nc d\tz w\n", ":2: empty line"),
    ("", ": empty file"),
])
def test_bad_parallel_file_exits_2_with_one_line_and_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path, capsys, content: str, where: str  # type: ignore[no-untyped-def]
) -> None:
    f = tmp_path / "de.tsv"
    f.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    code = main(["distill-multilingual", "--teacher", str(tiny_model_dir), "--student", str(tiny_model_dir),
                 "--parallel", str(f), "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == err.splitlines()[0] and f"{f}{where}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["de.tsv"]


def test_existing_output_or_bad_settings_exit_2(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "de.tsv"
    f.write_text("a b\tx y\n", encoding="utf-8")
    (tmp_path / "out").mkdir()
    base = ["distill-multilingual", "--teacher", str(tiny_model_dir), "--student", str(tiny_model_dir), "--parallel", str(f)]
    assert main([*base, "--output", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "new"), "--heldout-fraction", "1.5"]) == 2
    assert "heldout_fraction" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "new")]) == 2  # one string: nothing to hold out
    assert "fewer than 2" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not partial_dir(tmp_path / "new").exists()


def test_english_texts_pull_the_students_english_onto_the_teacher(static_teacher: Path, student_dir: Path,
                                                                   tmp_path: Path) -> None:
    """``english=``: monolingual texts trained as (text, text) rows — the student's English on texts outside
    the parallel data moves onto the teacher's; held-out strings among them are never trained on."""
    from embedforge.encode import encode
    from embedforge.models import load_model, read_manifest

    _, held = split_heldout({"xx": TOY[:40]}, 0.2, 42)
    held_english = [e for e, _ in held["xx"]]
    extra = [e for e, _ in TOY[40:]]  # English strings the parallel data (TOY[:40]) does not hold
    probe = extra[:20]
    config = fast(max_steps=60, batch_size=16)
    plain = distill_multilingual(str(static_teacher), str(student_dir), {"xx": TOY[:40]}, tmp_path / "plain", config,
                                 show_progress=False)
    mono = distill_multilingual(str(static_teacher), str(student_dir), {"xx": TOY[:40]}, tmp_path / "mono", config,
                                show_progress=False, english=[*extra, *held_english, ""])
    teacher = encode(load_model(static_teacher), probe)
    cos_plain = np.sum(encode(load_model(plain.output), probe) * teacher, axis=1).mean()
    cos_mono = np.sum(encode(load_model(mono.output), probe) * teacher, axis=1).mean()
    assert cos_mono > cos_plain + 0.05
    training = (read_manifest(mono.output) or {})["training"]
    assert training["english_texts"] == len(extra)  # the held-out strings and the empty text were dropped
    assert training["train_pairs"] == plain.train_pairs == mono.train_pairs


def test_projection_always_starts_from_the_least_squares_copy_of_the_teacher(static_teacher: Path, student_dir: Path,
                                                                              tmp_path: Path) -> None:
    """``projection="always"`` at equal dimensions: a Dense layer whose starting map is the least-squares one,
    so the held-out MSE before any step is already below the plain student's; the saved model has it."""
    from sentence_transformers.models import Dense

    from embedforge.encode import encode
    from embedforge.models import load_model

    config = fast(max_steps=1, learning_rate=1e-9)  # one negligible step: the model saved is the starting one
    plain = distill_multilingual(str(static_teacher), str(student_dir), {"xx": TOY}, tmp_path / "plain", config,
                                 show_progress=False)
    mapped = distill_multilingual(str(static_teacher), str(student_dir), {"xx": TOY}, tmp_path / "mapped",
                                  replace(config, projection="always"), show_progress=False)
    assert not plain.projection and mapped.projection
    assert mapped.heldout["xx"]["mse_before"] < plain.heldout["xx"]["mse_before"]  # held-out strings: closer too
    train, _ = split_heldout({"xx": TOY}, config.heldout_fraction, config.seed)
    english = [e for e, _ in train["xx"]]
    teacher = encode(load_model(static_teacher), english)
    mapped_model, plain_model = load_model(mapped.output), load_model(plain.output)
    # the strings the map was fitted on: far closer than the student's own vectors
    assert embedding_mse(encode(mapped_model, english), teacher) < 0.7 * embedding_mse(encode(plain_model, english), teacher)
    assert any(isinstance(m, Dense) for m in mapped_model)
    assert not any(isinstance(m, Dense) for m in plain_model)


def test_projection_never_refuses_a_student_of_another_dimension(tiny_model_dir: Path, tmp_path: Path) -> None:
    student = _sentence_model(tmp_path / "s48", hidden=48, seed=2)
    with pytest.raises(InputError, match="projection is 'never'"):
        distill_multilingual(str(tiny_model_dir), str(student), {"xx": TOY[:40]}, tmp_path / "out",
                             fast(projection="never"), show_progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="projection must be one of"):
        DistillConfig(projection="sometimes")


def test_train_head_fits_the_projection_in_closed_form(static_teacher: Path, student_dir: Path, tmp_path: Path) -> None:
    """``train="head"``: no gradient steps, the student's encoder unchanged, and the Dense layer after it the
    least-squares map of English *and* translations onto the teacher's English vectors (checked against
    numpy's lstsq on vectors computed here); the held-out translations move onto the teacher."""
    from sentence_transformers.models import Dense

    from embedforge.encode import encode
    from embedforge.models import load_model

    config = fast(train="head", prompt=None)
    result = distill_multilingual(str(static_teacher), str(student_dir), {"xx": TOY}, tmp_path / "head", config,
                                  show_progress=False)
    assert result.steps == 0 and result.projection
    r = result.heldout["xx"]
    assert r["mse_after"] < 0.8 * r["mse_before"] and r["top1_after"] >= r["top1_before"]
    model = load_model(result.output)
    dense = next(m for m in model if isinstance(m, Dense))
    train, _ = split_heldout({"xx": TOY}, config.heldout_fraction, config.seed)
    texts = [e for e, _ in train["xx"]] + [t for _, t in train["xx"]]
    student = load_model(student_dir)
    x = encode(student, texts, normalize=False, max_length=config.max_length)  # as distillation saw them (Normalize applies)
    y = encode(load_model(static_teacher), [e for e, _ in train["xx"]] * 2)
    coef, *_ = np.linalg.lstsq(np.hstack([x, np.ones((len(x), 1))]).astype(np.float64), y.astype(np.float64), rcond=None)
    weight = dense.linear.weight.detach().numpy().astype(np.float64)  # (d_t, d_s)
    bias = dense.linear.bias.detach().numpy().astype(np.float64)
    x64 = x.astype(np.float64)
    optimum = float(np.mean((x64 @ coef[:-1] + coef[-1] - y) ** 2))  # the least-squares residual
    assert float(np.mean((x64 @ weight.T + bias - y) ** 2)) <= 1.01 * optimum + 1e-9  # the head reaches it
    assert optimum < 0.5 * float(np.mean((x64 - y) ** 2))  # and it is far below the unmapped student's
