"""Training on tiny random models: objectives, poolers, batching, dev selection, resume, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import TrainerCallback

from embedforge.config import TrainConfig
from embedforge.encode import encode
from embedforge.errors import InputError
from embedforge.models import load_model, model_info, read_manifest
from embedforge.train import simcse as simcse_module
from embedforge.train import trainer as trainer_module
from embedforge.train.trainer import DevSet, partial_dir, train

TEXTS = [f"sentence {i} about {['cats', 'dogs', 'ships', 'rain'][i % 4]} and number {i * 7}" for i in range(48)]


@pytest.fixture()
def text_file(tmp_path):
    f = tmp_path / "texts.txt"
    f.write_text("\n".join(TEXTS) + "\n")
    return f


def fast(**kw) -> TrainConfig:
    return TrainConfig(**{"batch_size": 8, "max_steps": 3, "learning_rate": 1e-3, "save_steps": 2, **kw})


def test_unsup_cls_mlp_trains_and_drops_the_mlp(tiny_hf_dir, text_file, tmp_path):
    out = tmp_path / "m"
    before = encode(load_model(tiny_hf_dir), TEXTS[:4])
    result = train(str(tiny_hf_dir), text_file, out, fast(pooler="cls_mlp"), show_progress=False)
    assert result.steps == 3 and result.pooler == "cls_mlp" and result.loss == "simcse-unsup"
    model = load_model(out)
    assert len(list(model)) == 2  # Transformer + Pooling: the training-only MLP is gone
    assert model_info(model)["pooling"] == "cls"
    after = encode(model, TEXTS[:4])
    assert not np.allclose(before, after, atol=1e-3)  # weights moved
    manifest = read_manifest(out)
    assert manifest["training"]["pooler"] == "cls_mlp" and manifest["training"]["steps"] == 3  # type: ignore[index]
    assert not partial_dir(out).exists()


def test_default_pooler_keeps_a_sentence_models_pooling(tiny_model_dir, text_file, tmp_path):
    result = train(str(tiny_model_dir), text_file, tmp_path / "m", fast(max_steps=1), show_progress=False)
    assert result.pooler == "mean"
    assert model_info(load_model(tmp_path / "m"))["pooling"] == "mean"


def test_default_pooler_for_plain_transformers_follows_the_paper(tiny_hf_dir, tmp_path, text_file):
    trip = tmp_path / "t.csv"
    trip.write_text("sent0,sent1,hard_neg\n" + "".join(f"{a},{a} again,not {a}\n" for a in TEXTS[:16]))
    sup = train(str(tiny_hf_dir), trip, tmp_path / "s", fast(mode="sup", max_steps=1), show_progress=False)
    assert sup.pooler == "cls" and sup.loss == "simcse-sup-hardneg"
    unsup = train(str(tiny_hf_dir), text_file, tmp_path / "u", fast(max_steps=1), show_progress=False)
    assert unsup.pooler == "cls_mlp"


def test_sup_triplets_pass_alpha_to_the_loss(tiny_hf_dir, tmp_path, monkeypatch):
    seen: list[tuple[int, float]] = []
    real = simcse_module.simcse_loss

    def spy(z1, z2, z3=None, **kw):
        seen.append((0 if z3 is None else z3.shape[0], kw["hard_negative_weight"]))
        return real(z1, z2, z3, **kw)

    monkeypatch.setattr(simcse_module, "simcse_loss", spy)
    trip = tmp_path / "t.csv"
    trip.write_text("sent0,sent1,hard_neg\n" + "".join(f"{a},{a} again,not {a}\n" for a in TEXTS[:16]))
    train(str(tiny_hf_dir), trip, tmp_path / "m", fast(mode="sup", hard_negative_weight=2.5, max_steps=2),
                 show_progress=False)
    assert seen == [(8, 2.5), (8, 2.5)]


def _built_losses(monkeypatch) -> list:
    """Every loss module the trainer builds, in order (captured from the registry call)."""
    built: list = []
    real = trainer_module.build_loss

    def spy(name, model, config):
        built.append(real(name, model, config))
        return built[-1]

    monkeypatch.setattr(trainer_module, "build_loss", spy)
    return built


def _loss_value(loss, pairs: list[tuple[str, str]], labels: list[float]) -> float:
    import torch

    model = loss.model
    model.eval()  # no dropout: the same batch gives the same value
    features = [model.preprocess([p[c] for p in pairs]) for c in (0, 1)]
    features = [{k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in f.items()} for f in features]
    with torch.no_grad():
        return float(loss(features, torch.tensor(labels, device=model.device)))


def test_scored_pairs_train_with_the_cosent_loss(tiny_hf_dir, tmp_path, monkeypatch):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss

    built = _built_losses(monkeypatch)
    f = tmp_path / "s.csv"
    f.write_text("sentence1,sentence2,score\n" + "".join(f"{a},{TEXTS[i + 1]},{i % 5}\n" for i, a in enumerate(TEXTS[:16])))
    result = train(str(tiny_hf_dir), f, tmp_path / "m", fast(mode="sup", max_steps=1, temperature=0.1), show_progress=False)
    assert result.loss == "cosent" and len(built) == 1
    pairs = [(TEXTS[i], TEXTS[i + 20]) for i in range(6)]
    labels = [0.0, 1.0, 2.0, 3.0, 4.0, 2.5]
    used = _loss_value(built[0], pairs, labels)
    model = built[0].model
    assert used == pytest.approx(_loss_value(CoSENTLoss(model, scale=10.0), pairs, labels), rel=1e-6)
    # and not merely any loss: the in-batch-negatives loss gives another value on the same batch
    assert used != pytest.approx(_loss_value(MultipleNegativesRankingLoss(model, scale=10.0), pairs, labels), rel=1e-3)


def test_alpha_one_trains_with_sentence_transformers_loss(tiny_hf_dir, text_file, tmp_path, monkeypatch):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    built = _built_losses(monkeypatch)
    train(str(tiny_hf_dir), text_file, tmp_path / "m", fast(max_steps=1, temperature=0.07), show_progress=False)
    assert isinstance(built[0], MultipleNegativesRankingLoss) and built[0].scale == pytest.approx(1 / 0.07)


def test_batches_hold_no_duplicate_texts(tiny_hf_dir, tmp_path, monkeypatch):
    dup = tmp_path / "dup.txt"
    dup.write_text("\n".join(TEXTS[:6] * 6) + "\n")  # 36 lines, 6 distinct texts
    batches: list[list[tuple[int, ...]]] = []
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    real_forward = MultipleNegativesRankingLoss.forward

    def spy(self, features, labels=None):
        features = list(features)
        ids = features[0]["input_ids"]
        batches.append([tuple(row.tolist()) for row in ids])
        return real_forward(self, features, labels)

    monkeypatch.setattr(MultipleNegativesRankingLoss, "forward", spy)
    train(str(tiny_hf_dir), dup, tmp_path / "m", fast(batch_size=4, max_steps=4), show_progress=False)
    assert batches and all(len(set(b)) == len(b) for b in batches)


def test_dev_set_is_evaluated_and_best_kept(tiny_hf_dir, text_file, tmp_path):
    dev = DevSet(TEXTS[:10], TEXTS[10:20], [float(i % 5) for i in range(10)])
    result = train(str(tiny_hf_dir), text_file, tmp_path / "m", fast(max_steps=4, eval_steps=2), dev=dev,
                          show_progress=False)
    assert result.best_dev is not None and -1.0 <= result.best_dev <= 1.0
    assert read_manifest(tmp_path / "m")["evaluation"]["dev_spearman"] == pytest.approx(result.best_dev)  # type: ignore[index]


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_its_last_checkpoint(tiny_hf_dir, text_file, tmp_path):
    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train(str(tiny_hf_dir), text_file, out, fast(max_steps=4), show_progress=False, callbacks=[Interrupt()])
    assert not out.exists()  # never a half-written model at OUTPUT
    assert (partial_dir(out) / "checkpoint-2").is_dir()
    result = train(str(tiny_hf_dir), text_file, out, fast(max_steps=4), show_progress=False)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-2")
    assert result.steps == 4
    assert read_manifest(out)["training"]["steps"] == 4  # type: ignore[index]


def test_bad_inputs_leave_nothing_behind(tiny_hf_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="empty file"):
        train(str(tiny_hf_dir), empty, tmp_path / "m", fast())
    one = tmp_path / "one.txt"
    one.write_text("only one\n")
    with pytest.raises(InputError, match="at least 2 texts"):
        train(str(tiny_hf_dir), one, tmp_path / "m", fast())
    wrong = tmp_path / "w.csv"
    wrong.write_text("a,b\nx,y\n")
    with pytest.raises(InputError, match="missing pair columns"):
        train(str(tiny_hf_dir), wrong, tmp_path / "m", fast(mode="sup"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "one.txt", "w.csv"]


def test_existing_output_is_not_overwritten_without_asking(tiny_hf_dir, text_file, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        train(str(tiny_hf_dir), text_file, tmp_path / "m", fast())
    assert (tmp_path / "m" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"temperature": 0}, "temperature must be > 0, got 0"), ({"batch_size": 1}, "batch_size must be >= 2"),
     ({"pooler": "max"}, "pooler must be one of cls, cls_mlp, mean"), ({"hard_negative_weight": -1}, "alpha"),
     ({"mode": "semi"}, "mode must be one of unsup, sup, tsdae, got 'semi'"), ({"max_length": 0}, "max_length must be >= 1"),
     ({"learning_rate": 0.0}, "learning_rate"), ({"epochs": 0, "max_steps": -1}, "epochs or max_steps")],
)
def test_config_validation(kw, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**kw)


def test_manifest_round_trips_through_json_with_its_types(tiny_hf_dir, text_file, tmp_path):
    """The manifest is written with ``default=str``: a value json cannot hold (a Path, a numpy int)
    would come back as a string. Every training field must come back as it went in."""
    config = fast(max_steps=1, pooler="cls")  # (a pooler of None is replaced by the one used)
    train(str(tiny_hf_dir), text_file, tmp_path / "m", config, show_progress=False)
    training = json.loads((tmp_path / "m" / "embedforge.json").read_text())["training"]
    for field, value in config.to_dict().items():
        assert training[field] == value and type(training[field]) is type(value), field
    for field, kind in (("steps", int), ("train_rows", int), ("world_size", int), ("seconds", float),
                        ("rows_per_second", float), ("train_file", str), ("loss", str), ("pooler", str)):
        assert type(training[field]) is kind, field
    assert training["train_file"] == str(text_file) and training["steps"] == 1


def test_matryoshka_loss_is_the_inner_loss_summed_over_truncated_dimensions(tiny_model_dir):
    import torch
    import torch.nn.functional as F

    from embedforge.train.losses import build_loss

    model = load_model(tiny_model_dir)
    model.eval()  # no dropout: the same features give the same vectors in every pass
    a = model.tokenize(TEXTS[:6])
    p = model.tokenize(TEXTS[6:12])
    config = TrainConfig(matryoshka_dims=(8, 32, 16), temperature=0.05)
    assert config.matryoshka_dims == (32, 16, 8)
    with torch.no_grad():
        got = build_loss("simcse", model, config)([a, p], None).item()
        za = model(dict(a))["sentence_embedding"]
        zp = model(dict(p))["sentence_embedding"]
    expected = 0.0
    for d in (32, 16, 8):  # InfoNCE on the first d dimensions, re-normalised (MNRL with scale 1/tau)
        sims = F.normalize(za[:, :d], dim=-1) @ F.normalize(zp[:, :d], dim=-1).T / 0.05
        expected += F.cross_entropy(sims, torch.arange(6)).item()
    assert got == pytest.approx(expected, rel=1e-4)
    with pytest.raises(InputError, match="only 32 dimensions"):
        build_loss("simcse", model, TrainConfig(matryoshka_dims=(64, 32)))


def test_matryoshka_from_the_cli_trains_and_is_recorded(tiny_model_dir, text_file, tmp_path, capsys):
    from embedforge.cli import main

    out = tmp_path / "m"
    assert main(["train", "--model", str(tiny_model_dir), "--train-file", str(text_file), "--output", str(out),
                 "--batch-size", "8", "--max-steps", "2", "--matryoshka-dims", "32,16", "--no-progress"]) == 0
    assert read_manifest(out)["training"]["matryoshka_dims"] == [32, 16]
    with pytest.raises(SystemExit) as exc:  # argparse: usage + one line, exit 2
        main(["train", "--model", str(tiny_model_dir), "--train-file", str(text_file), "--output", str(tmp_path / "x"),
              "--matryoshka-dims", "16,a"])
    assert exc.value.code == 2 and "expected comma-separated whole numbers" in capsys.readouterr().err
    assert main(["train", "--model", str(tiny_model_dir), "--mode", "tsdae", "--train-file", str(text_file),
                 "--output", str(tmp_path / "y"), "--matryoshka-dims", "16"]) == 2
    assert "cannot be used with mode tsdae" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
