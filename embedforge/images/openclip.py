"""Load an open_clip checkpoint without open_clip: convert it once into a transformers ``CLIPModel``.

open_clip (``pip install open_clip_torch``) pins its own torch and torchvision; for the models it
shares with OpenAI's CLIP, a ViT image tower and the standard causal text transformer, the
weights are the same arithmetic as transformers' ``CLIPModel``, only named differently. So a
folder in open_clip's hub layout::

    open_clip_config.json            {"model_cfg": {"embed_dim", "vision_cfg", "text_cfg", ...}, "preprocess_cfg": {...}}
    open_clip_model.safetensors      or open_clip_pytorch_model.bin (read with weights_only=True)
    tokenizer.json                   or vocab.json + merges.txt: OpenAI's CLIP BPE, as the hub repos ship it

is converted (:func:`convert_open_clip`) into a sentence-transformers directory around a plain
``CLIPModel`` and loaded from there. The conversion is cached under
``$EMBEDFORGE_CACHE/models`` (default ``~/.cache/embedforge/models``), keyed by the source's path,
sizes and modification times and :data:`CONVERT_FORMAT` (:func:`converted_model_path`); the
source folder is only read.

The mapping (the same as transformers' own converter for OpenAI's checkpoints):
``visual.conv1`` -> patch embedding, ``visual.class_embedding`` / ``visual.positional_embedding``
-> the vision embeddings, ``ln_pre`` / ``ln_post`` -> ``pre_layrnorm`` / ``post_layernorm``,
``resblocks.N.attn.in_proj_*`` split in three -> ``q_proj`` / ``k_proj`` / ``v_proj``,
``mlp.c_fc`` / ``mlp.c_proj`` -> ``fc1`` / ``fc2``, and the projection matrices ``visual.proj`` and
``text_projection`` (stored as ``x @ P``) transposed into ``Linear`` weights. open_clip uses
QuickGELU for OpenAI-pretrained weights (``"quick_gelu": true``) and exact GELU otherwise.

Two small differences from open_clip itself, neither changing the weights: the text embedding is
read at the first end-of-text token (transformers) rather than at the highest token id
(OpenAI), the same position for OpenAI's vocabulary where end-of-text is the highest id; and
images are resized by transformers' CLIP image processor (PIL, bicubic, shortest side, centre
crop) rather than torchvision, which can differ by a rounding step in the resized pixels.

Anything else (a ConvNeXt or timm image tower, a Hugging Face text tower such as
``hf_model_name`` in the XLM-R models, CoCa's decoder, SigLIP's pooling, layer scale) is an
:class:`InputError` naming the unsupported part, checked against the config and against every
tensor in the weights, so a checkpoint never loads with a part silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embedforge.errors import InputError

__all__ = [
    "CONFIG_NAME",
    "CONVERT_FORMAT",
    "WEIGHT_NAMES",
    "is_open_clip_dir",
    "clip_config_kwargs",
    "state_dict_to_clip",
    "convert_open_clip",
    "converted_model_path",
]

CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # the first present is read
CONVERT_FORMAT = 1  # bump when the converter writes something different, so cached conversions are redone
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default preprocess_cfg (OpenAI's values)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# open_clip's dataclass defaults (open_clip/model.py CLIPVisionCfg / CLIPTextCfg), used for absent keys
VISION_DEFAULTS: dict[str, Any] = {"layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0,
                                   "patch_size": 16, "image_size": 224}
TEXT_DEFAULTS: dict[str, Any] = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                                 "layers": 12, "mlp_ratio": 4.0}
# options that change the computation, and the one value this converter reproduces (absent = that value)
VISION_NEUTRAL: dict[str, Any] = {
    "ls_init_value": None, "global_average_pool": False, "attentional_pool": False, "no_ln_pre": False,
    "pos_embed_type": "learnable", "final_ln_after_pool": False, "pool_type": "tok", "input_patchnorm": False,
    "timm_model_name": None, "timm_model_pretrained": False, "proj_bias": False, "act_kwargs": None,
    "norm_kwargs": None,
}
TEXT_NEUTRAL: dict[str, Any] = {
    "ls_init_value": None, "hf_model_name": None, "hf_model_pretrained": True, "hf_proj_type": "mlp",
    "hf_pooler_type": "mean_pooler", "embed_cls": False, "pool_type": "argmax", "proj_bias": False,
    "proj_type": "linear", "no_causal_mask": False, "final_ln_after_pool": False, "act_kwargs": None,
    "norm_kwargs": None,
}
# options that do not change the embeddings (training-time or tokenizer-side only)
VISION_IGNORED = frozenset({"patch_dropout", "output_tokens", "attn_pooler_queries", "attn_pooler_heads",
                            "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"})
TEXT_IGNORED = frozenset({"output_tokens", "pad_id", "hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode"})
MODEL_IGNORED = frozenset({"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "cast_dtype"})
# hf_* options only mean something with hf_model_name (already refused when set)
_HF_ONLY = frozenset({"hf_model_pretrained", "hf_proj_type", "hf_pooler_type"})


def is_open_clip_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an open_clip folder to convert: ``open_clip_config.json`` and no loadable
    sentence-transformers or transformers CLIP files (hub repos that ship both load those directly)."""
    root = Path(path).expanduser()
    if not (root / CONFIG_NAME).is_file() or (root / "modules.json").is_file():
        return False
    config = root / "config.json"  # timm's image-only repos ship a timm config.json beside open_clip's
    if not config.is_file():
        return True
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") != "clip"
    except (OSError, ValueError, AttributeError):
        return True


def _read_config(root: Path) -> dict[str, Any]:
    file = root / CONFIG_NAME
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"unreadable open_clip config ({type(err).__name__}: {err})", file) from None
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        raise InputError("not an open_clip config: expected an object with 'model_cfg'", file)
    return data


def _check_options(cfg: Mapping[str, Any], where: str, neutral: Mapping[str, Any], ignored: frozenset[str],
                   known: Mapping[str, Any]) -> None:
    for key, value in cfg.items():
        if key in known or key in ignored or (key in _HF_ONLY and cfg.get("hf_model_name") is None):
            continue
        if key not in neutral:
            raise InputError(f"unsupported open_clip option {where}.{key} = {value!r} (only ViT image towers with "
                             "the standard text transformer convert without open_clip)")
        if value != neutral[key] and not (value in (None, {}) and neutral[key] is None):
            raise InputError(f"unsupported open_clip model: {where}.{key} = {value!r} (this converter handles "
                             f"{neutral[key]!r}: a ViT image tower and the standard text transformer)")


def _positive_int(cfg: Mapping[str, Any], key: str, where: str) -> int:
    value = cfg[key]
    if isinstance(value, (list, tuple)) and len(set(value)) == 1:
        value = value[0]  # image_size / patch_size may be written as [224, 224]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        if key == "layers" and where == "vision_cfg" and isinstance(value, (list, tuple)):
            raise InputError(f"unsupported open_clip model: vision_cfg.layers = {list(value)!r} is a ResNet image "
                             "tower (only ViT image towers convert without open_clip)")
        raise InputError(f"unsupported open_clip config: {where}.{key} = {value!r} (expected a positive integer)")
    return value


def clip_config_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """``CLIPConfig`` keyword arguments for an open_clip config (the whole ``open_clip_config.json``).

    InputError naming the option when the model is not a ViT + standard text transformer CLIP.
    Token ids are left to the caller (they come from the tokenizer).
    """
    model_cfg = config.get("model_cfg")
    if not isinstance(model_cfg, Mapping):
        raise InputError("not an open_clip config: expected an object with 'model_cfg'")
    for key, value in model_cfg.items():
        if key not in MODEL_IGNORED:
            raise InputError(f"unsupported open_clip model: model_cfg.{key} = {value!r} (only ViT image towers with "
                             "the standard text transformer convert without open_clip; CoCa, SigLIP and custom "
                             "text towers need open_clip itself)")
    vision = {**VISION_DEFAULTS, **(model_cfg.get("vision_cfg") or {})}
    text = {**TEXT_DEFAULTS, **(model_cfg.get("text_cfg") or {})}
    _check_options(vision, "vision_cfg", VISION_NEUTRAL, VISION_IGNORED, VISION_DEFAULTS)
    _check_options(text, "text_cfg", TEXT_NEUTRAL, TEXT_IGNORED, TEXT_DEFAULTS)
    v = {k: _positive_int(vision, k, "vision_cfg") for k in ("layers", "width", "head_width", "patch_size", "image_size")}
    t = {k: _positive_int(text, k, "text_cfg") for k in ("context_length", "vocab_size", "width", "heads", "layers")}
    embed_dim = _positive_int(model_cfg, "embed_dim", "model_cfg") if "embed_dim" in model_cfg else 512
    if v["width"] % v["head_width"] or t["width"] % t["heads"] or v["image_size"] % v["patch_size"]:
        raise InputError(f"unsupported open_clip config: widths {v['width']}/{t['width']} must divide into heads and "
                         f"image_size {v['image_size']} into patches of {v['patch_size']}")
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    return {
        "projection_dim": embed_dim,
        "vision_config": {
            "hidden_size": v["width"], "intermediate_size": int(v["width"] * float(vision["mlp_ratio"])),
            "num_hidden_layers": v["layers"], "num_attention_heads": v["width"] // v["head_width"],
            "image_size": v["image_size"], "patch_size": v["patch_size"], "hidden_act": act,
            "layer_norm_eps": 1e-5, "projection_dim": embed_dim,
        },
        "text_config": {
            "vocab_size": t["vocab_size"], "hidden_size": t["width"],
            "intermediate_size": int(t["width"] * float(text["mlp_ratio"])), "num_hidden_layers": t["layers"],
            "num_attention_heads": t["heads"], "max_position_embeddings": t["context_length"], "hidden_act": act,
            "layer_norm_eps": 1e-5, "projection_dim": embed_dim,
        },
    }


def _block(sd: Mapping[str, Any], src: str, dst: str, used: set[str]) -> dict[str, Any]:
    """One residual attention block: open_clip's names under ``src`` -> transformers' under ``dst``."""
    out: dict[str, Any] = {}

    def take(name: str) -> Any:
        key = src + name
        if key not in sd:
            raise InputError(f"missing tensor {key!r} in the open_clip weights (truncated or not a ViT CLIP?)")
        used.add(key)
        return sd[key]

    for kind in ("weight", "bias"):
        fused = take(f"attn.in_proj_{kind}")  # (3 * width, width) / (3 * width,): q, k, v stacked
        if fused.shape[0] % 3:
            raise InputError(f"tensor {src}attn.in_proj_{kind} has shape {tuple(fused.shape)}: not q, k, v stacked")
        q, k, v = fused.chunk(3, dim=0)
        out[f"{dst}self_attn.q_proj.{kind}"] = q
        out[f"{dst}self_attn.k_proj.{kind}"] = k
        out[f"{dst}self_attn.v_proj.{kind}"] = v
        for theirs, ours in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            out[f"{dst}{ours}.{kind}"] = take(f"{theirs}.{kind}")
    return out


def state_dict_to_clip(sd: Mapping[str, Any], vision_layers: int, text_layers: int) -> dict[str, Any]:
    """open_clip (OpenAI layout) tensor names -> transformers ``CLIPModel`` state dict.

    Every tensor of ``sd`` must find its place: a leftover (layer scale, an attention pooler, a
    decoder, a logit bias, a timm trunk) is an InputError naming it, as is a missing one.
    """
    used: set[str] = set()

    def take(key: str) -> Any:
        if key not in sd:
            raise InputError(f"missing tensor {key!r} in the open_clip weights (truncated or not a ViT CLIP?)")
        used.add(key)
        return sd[key]

    out: dict[str, Any] = {
        "logit_scale": take("logit_scale"),
        "vision_model.embeddings.patch_embedding.weight": take("visual.conv1.weight"),  # (width, 3, p, p)
        "vision_model.embeddings.class_embedding": take("visual.class_embedding"),  # (width,)
        "vision_model.embeddings.position_embedding.weight": take("visual.positional_embedding"),  # (1 + patches, width)
        "visual_projection.weight": take("visual.proj").T,  # (width, embed) -> Linear (embed, width)
        "text_model.embeddings.token_embedding.weight": take("token_embedding.weight"),  # (vocab, width)
        "text_model.embeddings.position_embedding.weight": take("positional_embedding"),  # (context, width)
        "text_projection.weight": take("text_projection").T,  # (width, embed) -> Linear (embed, width)
    }
    for kind in ("weight", "bias"):
        out[f"vision_model.pre_layrnorm.{kind}"] = take(f"visual.ln_pre.{kind}")
        out[f"vision_model.post_layernorm.{kind}"] = take(f"visual.ln_post.{kind}")
        out[f"text_model.final_layer_norm.{kind}"] = take(f"ln_final.{kind}")
    for i in range(vision_layers):
        out.update(_block(sd, f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}.", used))
    for i in range(text_layers):
        out.update(_block(sd, f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}.", used))
    extra = sorted(k for k in sd if k not in used and k != "attn_mask")  # the causal mask buffer, rebuilt by transformers
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise InputError(f"unsupported open_clip model: the weights hold {len(extra)} tensor(s) a ViT CLIP with the "
                         f"standard text transformer has no place for ({shown}); more layers than the config says, "
                         "or a part this converter does not handle")
    return out


def _load_weights(root: Path) -> tuple[Path, dict[str, Any]]:
    import torch

    file = next((root / n for n in WEIGHT_NAMES if (root / n).is_file()), None)
    if file is None:
        raise InputError(f"no open_clip weights: expected {' or '.join(WEIGHT_NAMES)}", root)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(file), device="cpu")
        else:
            sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, or pickled objects weights_only refuses
        raise InputError(f"unreadable open_clip weights ({type(err).__name__}: {str(err).strip()[:200]})", file) from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]  # a training checkpoint: {"epoch", "state_dict", ...}
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError("not an open_clip state dict (expected tensor names -> tensors)", file)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}  # saved from DistributedDataParallel
    return file, {k: v.float() for k, v in sd.items()}


def _load_tokenizer(root: Path, context_length: int) -> Any:
    from transformers import CLIPTokenizer

    if not ((root / "tokenizer.json").is_file() or ((root / "vocab.json").is_file() and (root / "merges.txt").is_file())):
        raise InputError("the open_clip folder has no tokenizer: expected tokenizer.json, or vocab.json + merges.txt "
                         "(OpenAI's CLIP BPE; copy them from e.g. openai/clip-vit-base-patch32)", root)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(root), local_files_only=True)
    except Exception as err:
        raise InputError(f"unreadable CLIP tokenizer files ({type(err).__name__}: {str(err).strip()[:200]})", root) from None
    tokenizer.model_max_length = context_length
    return tokenizer


def _image_processor(config: Mapping[str, Any], image_size: int) -> Any:
    from transformers.image_utils import PILImageResampling
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    pre = config.get("preprocess_cfg") or {}
    resampling = {"bicubic": PILImageResampling.BICUBIC, "bilinear": PILImageResampling.BILINEAR}
    interpolation = pre.get("interpolation", "bicubic")
    if pre.get("resize_mode", "shortest") != "shortest" or interpolation not in resampling:
        raise InputError(f"unsupported open_clip preprocessing: resize_mode {pre.get('resize_mode')!r}, interpolation "
                         f"{interpolation!r} (this converter handles 'shortest' with bicubic or bilinear)")
    size = pre.get("size", image_size)
    if size not in (image_size, [image_size, image_size]):
        raise InputError(f"unsupported open_clip preprocessing: size {size!r} differs from the model's image_size {image_size}")
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(pre.get("mean", OPENAI_MEAN)), image_std=list(pre.get("std", OPENAI_STD)),
        resample=resampling[interpolation],
    )


def _clip_model(kwargs: dict[str, Any], tokenizer: Any, sd: Mapping[str, Any]) -> Any:
    from transformers import CLIPConfig, CLIPModel

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id}
    if len(tokenizer) > kwargs["text_config"]["vocab_size"]:
        raise InputError(f"the tokenizer has {len(tokenizer)} tokens, the model's text tower "
                         f"{kwargs['text_config']['vocab_size']}: not this model's tokenizer")
    model = CLIPModel(CLIPConfig(**{**kwargs, "text_config": {**kwargs["text_config"], **ids}}))
    converted = state_dict_to_clip(sd, kwargs["vision_config"]["num_hidden_layers"],
                                   kwargs["text_config"]["num_hidden_layers"])
    expected = model.state_dict()
    for key, tensor in converted.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise InputError(f"the open_clip weights do not match {CONFIG_NAME}: tensor for {key} has shape "
                             f"{tuple(tensor.shape)}, the config gives {tuple(expected[key].shape)}")
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:  # pragma: no cover - a programming error, not bad input
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def convert_open_clip(source: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Convert the open_clip folder ``source`` into a sentence-transformers CLIP directory at ``output``.

    ``output`` is written atomically with an embedforge manifest recording the source; ``source``
    is only read. InputError for an unsupported model, a missing tokenizer, missing or corrupt weights.
    """
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPProcessor

    from embedforge.models import save_model

    root = Path(source).expanduser().resolve()
    config = _read_config(root)
    kwargs = clip_config_kwargs(config)
    vision, text = kwargs["vision_config"], kwargs["text_config"]
    tokenizer = _load_tokenizer(root, text["max_position_embeddings"])
    processor = _image_processor(config, vision["image_size"])
    weights, sd = _load_weights(root)
    model = _clip_model(kwargs, tokenizer, sd)
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".openclip-", dir=target.parent) as tmp:  # beside the output, not /tmp
        model.save_pretrained(tmp)
        CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(tmp)
        del model, sd
        wrapped = SentenceTransformer(tmp, device="cpu", local_files_only=True)
        extra = {"modalities": ["text", "image"],
                 "source": {"format": "open_clip", "path": str(root), "weights": weights.name,
                            "activation": text["hidden_act"], "converter": CONVERT_FORMAT}}
        return save_model(wrapped, target, base_model=str(root), extra=extra)


def _cache_root() -> Path:
    root = os.environ.get("EMBEDFORGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "embedforge"
    )
    return Path(root) / "models"


def _source_key(root: Path) -> str:
    """What a conversion depends on: the folder, and the name, size and mtime of every file read."""
    h = hashlib.sha256(f"{root}\0{CONVERT_FORMAT}\0".encode("utf-8", "surrogatepass"))
    names = (CONFIG_NAME, *WEIGHT_NAMES, "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
             "special_tokens_map.json")
    for name in names:
        path = root / name
        if path.is_file():
            st = path.stat()
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def converted_model_path(source: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted directory for the open_clip folder ``source``, converting it on first use.

    Cached under ``cache_dir`` (default ``$EMBEDFORGE_CACHE/models``) as ``openclip-NAME-KEY``; a
    changed source file (size or mtime), or a new :data:`CONVERT_FORMAT`, converts again.
    """
    root = Path(source).expanduser().resolve()
    base = Path(cache_dir) if cache_dir is not None else _cache_root()
    target = base / f"openclip-{root.name or 'model'}-{_source_key(root)}"
    if not (target / "modules.json").is_file():
        convert_open_clip(root, target)
    return target
