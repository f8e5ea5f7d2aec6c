"""Data-parallel SimCSE under torchrun on CPU with 2 processes and gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def torchrun(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_negatives_are_gathered_across_processes(tmp_path):
    proc = torchrun([str(HERE / "_ddp_worker.py"), str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert r["world"] == 2
        assert r["gathered_rows"] == 8  # 4 local rows + 4 from the other process
        # every process computes the loss over the global batch: equal to one process on all 8 rows
        assert r["loss"] == pytest.approx(r["reference_loss"], rel=1e-12)
        # without gathering each process would see only its 4 rows: a different (easier) loss
        assert r["local_only_loss"] < r["loss"] - 1e-3
        # gradients reach this process's own rows exactly as in the single-process computation
        assert r["max_grad_diff"] < 1e-10


def test_torchrun_training_end_to_end(tmp_path, tiny_hf_dir):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(64)) + "\n")
    out = tmp_path / "model"
    proc = torchrun(
        ["-m", "embedforge", "train", "--model", str(tiny_hf_dir), "--mode", "unsup", "--train-file", str(texts),
         "--output", str(out), "--max-steps", "2", "--batch-size", "8", "--no-progress"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "embedforge.json").read_text())
    assert manifest["training"]["world_size"] == 2
    assert manifest["training"]["steps"] == 2
    assert not (tmp_path / "model.partial").exists()
