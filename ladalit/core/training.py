"""Training steps shared by every method: supervised fine-tuning and the non-finite guard."""
from __future__ import annotations

import math
import random
from typing import Sequence

import torch

from ladalit.scale import data_parallel
class NonFiniteError(RuntimeError):
    pass


class NonFiniteGuard:
    """`on_nonfinite: skip|raise` — a non-finite loss or reward skips the step (counted) or stops the run."""

    def __init__(self, mode: str):
        self.mode = mode
        self.skipped: list[dict] = []

    def ok(self, value: torch.Tensor, participant: str, round: int, batch: int, what: str = "loss") -> bool:
        if bool(torch.isfinite(value).all()):
            return True
        where = f"participant '{participant}', round {round}, batch {batch}"
        if self.mode == "raise":
            raise NonFiniteError(f"non-finite {what} for {where} (set on_nonfinite=skip to skip such steps)")
        self.skipped.append({"participant": participant, "round": round, "batch": batch, "what": what})
        return False


def minibatches(n: int, batch_size: int, seed: int | None = None) -> list[list[int]]:
    order = list(range(n))
    if seed is not None:
        random.Random(seed).shuffle(order)
    return [order[i: i + batch_size] for i in range(0, n, batch_size)]


def optimizer_step(fabric, participant, optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    fabric.backward(loss)
    if participant.train_cfg.grad_clip and participant.train_cfg.grad_clip > 0:
        fabric.clip_gradients(participant, optimizer, max_norm=participant.train_cfg.grad_clip, error_if_nonfinite=False)
    optimizer.step()


def supervised_finetune(fabric, participant, optimizer, prompts: Sequence[str], responses: Sequence[str],
                        epochs: int, seed: int, guard: NonFiniteGuard, round: int = 0) -> list[float]:
    """Cross-entropy on the responses (prompt masked); returns the mean loss per epoch."""
    losses = []
    participant.train()
    for epoch in range(epochs):
        total, steps = 0.0, 0
        for b, idx in enumerate(minibatches(len(prompts), participant.train_cfg.batch_size, seed + epoch)):
            p, r = [prompts[i] for i in idx], [responses[i] for i in idx]
            loss, whole = sft_loss_of_share(fabric, participant, p, r)
            if not guard.ok(whole, participant.name, round, b):
                continue
            optimizer_step(fabric, participant, optimizer, loss)
            total, steps = total + whole.item(), steps + 1
        losses.append(total / max(steps, 1) if steps else math.nan)
    return losses


def sft_loss_of_share(fabric, participant, prompts, responses):
    """(the loss this process back-propagates, the whole minibatch's mean token cross-entropy).

    One process: both are `participant.sft_loss`. Under FSDP2 each process takes its share of the rows
    (ladalit.scale.data_parallel): its summed token losses over the whole minibatch's response-token count,
    times the world size (FSDP2 averages gradients), so the update is the whole minibatch's.
    """
    rank, world = data_parallel.world_of(fabric)
    if world == 1:
        loss = participant.sft_loss(prompts, responses)
        return loss, loss.detach()
    rows, real = data_parallel.share(len(prompts), rank, world)
    logp, mask = participant.token_logprobs([prompts[i] for i in rows], [responses[i] for i in rows])
    tokens = (mask.sum(-1) * torch.tensor(real, device=mask.device)).sum()
    tokens = fabric.all_reduce(tokens.float(), reduce_op="sum").clamp(min=1)
    loss = data_parallel.share_loss(-(logp * mask).sum(-1), real, torch.ones(len(rows)), tokens, world)
    return loss, fabric.all_reduce(loss.detach(), reduce_op="sum") / world
