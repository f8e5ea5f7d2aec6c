"""TSDAE: the noise, the decoder-head check, and training with a tied or a given decoder."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_bert

from embedforge.config import TrainConfig
from embedforge.errors import InputError
from embedforge.train.tsdae import decoder_source, delete_noise, lm_head_keys, noisy_texts

TEXTS = [f"{a} {b} number {i} of the small corpus" for i, (a, b) in enumerate(
    [("cats", "purr"), ("rockets", "launch"), ("bread", "rises"), ("rivers", "flow")] * 6)]


def test_delete_noise_keeps_order_and_about_forty_percent() -> None:
    rng = random.Random(0)
    text = " ".join(f"w{i}" for i in range(1000))
    noisy = delete_noise(text, rng).split()
    assert 350 <= len(noisy) <= 450, "p = 0.6 deletes ~60 % of the words"
    assert noisy == sorted(noisy, key=lambda w: int(w[1:])), "kept words stay in order"
    assert delete_noise("one", random.Random(1), ratio=1.0) == "one", "at least one word survives"
    assert delete_noise("", rng) == ""
    assert noisy_texts(TEXTS, seed=3) == noisy_texts(TEXTS, seed=3) != noisy_texts(TEXTS, seed=4)


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-mlm") / "model", mlm=True)


def test_lm_head_is_found_only_where_it_was_saved(mlm_dir: Path, tiny_hf_dir: Path, tiny_model_dir: Path) -> None:
    assert any(k.startswith("cls.predictions.") for k in lm_head_keys(mlm_dir))
    assert lm_head_keys(tiny_hf_dir) == [] and lm_head_keys(tiny_model_dir) == []
    assert decoder_source(mlm_dir, None)[0] == str(mlm_dir)
    path, why = decoder_source(tiny_model_dir, None)
    assert path is None and "no decoder (LM) head" in why
    assert decoder_source(tiny_model_dir, mlm_dir)[0] == str(mlm_dir)
    assert decoder_source(tiny_model_dir, tiny_hf_dir)[0] is None


def _train(tmp_path: Path, model: Path, decoder: Path | None, name: str):  # type: ignore[no-untyped-def]
    from embedforge.train.trainer import train

    file = tmp_path / "texts.txt"
    file.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    config = TrainConfig(mode="tsdae", batch_size=8, max_steps=3, learning_rate=1e-3, max_length=32, decoder=str(decoder) if decoder else None)
    return train(str(model), file, tmp_path / name, config, show_progress=False)


def test_tsdae_trains_the_encoder_with_a_tied_decoder(tmp_path: Path, mlm_dir: Path) -> None:
    from embedforge.encode import encode
    from embedforge.models import load_model, read_manifest

    result = _train(tmp_path, mlm_dir, None, "tied")
    assert result.loss == "tsdae" and result.steps == 3
    before, after = load_model(str(mlm_dir)), load_model(tmp_path / "tied")
    a, b = encode(before, TEXTS[:4]), encode(after, TEXTS[:4])
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-4), "the encoder's weights moved"
    assert read_manifest(tmp_path / "tied")["training"]["mode"] == "tsdae"


def test_tsdae_with_a_given_decoder_and_refused_without_a_head(tmp_path: Path, mlm_dir: Path, tiny_model_dir: Path) -> None:
    assert _train(tmp_path, tiny_model_dir, mlm_dir, "given").steps == 3
    with pytest.raises(InputError, match="no decoder \\(LM\\) head"):
        _train(tmp_path, tiny_model_dir, None, "refused")
    assert not (tmp_path / "refused").exists()


def test_cli_train_tsdae(tmp_path: Path, mlm_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from embedforge.cli import main

    file = tmp_path / "texts.txt"
    file.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    common = ["train", "--mode", "tsdae", "--train-file", str(file), "--max-steps", "2", "--batch-size", "8", "--no-progress"]
    assert main([*common, "--model", str(tiny_model_dir), "--output", str(tmp_path / "a")]) == 2
    assert "no decoder (LM) head" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*common, "--model", str(tiny_model_dir), "--decoder", str(mlm_dir), "--output", str(tmp_path / "b")]) == 0
    assert "trained tsdae" in capsys.readouterr().out


def test_unusable_decoders_are_refused_with_a_reason(tmp_path: Path, mlm_dir: Path, tiny_model_dir: Path) -> None:
    wide = build_tiny_bert(tmp_path / "wide-mlm", hidden=48, mlm=True)
    path, why = decoder_source(tiny_model_dir, wide)
    assert path is None and "hidden size 48 differs" in why
    path, why = decoder_source("sentence-transformers/all-MiniLM-L6-v2", None)
    assert path is None and "not a local checkpoint" in why
    assert decoder_source(tiny_model_dir, tmp_path / "nowhere")[0] is None


def test_an_interrupted_tsdae_run_starts_again(tmp_path: Path, mlm_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from transformers import TrainerCallback

    from embedforge.train.trainer import partial_dir, train

    class Stop(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if state.global_step == 3:
                raise KeyboardInterrupt

    file = tmp_path / "texts.txt"
    file.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    config = TrainConfig(mode="tsdae", batch_size=4, max_steps=4, save_steps=2, learning_rate=1e-3, max_length=32)
    with pytest.raises(KeyboardInterrupt):
        train(str(mlm_dir), file, tmp_path / "m", config, show_progress=False, callbacks=[Stop()])
    assert (partial_dir(tmp_path / "m") / "checkpoint-2").is_dir()
    with caplog.at_level(logging.WARNING, logger="embedforge.train.trainer"):
        result = train(str(mlm_dir), file, tmp_path / "m", config, show_progress=False)
    assert "cannot resume" in caplog.text
    assert result.steps == 4 and result.resumed_from is None and (tmp_path / "m").is_dir()
