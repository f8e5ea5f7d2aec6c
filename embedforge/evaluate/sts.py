"""Semantic textual similarity (STS): the seven tasks of the SimCSE paper's Table 5.

Protocol (Gao, Yao & Chen, "SimCSE", EMNLP 2021, §6.1 and Appendix B; SentEval's ``STSEval``
as modified in SimCSE's repository):

* score = Spearman ρ × 100 between the cosine similarity of the two sentence embeddings and
  the gold score, no training, no regressor;
* STS12–STS16: every subset of a year is concatenated and ONE ρ is computed over all of its
  scored pairs (SimCSE's "all" setting: ``results[task]['all']['spearman']['all']``), not the
  mean of per-subset ρ. Pairs with an empty gold line are unscored and skipped;
* STS-B: the test split (1379 pairs); SICK-R: the test split (4927 pairs, relatedness score);
* avg = the plain mean of the seven scores;
* alignment (Wang & Isola 2020, α = 2) over the STS-B *test* pairs with gold score > 4, and
  uniformity (t = 2) over every unique STS-B *test* sentence. (SimCSE's plots use the STS-B dev
  set; we use test so that all numbers come from one evaluation split.)

Sentences are whitespace-normalised (``" ".join(s.split())``), which is what SentEval's
``s.split()`` plus SimCSE's ``" ".join(...)`` batcher does. Each unique sentence across all
requested tasks is encoded once.

Data layout (under ``data_dir/sts``, or ``data_dir`` itself if it holds these folders):
``STS1{2..6}-en-test/STS.input.<subset>.txt`` + ``STS.gs.<subset>.txt``,
``STSBenchmark/sts-{train,dev,test}.csv`` and ``SICK/SICK_{train,trial,test_annotated}.txt``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedforge.errors import InputError
from embedforge.evaluate.metrics import alignment, cosine_pairs, spearman, uniformity

if TYPE_CHECKING:
    from rich.table import Table
    from sentence_transformers import SentenceTransformer

__all__ = [
    "STS_TASKS",
    "StsData",
    "load_semeval_sts_subsets",
    "load_semeval_sts",
    "load_stsb",
    "load_sickr",
    "load_sts_task",
    "sts_spearman",
    "evaluate_sts",
    "format_sts_table",
]

STS_TASKS: tuple[str, ...] = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")
ALIGNMENT_MIN_SCORE = 4.0  # STS-B pairs with gold > this are the positive pairs for alignment
_SEMEVAL_YEARS = (2012, 2013, 2014, 2015, 2016)
_SICK_FILES = {
    "train": "SICK_train.txt",
    "dev": "SICK_trial.txt",
    "trial": "SICK_trial.txt",
    "test": "SICK_test_annotated.txt",
}
_LABELS = {
    "sts12": "STS12",
    "sts13": "STS13",
    "sts14": "STS14",
    "sts15": "STS15",
    "sts16": "STS16",
    "stsb": "STS-B",
    "sickr": "SICK-R",
    "avg": "Avg.",
    "alignment": "align",
    "uniformity": "uniform",
}

EncodeFn = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True, eq=False)
class StsData:
    """Scored sentence pairs: ``scores[i]`` is the gold similarity of ``(sentences1[i], sentences2[i])``."""

    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray  # (n,) float64 gold scores (0–5 for STS, 1–5 for SICK)

    def __post_init__(self) -> None:
        n = len(self.sentences1)
        if len(self.sentences2) != n or self.scores.shape != (n,):
            raise ValueError(
                f"StsData lengths differ: {n} / {len(self.sentences2)} sentences, scores of shape {self.scores.shape}"
            )

    def __len__(self) -> int:
        return len(self.sentences1)

    @staticmethod
    def concat(parts: Sequence[StsData]) -> StsData:
        """All pairs of ``parts``, in order."""
        return StsData(
            [s for p in parts for s in p.sentences1],
            [s for p in parts for s in p.sentences2],
            np.concatenate([p.scores for p in parts]) if parts else np.zeros(0),
        )


def _clean(text: str) -> str:
    return " ".join(text.split())


def _sts_root(data_dir: str | os.PathLike[str]) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(
            "data directory not found (expected the data folder that holds sts/STSBenchmark, …)", root
        )
    return root / "sts" if (root / "sts").is_dir() else root


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(f"missing file: expected {what}", path)
    return path


def _read_lines(path: Path) -> list[str]:
    """The file's lines without their ending (``\\n`` or ``\\r\\n``); a final newline adds no line."""
    try:
        with open(path, encoding="utf-8") as f:  # universal newlines: \r\n -> \n
            text = f.read()
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text: {err}", path) from err
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _year(year: int | str) -> int:
    y = int(str(year).lower().removeprefix("sts"))
    y = y + 2000 if y < 100 else y
    if y not in _SEMEVAL_YEARS:
        raise InputError(f"no SemEval STS year {year!r}; expected one of 2012–2016")
    return y


def _parse_semeval_subset(input_file: Path, gold_file: Path) -> StsData:
    pairs = _read_lines(input_file)
    gold = _read_lines(gold_file)
    if len(pairs) != len(gold):
        raise InputError(
            f"{len(pairs)} sentence pairs but {len(gold)} gold lines in {gold_file.name}", input_file
        )
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for i, (pair, g) in enumerate(zip(pairs, gold, strict=True), start=1):
        if not g.strip():  # unscored pair
            continue
        fields = pair.split("\t")
        if len(fields) != 2:
            raise InputError(f"expected 2 tab-separated sentences, found {len(fields)} fields", input_file, i)
        try:
            scores.append(float(g))
        except ValueError:
            raise InputError(f"gold score {g.strip()!r} is not a number", gold_file, i) from None
        s1.append(_clean(fields[0]))
        s2.append(_clean(fields[1]))
    return StsData(s1, s2, np.asarray(scores, dtype=np.float64))


def load_semeval_sts_subsets(data_dir: str | os.PathLike[str], year: int | str) -> dict[str, StsData]:
    """The scored pairs of each subset of SemEval STS ``year`` (2012–2016 or 12–16), by subset name.

    Reads ``STS{yy}-en-test/STS.input.<subset>.txt`` (two tab-separated sentences per line) and
    the matching ``STS.gs.<subset>.txt`` (one gold score per line; empty = unscored, skipped).
    Subsets come in sorted name order. Other files in the folder (readmes, the STS15
    ``STS.input.answers-forums.LICENSE``) are ignored.
    """
    y = _year(year)
    folder = _sts_root(data_dir) / f"STS{y % 100}-en-test"
    if not folder.is_dir():
        raise InputError(
            f"missing folder: expected SemEval STS{y % 100} in SentEval layout (STS.input.*.txt, STS.gs.*.txt)",
            folder,
        )
    inputs = sorted(folder.glob("STS.input.*.txt"))
    if not inputs:
        raise InputError("no STS.input.<subset>.txt files in this folder", folder)
    out: dict[str, StsData] = {}
    for input_file in inputs:
        subset = input_file.name.removeprefix("STS.input.").removesuffix(".txt")
        gold_file = _need_file(folder / f"STS.gs.{subset}.txt", f"the gold scores of subset {subset!r}")
        out[subset] = _parse_semeval_subset(input_file, gold_file)
    return out


def load_semeval_sts(data_dir: str | os.PathLike[str], year: int | str) -> StsData:
    """All scored pairs of SemEval STS ``year``, subsets concatenated (the "all" setting)."""
    return StsData.concat(list(load_semeval_sts_subsets(data_dir, year).values()))


def load_stsb(data_dir: str | os.PathLike[str], split: str = "test") -> StsData:
    """STS Benchmark (Cer et al. 2017) ``split`` from ``STSBenchmark/sts-{split}.csv``.

    Tab-separated ``genre, file, year, id, score, sentence1, sentence2`` read with
    ``csv.QUOTE_NONE`` (sentences contain unbalanced ``"``); some rows carry two extra source
    fields after the sentences, which are ignored. Sizes: 5749 train / 1500 dev / 1379 test.
    """
    if split not in ("train", "dev", "test"):
        raise InputError(f"unknown STS-B split {split!r}; expected train, dev or test")
    path = _need_file(
        _sts_root(data_dir) / "STSBenchmark" / f"sts-{split}.csv",
        f"the STS-B {split} split (sts-{split}.csv)",
    )
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    with open(path, encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row:
                continue
            if len(row) < 7:
                raise InputError(f"expected at least 7 tab-separated fields, found {len(row)}", path, i)
            try:
                scores.append(float(row[4]))
            except ValueError:
                raise InputError(f"score {row[4]!r} is not a number", path, i) from None
            s1.append(_clean(row[5]))
            s2.append(_clean(row[6]))
    return StsData(s1, s2, np.asarray(scores, dtype=np.float64))


def load_sickr(data_dir: str | os.PathLike[str], split: str = "test") -> StsData:
    """SICK relatedness (Marelli et al. 2014) ``split``: train 4500, dev (= trial) 500, test 4927.

    Tab-separated with a header (``pair_ID, sentence_A, sentence_B, relatedness_score,
    entailment_judgment``); the columns are found by header name. The test file has CRLF endings.
    """
    if split not in _SICK_FILES:
        raise InputError(f"unknown SICK split {split!r}; expected train, dev (trial) or test")
    path = _need_file(_sts_root(data_dir) / "SICK" / _SICK_FILES[split], f"the SICK {split} split")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = [h.strip() for h in rows[0]] if rows else []
    try:
        ia, ib, isc = (header.index(c) for c in ("sentence_A", "sentence_B", "relatedness_score"))
    except ValueError:
        raise InputError(
            "expected a header with sentence_A, sentence_B and relatedness_score", path, 1
        ) from None
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} tab-separated fields, found {len(row)}", path, i)
        try:
            scores.append(float(row[isc]))
        except ValueError:
            raise InputError(f"relatedness score {row[isc]!r} is not a number", path, i) from None
        s1.append(_clean(row[ia]))
        s2.append(_clean(row[ib]))
    return StsData(s1, s2, np.asarray(scores, dtype=np.float64))


def load_sts_task(data_dir: str | os.PathLike[str], task: str) -> StsData:
    """The evaluation pairs of one of :data:`STS_TASKS` as the protocol defines them."""
    if task == "stsb":
        return load_stsb(data_dir, "test")
    if task == "sickr":
        return load_sickr(data_dir, "test")
    if task in STS_TASKS:
        return load_semeval_sts(data_dir, int(task[3:]))
    raise InputError(f"unknown STS task {task!r}; expected one of {', '.join(STS_TASKS)}")


def sts_spearman(data: StsData, emb1: np.ndarray, emb2: np.ndarray) -> float:
    """Spearman ρ × 100 between ``cos(emb1[i], emb2[i])`` and ``data.scores[i]``."""
    return 100.0 * spearman(cosine_pairs(emb1, emb2), data.scores)


def _tasks(tasks: Sequence[str] | None) -> list[str]:
    if tasks is None:
        return list(STS_TASKS)
    if isinstance(tasks, str):
        tasks = [tasks]
    wanted = {t.lower().replace("-", "").replace("_", "") for t in tasks}
    if not wanted:
        raise InputError(f"no STS task given; expected some of {', '.join(STS_TASKS)}")
    unknown = sorted(wanted - set(STS_TASKS))
    if unknown:
        raise InputError(f"unknown STS task(s) {unknown}; expected some of {', '.join(STS_TASKS)}")
    return [t for t in STS_TASKS if t in wanted]


def _model_encoder(model: SentenceTransformer | None, batch_size: int, show_progress: bool) -> EncodeFn:
    if model is None:
        raise ValueError("evaluate_sts needs a model or an encode_fn")
    from embedforge.encode import encode

    def embed(texts: list[str]) -> np.ndarray:
        return encode(model, texts, batch_size=batch_size, normalize=True, show_progress=show_progress)

    return embed


def evaluate_sts(
    model: SentenceTransformer | None,
    data_dir: str | os.PathLike[str],
    *,
    batch_size: int = 64,
    tasks: Sequence[str] | None = None,
    show_progress: bool = True,
    encode_fn: EncodeFn | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` on the STS tasks; see the module docstring for the exact protocol.

    Returns ``{task: Spearman×100 for each task, "avg": their mean, "alignment": …,
    "uniformity": …}``; with ``tasks=None`` the keys are exactly ``sts12 sts13 sts14 sts15 sts16
    stsb sickr avg alignment uniformity``. With a subset of tasks, ``avg`` is the mean of those
    tasks, and ``alignment``/``uniformity`` (STS-B test) are present only if ``stsb`` is among them.

    ``encode_fn(texts) -> (len(texts), d) array`` replaces the model's encoder (tests, or
    embeddings from elsewhere); by default it is :func:`embedforge.encode.encode` with
    ``normalize=True``. Missing data raises :class:`~embedforge.errors.InputError` before encoding.
    """
    selected = _tasks(tasks)
    embed = encode_fn if encode_fn is not None else _model_encoder(model, batch_size, show_progress)

    datasets = {task: load_sts_task(data_dir, task) for task in selected}
    unique = list(dict.fromkeys(s for d in datasets.values() for s in (*d.sentences1, *d.sentences2)))
    emb = np.asarray(embed(unique))
    if emb.ndim != 2 or emb.shape[0] != len(unique):
        raise ValueError(
            f"encode_fn returned shape {emb.shape} for {len(unique)} texts; expected ({len(unique)}, d)"
        )
    row = {text: i for i, text in enumerate(unique)}

    def rows(texts: list[str]) -> np.ndarray:
        return emb[[row[t] for t in texts]]  # (n, d)

    results: dict[str, float] = {}
    for task, data in datasets.items():
        results[task] = sts_spearman(data, rows(data.sentences1), rows(data.sentences2))
    results["avg"] = float(np.mean([results[t] for t in selected]))
    if "stsb" in datasets:
        stsb = datasets["stsb"]
        pos = np.flatnonzero(stsb.scores > ALIGNMENT_MIN_SCORE)
        results["alignment"] = alignment(
            rows([stsb.sentences1[i] for i in pos]), rows([stsb.sentences2[i] for i in pos])
        )
        results["uniformity"] = uniformity(rows(list(dict.fromkeys([*stsb.sentences1, *stsb.sentences2]))))
    return results


def format_sts_table(
    results: Mapping[str, float] | Mapping[str, Mapping[str, float]],
    *,
    title: str | None = "STS (Spearman × 100)",
) -> Table:
    """A rich table of :func:`evaluate_sts` results, columns in Table 5 order.

    ``results`` is one result dict, or ``{row label: result dict}`` for a before/after comparison.
    Task scores print with 2 decimals, alignment/uniformity with 3; a missing value prints "–".
    """
    from rich.table import Table

    rows: dict[str, Mapping[str, float]]
    if results and all(isinstance(v, Mapping) for v in results.values()):
        rows = {str(k): v for k, v in results.items() if isinstance(v, Mapping)}
    else:
        rows = {"": results}  # type: ignore[dict-item]
    keys = [k for k in _LABELS if any(k in r for r in rows.values())]
    table = Table(title=title)
    labelled = any(rows)
    if labelled:
        table.add_column("model")
    for k in keys:
        table.add_column(_LABELS[k], justify="right")
    for label, r in rows.items():
        cells = [
            ("–" if k not in r else f"{r[k]:.3f}" if k in ("alignment", "uniformity") else f"{r[k]:.2f}")
            for k in keys
        ]
        table.add_row(*([label] if labelled else []), *cells)
    return table
