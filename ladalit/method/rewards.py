"""Sample rewards from MARD-loss variation (paper Eq. 5–7, SPEC §5).

Let e_i = exp(loss_i), the exponentiated MARD loss of sample i. Every reward here
has the form ``(A - B) / max(A, B)`` with A, B > 0 sums or means of e; it is
computed from the log-domain difference ``d = log A - log B`` as

    (A - B) / max(A, B) = sign(d) * (1 - exp(-|d|)),

which is exact and never overflows (no ``exp(loss)`` is materialised). The
result lies in (-1, 1): positive when the loss went down.

Eq. 5 (round) and Eq. 6 (batch) have one shape (SPEC §5): the previous
selection's e under the model *before* it trained on that selection, against the
new selection's e under the model *after* that training and *before* it trains on
the new selection. A reward is high when training on what was selected before
made the new selection easy. `round_reward` and `batch_reward` differ only in
which selections they are handed (the previous round's / candidate batch's).

Granularity (``granularity=`` argument):

- ``"sample"`` (default, SPEC §5): one reward per sample of the new selection:
  A = M̄ = mean of e over the previous selection, B = e_i.
- ``"set"`` (paper-literal Eq. 5/6): A = sum of e over the previous selection
  (n_prev terms), B = sum over the new one (n_now terms), one scalar broadcast
  to every sample.

`same_sample_reward` is this project's batch reward before 2026-12-07
(``reward.batch=same_sample``, a documented deviation): the same samples' e
before and after the update on them. It measures how far training moved a
sample, which any disagreement between the two answers produces.

All inputs are per-sample MARD losses (shape ``[n]``); they are detached, since
rewards are labels for the filter, not part of any graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ladalit.core.config import section

__all__ = ["relative_gain", "batch_reward", "round_reward", "same_sample_reward", "total_reward"]

Granularity = Literal["sample", "set"]


def relative_gain(log_a: Tensor, log_b: Tensor) -> Tensor:
    """``(A - B) / max(A, B)`` given ``log A`` and ``log B`` (elementwise, broadcast)."""
    d = log_a - log_b
    return torch.sign(d) * -torch.expm1(-d.abs())


def _check_granularity(granularity: str) -> None:
    if granularity not in ("sample", "set"):
        raise ValueError(f"granularity must be 'sample' or 'set', got {granularity!r}")


def same_sample_reward(loss_before: Tensor, loss_after: Tensor, granularity: Granularity = "sample") -> Tensor:
    """The deviation ``reward.batch=same_sample`` (not Eq. 6). ``loss_before[i]`` / ``loss_after[i]``: sample
    i's MARD loss before its first update and after its last. Returns ``[n]``.

    ``"sample"``: r_i = (e_b,i − e_a,i) / max(e_b,i, e_a,i).
    ``"set"``: r = (Σe_b − Σe_a) / max(Σe_b, Σe_a), the same value for every i.
    """
    _check_granularity(granularity)
    lb = torch.as_tensor(loss_before).detach()
    la = torch.as_tensor(loss_after).detach()
    if lb.shape != la.shape or lb.dim() != 1:
        raise ValueError(f"expected two [n] tensors, got {tuple(lb.shape)} and {tuple(la.shape)}")
    if granularity == "sample":
        return relative_gain(lb, la)
    if lb.numel() == 0:
        return lb.new_zeros(0)
    r = relative_gain(torch.logsumexp(lb, 0), torch.logsumexp(la, 0))
    return r.expand(lb.shape).clone()


def _consecutive_reward(prev: Tensor | None, loss_now: Tensor, granularity: Granularity) -> Tensor:
    """Eq. 5 / Eq. 6: the previous selection's losses against the new selection's (see the module doc)."""
    _check_granularity(granularity)
    now = torch.as_tensor(loss_now).detach()
    if now.dim() != 1:
        raise ValueError(f"loss_now must be [n], got {tuple(now.shape)}")
    if prev is None:
        return torch.zeros_like(now)
    prev = torch.as_tensor(prev).detach().to(now.dtype).reshape(-1)
    if prev.numel() == 0:
        return torch.zeros_like(now)
    if granularity == "sample":
        log_mbar = torch.logsumexp(prev, 0) - math.log(prev.numel())
        return relative_gain(log_mbar, now)
    if now.numel() == 0:
        return now.new_zeros(0)
    r = relative_gain(torch.logsumexp(prev, 0), torch.logsumexp(now, 0))
    return r.expand(now.shape).clone()


def round_reward(
    prev_round_losses: Tensor | None, loss_now: Tensor, granularity: Granularity = "sample"
) -> Tensor:
    """Eq. 5. ``prev_round_losses``: MARD losses of the previous round's selection
    under phi^{t-1}, measured before that round trained on it (``None`` or empty in
    round 1 → zeros). ``loss_now[i]``: sample i of the current selection under phi^t,
    measured before this round trains on it. Returns ``[n]``.

    ``"sample"``: r_i = (M̄ − e_i) / max(M̄, e_i), M̄ = mean_j exp(prev_j).
    ``"set"``: r = (Σ_prev e − Σ_now e) / max(Σ_prev e, Σ_now e), broadcast.
    """
    return _consecutive_reward(prev_round_losses, loss_now, granularity)


def batch_reward(
    prev_batch_losses: Tensor | None, loss_now: Tensor, granularity: Granularity = "sample"
) -> Tensor:
    """Eq. 6. ``prev_batch_losses``: MARD losses of the previous candidate batch's selection under
    phi^{t,b-1}, measured before that batch trained on it (the last batch of the round before for a
    round's first batch; ``None`` or empty for the very first batch → zeros). ``loss_now[i]``: sample i of
    batch b's selection under phi^{t,b}, measured before batch b trains on it. Returns ``[n]``.

    ``"sample"``: r_i = (M̄_{b-1} − e_i) / max(M̄_{b-1}, e_i), M̄_{b-1} = mean_j exp(prev_j).
    ``"set"``: r = (Σ_prev e − Σ_now e) / max(Σ_prev e, Σ_now e), broadcast.
    """
    return _consecutive_reward(prev_batch_losses, loss_now, granularity)


def total_reward(r_round: Tensor, r_batch: Tensor, alpha: float) -> Tensor:
    """Eq. 7: ``alpha * sigmoid(r_round) + (1 - alpha) * sigmoid(r_batch)``, alpha ∈ [0, 1]."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    r_round = torch.as_tensor(r_round).detach()
    r_batch = torch.as_tensor(r_batch).detach()
    return alpha * torch.sigmoid(r_round) + (1.0 - alpha) * torch.sigmoid(r_batch)


# ----------------------------------------------------------------------------- config section `reward`
@dataclass
class Config:
    """`reward.*`: the rewards of Eq. 5-7 (`ladalit.method.pair` reads them)."""
    # α of Eq. 7: weight of the round-level reward
    alpha: float = 0.33
    # sample: per-sample rewards (SPEC §5); set: the paper-literal Eq. 5/6 over the whole selection
    granularity: str = "sample"
    # Eq. 6: previous_selection (the paper: the previous candidate batch's selection before it trained, against
    # this batch's before it trains) | same_sample (deviation kept from before 2026-12-07: a sample before and after its update)
    batch: str = "previous_selection"


section("reward", Config, after="lada", description="rewards (Eq. 5-7)",
        choices={"granularity": ("sample", "set"), "batch": ("previous_selection", "same_sample")},
        ranges={"alpha": (0.0, 1.0)})
