"""Serving against an anchor: ``embedforge serve`` and infinity-emb, same model, same machine, same client.

The comparison users make is with the server they would otherwise deploy. infinity-emb
(michaelfeil/infinity: dynamic batching, an OpenAI-shaped API) runs offline here in its own
environment, ``bench/.venv-infinity`` (it pins transformers < 4.58, sentence-transformers < 4,
numpy < 2), built on first use or with ``--setup-infinity``:

    python3 -m venv bench/.venv-infinity
    bench/.venv-infinity/bin/pip install torch==2.13.0
    bench/.venv-infinity/bin/pip install -c constraints.txt "infinity-emb[server,torch]==0.0.78"   # constraints: torch==2.13.0

How it is measured:

* one server at a time, alternating A/B/A/B (``--rounds``), each a subprocess on 127.0.0.1;
* the same model directory (MiniLM by default), one sentence per request (the sentences of
  ``bench/serve.py``), ``encoding_format=base64``, the aiohttp keep-alive client of ``bench/serve.py``,
  a fixed number of requests per concurrency (1, 8, 32, 64), each setting capped in time;
* embedforge with **default flags** (``embedforge serve --model M``: its own thread and batching
  defaults are what is measured); infinity with ``--engine torch --batch-size 64`` and
  ``OMP_NUM_THREADS`` set to the thread count embedforge's default picks on this machine;
* the model alone (no HTTP, same threads) one text at a time and in batches of 64: the ceiling
  each server's requests/s is a share of;
* optionally on a busy machine (``--load busy``): ``--burners`` processes spinning
  ``while True: pass`` beside the server for the whole phase, as another tenant would;
* before the timed runs, each server's vectors for a few sentences are compared with the first
  server's (infinity's default pooling for some models is not the model's own).

Extra rows: ``--workers 1`` (explicit worker counts beside the default of one per core: scaling),
``--infinity-threads 1 2`` (infinity at several OMP_NUM_THREADS, e.g. its own default of one per core), ``--variant 'wait5=--max-wait-ms 5'`` (other
flags, to check a default against its alternatives in the same run), ``--compressed DIR`` (a
compressed model directory, e.g. ONNX int8 from ``embedforge compress``, served with default flags).

    .venv/bin/python bench/serve_vs_infinity.py --setup-infinity          # only build bench/.venv-infinity
    .venv/bin/python bench/serve_vs_infinity.py                           # idle machine, 2 rounds, ~6 minutes on 2 cores
    .venv/bin/python bench/serve_vs_infinity.py --load idle busy          # and the busy-machine table, ~12 minutes
    .venv/bin/python bench/serve_vs_infinity.py --requests 40 --concurrency 1 8 --rounds 1 --out /tmp/s.json --no-markdown   # smoke

Writes ``bench/results/serve_vs_infinity.json`` and the ``serve_vs_infinity`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, publish  # noqa: E402
from serve import HOST, Server, _free_port, _load, client_name, embedding_body, make_texts, model_ceiling  # noqa: E402

from embedforge.models import resolve_model  # noqa: E402
from embedforge.serve.config import ServeConfig, available_cores, default_torch_threads  # noqa: E402

INFINITY_VENV = ROOT / "bench" / ".venv-infinity"
INFINITY_SPEC = "infinity-emb[server,torch]==0.0.78"
TORCH_SPEC = "torch==2.13.0"  # the CPU build this project uses; pinned again in the constraints so infinity keeps it
INFINITY_BATCH = 64  # infinity's --batch-size: embedforge's default max_batch_size
BURN = "while True:\n    pass\n"


def setup_infinity(venv: Path = INFINITY_VENV) -> Path:
    """Build infinity-emb's environment under ``venv`` (once; kept, git-ignored); returns its CLI."""
    cli = venv / "bin" / "infinity_emb"
    if cli.is_file():
        return cli
    print(f"building {venv} (torch, then {INFINITY_SPEC}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, TORCH_SPEC], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write(TORCH_SPEC + "\n")
    try:
        subprocess.run([*pip, "-c", constraints.name, INFINITY_SPEC], check=True)
    finally:
        os.unlink(constraints.name)
    return cli


class Infinity(Server):
    """``infinity_emb v2`` in a subprocess on 127.0.0.1 (routes under /v1 like embedforge's); stopped on exit."""

    def __init__(self, model_dir: str, *, name: str, threads: int, cli: Path) -> None:
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [str(cli), "v2", "--model-id", model_dir, "--served-model-name", name, "--port", str(self.port),
               "--host", HOST, "--engine", "torch", "--device", "cpu", "--batch-size", str(INFINITY_BATCH),
               "--url-prefix", "/v1"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
               "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.name = name

    def __enter__(self) -> Infinity:
        super().__enter__()
        self.health = {"model": self.name}  # /health answers without a model name
        return self


class Burners:
    """``n`` processes spinning the CPU (the busy-machine mode), stopped on exit."""

    def __init__(self, n: int) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(n)]

    def __enter__(self) -> Burners:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)


def _vectors(url: str, model: str, texts: list[str]) -> Any:
    import httpx
    import numpy as np

    body = httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": texts, "encoding_format": "base64"}, timeout=60)
    body.raise_for_status()
    data = sorted(body.json()["data"], key=lambda d: d["index"])
    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])


def servers(args: argparse.Namespace, threads: int) -> list[tuple[str, Any, str]]:
    """(label, a function starting the server, the model it serves) in the order of one round."""
    out: list[tuple[str, Any, str]] = []
    out.append(("embedforge", lambda: Server(args.model, batching=True, extra=[]), args.model))  # default flags
    for workers in args.workers:
        extra = ["--workers", str(workers)]
        out.append((f"embedforge --workers {workers}", lambda extra=extra: Server(args.model, batching=True, extra=extra), args.model))
    for variant in args.variant:
        label, _, flags = variant.partition("=")
        out.append((f"embedforge {label}", lambda flags=flags: Server(args.model, batching=True, extra=flags.split()), args.model))
    for directory in args.compressed:
        out.append((f"embedforge {Path(directory).name}", lambda d=directory: Server(d, batching=True, extra=[]), directory))
    if not args.no_infinity:
        cli = setup_infinity(args.infinity_venv)
        model_dir = resolve_model(args.model)
        for n in args.infinity_threads or [threads]:
            label = "infinity-emb" if n == threads else f"infinity-emb OMP_NUM_THREADS={n}"
            out.append((label, lambda n=n: Infinity(model_dir, name=args.model, threads=n, cli=cli), args.model))
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    texts = make_texts(max(args.requests, 64))
    threads = default_torch_threads(ServeConfig().workers)  # one default worker's torch threads
    ceiling_args = argparse.Namespace(torch_threads=threads, max_batch_size=ServeConfig().max_batch_size, model=args.model)
    ceilings = {args.model: model_ceiling(ceiling_args, texts)}
    for directory in args.compressed:
        ceilings[directory] = model_ceiling(argparse.Namespace(**{**vars(ceiling_args), "model": directory}), texts)
    specs = servers(args, threads)
    runs: list[dict[str, Any]] = []
    agreement: dict[str, float] = {}
    reference: Any = None
    for mode in args.load:
        with Burners(args.burners if mode == "busy" else 0):
            for round_ in range(1, args.rounds + 1):
                for label, start, served in specs:
                    with start() as server:
                        model_id = server.health["model"]
                        if mode == args.load[0] and round_ == 1 and served == args.model:
                            vectors = _vectors(server.url, model_id, texts[:8])
                            if reference is None:
                                reference = vectors
                            agreement[label] = float(abs(vectors - reference).max())
                        request = embedding_body(model_id, texts)
                        asyncio.run(_load(server.url, request, 4, args.warmup, args.max_seconds))  # warm-up, not counted
                        for concurrency in args.concurrency:
                            result = asyncio.run(_load(server.url, request, concurrency, args.requests, args.max_seconds))
                            result.update(server=label, load=mode, round=round_)
                            runs.append(result)
                            print(f"{mode:<4} round {round_} {label:<28} c={concurrency:>3}: {result['requests_per_s']:7.1f} req/s "
                                  f"p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                                  f"({result['requests']} ok, {result['errors']} errors)", flush=True)
                    time.sleep(1)  # let the port and the CPU settle between servers
    return {
        "benchmark": "serve_vs_infinity",
        "model": args.model,
        "endpoint": "POST /v1/embeddings, one sentence per request, encoding_format=base64",
        "requests_per_setting": args.requests,
        "max_seconds_per_setting": args.max_seconds,
        "rounds": args.rounds,
        "order": [spec[0] for spec in specs],
        "embedforge_flags": "defaults (embedforge serve --model M)",
        "embedforge_defaults": {"torch_threads": threads, "workers": ServeConfig().workers,
                                "max_batch_size": ServeConfig().max_batch_size,
                                "max_batch_tokens": ServeConfig().max_batch_tokens, "max_wait_ms": ServeConfig().max_wait_ms},
        "infinity": {"version": INFINITY_SPEC, "flags": f"--engine torch --device cpu --batch-size {INFINITY_BATCH}",
                     "omp_num_threads": args.infinity_threads or [threads]} if not args.no_infinity else None,
        "busy": f"{args.burners} process(es) running `while True: pass` beside the server" if "busy" in args.load else None,
        "load_client": f"{client_name()} async client on 127.0.0.1, same machine (it shares the cores)",
        "usable_cores": available_cores(),
        "machine": machine(),
        "model_alone": ceilings,
        "max_abs_diff_vs_first_server": agreement,
        "runs": runs,
        "summary": summarize(runs, {label: ceilings[served] for label, _, served in specs}),
    }


def summarize(runs: list[dict[str, Any]], ceilings: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds per (load, server, concurrency), with the share of its model's batched ceiling."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["load"], run["server"], run["concurrency"]), []).append(run)
    rows = []
    for (load, server, concurrency), items in groups.items():
        rps = statistics.median(r["requests_per_s"] for r in items)
        ceiling = ceilings[server]
        rows.append({
            "load": load, "server": server, "concurrency": concurrency,
            "requests_per_s": round(rps, 1),
            "requests_per_s_range": [min(r["requests_per_s"] for r in items), max(r["requests_per_s"] for r in items)],
            "p50_ms": round(statistics.median(r["p50_ms"] for r in items), 1),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in items), 1),
            "errors": sum(r["errors"] for r in items),
            "share_of_model_alone": round(rps / ceiling["batched_texts_per_s"], 2) if ceiling.get("batched_texts_per_s") else None,
        })
    return rows


def verdicts(result: dict[str, Any]) -> list[str]:
    """The issue's "done when" checks, as sentences."""
    rows = {(r["load"], r["server"], r["concurrency"]): r for r in result["summary"]}
    lines = []
    for load in dict.fromkeys(r["load"] for r in result["summary"]):
        for c in sorted({r["concurrency"] for r in result["summary"]}):
            ours = rows.get((load, "embedforge", c))
            for anchor in dict.fromkeys(r["server"] for r in result["summary"] if r["server"].startswith("infinity-emb")):
                theirs = rows.get((load, anchor, c))
                if not (ours and theirs):
                    continue
                faster = ours["requests_per_s"] >= theirs["requests_per_s"]
                tail = ours["p99_ms"] <= theirs["p99_ms"]
                lines.append(f"{load}, concurrency {c}: requests/s {'≥' if faster else '<'} {anchor} "
                             f"({ours['requests_per_s']:.0f} vs {theirs['requests_per_s']:.0f}), p99 "
                             f"{'≤' if tail else '>'} {anchor} ({ours['p99_ms']:.0f} vs {theirs['p99_ms']:.0f} ms)")
    idle, busy = rows.get(("idle", "embedforge", 1)), rows.get(("busy", "embedforge", 1))
    if idle and busy:
        ok = busy["requests_per_s"] * 2 >= idle["requests_per_s"]
        lines.append(f"busy machine, concurrency 1: {busy['requests_per_s']:.0f} req/s against {idle['requests_per_s']:.0f} idle "
                     f"({'within' if ok else 'NOT within'} 2×)")
    return lines


def markdown_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    d = result["embedforge_defaults"]
    alone = result["model_alone"][result["model"]]
    lines = [
        "## Serving against infinity-emb (`bench/serve_vs_infinity.py`)",
        "",
        f"Model `{result['model']}`, {result['endpoint'].split(', ', 1)[1]}, {result['requests_per_setting']} requests per "
        f"setting (at most {result['max_seconds_per_setting']:.0f} s), {result['rounds']} rounds alternating "
        f"{' / '.join(result['order'])}; median over rounds (requests/s range in brackets). Load from {result['load_client']}. "
        f"Machine: {m.get('cpu')}, {result['usable_cores']} usable cores, torch {m.get('torch')}. "
        f"embedforge with default flags ({d['workers']} worker(s) of {d['torch_threads']} torch thread(s), batches of up to "
        f"{d['max_batch_size']} texts / {d['max_batch_tokens']} tokens, {d['max_wait_ms']} ms wait)"
        + (f"; {result['infinity']['version']} with `{result['infinity']['flags']}`, OMP_NUM_THREADS="
           f"{'/'.join(str(n) for n in result['infinity']['omp_num_threads'])}" if result.get("infinity") else "")
        + (f". Busy: {result['busy']}." if result.get("busy") else "."),
        "",
        f"Model alone (no HTTP, same threads): {alone['single_text_per_s']:.0f} texts/s one at a time, "
        f"{alone['batched_texts_per_s']:.0f} texts/s in batches of {d['max_batch_size']}; \"share\" is a server's "
        "requests/s over the batched figure of the model it serves.",
        "",
        "| machine | server | concurrency | requests/s | p50 ms | p99 ms | share of model alone | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["summary"]:
        lo, hi = r["requests_per_s_range"]
        share = f"{r['share_of_model_alone']:.0%}" if r["share_of_model_alone"] is not None else "—"
        lines.append(f"| {r['load']} | {r['server']} | {r['concurrency']} | {r['requests_per_s']:.1f} [{lo:.0f}–{hi:.0f}] "
                     f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {share} | {r['errors']} |")
    checks = verdicts(result)
    if checks:
        lines += ["", *[f"- {line}" for line in checks]]
    diffs = result.get("max_abs_diff_vs_first_server")
    if diffs:
        lines += ["", "Largest vector difference from the first server on 8 sentences: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) + "."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="model both servers serve (default: the bundled minilm)")
    parser.add_argument("--requests", type=int, default=400, help="requests per setting (default: %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time cap per setting (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64], help="levels (default: 1 8 32 64)")
    parser.add_argument("--rounds", type=int, default=2, help="A/B alternations per machine state (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=32, help="uncounted requests after each server start")
    parser.add_argument("--load", nargs="+", choices=["idle", "busy"], default=["idle"], help="machine states to measure")
    parser.add_argument("--burners", type=int, default=1, help="CPU-spinning processes in the busy state (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="explicit embedforge --workers values to measure "
                        "beside the default flags (default: none)")
    parser.add_argument("--infinity-threads", type=int, nargs="*", default=[], metavar="N",
                        help="OMP_NUM_THREADS values to run infinity with (default: one embedforge worker's torch threads)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS",
                        help="another embedforge row with these serve flags, e.g. 'wait5=--max-wait-ms 5'; repeatable")
    parser.add_argument("--compressed", nargs="*", default=[], metavar="DIR", help="compressed model directories to serve too")
    parser.add_argument("--no-infinity", action="store_true", help="embedforge rows only")
    parser.add_argument("--infinity-venv", type=Path, default=INFINITY_VENV, help="infinity-emb's environment (default: %(default)s)")
    parser.add_argument("--setup-infinity", action="store_true", help="only build the infinity environment, then exit")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: bench/results/serve_vs_infinity.json)")
    parser.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md (smoke runs)")
    args = parser.parse_args()
    if args.setup_infinity:
        print(setup_infinity(args.infinity_venv))
        return 0
    result = measure(args)
    publish("serve_vs_infinity", result, markdown_table(result), out=args.out, markdown=not args.no_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
