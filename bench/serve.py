"""Serving benchmark: requests/s and p50 / p99 latency of ``POST /v1/embeddings`` and ``POST /v1/search``, batched vs. not.

For each of two servers started in the same run — ``embedforge serve`` with dynamic
micro-batching and with ``--no-batching`` — single-text requests are sent at concurrency 1, 8
and 32 by an async client (aiohttp when installed, else httpx): a fixed number of requests per
setting, each setting also capped in time. The servers listen on 127.0.0.1 and the load goes
there only; each server is a subprocess, so the load generator does not share its interpreter
(it does share the machine's cores: said in the results).

The embeddings rows take about 2 minutes with the defaults on a 2-core machine (two server
starts, 6 settings of 400 requests, each at most 60 s: 8 minutes at the very worst); the search
rows add indexing the documents once and, per round, two server starts and 6 settings more.

The servers run with ``--torch-threads 1`` by default: on a 2-core machine that also runs the
load client, a 2-thread torch team often waits for a member the OS has descheduled, and a
single-text forward pass then takes 10-100× longer than it should (measured here; pass
``--torch-threads 0`` for torch's own choice on a bigger machine).

``/v1/search`` is measured the same way on a collection of synthetic documents (``--search-docs``,
indexed once per run in a temporary directory, exact index): one query per request, against one
server with ``--no-search-batching`` (each request its own query encode and index search, as
before search was batched) and one with search batching, alternating ``--search-rounds`` times
(off, on, off, on …) so a drift of the machine shows as a difference between rounds.

Texts are synthetic sentences (seeded; 8-24 words from a small vocabulary): the numbers measure
the server, not a data set. Requests use ``encoding_format="base64"``, what the official
``openai`` client sends by default.

    .venv/bin/python bench/serve.py                          # minilm, 400 requests per setting
    .venv/bin/python bench/serve.py --requests 40 --out /tmp/serve.json --no-markdown   # smoke run
    .venv/bin/python bench/serve.py --endpoints search --search-rounds 2       # only the /v1/search rows
    .venv/bin/python bench/serve.py --anchor infinity --load idle busy        # against infinity-emb: bench/serve_vs_infinity.py

Writes ``bench/results/serve.json`` and the ``serve`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, publish  # noqa: E402

HOST = "127.0.0.1"  # load goes to this machine only
_VOCABULARY = """
the a model search query document vector embedding fast slow river city market protein cell learns
finds returns shows small large new old quickly today because while after before data server request
batch latency users their our text meaning similar distant cluster topic map
"""
WORDS = _VOCABULARY.split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))).capitalize() + "." for _ in range(n)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m embedforge serve`` in a subprocess on 127.0.0.1; stopped on exit."""

    def __init__(self, model: str, *, batching: bool, extra: list[str], torch_threads: int | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, "-m", "embedforge", "serve", "--model", model, "--host", HOST, "--port", str(self.port), *extra]
        if not batching:
            cmd.append("--no-batching")
        if torch_threads:
            cmd += ["--torch-threads", str(torch_threads)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> Server:
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                self.health = httpx.get(f"{self.url}/health", timeout=2).json()
                return self
            except httpx.TransportError:
                time.sleep(0.25)
        self.__exit__()
        raise RuntimeError("the server did not start within 300 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def embedding_body(model_id: str, texts: list[str]) -> tuple[str, Callable[[int], dict[str, Any]]]:
    return "/v1/embeddings", lambda i: {"model": model_id, "input": texts[i % len(texts)], "encoding_format": "base64"}


def search_body(queries: list[str], top_k: int, mode: str) -> tuple[str, Callable[[int], dict[str, Any]]]:
    return "/v1/search", lambda i: {"query": queries[i % len(queries)], "top_k": top_k, "mode": mode}


async def _load(
    url: str, request: tuple[str, Callable[[int], dict[str, Any]]], concurrency: int, requests: int, max_seconds: float
) -> dict[str, Any]:
    """``requests`` requests (``request`` = path, body of the i-th) from ``concurrency`` workers (closed loop), at most ``max_seconds``."""
    path, make_body = request
    latencies: list[float] = []
    errors = 0
    counter = itertools.count()
    async with _client(url, concurrency) as post:

        async def worker(deadline: float) -> None:
            nonlocal errors
            while (i := next(counter)) < requests and time.perf_counter() < deadline:
                body = make_body(i)
                start = time.perf_counter()
                if await post(path, body) == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(start + max_seconds) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(latencies) / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
    }


def client_name() -> str:
    """aiohttp when installed (less client CPU on the cores the server also uses), else httpx."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return "httpx"
    return "aiohttp"


@contextlib.asynccontextmanager
async def _client(url: str, concurrency: int) -> AsyncIterator[Callable[[str, dict[str, Any]], Awaitable[int]]]:
    """An async ``post(path, json) -> status`` over ``concurrency`` keep-alive connections."""
    if client_name() == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

            async def post_aiohttp(path: str, body: dict[str, Any]) -> int:
                async with session.post(path, json=body) as response:
                    await response.read()
                    return response.status

            yield post_aiohttp
        return
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def post_httpx(path: str, body: dict[str, Any]) -> int:
            return (await client.post(path, json=body)).status_code

        yield post_httpx


_CEILING = """
import json, sys, time
import torch
from embedforge.encode import encode
from embedforge.models import load_model
threads, batch, model_name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
texts = json.loads(sys.stdin.read())
if threads:
    torch.set_num_threads(threads)
model = load_model(model_name)
encode(model, texts[:batch], batch_size=batch)  # warm-up
t = time.perf_counter()
for text in texts:
    encode(model, [text], batch_size=1)
single = len(texts) / (time.perf_counter() - t)
t = time.perf_counter()
for _ in range(3):
    encode(model, texts, batch_size=batch)
batched = 3 * len(texts) / (time.perf_counter() - t)
print(json.dumps({"single_text_per_s": round(single, 1), "batched_texts_per_s": round(batched, 1)}))
"""


def model_ceiling(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """The model alone, no HTTP, in a fresh process with the servers' torch threads: texts/s one at a
    time (the most an unbatched server can do) and in batches of ``--max-batch-size`` (the most any
    batching can do). Their ratio bounds the speed-up batching can bring on this machine."""
    import json

    cmd = [sys.executable, "-c", _CEILING, str(args.torch_threads or 0), str(args.max_batch_size), args.model]
    out = subprocess.run(cmd, input=json.dumps(texts), capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["max_speedup"] = round(result["batched_texts_per_s"] / result["single_text_per_s"], 2)
    print(f"model alone: {result}", flush=True)
    return result


def build_collection(args: argparse.Namespace, directory: Path) -> Path:
    """``--search-docs`` synthetic documents indexed with ``embedforge index`` (exact index) under ``directory``."""
    import json

    corpus = directory / "docs.jsonl"
    docs = make_texts(args.search_docs, seed=1)
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)), encoding="utf-8")
    collection = directory / "collection"
    cmd = [sys.executable, "-m", "embedforge", "index", "--model", args.model, "--input", str(corpus),
           "--collection", str(collection), "--index", "exact", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return collection


def run_search(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``/v1/search`` rows: search batching off and on, alternating for ``--search-rounds`` rounds."""
    queries = [" ".join(t.split()[:6]) for t in make_texts(max(args.requests, 64), seed=2)]  # short, query-like
    request = search_body(queries, args.search_top_k, args.search_mode)
    settings: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="embedforge-bench-") as tmp:
        collection = build_collection(args, Path(tmp))
        for round_, search_batching in itertools.product(range(args.search_rounds), (False, True)):
            extra = ["--collection", str(collection), "--max-batch-size", str(args.max_batch_size),
                     "--max-wait-ms", str(args.max_wait_ms)]
            if not search_batching:
                extra.append("--no-search-batching")
            with Server(args.model, batching=True, extra=extra, torch_threads=args.torch_threads) as server:
                asyncio.run(_load(server.url, request, 4, args.warmup, args.max_seconds))  # warm-up, not counted
                for concurrency in args.concurrency:
                    result = asyncio.run(_load(server.url, request, concurrency, args.requests, args.max_seconds))
                    result.update(endpoint="/v1/search", batching=search_batching, round=round_ + 1)
                    settings.append(result)
                    _report(result)
    return settings


def _report(result: dict[str, Any]) -> None:
    print(
        f"{result['endpoint']:<15} batching={'on ' if result['batching'] else 'off'} "
        f"concurrency={result['concurrency']:>3}: "
        f"{result['requests_per_s']:8.1f} req/s  p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms"
        f"  ({result['requests']} ok, {result['errors']} errors, {result['seconds']} s)",
        flush=True,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = make_texts(max(args.requests, 64))
    ceiling = model_ceiling(args, texts) if "embeddings" in args.endpoints else None
    settings: list[dict[str, Any]] = []
    for batching in (False, True) if "embeddings" in args.endpoints else ():
        extra = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
        with Server(args.model, batching=batching, extra=extra, torch_threads=args.torch_threads) as server:
            request = embedding_body(server.health["model"], texts)
            asyncio.run(_load(server.url, request, 4, args.warmup, args.max_seconds))  # warm-up, not counted
            for concurrency in args.concurrency:
                result = asyncio.run(_load(server.url, request, concurrency, args.requests, args.max_seconds))
                result.update(endpoint="/v1/embeddings", batching=batching)
                settings.append(result)
                _report(result)
    search_settings = run_search(args) if "search" in args.endpoints else []
    by_key = {(s["batching"], s["concurrency"]): s["requests_per_s"] for s in settings}
    top = max(args.concurrency)
    speedup = by_key[(True, top)] / by_key[(False, top)] if by_key.get((False, top)) and (True, top) in by_key else None
    return {
        "benchmark": "serve",
        "model": args.model,
        "endpoint": "POST /v1/embeddings, one text per request, encoding_format=base64",
        "requests_per_setting": args.requests,
        "max_seconds_per_setting": args.max_seconds,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
        "load": f"{client_name()} async client on 127.0.0.1, same machine as the server (they share its cores)",
        "torch_threads": args.torch_threads or "torch default (one per core)",
        "machine": machine(),
        "settings": settings,
        "search": {
            "endpoint": f"POST /v1/search, one query per request, top_k={args.search_top_k}, mode={args.search_mode}",
            "documents": args.search_docs,
            "index": "exact",
            "rounds": args.search_rounds,
            "settings": search_settings,
        } if search_settings else None,
        "speedup_at_max_concurrency": round(speedup, 2) if speedup else None,
        "model_alone": ceiling,
        "max_concurrency": top,
        "target": "batched >= 5x unbatched requests/s at concurrency 32",
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md section: one row per (batching, concurrency)."""
    m = result["machine"]
    lines = [
        "## Serving: `POST /v1/embeddings` and `POST /v1/search` requests/s and latency",
        "",
        f"Model `{result['model']}`, one text per request, {result['requests_per_setting']} requests per setting "
        f"(at most {result['max_seconds_per_setting']:.0f} s), load from {result['load']}. "
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')} "
        f"({result['torch_threads']} torch threads in the server). "
        f"Batching: up to {result['max_batch_size']} texts, {result['max_wait_ms']} ms wait.",
        "",
    ]
    if result["settings"]:
        lines += ["| batching | concurrency | requests/s | p50 ms | p99 ms | errors |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in result["settings"]:
        lines.append(
            f"| {'dynamic' if s['batching'] else 'none'} | {s['concurrency']} | {s['requests_per_s']:.1f} "
            f"| {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['errors']} |"
        )
    if result.get("speedup_at_max_concurrency") is not None:
        lines += ["", f"Dynamic batching at concurrency {result['max_concurrency']}: "
                  f"**{result['speedup_at_max_concurrency']:.1f}×** the unbatched requests/s (target ≥ 5×)."]
    search = result.get("search")
    if search:
        lines += [
            "",
            f"`POST /v1/search`: {search['endpoint'].split(', ', 1)[1]}, over {search['documents']} synthetic documents "
            f"({search['index']} index); search batching off (each request its own query encode and index search) "
            "and on (concurrent requests share both), alternating, same load client.",
            "",
            "| search batching | round | concurrency | requests/s | p50 ms | p99 ms | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in search["settings"]:
            lines.append(
                f"| {'on' if s['batching'] else 'off'} | {s['round']} | {s['concurrency']} | {s['requests_per_s']:.1f} "
                f"| {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['errors']} |"
            )
    alone = result.get("model_alone")
    if alone:
        lines += ["", f"The model alone in the same run (no HTTP, same torch threads): {alone['single_text_per_s']:.0f} texts/s "
                  f"one at a time, {alone['batched_texts_per_s']:.0f} texts/s in batches of {result['max_batch_size']} — "
                  f"so no batching can give more than **{alone['max_speedup']:.1f}×** here; the 5× target needs hardware "
                  "where a single-text forward pass leaves most of the compute idle (a GPU)."]
    return "\n".join(lines)


def main() -> int:
    anchor = argparse.ArgumentParser(add_help=False)
    anchor.add_argument("--anchor", choices=["infinity"])
    known, rest = anchor.parse_known_args()
    if known.anchor == "infinity":  # the comparison with infinity-emb: bench/serve_vs_infinity.py, its flags
        from serve_vs_infinity import main as anchored

        sys.argv = [str(Path(__file__).with_name("serve_vs_infinity.py")), *rest]
        return anchored()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--anchor", choices=["infinity"],
                        help="measure against infinity-emb instead (bench/serve_vs_infinity.py; its flags follow)")
    parser.add_argument("--model", default="minilm", help="model to serve (default: the bundled minilm)")
    parser.add_argument("--requests", type=int, default=400, help="requests per setting (default: %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time cap per setting (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="levels (default: 1 8 32)")
    parser.add_argument("--warmup", type=int, default=32, help="uncounted requests before each server's run")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="the servers' --torch-threads (default: %(default)s, leaving the other core to HTTP work and "
        "the load client; 0: torch's own choice, one thread per core)",
    )
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--endpoints", nargs="+", choices=["embeddings", "search"], default=["embeddings", "search"],
                        help="what to measure (default: both)")
    parser.add_argument("--search-docs", type=int, default=2000, help="documents in the /v1/search collection")
    parser.add_argument("--search-rounds", type=int, default=2, help="off/on alternations for /v1/search")
    parser.add_argument("--search-top-k", type=int, default=10)
    parser.add_argument("--search-mode", default="dense", choices=["dense", "bm25", "hybrid"])
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None, help="result file (default: bench/results/serve.json)")
    parser.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md (smoke runs)")
    args = parser.parse_args()
    result = run(args)
    publish("serve", result, markdown_table(result), out=args.out, markdown=not args.no_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
