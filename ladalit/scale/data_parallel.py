"""Data parallelism under FSDP2: every process takes its share of a batch's rows.

FSDP2 (`fabric.strategy: fsdp2`) splits the weights over the processes; these
helpers split the work. Every process runs the same loop on the same data, so
each can compute the same split: rows are cut into `world` contiguous blocks of
`ceil(n / world)`; the last blocks are padded with row 0, marked not real, so
that every process runs the same number of forward passes (FSDP's all-gathers
are collectives: a process that skipped one would hang the others). Per-row
results are gathered back in the original order, so that every process again
holds all of them (the filters, rewards and response caches stay replicated).

The training loss of a share is scaled so that FSDP2's gradient average over
the processes equals the gradient of the whole batch's (weighted) mean:
``world * sum_share(w * loss) / sum_all(w)``.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist


def world_of(fabric) -> tuple[int, int]:
    """(rank, world size) of the processes a participant is split over; (0, 1) without Fabric."""
    if fabric is None or fabric.world_size == 1:
        return 0, 1
    return fabric.global_rank, fabric.world_size


def share(n: int, rank: int, world: int) -> tuple[list[int], list[bool]]:
    """This process's rows of an n-row batch and which of them are real (the rest repeat row 0)."""
    per = max(1, math.ceil(n / world))
    idx = range(rank * per, (rank + 1) * per)
    return [i if i < n else 0 for i in idx], [i < n for i in idx]


def gather_rows(fabric, local: torch.Tensor, n: int) -> torch.Tensor:
    """Every process's share of per-row values, back in row order: [n, ...] on every process."""
    every = fabric.all_gather(local.contiguous())  # [world, per, ...]
    return every.reshape(-1, *local.shape[1:])[:n]


def gather_objects(local: list, n: int) -> list:
    """Like `gather_rows` for Python objects (generated texts)."""
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, local)
    return [x for part in every for x in part][:n]


def share_loss(per_row: torch.Tensor, real: list[bool], weights: torch.Tensor, total_weight: torch.Tensor,
               world: int) -> torch.Tensor:
    """This process's part of the batch loss ``sum_all(w * loss) / sum_all(w)``, times `world`
    (FSDP2 averages gradients over the processes). Padding rows count zero."""
    w = weights.to(per_row.device, per_row.dtype) * torch.tensor(real, dtype=per_row.dtype, device=per_row.device)
    return world * (w * per_row).sum() / total_weight.to(per_row.device, per_row.dtype)


def any_process(flag: bool, device) -> bool:
    """True when `flag` is true on any process (a collective: every process must call it)."""
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
