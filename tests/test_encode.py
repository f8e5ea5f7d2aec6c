from __future__ import annotations

import numpy as np
import pytest

from embedforge.encode import encode
from embedforge.errors import InputError

TEXTS = [
    "A man is playing a guitar.",
    "short",
    "A much longer sentence that goes on and on, so that batches sorted by length differ from input order.",
    "Two dogs run in a field.",
    "",
]


def test_matches_sentence_transformers_encode(tiny_model):
    ours = encode(tiny_model, TEXTS, batch_size=2)
    theirs = tiny_model.encode(TEXTS, batch_size=5, convert_to_numpy=True, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (5, 32)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_normalised_by_default_and_raw_on_request(tiny_model):
    emb = encode(tiny_model, TEXTS)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    raw = encode(tiny_model.__class__(modules=[tiny_model[0], tiny_model[1]]), TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_order_is_preserved_whatever_the_batching(tiny_model):
    a = encode(tiny_model, TEXTS, batch_size=1)
    b = encode(tiny_model, TEXTS[::-1], batch_size=3)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_empty_list_gives_zero_rows(tiny_model):
    assert encode(tiny_model, []).shape == (0, 32)


def test_max_length_truncates_for_one_call_only(tiny_model):
    long = ["word " * 50]
    full, short = encode(tiny_model, long), encode(tiny_model, long, max_length=4)
    assert not np.allclose(full, short)
    assert tiny_model.max_seq_length == 64
    np.testing.assert_allclose(encode(tiny_model, long), full, atol=1e-6)


def test_prompt_is_prepended(tiny_model):
    np.testing.assert_allclose(
        encode(tiny_model, ["cats"], prompt="query: "), encode(tiny_model, ["query: cats"]), atol=1e-5
    )


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        ("a single string", {}, "not a single string"),
        (["ok", 3], {}, "text #1 is int"),
        (["ok"], {"batch_size": 0}, "batch_size"),
        (["ok"], {"max_length": 0}, "max_length"),
        (["ok"], {"precision": "int3"}, "unknown precision"),
    ],
)
def test_bad_inputs(tiny_model, texts, kwargs, message):
    with pytest.raises(InputError, match=message):
        encode(tiny_model, texts, **kwargs)


@pytest.mark.slow
def test_bundled_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from embedforge.models import load_model, resolve_model

    texts = ["A plane is taking off.", "An air plane is taking off.", "A man is playing a flute."]
    ours = encode(load_model("minilm"), texts)
    theirs = SentenceTransformer(resolve_model("minilm"), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_a_huge_text_is_cut_before_the_tokenizer_sees_it(tiny_model, monkeypatch):
    from embedforge.encode import CHARS_PER_TOKEN

    seen: list[int] = []
    name = "preprocess" if hasattr(tiny_model, "preprocess") else "tokenize"  # the step before the tokenizer
    tokenize = getattr(tiny_model, name)

    def spy(texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(len(t) for t in texts)
        return tokenize(texts, *args, **kwargs)

    monkeypatch.setattr(tiny_model, name, spy)
    huge = "word " * 2_000_000  # 10 MB of text
    out = encode(tiny_model, [huge, "short"], max_length=16)
    assert max(seen) <= 16 * CHARS_PER_TOKEN and sorted(seen)[0] == len("short")
    # the cut removes nothing the model reads: same vector as an already short text
    np.testing.assert_allclose(out[0], encode(tiny_model, ["word " * 100], max_length=16)[0], atol=1e-6)
    seen.clear()
    encode(tiny_model, [huge])  # the model's own max_seq_length bounds it too
    assert max(seen) <= tiny_model.max_seq_length * CHARS_PER_TOKEN
