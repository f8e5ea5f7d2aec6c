"""Mixed lengths through the micro-batcher: do long texts still delay short ones? Count-only batching vs the token budget.

The scheduling question of issue 16 without HTTP: requests are queued behind a busy worker, then
released at once, so each batcher makes its choices from the same queue. Requests: one sentence
each, and some 256-token texts among them. Two batchers over the same model (``encode``):

* **count only** — the batcher as it was before the token budget: passes of up to 64 texts in
  arrival order, however long (emulated with an unlimited token budget and no padding limit);
* **token budget** — the server's defaults: passes of at most 4,096 padded tokens, merged by
  similar length.

Reported per scenario: when the short requests are done (median and last, from the release),
when the long ones are, and the CPU seconds the process spent (robust on a busy machine, where
wall time is not). Alternating count-only / token-budget ``--rounds`` times.

    .venv/bin/python bench/serve_mixed_lengths.py                  # ~1 minute on 2 cores
    .venv/bin/python bench/serve_mixed_lengths.py --rounds 1 --no-markdown --out /tmp/mixed.json

Writes ``bench/results/serve_mixed_lengths.json`` and the ``serve_mixed_lengths`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, update_section, write_result  # noqa: E402

from embedforge.encode import encode  # noqa: E402
from embedforge.models import load_model  # noqa: E402
from embedforge.serve import batcher as batcher_module  # noqa: E402
from embedforge.serve.batcher import MicroBatcher  # noqa: E402
from embedforge.serve.config import ServeConfig, default_torch_threads  # noqa: E402

LONG = "word " * 300  # truncated to the model's 256 tokens
SCENARIOS = {  # name -> arrival order ("L" long, "s" sentence)
    "1 long first, 63 sentences": "L" + "s" * 63,
    "63 sentences, then 1 long": "s" * 63 + "L",
    "4 long among 60 sentences": ("s" * 15 + "L") * 4,
}


def _stamp(ends: dict[int, float], i: int) -> Callable[[object], None]:
    def done(_future: object) -> None:
        ends[i] = time.perf_counter()

    return done


def run_once(model: Any, order: str, *, budget: bool) -> dict[str, float]:
    config = ServeConfig()
    counts_only = not budget
    saved = batcher_module.MAX_PADDING
    batcher_module.MAX_PADDING = float("inf") if counts_only else saved
    b = MicroBatcher(
        lambda texts: encode(model, texts, batch_size=config.max_batch_size, show_progress=False),
        max_batch_size=config.max_batch_size,
        max_batch_tokens=10**9 if counts_only else config.max_batch_tokens,
        max_wait_ms=config.max_wait_ms,
    )
    gate = threading.Event()
    blocker = threading.Thread(target=lambda: b.call(lambda: gate.wait(60)))
    try:
        blocker.start()
        time.sleep(0.2)  # the worker is busy: everything below queues up
        ends: dict[int, float] = {}
        futures = []
        for i, kind in enumerate(order):
            text = LONG if kind == "L" else f"The quick brown fox number {i} jumps over the lazy dog."
            tokens = len(model.tokenizer(text, truncation=True, max_length=model.max_seq_length)["input_ids"])
            future = b.submit([text], [tokens])
            future.add_done_callback(_stamp(ends, i))
            futures.append(future)
        start, cpu = time.perf_counter(), time.process_time()
        gate.set()
        for future in futures:
            future.result(600)
        cpu_s = time.process_time() - cpu
    finally:
        gate.set()
        b.close()
        blocker.join(10)
        batcher_module.MAX_PADDING = saved
    short = sorted(ends[i] - start for i, k in enumerate(order) if k == "s")
    long = [ends[i] - start for i, k in enumerate(order) if k == "L"]
    return {"short_median_ms": round(1000 * statistics.median(short), 1), "short_last_ms": round(1000 * short[-1], 1),
            "long_last_ms": round(1000 * max(long), 1), "cpu_s": round(cpu_s, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args()
    import torch

    threads = default_torch_threads(1)
    torch.set_num_threads(threads)
    model = load_model(args.model)
    encode(model, ["warm-up"] * 8, show_progress=False)
    rows = []
    for name, order in SCENARIOS.items():
        for round_ in range(1, args.rounds + 1):
            for budget in (False, True):
                row = {"scenario": name, "batching": "token budget" if budget else "count only", "round": round_,
                       **run_once(model, order, budget=budget)}
                rows.append(row)
                print(row, flush=True)
    result = {"benchmark": "serve_mixed_lengths", "model": args.model, "torch_threads": threads,
              "defaults": {"max_batch_size": ServeConfig().max_batch_size, "max_batch_tokens": ServeConfig().max_batch_tokens},
              "machine": machine(), "rows": rows}
    if args.out is None:
        print("wrote", write_result("serve_mixed_lengths", result))
    else:
        from embedforge.io import write_json

        write_json(args.out, result)
    lines = [
        "## Serving: long texts beside short ones (`bench/serve_mixed_lengths.py`)",
        "",
        f"Model `{args.model}`, {threads} torch thread(s), the micro-batcher alone (no HTTP): one-text requests queued behind "
        "a busy worker, then released at once; 256-token texts among sentences. *count only*: passes of up to 64 texts in "
        f"arrival order (as before); *token budget*: the defaults ({ServeConfig().max_batch_tokens} padded tokens a pass, "
        "similar lengths merged). Times from the release; CPU seconds of the whole run.",
        "",
        "| scenario | batching | round | sentences done, median ms | last sentence ms | last long ms | CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['batching']} | {r['round']} | {r['short_median_ms']:.0f} | {r['short_last_ms']:.0f} "
                     f"| {r['long_last_ms']:.0f} | {r['cpu_s']:.2f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_markdown:
        update_section("serve_mixed_lengths", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
