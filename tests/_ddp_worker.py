"""Run under torchrun (2 processes, gloo): each process holds half of a batch; see test_distributed.py.

Gathers as SimCSELoss does (sentence-transformers' ``util.all_gather``: the other processes' rows
without gradient, this process's own rows with theirs) and checks the result against one process."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from sentence_transformers.util import all_gather

from embedforge.train.simcse import simcse_loss


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(0)
    full = [torch.randn(8, 6, generator=gen, dtype=torch.float64) for _ in range(3)]  # same on every rank
    half = 8 // world
    local = [t[rank * half : (rank + 1) * half].clone().requires_grad_(True) for t in full]

    gathered = [all_gather(t) for t in local]
    loss = simcse_loss(*gathered, temperature=0.05, hard_negative_weight=2.0)
    loss.backward()
    local_only = simcse_loss(*[t.detach() for t in local], temperature=0.05, hard_negative_weight=2.0)

    # single-process reference on the whole batch
    ref = [t.clone().requires_grad_(True) for t in full]
    ref_loss = simcse_loss(*ref, temperature=0.05, hard_negative_weight=2.0)
    ref_loss.backward()
    ref_grads = [r.grad[rank * half : (rank + 1) * half] for r in ref]  # type: ignore[index]

    result = {
        "rank": rank,
        "world": world,
        "gathered_rows": int(gathered[0].shape[0]),
        "loss": loss.item(),
        "reference_loss": ref_loss.item(),
        "local_only_loss": local_only.item(),
        "max_grad_diff": max(float((t.grad - g).abs().max()) for t, g in zip(local, ref_grads, strict=True)),  # type: ignore[operator]
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
