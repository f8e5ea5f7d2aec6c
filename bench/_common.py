"""Shared bench helpers: machine description, result files, the BENCHMARKS.md section updater."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / "cache"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

sys.path.insert(0, str(ROOT))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    """The checkout's short commit; ``EMBEDFORGE_COMMIT`` names it for a copy of the tree without ``.git``
    (e.g. a GPU machine that was sent the working tree)."""
    if os.environ.get("EMBEDFORGE_COMMIT"):
        return os.environ["EMBEDFORGE_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_result(name: str, obj: dict[str, Any]) -> Path:
    from embedforge.io import write_json

    path = RESULTS / f"{name}.json"
    write_json(path, obj)
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def update_section(name: str, markdown: str) -> None:
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in BENCHMARKS.md
    (appending the section if it is not there yet), atomically."""
    from embedforge.io import atomic_write

    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    with atomic_write(BENCHMARKS_MD) as f:
        f.write(text)


def publish(name: str, result: dict[str, Any], table: str, *, out: str | None = None, markdown: bool = True) -> None:
    """Write ``result`` to bench/results/NAME.json (or ``out``), print ``table`` and put it in
    BENCHMARKS.md's NAME section unless ``markdown`` is False (smoke runs)."""
    if out is None:
        print("wrote", write_result(name, result))
    else:
        from embedforge.io import write_json

        write_json(out, result)
        print("wrote", out)
    print()
    print(table)
    if markdown:
        update_section(name, table)
