"""open_clip checkpoints load without open_clip: a tiny random CLIPModel written in open_clip's layout
(by an inverse mapping written here, independently of the converter) must embed exactly as before."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")

from PIL import Image  # noqa: E402
from test_images import build_tiny_clip  # noqa: E402

from embedforge.collection import Collection  # noqa: E402
from embedforge.encode import encode  # noqa: E402
from embedforge.errors import InputError  # noqa: E402
from embedforge.images import encode_images, index_images, load_image_model  # noqa: E402
from embedforge.images.openclip import CONFIG_NAME, converted_model_path, is_open_clip_dir  # noqa: E402

TEXTS = ["a photo of a cat", "A DOG on the beach!", "x", "a much longer caption " * 20]
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def to_open_clip(hf: dict, vision_layers: int, text_layers: int) -> dict:
    """transformers CLIPModel state dict -> open_clip's (OpenAI) names; the test's own inverse mapping."""
    import torch

    out = {
        "logit_scale": hf["logit_scale"],
        "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
        "visual.proj": hf["visual_projection.weight"].t().contiguous(),
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "text_projection": hf["text_projection.weight"].t().contiguous(),
        "attn_mask": torch.full((64, 64), float("-inf")).triu(1),  # open_clip's buffer
    }
    for p in ("weight", "bias"):
        out[f"visual.ln_pre.{p}"] = hf[f"vision_model.pre_layrnorm.{p}"]
        out[f"visual.ln_post.{p}"] = hf[f"vision_model.post_layernorm.{p}"]
        out[f"ln_final.{p}"] = hf[f"text_model.final_layer_norm.{p}"]
    towers = [("visual.transformer", "vision_model", vision_layers), ("transformer", "text_model", text_layers)]
    for oc, tower, layers in towers:
        for i in range(layers):
            a, b = f"{oc}.resblocks.{i}", f"{tower}.encoder.layers.{i}"
            for p in ("weight", "bias"):
                out[f"{a}.attn.in_proj_{p}"] = torch.cat(
                    [hf[f"{b}.self_attn.{x}_proj.{p}"] for x in ("q", "k", "v")], dim=0)
                out[f"{a}.attn.out_proj.{p}"] = hf[f"{b}.self_attn.out_proj.{p}"]
                out[f"{a}.ln_1.{p}"] = hf[f"{b}.layer_norm1.{p}"]
                out[f"{a}.ln_2.{p}"] = hf[f"{b}.layer_norm2.{p}"]
                out[f"{a}.mlp.c_fc.{p}"] = hf[f"{b}.mlp.fc1.{p}"]
                out[f"{a}.mlp.c_proj.{p}"] = hf[f"{b}.mlp.fc2.{p}"]
    return {k: v.clone() for k, v in out.items()}


def open_clip_config(*, quick_gelu: bool) -> dict:
    model_cfg: dict = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 64, "vocab_size": 514, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
    }
    if quick_gelu:
        model_cfg["quick_gelu"] = True
    return {"model_cfg": model_cfg, "preprocess_cfg": {"mean": MEAN, "std": STD}}


def build_open_clip(root: Path, *, act: str = "quick_gelu", seed: int = 0, weights: str = "bin") -> tuple[Path, Path]:
    """(the plain transformers CLIPModel directory, the same model as an open_clip folder)."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPModel

    plain = build_tiny_clip(root / "plain", seed=seed)
    if act != "quick_gelu":
        cfg = json.loads((plain / "config.json").read_text(encoding="utf-8"))
        cfg["text_config"]["hidden_act"] = cfg["vision_config"]["hidden_act"] = act
        (plain / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    hf = CLIPModel.from_pretrained(plain).state_dict()
    sd = to_open_clip(hf, 2, 2)
    assert sd["token_embedding.weight"].shape[0] == 514
    oc = root / "open_clip"
    oc.mkdir()
    if weights == "bin":
        torch.save(sd, oc / "open_clip_pytorch_model.bin")
    else:
        save_file(sd, str(oc / "open_clip_model.safetensors"))
    (oc / CONFIG_NAME).write_text(json.dumps(open_clip_config(quick_gelu=act == "quick_gelu")), encoding="utf-8")
    if weights == "bin":  # the tokenizer as transformers saves it
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(plain / name, oc / name)
    else:  # the BPE files only, as OpenAI's CLIP ships them
        bpe = json.loads((plain / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        (oc / "vocab.json").write_text(json.dumps(bpe["vocab"]), encoding="utf-8")
        merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
        (oc / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n", encoding="utf-8")
    return plain, oc


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBEDFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def images() -> list:
    rng = np.random.default_rng(1)
    return [Image.fromarray((rng.random((40 + 7 * i, 50, 3)) * 255).astype(np.uint8)) for i in range(3)]


@pytest.mark.parametrize(("act", "weights"), [("quick_gelu", "bin"), ("gelu", "safetensors")])
def test_open_clip_embeds_exactly_like_the_original(tmp_path: Path, act: str, weights: str) -> None:
    import torch
    from transformers import CLIPModel

    plain, oc = build_open_clip(tmp_path, act=act, seed=5, weights=weights)
    before = snapshot(oc)
    assert is_open_clip_dir(oc) and not is_open_clip_dir(plain)
    reference, converted = load_image_model(plain), load_image_model(oc)
    imgs = images()
    a, b = encode_images(reference, imgs), encode_images(converted, imgs)
    assert b.shape == (3, 16)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(encode(reference, TEXTS, normalize=True), encode(converted, TEXTS, normalize=True),
                               atol=1e-5)
    assert converted.max_seq_length == 64  # the context length: long captions are truncated, not overflowing
    # the converted model really uses the activation asked for, and matches the raw transformers model
    inner = converted[0].auto_model
    assert inner.config.text_config.hidden_act == act == inner.config.vision_config.hidden_act
    raw = CLIPModel.from_pretrained(plain).eval()
    batch = reference[0].tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        feats = raw.get_text_features(**batch)
    feats = torch.nn.functional.normalize(getattr(feats, "pooler_output", feats), dim=-1).numpy()  # (2, 16)
    np.testing.assert_allclose(encode(converted, TEXTS[:2], normalize=True), feats, atol=1e-5)
    assert snapshot(oc) == before  # nothing written into the user's folder


def test_conversion_is_cached_and_redone_when_the_source_changes(tmp_path: Path, cache: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import embedforge.images.openclip as openclip

    _, oc = build_open_clip(tmp_path)
    first = converted_model_path(oc)
    assert first.parent == cache / "models" and (first / "embedforge.json").is_file()
    manifest = json.loads((first / "embedforge.json").read_text(encoding="utf-8"))
    assert manifest["source"]["format"] == "open_clip" and manifest["source"]["path"] == str(oc.resolve())

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(openclip, "convert_open_clip", no_conversion)
    assert converted_model_path(oc) == first
    cfg = json.loads((oc / CONFIG_NAME).read_text(encoding="utf-8"))
    (oc / CONFIG_NAME).write_text(json.dumps(cfg, indent=1), encoding="utf-8")  # a changed file: a new key
    with pytest.raises(AssertionError, match="converted again"):
        converted_model_path(oc)
    assert sorted(p.name for p in (cache / "models").iterdir()) == [first.name]  # no temporary leftovers


def test_hub_layout_with_transformers_files_loads_those(tmp_path: Path) -> None:
    plain, oc = build_open_clip(tmp_path)
    (plain / CONFIG_NAME).write_text((oc / CONFIG_NAME).read_text(encoding="utf-8"), encoding="utf-8")
    assert not is_open_clip_dir(plain)  # laion's hub repos ship config.json + model.safetensors too
    (oc / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_clip_224"}), encoding="utf-8")
    assert is_open_clip_dir(oc)  # timm's repos ship a timm config.json: still converted


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("vision_cfg", "timm_model_name", "convnext_base", "timm_model_name"),
        ("vision_cfg", "layers", [3, 4, 6, 3], "ResNet"),
        ("text_cfg", "hf_model_name", "xlm-roberta-base", "hf_model_name"),
        ("model_cfg", "multimodal_cfg", {"width": 512}, "multimodal_cfg"),
        ("vision_cfg", "attentional_pool", True, "attentional_pool"),
        ("text_cfg", "ls_init_value", 1e-5, "ls_init_value"),
        ("model_cfg", "init_logit_bias", -10, "init_logit_bias"),
    ],
)
def test_unsupported_models_are_named(tmp_path: Path, section: str, key: str, value: object, match: str) -> None:
    _, oc = build_open_clip(tmp_path)
    cfg = json.loads((oc / CONFIG_NAME).read_text(encoding="utf-8"))
    (cfg["model_cfg"] if section == "model_cfg" else cfg["model_cfg"][section])[key] = value
    (oc / CONFIG_NAME).write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(InputError, match=f"unsupported open_clip.*{match}"):
        load_image_model(oc)


def test_missing_tokenizer_is_one_clear_error(tmp_path: Path) -> None:
    _, oc = build_open_clip(tmp_path)
    (oc / "tokenizer.json").unlink()
    with pytest.raises(InputError, match=r"no tokenizer: expected tokenizer.json, or vocab.json \+ merges.txt"):
        load_image_model(oc)


def test_bad_weights_are_clear_errors(tmp_path: Path, cache: Path) -> None:
    import torch

    _, oc = build_open_clip(tmp_path)
    weights = oc / "open_clip_pytorch_model.bin"
    good = weights.read_bytes()
    sd = torch.load(weights, weights_only=True)

    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="unreadable open_clip weights"):
        load_image_model(oc)
    weights.unlink()
    with pytest.raises(InputError, match="no open_clip weights: expected open_clip_model.safetensors or open_clip_pytorch_model.bin"):
        load_image_model(oc)
    torch.save({k: v for k, v in sd.items() if k != "visual.ln_post.bias"}, weights)
    with pytest.raises(InputError, match="missing tensor 'visual.ln_post.bias'"):
        load_image_model(oc)
    torch.save({**sd, "visual.transformer.resblocks.0.ls_1.gamma": torch.ones(32)}, weights)
    with pytest.raises(InputError, match=r"unsupported open_clip model: .*ls_1.gamma"):
        load_image_model(oc)
    torch.save({**sd, "visual.proj": torch.zeros(32, 8)}, weights)
    with pytest.raises(InputError, match=r"do not match open_clip_config.json: .*visual_projection"):
        load_image_model(oc)
    weights.write_bytes(good)
    (oc / CONFIG_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="unreadable open_clip config"):
        load_image_model(oc)
    # failures leave no half-made conversion behind
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())


def test_open_clip_folder_indexes_and_reopens(tmp_path: Path) -> None:
    _, oc = build_open_clip(tmp_path)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(images()):
        image.save(folder / f"p{i}.png")
    coll = index_images(tmp_path / "coll", str(oc), folder)
    assert len(coll) == 3
    reopened = Collection.open(tmp_path / "coll")
    hits = reopened.search(["a photo"], top_k=2)
    assert len(hits[0]) == 2
