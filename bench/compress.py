"""Compression table: the bundled MiniLM (6 layers) against its students, PCA, ONNX fp32/int8, combinations, static.

For each row: STS-B test Spearman x100, SciFact nDCG@10 (exact cosine search), sentences/s on short
STS-B sentences and on SciFact abstracts (256 tokens), each measured in the same run as plain
sentence-transformers ``encode`` of the teacher (alternating repetitions teacher / row, median of
3, batch 64; the ratio is the row's median over the teacher's median), model MB (the files its
backend reads), bytes per float32 vector, the label-free fidelity from its manifest, and the load
average of the machine before and after its speed runs. Kendall tau between the fidelity numbers
and the quality numbers across the compressed rows says whether fidelity ranks them the same way.

    .venv/bin/python bench/compress.py            # the full table -> bench/results/compress.json + BENCHMARKS.md
    .venv/bin/python bench/compress.py --quick    # tiny sizes, a smoke test -> bench/results/compress-smoke.json
    .venv/bin/python bench/compress.py --quick --rows onnx-int8   # the smallest smoke test (teacher + one row)

Compressed models are kept under bench/cache/compress/ (reused when their manifest config matches).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, RESULTS, machine, update_section, write_result  # noqa: E402

from embedforge.compress import CompressConfig, compress  # noqa: E402
from embedforge.corpus import join_title, read_documents, read_records  # noqa: E402
from embedforge.encode import encode  # noqa: E402
from embedforge.evaluate.metrics import ndcg_at_k  # noqa: E402
from embedforge.evaluate.sts import load_stsb, sts_spearman  # noqa: E402
from embedforge.io import write_json  # noqa: E402
from embedforge.models import load_model, read_manifest  # noqa: E402

BATCH = 64  # texts per forward pass in every speed and quality run
LONG_TOKENS = 256  # abstracts truncated here (MiniLM's own max length)


def rows(quick: bool, static: bool) -> dict[str, CompressConfig | None]:
    """Row name -> config (None: the teacher itself). A row named ``layers-N+...`` is built from the cached
    ``layers-N`` student (see :func:`make_row`), so each student is distilled once."""
    if quick:
        return {
            "teacher": None,
            "layers-2": CompressConfig(layers=2, epochs=1),
            "pca-32": CompressConfig(dim=32),
            "onnx-int8": CompressConfig(quantize="onnx-int8"),
            "openvino-int8": CompressConfig(quantize="openvino-int8"),
            "layers-2+onnx-int8": CompressConfig(quantize="onnx-int8"),
        }
    table: dict[str, CompressConfig | None] = {"teacher": None}
    for n in (4, 3, 2, 1):
        table[f"layers-{n}"] = student_config(f"layers-{n}")
    table["layers-4x3"] = student_config("layers-4x3")  # the 4-layer student distilled for 3 epochs instead of 1
    table["layers-4s"] = student_config("layers-4s")  # the 4-layer student distilled with short sentences added
    for d in (256, 128, 64):
        table[f"pca-{d}"] = CompressConfig(dim=d)
    for q in ("onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"):
        table[q] = CompressConfig(quantize=q)
    for n in ("4", "4x3", "4s", "3", "2"):
        table[f"layers-{n}+openvino-fp32"] = CompressConfig(quantize="openvino-fp32")
    for n in (3, 2):
        for q in ("onnx-int8", "openvino-int8"):
            table[f"layers-{n}+{q}"] = CompressConfig(quantize=q)
    table["layers-3+pca-128+openvino-fp32"] = CompressConfig(dim=128, quantize="openvino-fp32")
    if static:
        table["static-256"] = CompressConfig(static=True, dim=256)
    return table


def student_config(name: str) -> CompressConfig:
    """The layer-distillation config a student row's name spells: ``layers-N`` (1 epoch), ``layers-NxE``
    (E epochs over the same texts) or ``layers-Ns`` (1 epoch over the texts plus short sentences)."""
    layers, _, epochs = name.removeprefix("layers-").removesuffix(SHORT).partition("x")
    return CompressConfig(layers=int(layers), epochs=float(epochs or 1))


SHORT = "s"  # a student row ending in it is distilled on :func:`with_short_sentences`


def short_student(name: str) -> bool:
    return name.startswith("layers-") and "+" not in name and name.endswith(SHORT)


def with_short_sentences(data: Path, texts: list[str], held: list[str], exclude: set[str]) -> list[str]:
    """``texts`` without the benchmark's held-out fidelity slice, interleaved with short general sentences.

    What a user whose texts are short sentences would distil on: the sentences of STS-B *train* and *dev*
    and of SNLI validation + test (image captions and news/forum lines, 5-20 words), unlabelled. Any
    sentence also in ``exclude`` (STS-B test, what the table evaluates on) is dropped; ``held`` is left
    out so every row's fidelity is measured on texts its student never saw.
    """
    short: list[str] = []
    for split in ("train", "dev"):
        sts = load_stsb(data / "sts", split)
        short += sts.sentences1 + sts.sentences2
    for name in ("validation.tsv", "test.tsv"):
        with open(data / "nli" / "snli" / name, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                short += [row["premise"], row["hypothesis"]]
    drop = set(held) | exclude
    short = [t.strip() for t in short if t and t.strip() and t.strip() not in drop]
    rest = [t for t in texts if t not in drop]
    mixed = [t for pair in zip(rest, short, strict=False) for t in pair] + rest[len(short):] + short[len(rest):]
    return list(dict.fromkeys(mixed))


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def train_texts(data: Path, limit: int) -> list[str]:
    """The "user's texts": general (Wikipedia) and scientific (SciFact) sentences, interleaved, deduplicated."""
    files = [data / "unlabeled" / "wiki_head.txt", data / "unlabeled" / "scifact_sentences.txt"]
    lists = [[line.strip() for line in f.read_text(encoding="utf-8").splitlines() if len(line.strip()) > 20]
             for f in files]
    mixed = [t for pair in zip(*lists, strict=False) for t in pair]
    return list(dict.fromkeys(mixed))[:limit]


def scifact(data: Path, n_queries: int | None) -> tuple[list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """(doc ids, doc texts, query texts in qrels order, qrels) of SciFact test; with ``n_queries`` a small slice."""
    folder = data / "retrieval" / "scifact"
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) >= 3 and row[2].strip().isdigit():
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {str(r["_id"]): str(r["text"]) for _, r in read_records(folder / "queries.jsonl") if str(r["_id"]) in qrels}
    qids = sorted(q for q in qrels if q in queries)
    docs = read_documents(folder)
    if n_queries is not None:
        qids = qids[:n_queries]
        judged = {d for q in qids for d in qrels[q]}
        docs = [d for i, d in enumerate(docs) if d.id in judged or i < 10 * n_queries]
    return [d.id for d in docs], [join_title(d.title, d.text) for d in docs], [queries[q] for q in qids], \
        {q: qrels[q] for q in qids}


def make_row(name: str, config: CompressConfig, texts: dict[str, list[str]], cache: Path, force: bool) -> Path:
    """The row's model directory under ``cache``, compressed unless a cached one has the same config.

    ``layers-N+...`` rows compress the cached ``layers-N`` student (its PyTorch weights teach, as
    ``compress`` does for any compressed model), so each student is distilled once; their manifest's
    fidelity is then against the student, and :func:`bench_fidelity` measures them against the teacher.
    ``texts``: ``"plain"`` (every row) and ``"short"`` (``layers-Ns`` students, :func:`with_short_sentences`).
    """
    out = cache / name
    source = "minilm"
    if name.startswith("layers-") and "+" in name:
        student = name.split("+")[0]
        source = str(make_row(student, student_config(student), texts, cache, force=False))
    manifest = read_manifest(out) if out.is_dir() else None
    info = (manifest or {}).get("compress", {})
    if force or manifest is None or info.get("config") != config.to_dict() or info.get("teacher") != source:
        print(f"[compress] {name} (from {source}) ...", flush=True)
        kind = "short" if short_student(name) else "plain"
        compress(source, f"bench:train-texts ({kind})", out, config, texts=texts[kind], overwrite=True)
    return out


def bench_fidelity(encoder: Any, held: list[str], teacher_held: np.ndarray, k: int) -> dict[str, float | None]:
    """Fidelity of a row built from a student, against the original teacher: the k-NN overlap, and the
    mean cosine when the dimensions match (a PCA row's projection is the student's, not the teacher's)."""
    from embedforge.compress.fidelity import knn_overlap, mean_cosine

    vecs = encode(encoder, held, batch_size=BATCH, normalize=False)
    cos = mean_cosine(vecs, teacher_held) if vecs.shape[1] == teacher_held.shape[1] else None
    return {"mean_cosine": cos, f"knn_overlap@{k}": knn_overlap(vecs, teacher_held, k)}


def cached_quality(path: Path | None, quick: bool, compute: Any) -> dict[str, Any]:
    """Quality numbers (no timings in them) of a row, reused when its model directory did not change."""
    key = {"quick": quick, "manifest": None if path is None else read_manifest(path)}
    file = CACHE / ("compress-smoke" if quick else "compress") / "quality" / f"{'teacher' if path is None else path.name}.json"
    if file.is_file():
        saved = json.loads(file.read_text())
        if saved.get("key") == json.loads(json.dumps(key, default=str)):
            return dict(saved["value"])
    value = compute()
    write_json(file, {"key": key, "value": value})
    return dict(value)


def model_mb(path: Path | None, manifest: dict[str, Any] | None) -> float:
    """MB of the files the row's backend reads: the ONNX file, or everything but onnx/ for PyTorch."""
    if path is None:
        from embedforge.models import resolve_model

        path = Path(resolve_model("minilm"))
    spec = (manifest or {}).get("backend")
    if spec:
        graph = path / spec["file"]
        weights = graph.with_suffix(".bin") if graph.suffix == ".xml" else None  # OpenVINO IR: graph + weights
        return (graph.stat().st_size + (weights.stat().st_size if weights and weights.is_file() else 0)) / 1e6
    files = [p for p in path.rglob("*") if p.is_file() and "onnx" not in p.relative_to(path).parts]
    return sum(p.stat().st_size for p in files if p.suffix in (".safetensors", ".bin", ".pt")) / 1e6


def speed(teacher: Any, encoder: Any, texts: list[str], reps: int) -> dict[str, float]:
    """Sentences/s of ``encoder`` and of plain ``teacher.encode`` on ``texts``, alternating, median of ``reps``."""
    t_times, r_times = [], []
    before = loadavg()
    for _ in range(reps):
        start = time.perf_counter()
        teacher.encode(texts, batch_size=BATCH, convert_to_numpy=True)
        t_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        encode(encoder, texts, batch_size=BATCH)
        r_times.append(time.perf_counter() - start)
    t_med, r_med = statistics.median(t_times), statistics.median(r_times)
    return {"per_s": len(texts) / r_med, "teacher_per_s": len(texts) / t_med, "x_teacher": t_med / r_med,
            "load_before": before, "load_after": loadavg()}


def quality(encoder: Any, sts: Any, docs: list[str], doc_ids: list[str], queries: list[str],
            qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    e1 = encode(encoder, sts.sentences1, batch_size=BATCH)
    e2 = encode(encoder, sts.sentences2, batch_size=BATCH)
    finite = isinstance(getattr(encoder, "max_seq_length", None), int)  # a static model has no token limit
    d = encode(encoder, docs, batch_size=BATCH, max_length=LONG_TOKENS if finite else None)
    q = encode(encoder, queries, batch_size=BATCH)
    scores = q @ d.T  # (queries, docs), unit vectors
    top = np.argsort(-scores, axis=1)[:, :10]
    run = {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qrels)}
    return {"stsb_spearman": sts_spearman(sts, e1, e2), "scifact_ndcg10": 100.0 * ndcg_at_k(run, qrels, 10)}


def kendall(results: dict[str, dict[str, Any]], x: str, y: str) -> float | None:
    from scipy.stats import kendalltau

    pairs = [(r[x], r[y]) for name, r in results.items()
             if name != "teacher" and r.get(x) is not None and r.get(y) is not None]
    if len(pairs) < 3:
        return None
    tau = kendalltau([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return None if np.isnan(tau) else float(tau)


def _num(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def markdown_table(res: dict[str, Any]) -> str:
    head = ("| model | layers | dim | STS-B | SciFact nDCG@10 | short sent/s | × teacher | 256-tok sent/s | × teacher "
            "| MB | bytes/vector | fidelity cos | 10-NN overlap |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, r in res["rows"].items():
        lines.append(
            f"| {name} | {r['layers'] if r['layers'] is not None else '—'} | {r['dimension']} | {r['stsb_spearman']:.2f} "
            f"| {r['scifact_ndcg10']:.2f} | {r['short']['per_s']:.0f} | {r['short']['x_teacher']:.2f} "
            f"| {r['long']['per_s']:.1f} | {r['long']['x_teacher']:.2f} | {r['model_mb']:.1f} | {r['bytes_per_vector']} "
            f"| {_num(r['fidelity_cos'], 4)} | {_num(r['fidelity_knn'], 3)} |"
        )
    m = res["machine"]
    runs = ""
    if res.get("earlier_runs"):
        now = [n for n, r in res["rows"].items() if r.get("run") == m.get("commit")]
        runs = (f" Rows measured in this run (commit {m.get('commit')}): {', '.join(now)}; the others in earlier runs ("
                + "; ".join(f"commit {e['commit']}, load {e['load_start']:.2f} at start, {e['load_max']:.2f} at most"
                            for e in res["earlier_runs"]) + "), each alternating with the teacher in its own run.")
    again = [f"{name} ×{r['short']['x_teacher']:.2f} (" + ", ".join(f"×{e['short_x']:.2f}" for e in r["earlier_speed"])
             + f") short, ×{r['long']['x_teacher']:.2f} (" + ", ".join(f"×{e['long_x']:.2f}" for e in r["earlier_speed"]) + ") long"
             for name, r in res["rows"].items() if r.get("earlier_speed")]
    if again:
        runs += (" Rows timed in more than one pass (the table shows the last; earlier passes in brackets, each its own "
                 "alternation with the teacher): " + "; ".join(again) + ".")
    taus = ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in res["kendall_tau"].items())
    return (
        f"## Compression, `bench/compress.py`\n\nTeacher: bundled all-MiniLM-L6-v2; students distilled on "
        f"{res['train_texts']} texts (Wikipedia + SciFact sentences, {res['holdout_note']})"
        + (f"; `layers-N{SHORT}` students on {res['short_train_texts']} texts: the same without the held-out slice, "
           "interleaved with the short sentences of STS-B *train* and *dev* and SNLI validation + test (any sentence of "
           "STS-B test removed) — what a user whose texts are short sentences distils on, and close to STS-B test's kind "
           "of text" if res.get("short_train_texts") else "")
        + f". Speed: batch {BATCH}, "
        f"median of {res['reps']} alternating with plain sentence-transformers `encode` of the teacher; "
        f"{m['cpu']}, {m['cores']} cores, load average {res['load_start']:.2f} at start, {res['load_end']:.2f} at end, "
        f"{res['load_max']:.2f} at most around a speed run (a ratio measured under load is measured alternating with "
        f"the teacher, so both sides saw it).{runs}\n\n"
        + "\n".join(lines)
        + "\n\nFidelity: the label-free numbers `compress` stores in the manifest, on the held-out texts: mean cosine "
        "to the teacher (for PCA rows, of the vector mapped back to the teacher's space against the centred teacher "
        "vector; none for a static model of another dimension) and overlap of the 10 nearest neighbours. "
        "`layers-N+…` rows are `compress` run on the `layers-N` student (each student is distilled once); their "
        "fidelity is measured by the benchmark against the original teacher on the same held-out texts (no mean "
        "cosine when a PCA of the student changes the dimension). "
        f"Kendall τ (fidelity vs quality, compressed rows): {taus}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("EMBEDFORGE_DATA", "../shared/data"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script, not a result")
    parser.add_argument("--train-texts", type=int, default=20000, help="texts to distil / fit on (full run)")
    parser.add_argument("--speed-texts", type=int, default=1000, help="short sentences timed per repetition")
    parser.add_argument("--long-texts", type=int, default=200, help="SciFact abstracts timed per repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--force", action="store_true", help="recompress even when a cached row matches")
    parser.add_argument("--rows", help="comma-separated row names to run (the teacher always runs); default: all")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of bench/results/compress.json not run now (each row's speed is its own "
                             "alternation with the teacher, so rows of two runs compare; the table says which run)")
    parser.add_argument("--prepare", action="store_true",
                        help="build every row and measure its quality (cached), no speed runs and no result: "
                             "the long part, which need not run on a quiet machine")
    args = parser.parse_args(argv)
    data = Path(args.data_dir)
    quick = args.quick
    n_train = 80 if quick else args.train_texts
    import importlib.util

    table = rows(quick, static=importlib.util.find_spec("model2vec") is not None)
    if args.rows:
        wanted = {"teacher", *(r.strip() for r in args.rows.split(","))}
        unknown = wanted - set(table)
        if unknown:
            parser.error(f"unknown rows {', '.join(sorted(unknown))}; choose from {', '.join(table)}")
        # run in the order given (a long --prepare does the rows that matter most first); the table keeps its order
        table = {name: table[name] for name in ["teacher", *(r.strip() for r in args.rows.split(","))]}
    cache = CACHE / ("compress-smoke" if quick else "compress")
    plain = train_texts(data, n_train)
    sts = load_stsb(data / "sts", "test")
    if quick:
        from embedforge.evaluate.sts import StsData

        sts = StsData(sts.sentences1[:40], sts.sentences2[:40], sts.scores[:40])
    doc_ids, docs, queries, qrels = scifact(data, 5 if quick else None)
    short = list(dict.fromkeys(sts.sentences1 + sts.sentences2))[: 32 if quick else args.speed_texts]
    long_texts = docs[: 8 if quick else args.long_texts]
    teacher = load_model("minilm")
    teacher.max_seq_length = LONG_TOKENS
    from embedforge.compress.run import split_holdout

    held = split_holdout(plain, CompressConfig())[1]  # the slice every row's compress held out (same texts, seed)
    texts = {"plain": plain}
    if any(short_student(name.split("+")[0]) for name in table):  # a short student, or a row built from one
        texts["short"] = with_short_sentences(data, plain, held, set(sts.sentences1 + sts.sentences2))
    k = CompressConfig().knn_k
    teacher_held: np.ndarray | None = None
    load_start = loadavg()
    results: dict[str, dict[str, Any]] = {}
    for name, config in table.items():
        path = None if config is None else make_row(name, config, texts, cache, args.force)
        manifest = None if path is None else read_manifest(path)
        info = (manifest or {}).get("compress", {})
        encoder = teacher if path is None else load_model(path)  # as every command loads it (ONNX when named)
        print(f"[bench] {name}", flush=True)
        fid = info.get("fidelity", {}).get(info.get("backend", "torch"), {})
        # built from a student, or distilled on other texts: measure against the teacher on the shared held-out slice
        if path is not None and (info.get("teacher") != "minilm" or short_student(name)):
            if teacher_held is None:
                teacher_held = encode(teacher, held, batch_size=BATCH, normalize=False)

            def measure(enc: Any = encoder, t_held: np.ndarray = teacher_held) -> dict[str, Any]:
                return {**quality(enc, sts, docs, doc_ids, queries, qrels),
                        "fidelity": bench_fidelity(enc, held, t_held, k)}
        else:
            def measure(enc: Any = encoder, f: dict[str, Any] = fid) -> dict[str, Any]:
                return {**quality(enc, sts, docs, doc_ids, queries, qrels), "fidelity": f}
        measured = cached_quality(path, quick, measure)
        fid = measured.pop("fidelity")
        if args.prepare:
            print(f"  {name}: {measured} fidelity {fid}", flush=True)
            continue
        results[name] = {
            "layers": 6 if path is None else (info.get("layers", {}).get("count") or info.get("teacher_layers")),
            "dimension": int(info.get("dimension", 384)),
            **measured,
            "short": speed(teacher, encoder, short, args.reps),
            "long": speed(teacher, encoder, long_texts, args.reps),
            "model_mb": model_mb(path, manifest),
            "bytes_per_vector": 4 * int(info.get("dimension", 384)),
            # a static model of another dimension has no mean cosine to the teacher (None)
            "fidelity_cos": 1.0 if path is None else fid.get("mean_cosine"),
            "fidelity_knn": 1.0 if path is None else fid.get(f"knn_overlap@{k}"),
            "backend": info.get("backend", "torch"),
            "built_from": None if path is None else info.get("teacher"),
        }
        if config is not None and config.static:
            results[name]["layers"] = None
    if args.prepare:
        print("prepared: every row built and its quality cached; run again without --prepare on a quiet machine")
        return 0
    info = machine()
    commit = info.get("commit")
    for r in results.values():
        r["run"] = commit
    earlier: list[dict[str, Any]] = []
    short_count = len(texts["short"]) if "short" in texts else None
    if args.merge and not quick:
        old = json.loads((RESULTS / "compress.json").read_text(encoding="utf-8"))
        short_count = short_count or old.get("short_train_texts")  # kept rows may be short students
        for name, r in results.items():  # a row measured again keeps its earlier speed ratios beside the new one
            if name in old["rows"]:
                prev = old["rows"][name]
                r["earlier_speed"] = [*prev.get("earlier_speed", []),
                                      {"run": prev.get("run") or old["machine"].get("commit"),
                                       "short_x": prev["short"]["x_teacher"], "long_x": prev["long"]["x_teacher"]}]
        kept = {name: {**r, "run": r.get("run") or old["machine"].get("commit")}
                for name, r in old["rows"].items() if name not in results}
        results.update(kept)
        earlier = [run for run in [*old.get("earlier_runs", []),
                                   {k: old.get(k) for k in ("load_start", "load_end", "load_max")}
                                   | {"commit": old["machine"].get("commit")}]
                   if any(r["run"] == run["commit"] for r in kept.values())]
    order = list(rows(quick, static=True))
    results = dict(sorted(results.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    teacher_row = results["teacher"]
    for r in results.values():
        r["stsb_delta"] = r["stsb_spearman"] - teacher_row["stsb_spearman"]
        r["scifact_delta"] = r["scifact_ndcg10"] - teacher_row["scifact_ndcg10"]
    out = {
        "machine": info, "quick": quick, "reps": args.reps, "train_texts": len(plain),
        "short_train_texts": short_count,
        "holdout_note": f"{CompressConfig().holdout:.0%} held out for fidelity", "load_start": load_start,
        "load_end": loadavg(), "rows": results, "earlier_runs": earlier,
        "load_max": max(max(r[k]["load_before"], r[k]["load_after"]) for r in results.values() if r["run"] == commit
                        for k in ("short", "long")),
        "kendall_tau": {
            "cos~stsb": kendall(results, "fidelity_cos", "stsb_spearman"),
            "cos~scifact": kendall(results, "fidelity_cos", "scifact_ndcg10"),
            "knn~stsb": kendall(results, "fidelity_knn", "stsb_spearman"),
            "knn~scifact": kendall(results, "fidelity_knn", "scifact_ndcg10"),
        },
    }
    path = write_result("compress-smoke" if quick else "compress", out)
    print(markdown_table(out))
    if not quick:
        update_section("compress", markdown_table(out))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
