from __future__ import annotations

import json

import pytest

from embedforge.errors import InputError
from embedforge.models import MANIFEST_FORMAT, load_model, read_manifest, resolve_model, save_model


def test_bundled_alias_resolves_to_a_local_sentence_transformers_dir():
    path = resolve_model("minilm")
    assert (pytest.importorskip("pathlib").Path(path) / "modules.json").is_file()


def test_plain_transformers_dir_loads_with_mean_pooling(tiny_hf_dir):
    from embedforge.models import model_info

    info = model_info(load_model(tiny_hf_dir))
    assert info["pooling"] == "mean" and info["dimension"] == 32


def test_save_writes_manifest_and_round_trips(tiny_model, tmp_path):
    out = save_model(tiny_model, tmp_path / "m", base_model="tiny", training={"lr": 1e-5}, evaluation={"stsb": 1.0})
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest["format"] == MANIFEST_FORMAT
    assert manifest["base_model"] == "tiny"
    assert manifest["pooling"] == "mean" and manifest["normalize"] is True and manifest["dimension"] == 32
    assert manifest["training"] == {"lr": 1e-5} and manifest["evaluation"] == {"stsb": 1.0}
    assert "torch" in manifest["versions"]
    assert load_model(out).get_sentence_embedding_dimension() == 32
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp leftovers


def test_save_failure_keeps_the_previous_model(tiny_model, tmp_path, monkeypatch):
    out = save_model(tiny_model, tmp_path / "m", base_model="first")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(tiny_model), "save", boom)
    with pytest.raises(RuntimeError):
        save_model(tiny_model, out, base_model="second")
    assert read_manifest(out)["base_model"] == "first"  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such model directory"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "is not a model directory"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),
    ],
)
def test_bad_model_paths_give_one_clear_line(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as err:
        load_model(make(tmp_path))
    assert "\n" not in str(err.value)


def test_directory_with_broken_config_names_the_directory(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="could not load the model") as err:
        load_model(d)
    assert str(d) in str(err.value)


def test_unknown_hub_id_offline_says_to_pass_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="pass a local model directory or 'minilm'"):
        load_model("nobody/no-such-model")


def test_corrupt_manifest_is_reported(tmp_path):
    (tmp_path / "embedforge.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not an embedforge manifest"):
        read_manifest(tmp_path)
