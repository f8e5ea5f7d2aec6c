"""Make a model multilingual by knowledge distillation (Reimers & Gurevych 2020, arXiv:2004.09813).

A *teacher* (any English model, e.g. the user's adapted one) embeds the English side of parallel
pairs; a multilingual *student* (e.g. ``multilingual-e5-small``) is trained so that both the English
sentence ``s`` and its translation ``t`` land on the teacher's vector of ``s``:

    L = 1/|B| sum_{(s,t) in B} ( ||M(s) - S(s)||^2 + ||M(t) - S(s)||^2 ) / d    (mean over dims, as MSE)

where ``M`` is the teacher (fixed; its vectors are computed once) and ``S`` the student. The loss is
sentence-transformers' ``losses.MSELoss`` with the teacher's vectors as the ``label`` column (2-D
labels are broadcast to both text columns); the loop is its Trainer, with embedforge's conventions
(:mod:`embedforge.train.trainer`): checkpoints in ``OUTPUT.partial`` so an interrupted run resumes,
``OUTPUT`` written atomically with a manifest only when done.

What this module adds to sentence-transformers' multilingual example: strings, not only pairs, held
out for evaluation (an English string held out is absent from training in every language, and so
is its translation); EN->X top-1 and MSE on them before and after training, beside the teacher's
own; a student whose dimension differs from the teacher's gets a ``Dense`` projection inside the
model (saved with it, unlike ``MSELoss(projection_dim=...)``, which keeps it on the loss),
initialised by least squares from the student's to the teacher's vectors of the training English.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import InputError
from embedforge.io import check_text, save_npy, write_json
from embedforge.vectors import l2_normalize

__all__ = [
    "DistillConfig",
    "DistillResult",
    "PROJECTIONS",
    "Pair",
    "TRAIN_MODES",
    "distill_multilingual",
    "embedding_mse",
    "evaluate_translation",
    "read_parallel",
    "split_heldout",
    "translation_top1",
]

logger = logging.getLogger(__name__)

Pair = tuple[str, str]  # (english, translation)
_BITEXT_COLUMNS = ("source_text", "target_text")  # the header `embedforge mine-bitext` writes
_STATE = "distill.json"  # in OUTPUT.partial: the run's fingerprint and the before-training evaluation
_LABELS = "teacher.npy"  # in OUTPUT.partial: the teacher's vectors of the training English, (n, d_t)


PROJECTIONS = ("auto", "always", "never")  # DistillConfig.projection
TRAIN_MODES = ("all", "head")  # DistillConfig.train


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run. Defaults follow sentence-transformers' ``make_multilingual`` example
    (Reimers & Gurevych's setup) unless noted."""

    learning_rate: float = 2e-5  # the example's; Adam with linear decay
    batch_size: int = 64  # pairs per step (two student passes each: English and translation)
    epochs: float = 5.0  # the example: 5 over its parallel data
    max_steps: int = -1  # > 0 overrides epochs
    warmup_ratio: float = 0.1  # the example: 10 % of the steps
    max_length: int = 128  # tokens, for the student and the teacher (the example's max_seq_length)
    heldout_fraction: float = 0.1  # English strings held out (with their translations) for evaluation; 0: none
    seed: int = 42  # the held-out split, shuffling and the projection's fallback init
    save_steps: int = 100  # checkpoints in OUTPUT.partial, for resuming
    prompt: str | None = "query"  # prompt name used where a model defines it (e5: "query: "); None: no prompt
    batch_size_encode: int = 64  # texts per forward pass when encoding for labels and evaluation
    # A Dense layer after the student, initialised as the least-squares map of the student's vectors of the
    # training English onto the teacher's: "auto" only when their dimensions differ (the example's
    # MSELoss(projection_dim) case), "always" also when they match, "never" (an error when they differ).
    # "always" starts training at the best linear copy of the teacher instead of pulling the student's
    # own space onto it: measured with e5-small -> MiniLM (bench/multilingual.py), the map alone took the
    # held-out Django strings' MSE to the teacher from 0.0053 to 0.0027 before any step.
    projection: str = "auto"
    # "all": fine-tune the whole student (the paper's method); "head": keep the student's encoder and fit
    # only the Dense projection after it, in closed form (least squares of English and translations onto the
    # teacher's English vectors; no steps). Measured (bench/multilingual.py): "all" from the mapped start,
    # 102 steps, lost 1.5 STS-B points to the teacher; see BENCHMARKS.md for "head".
    train: str = "all"

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_length", "save_steps", "batch_size_encode"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise InputError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps <= 0 and not self.epochs > 0:
            raise InputError(f"epochs or max_steps must be > 0, got epochs={self.epochs} and max_steps={self.max_steps}")
        if not 0 <= self.heldout_fraction < 1:
            raise InputError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.train not in TRAIN_MODES:
            raise InputError(f"train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}")
        if self.projection not in PROJECTIONS:
            raise InputError(f"projection must be one of {', '.join(PROJECTIONS)}, got {self.projection!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class DistillResult:
    output: Path
    steps: int
    train_pairs: int  # (english, translation) rows trained on, all languages
    heldout_strings: int  # distinct English strings held out
    projection: bool  # a Dense layer maps the student's dimension to the teacher's
    seconds: float  # wall time of the optimisation loop (this run only, after a resume)
    heldout: dict[str, dict[str, float]]  # per language and "mean": top1_before/after, teacher_top1, mse_before/after, n
    resumed_from: str | None


# --- data -------------------------------------------------------------------------------------------

def read_parallel(path: str | os.PathLike[str]) -> list[Pair]:
    """``(english, translation)`` pairs from a tab-separated file, UTF-8, one pair per line.

    Headerless: ``english<TAB>translation[<TAB>another translation ...]`` (the parallel-sentences
    format of Reimers & Gurevych; fields are taken verbatim, no quoting). Or the output of
    ``embedforge mine-bitext`` (its header names ``source_text`` and ``target_text``; csv quoting),
    whose source side is taken as the teacher's language. An empty file, an empty line, a line
    with fewer than two columns or an empty field raises :class:`InputError` at ``file:line``.
    """
    import csv
    import io

    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError as err:
        raise InputError("no such file", file) from err
    except IsADirectoryError as err:
        raise InputError("is a directory; expected a tab-separated file of pairs", file) from err
    except UnicodeDecodeError as err:
        bad_line = file.read_bytes()[: err.start].count(b"\n") + 1
        raise InputError("not valid UTF-8", file, bad_line) from err
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise InputError("empty file; expected lines of english<TAB>translation", file)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline
    first = lines[0].rstrip("\r").split("\t")
    pairs: list[Pair] = []
    if all(c in first for c in _BITEXT_COLUMNS):
        a, b = first.index(_BITEXT_COLUMNS[0]), first.index(_BITEXT_COLUMNS[1])
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
        next(reader)  # the header
        for fields in reader:
            number = reader.line_num
            if not fields:
                raise InputError("empty line; expected one pair per line", file, number)
            if len(fields) != len(first):
                raise InputError(f"{len(fields)} columns, expected {len(first)} ({', '.join(first)})", file, number)
            pairs.append((_field(fields[a], file, number, a), _field(fields[b], file, number, b)))
        if not pairs:
            raise InputError("no pairs after the header", file)
        return pairs
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            raise InputError("empty line; expected english<TAB>translation", file, number)
        fields = line.split("\t")
        if len(fields) < 2:
            raise InputError("1 column, expected 2 or more: english<TAB>translation (tab-separated)", file, number)
        english = _field(fields[0], file, number, 0)
        pairs.extend((english, _field(f, file, number, i)) for i, f in enumerate(fields[1:], start=1))
    return pairs


def _field(value: str, file: Path, line: int, column: int) -> str:
    text = value.strip()
    if not text:
        raise InputError(f"column {column + 1} is empty", file, line)
    return check_text(text, file, line)


def split_heldout(
    parallel: Mapping[str, Sequence[Pair]], fraction: float, seed: int
) -> tuple[dict[str, list[Pair]], dict[str, list[Pair]]]:
    """``(train, heldout)`` per language: the same English strings are held out in every language.

    ``round(fraction * distinct English strings)`` of them, picked by a seeded hash (the same for a
    string whatever else is in the data). Held-out pairs are made one-to-one (first pair kept per
    English string and per translation); training drops every pair whose English or translation is
    held out anywhere, so no held-out string is ever seen in training.
    """
    english = sorted({e for pairs in parallel.values() for e, _ in pairs})
    n_held = round(fraction * len(english))
    held = set(sorted(english, key=lambda e: hashlib.sha1(f"{seed}:{e}".encode()).hexdigest())[:n_held])
    heldout: dict[str, list[Pair]] = {}
    held_texts: set[str] = set(held)
    for lang, pairs in parallel.items():
        seen_e: set[str] = set()
        seen_t: set[str] = set()
        rows = []
        for e, t in pairs:
            if e in held and e not in seen_e and t not in seen_t:
                seen_e.add(e)
                seen_t.add(t)
                rows.append((e, t))
        heldout[lang] = rows
        held_texts.update(t for e, t in pairs if e in held)
    train = {lang: [(e, t) for e, t in pairs if e not in held_texts and t not in held_texts]
             for lang, pairs in parallel.items()}
    return train, heldout


# --- metrics (on arrays) ----------------------------------------------------------------------------

def translation_top1(source: np.ndarray, target: np.ndarray) -> float:
    """Share of rows ``i`` whose nearest target (cosine) is ``target[i]``; both ``(n, d)``, L2-normalised."""
    if source.shape != target.shape or source.ndim != 2:
        raise ValueError(f"source {source.shape} and target {target.shape} must be the same (n, d)")
    if len(source) == 0:
        return float("nan")
    return float(np.mean((source @ target.T).argmax(axis=1) == np.arange(len(source))))  # (n,)


def embedding_mse(student: np.ndarray, teacher: np.ndarray) -> float:
    """Mean squared difference per coordinate, as ``MSELoss`` computes it; both ``(n, d)``."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {student.shape} and teacher {teacher.shape} must have the same shape")
    return float(np.mean((student - teacher) ** 2)) if student.size else float("nan")


def _before_after(before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]],
                  ) -> dict[str, dict[str, float]]:
    """Per language, the held-out top-1 and MSE before and after, beside the teacher's top-1."""
    return {lang: {"top1_before": before[lang]["top1"], "top1_after": after[lang]["top1"],
                   "teacher_top1": after[lang]["teacher_top1"], "mse_before": before[lang]["mse"],
                   "mse_after": after[lang]["mse"], "n": after[lang]["n"]} for lang in after}


def _fit_head(student: Any, teacher: Any, rows: Sequence[Pair], english: Sequence[str], labels: np.ndarray,
              heldout: Mapping[str, Sequence[Pair]], output: Path, config: DistillConfig, *, other_dim: bool,
              n_mono: int, n_held: int, names: tuple[str, str], languages: list[str]) -> DistillResult:
    """``train="head"``: the student's encoder stays as it is; the Dense projection after it is the
    least-squares solution of the same objective — every English text *and* its translation onto the
    teacher's vector of the English — in closed form, with no gradient steps (seconds, and nothing to
    resume). "Before" is the student as given (with an English-only map when its dimension differs)."""
    import copy

    from embedforge.models import save_model

    start = time.perf_counter()
    teacher_held = _teacher_side(teacher, heldout, config)
    # the encoder's own vectors, each distinct text once (an English string recurs in every language's pairs,
    # and an `english` text is both sides of its row)
    sides = [e for e, _ in rows] + [t for _, t in rows]
    distinct = list(dict.fromkeys(sides))
    at = {t: i for i, t in enumerate(distinct)}
    vectors = _embed(student, distinct, config)  # (distinct, d_s)
    if other_dim:  # no comparison without a map: "before" is the English-only one (as train="all" starts from)
        mapped = _add_projection(copy.deepcopy(student), vectors[[at[e] for e in english]], labels, config.seed)
        before = _student_side(mapped, heldout, teacher_held, config)
        del mapped
    else:
        before = _student_side(student, heldout, teacher_held, config)
    index = {e: i for i, e in enumerate(english)}
    x = vectors[[at[t] for t in sides]]  # (2 rows, d_s)
    y = labels[[index[e] for e, _ in rows] * 2]  # (2 rows, d_t): both sides onto the English's teacher vector
    student = _add_projection(student, x, y, config.seed)
    after = _student_side(student, heldout, teacher_held, config)
    seconds = time.perf_counter() - start
    results = _before_after(before, after)
    training = {**asdict(config), "objective": "multilingual-distillation-mse, closed-form head", "teacher": names[0],
                "languages": languages, "train_pairs": len(rows) - n_mono, "english_texts": n_mono,
                "heldout_strings": n_held, "projection": True, "steps": 0, "seconds": round(seconds, 2)}
    save_model(student, output, base_model=names[1], training=training, evaluation={"heldout_translation": results})
    return DistillResult(output=output, steps=0, train_pairs=len(rows) - n_mono, heldout_strings=n_held,
                         projection=True, seconds=seconds, heldout=results, resumed_from=None)


# --- models -----------------------------------------------------------------------------------------

def _prompt(model: Any, name: str | None) -> str | None:
    return (dict(getattr(model, "prompts", None) or {}).get(name) or None) if name else None


def _normalizes(model: Any) -> bool:
    from sentence_transformers.models import Normalize

    return any(isinstance(m, Normalize) for m in model)


def _embed(model: Any, texts: Sequence[str], config: DistillConfig, progress: bool = False) -> np.ndarray:
    from embedforge.encode import encode

    # normalize=False: the raw output, which is what the loss sees (a Normalize module still applies)
    return encode(model, list(texts), batch_size=config.batch_size_encode, normalize=False,
                  prompt=_prompt(model, config.prompt), show_progress=progress)  # (n, d)


def _unit(x: np.ndarray) -> np.ndarray:
    return l2_normalize(x, dtype=x.dtype)


def _teacher_side(teacher: Any, heldout: Mapping[str, Sequence[Pair]], config: DistillConfig,
                  ) -> dict[str, tuple[np.ndarray, float]]:
    """Per language: the teacher's vectors of the held-out English, (n, d_t), and its own EN->X top-1."""
    out = {}
    for lang, pairs in heldout.items():
        if pairs:
            t_en = _embed(teacher, [e for e, _ in pairs], config)  # (n, d_t)
            t_tr = _embed(teacher, [t for _, t in pairs], config)  # (n, d_t)
            out[lang] = (t_en, translation_top1(_unit(t_en), _unit(t_tr)))
    return out


def _student_side(student: Any, heldout: Mapping[str, Sequence[Pair]], teacher: Mapping[str, tuple[np.ndarray, float]],
                  config: DistillConfig) -> dict[str, dict[str, float]]:
    norm = _normalizes(student)
    out: dict[str, dict[str, float]] = {}
    for lang, (t_en, teacher_top1) in teacher.items():
        pairs = heldout[lang]
        s_en = _embed(student, [e for e, _ in pairs], config)  # (n, d_t) once projected
        s_tr = _embed(student, [t for _, t in pairs], config)  # (n, d_t)
        target = _unit(t_en) if norm else t_en  # what the student is trained towards
        mse = embedding_mse(s_tr, target) if s_tr.shape == target.shape else float("nan")  # a student not yet projected
        out[lang] = {"top1": translation_top1(_unit(s_en), _unit(s_tr)), "mse": mse,
                     "teacher_top1": teacher_top1, "n": float(len(pairs))}
    if out:
        out["mean"] = {k: float(np.mean([r[k] for r in out.values()])) for k in ("top1", "mse", "teacher_top1")}
        out["mean"]["n"] = float(sum(r["n"] for lang, r in out.items() if lang != "mean"))
    return out


def evaluate_translation(
    teacher: Any, student: Any, heldout: Mapping[str, Sequence[Pair]], config: DistillConfig | None = None
) -> dict[str, dict[str, float]]:
    """Per language (and ``mean``): ``top1``, EN->X among the language's pairs with the student on
    both sides; ``mse``, the student's translation against the teacher's English (the objective;
    NaN when the dimensions differ); ``teacher_top1``, the teacher on both sides; ``n`` pairs.
    Pairs should be one-to-one (:func:`split_heldout` makes them so)."""
    config = config or DistillConfig()
    return _student_side(student, heldout, _teacher_side(teacher, heldout, config), config)


def _add_projection(student: Any, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """Append ``Dense(d_s -> d_t)`` (then ``Normalize`` again if the student normalises), initialised
    as the least-squares map from the student's vectors ``x`` (n, d_s) to the teacher's ``y`` (n, d_t)."""
    import torch
    from sentence_transformers.models import Dense, Normalize

    ones = np.ones((len(x), 1), dtype=np.float64)
    coef, *_ = np.linalg.lstsq(np.hstack([x, ones]).astype(np.float64), y.astype(np.float64), rcond=None)
    weight: torch.Tensor | None = torch.tensor(coef[:-1].T, dtype=torch.float32)  # (d_t, d_s)
    bias: torch.Tensor | None = torch.tensor(coef[-1], dtype=torch.float32)  # (d_t,)
    if not np.isfinite(coef).all():  # pragma: no cover - lstsq on finite inputs is finite; fall back to random
        weight, bias = None, None
    torch.manual_seed(seed)
    dense = Dense(x.shape[1], y.shape[1], activation_function=None, init_weight=weight, init_bias=bias)
    normalize = _normalizes(student)
    student.append(dense.to(student.device))
    if normalize:
        student.append(Normalize())
    return student


def _fingerprint(teacher: str, student: str, train: Mapping[str, Sequence[Pair]], config: DistillConfig) -> str:
    h = hashlib.sha1(json.dumps([teacher, student, asdict(config)], sort_keys=True).encode())
    for lang in sorted(train):
        h.update(lang.encode() + b"\0")
        for e, t in train[lang]:
            h.update(e.encode() + b"\t" + t.encode() + b"\n")
    return h.hexdigest()


def distill_multilingual(
    teacher_name: str | os.PathLike[str],
    student_name: str | os.PathLike[str],
    parallel: Mapping[str, Sequence[Pair]],
    output: str | os.PathLike[str],
    config: DistillConfig | None = None,
    *,
    overwrite: bool = False,
    show_progress: bool = True,
    callbacks: list[Any] | None = None,
    english: Sequence[str] = (),
) -> DistillResult:
    """Train ``student_name`` so that English and translation land on ``teacher_name``'s English vector.

    ``parallel`` maps a language label to its ``(english, translation)`` pairs (:func:`read_parallel`).
    ``english``: monolingual English texts (e.g. the user's own corpus) the student also learns to
    reproduce the teacher on — trained as ``(text, text)`` rows, they keep the student's English close
    to the teacher's beyond the parallel data's strings (Reimers & Gurevych train on the teacher's
    English sentences too). Texts that are held-out strings are dropped from them.
    :func:`split_heldout` holds out ``config.heldout_fraction`` of the English strings, evaluated
    before and after (:func:`evaluate_translation`). Re-running the same call after an interruption
    resumes from the last checkpoint in ``OUTPUT.partial`` (a changed call starts over). The model is
    saved at ``output`` with the manifest recording teacher, config and held-out results.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MSELoss
    from transformers.trainer_utils import get_last_checkpoint

    from embedforge.models import embedding_dim, load_model, save_model
    from embedforge.train.trainer import partial_dir

    config = config or DistillConfig()
    output = Path(output)
    if output.exists() and not overwrite:
        raise InputError("already exists; choose another --output or pass --overwrite", output)
    if not parallel or not any(parallel.values()):
        raise InputError("no parallel pairs to train on")
    train, heldout = split_heldout(parallel, config.heldout_fraction, config.seed)
    n_held = len({e for pairs in heldout.values() for e, _ in pairs})
    if config.heldout_fraction > 0 and n_held < 2:
        raise InputError(f"holding out {config.heldout_fraction:.0%} of {len({e for p in parallel.values() for e, _ in p})} "
                         "English strings leaves fewer than 2 to evaluate on; give more pairs or a larger fraction")
    rows = [(e, t) for lang in sorted(train) for e, t in train[lang]]
    if not rows:
        raise InputError("no pairs left to train on after holding out strings for evaluation")
    held_strings = {x for pairs in heldout.values() for pair in pairs for x in pair}
    mono = [t for t in dict.fromkeys(english) if t.strip() and t not in held_strings]
    rows += [(t, t) for t in mono]

    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = load_model(teacher_name, device=device)
    student = load_model(student_name, device=device)
    for model in (teacher, student):
        with contextlib.suppress(AttributeError):  # a static-embedding model has no length to set
            model.max_seq_length = config.max_length

    work = partial_dir(output)
    fingerprint = _fingerprint(os.fspath(teacher_name), os.fspath(student_name), {**train, "\0english": [(t, t) for t in mono]},
                               config)
    state_file, labels_file = work / _STATE, work / _LABELS
    state: dict[str, Any] = {}
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if state.get("fingerprint") != fingerprint:
            logger.warning("%s holds another run (other data, models or settings); starting again", work)
            shutil.rmtree(work)
            state = {}

    english = sorted({e for e, _ in rows})
    if state and labels_file.is_file():
        labels = np.load(labels_file)  # (n_english, d_t)
    else:
        labels = _embed(teacher, english, config, progress=show_progress)  # (n_english, d_t)
    if _normalizes(student):  # the student's vectors are unit length: so must its targets be
        labels = _unit(labels)
    other_dim = embedding_dim(student) != labels.shape[1]
    if other_dim and config.projection == "never":
        raise InputError(f"the student's dimension ({embedding_dim(student)}) differs from the teacher's "
                         f"({labels.shape[1]}) and projection is 'never'; use 'auto' or 'always'")
    if config.train == "head":
        if config.projection == "never":
            raise InputError("train 'head' fits the projection only; it cannot run with projection 'never'")
        return _fit_head(student, teacher, rows, english, labels, heldout, output, config,
                         other_dim=other_dim, n_mono=len(mono), n_held=n_held,
                         names=(os.fspath(teacher_name), os.fspath(student_name)), languages=sorted(parallel))
    projection = other_dim or config.projection == "always"
    if projection:
        student = _add_projection(student, _embed(student, english, config), labels, config.seed)
    teacher_held = _teacher_side(teacher, heldout, config)
    del teacher  # its vectors are all computed
    before = state.get("before") or _student_side(student, heldout, teacher_held, config)
    if not state:
        work.mkdir(parents=True, exist_ok=True)
        save_npy(labels_file, labels.astype(np.float32))
        write_json(state_file, {"fingerprint": fingerprint, "before": before})

    index = {e: i for i, e in enumerate(english)}
    dataset = Dataset.from_dict({
        "english": [e for e, _ in rows], "translation": [t for _, t in rows],
        "label": labels[[index[e] for e, _ in rows]].astype(np.float32),  # (n_rows, d_t), broadcast to both columns
    })
    on_cpu = device == "cpu"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(50, config.save_steps)),
        report_to="none",
        disable_tqdm=not show_progress,
        use_cpu=on_cpu,
        dataloader_drop_last=False,
        prompts=_prompt(student, config.prompt),  # e5: "query: " before both columns, as it will be used
    )
    last = get_last_checkpoint(str(work)) if work.is_dir() else None
    if last:
        logger.warning("resuming from %s", last)
    trainer = SentenceTransformerTrainer(
        model=student, args=args, train_dataset=dataset, loss=MSELoss(student), callbacks=callbacks
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - start
    after = _student_side(student, heldout, teacher_held, config)
    results = _before_after(before, after)
    steps = trainer.state.global_step
    if trainer.is_world_process_zero():
        training = {
            **asdict(config), "objective": "multilingual-distillation-mse", "teacher": os.fspath(teacher_name),
            "languages": sorted(parallel), "train_pairs": len(rows) - len(mono), "english_texts": len(mono),
            "heldout_strings": n_held,
            "projection": projection, "steps": steps, "seconds": round(seconds, 2),
        }
        save_model(student, output, base_model=os.fspath(student_name), training=training,
                   evaluation={"heldout_translation": results})
        shutil.rmtree(work, ignore_errors=True)
    return DistillResult(output=output, steps=steps, train_pairs=len(rows) - len(mono), heldout_strings=n_held,
                         projection=projection, seconds=seconds, heldout=results, resumed_from=last)
