"""Shared fixtures: tiny random models built from a config with the bundled MiniLM tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EMBEDFORGE_DATA", REPO.parent / "shared" / "data"))


def build_tiny_bert(
    path: Path, *, hidden: int = 32, layers: int = 2, seed: int = 0, num_labels: int | None = None, mlm: bool = False
) -> Path:
    """A random BERT with the MiniLM tokenizer, saved at ``path``: a plain BertModel, with
    ``num_labels`` a BertForSequenceClassification (the layout of a sentence-transformers CrossEncoder),
    with ``mlm`` a BertForMaskedLM (a checkpoint that holds an LM head)."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForMaskedLM,
        BertForSequenceClassification,
        BertModel,
    )

    from embedforge.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
        num_labels=num_labels or 2,
    )
    if mlm:
        model = BertForMaskedLM(config)
    else:
        model = BertModel(config) if num_labels is None else BertForSequenceClassification(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plain transformers layout (config.json + weights + tokenizer), no modules.json."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-hf") / "model")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sentence-transformers layout: tiny BERT + mean pooling + Normalize, saved with a manifest."""
    from sentence_transformers import SentenceTransformer, models

    from embedforge.models import save_model

    transformer = models.Transformer(str(tiny_hf_dir), max_seq_length=64)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    out = tmp_path_factory.mktemp("tiny-st") / "model"
    save_model(model, out, base_model="tiny-random-bert")
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from embedforge.models import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data not found at {DATA_DIR}")
    return DATA_DIR
