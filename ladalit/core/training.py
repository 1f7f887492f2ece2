"""The training skeleton every method's updates go through, and the non-finite guard.

One loop (`train_rows`): `epochs` passes over seeded minibatches of the rows; per minibatch one loss,
the guard, one optimizer step. What is learnt is a per-sample loss: a callable that takes the
minibatch's rows (indices) and returns a `RowLoss`, its named per-row (or per-token) terms and their
normaliser. `minibatch_loss` turns it into the minibatch's loss, sum_rows(w * term) / Z, with optional
per-row weights w; under FSDP2 every process computes only its share of the rows
(ladalit.scale.data_parallel) and the update is still the whole minibatch's. `rows_step` is one such
update that also returns the per-row losses before and after it (LaDa's MARD steps).
Users: `supervised_finetune` (every method's SFT), `ladalit.baselines.wasp.weighted_finetune`,
`ladalit.baselines.fedmkt.distill`, LaDa's distillation steps.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

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


@dataclass
class RowLoss:
    """A per-sample loss's value on some rows: `terms` by name, each per row [rows, ...] (trailing
    dimensions, e.g. tokens, are summed) or, with `row_of`, per position [P] (position p belongs to row
    row_of[p]); `count`: each row's share of the normaliser (its token count) for `normalise="count"`."""
    terms: dict[str, torch.Tensor]
    count: torch.Tensor | None = None
    row_of: torch.Tensor | None = None


PerSampleLoss = Callable[[list[int]], RowLoss]


def _row_weights(term: torch.Tensor, w: torch.Tensor, row_of: torch.Tensor | None) -> torch.Tensor:
    w = w.to(term.device, term.dtype)
    if row_of is not None:
        w = w[row_of.to(w.device)]
    return w.view(-1, *[1] * (term.dim() - 1))


def minibatch_loss(fabric, per_sample: PerSampleLoss, rows: Sequence[int], weights: torch.Tensor | None = None,
                   normalise: str = "rows", coefs: dict[str, float] | None = None):
    """The loss of one minibatch of `rows`: per term sum_rows(w * term) / Z, then sum_terms(coef * term)
    (one term without `coefs`: the term itself). Z by `normalise`: "rows" the number of rows, "weights"
    sum(w), "count" the rows' summed `count` (tokens). Returns (the loss this process back-propagates,
    the whole minibatch's loss, {term: whole value}); the last two are detached and the same on every
    process. Under FSDP2 each process takes its share of the rows and its part of the loss is scaled by the
    world size (FSDP2 averages gradients), so that the update is the whole minibatch's."""
    rows = list(rows)
    rank, world = data_parallel.world_of(fabric)
    n = len(rows)
    if world == 1:
        mine, real = list(range(n)), None
    else:
        mine, real = data_parallel.share(n, rank, world)
    out = per_sample([rows[i] for i in mine])
    w = None if weights is None else weights.detach().float().cpu()
    if real is not None:  # padding rows count zero
        w = (torch.ones(n) if w is None else w)[mine] * torch.tensor(real, dtype=torch.float32)
    if normalise == "rows":
        z = n
    elif normalise == "weights":
        z = weights.detach().float().sum() if real is not None else None
    else:
        count = out.count if real is None else out.count * torch.tensor(real, device=out.count.device)
        z = count.sum()
        z = (z if real is None else fabric.all_reduce(z.float(), reduce_op="sum")).clamp(min=1)
    values = {}
    for name, term in out.terms.items():
        s = term.sum() if w is None else (_row_weights(term, w, out.row_of) * term).sum()
        if normalise == "weights" and real is None:
            ww = weights.detach().to(term.dtype)
            values[name] = s / ww.sum().to(s.device)
        elif real is None:
            values[name] = s / (z.to(s.device) if torch.is_tensor(z) else z)
        else:
            values[name] = world * s / (z.to(s.device, s.dtype) if torch.is_tensor(z) else z)
    loss = None
    for name, v in values.items():
        part = v if coefs is None else coefs[name] * v
        loss = part if loss is None else loss + part
    if real is None:
        return loss, loss.detach(), {k: v.detach() for k, v in values.items()}
    whole = {k: fabric.all_reduce(v.detach(), reduce_op="sum") / world for k, v in values.items()}
    return loss, fabric.all_reduce(loss.detach(), reduce_op="sum") / world, whole


def train_rows(fabric, participant, optimizer, guard: NonFiniteGuard, n: int, per_sample: PerSampleLoss,
               epochs: int, seed: int, round: int = 0, weights: torch.Tensor | None = None,
               normalise: str = "rows", coefs: dict[str, float] | None = None) -> list[dict[str, float]]:
    """`epochs` passes over n rows in minibatches of train.batch_size (a fresh seeded order each epoch,
    seed + epoch): the minibatch's loss (`minibatch_loss`), the non-finite guard (a skipped step counts
    nothing), one optimizer step. Returns per epoch the means over its steps of the whole minibatches'
    "loss" and terms ({} for an epoch without a step)."""
    participant.train()
    out = []
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        steps = 0
        for b, idx in enumerate(minibatches(n, participant.train_cfg.batch_size, seed + epoch)):
            w = None if weights is None else weights[idx]
            loss, whole, terms = minibatch_loss(fabric, per_sample, idx, w, normalise, coefs)
            if not guard.ok(whole, participant.name, round, b):
                continue
            optimizer_step(fabric, participant, optimizer, loss)
            for key, v in {"loss": whole, **terms}.items():
                sums[key] = sums.get(key, 0.0) + v.item()
            steps += 1
        out.append({k: v / steps for k, v in sums.items()} if steps else {})
    return out


def rows_step(fabric, participant, optimizer, guard: NonFiniteGuard, round: int, batch: int, n: int,
              per_sample: Callable[[list[int]], torch.Tensor], weights: torch.Tensor | None = None,
              update: bool = True, measure_after: bool = True):
    """One update on a minibatch of n rows with a per-row loss (`per_sample(rows)` -> [len(rows)]): the
    mean over rows, or with `weights` sum(w * loss) / sum(w) (LaDa's server, Eq. 4). Returns the per-row
    losses before and after it (after: None unless `measure_after`; without `update` no step is taken and
    after = before), on the CPU and, under FSDP2, gathered from every process's share of the rows."""
    participant.train()
    rank, world = data_parallel.world_of(fabric)
    mine = list(range(n)) if world == 1 else data_parallel.share(n, rank, world)[0]
    kept: list[torch.Tensor] = []

    def row_loss(rows):
        before = per_sample(rows)
        kept.append(before)
        return RowLoss({"loss": before})

    loss, whole, _ = minibatch_loss(fabric, row_loss, range(n), weights, "rows" if weights is None else "weights")

    def every_row(local: torch.Tensor) -> torch.Tensor:
        local = local.detach().float()
        return (local if world == 1 else data_parallel.gather_rows(fabric, local, n)).cpu()

    if world == 1 and not update:
        before = every_row(kept[0])
        return before, before
    if update and guard.ok(whole, participant.name, round, batch):
        optimizer_step(fabric, participant, optimizer, loss)
    before = every_row(kept[0])
    if not update:
        return before, before
    if not measure_after:
        return before, None
    with torch.no_grad():
        after = per_sample(mine)
    return before, every_row(after)


def token_cross_entropy(participant, prompts: Sequence[str], responses: Sequence[str]) -> PerSampleLoss:
    """The per-sample loss of supervised fine-tuning: every response token's cross-entropy (prompt
    masked), normalised by the minibatch's response tokens (`normalise="count"`)."""
    def loss(rows):
        logp, mask = participant.token_logprobs([prompts[i] for i in rows], [responses[i] for i in rows])
        return RowLoss({"loss": -(logp * mask)}, count=mask.sum(-1))
    return loss


def supervised_finetune(fabric, participant, optimizer, prompts: Sequence[str], responses: Sequence[str],
                        epochs: int, seed: int, guard: NonFiniteGuard, round: int = 0) -> list[float]:
    """Cross-entropy on the responses (prompt masked), the minibatch's mean token cross-entropy; returns
    the mean loss per epoch (NaN for an epoch without a step)."""
    per_epoch = train_rows(fabric, participant, optimizer, guard, len(prompts),
                           token_cross_entropy(participant, prompts, responses), epochs, seed, round,
                           normalise="count")
    return [e.get("loss", math.nan) for e in per_epoch]
