"""Sample rewards from MARD-loss variation (paper Eq. 5–7, SPEC §5).

Let e_i = exp(loss_i), the exponentiated MARD loss of sample i. Every reward here
has the form ``(A - B) / max(A, B)`` with A, B > 0 sums or means of e; it is
computed from the log-domain difference ``d = log A - log B`` as

    (A - B) / max(A, B) = sign(d) * (1 - exp(-|d|)),

which is exact and never overflows (no ``exp(loss)`` is materialised). The
result lies in (-1, 1): positive when the loss went down.

Granularity (``granularity=`` argument):

- ``"sample"`` (default, SPEC §5): one reward per sample.
  batch: A = e_i before the update, B = e_i after it.
  round: A = M̄ = mean of e over the *previous* round's selection, measured
  before that round trained on it; B = e_i(phi^t) measured before this round
  trains on i.
- ``"set"`` (paper-literal Eq. 5/6): sums over the whole selection, one scalar
  broadcast to every sample.
  batch: A = sum_i e_i before, B = sum_i e_i after (same samples).
  round: A = sum over the previous round's selection (n_{t-1} terms),
  B = sum over the current selection (n_t terms).

All inputs are per-sample MARD losses (shape ``[n]``); they are detached, since
rewards are labels for the filter, not part of any graph.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["relative_gain", "batch_reward", "round_reward", "total_reward"]

Granularity = Literal["sample", "set"]


def relative_gain(log_a: Tensor, log_b: Tensor) -> Tensor:
    """``(A - B) / max(A, B)`` given ``log A`` and ``log B`` (elementwise, broadcast)."""
    d = log_a - log_b
    return torch.sign(d) * -torch.expm1(-d.abs())


def _check_granularity(granularity: str) -> None:
    if granularity not in ("sample", "set"):
        raise ValueError(f"granularity must be 'sample' or 'set', got {granularity!r}")


def batch_reward(loss_before: Tensor, loss_after: Tensor, granularity: Granularity = "sample") -> Tensor:
    """Eq. 6. ``loss_before[i]`` / ``loss_after[i]``: sample i's MARD loss under
    phi^{b-1} / phi^b. Returns ``[n]``.

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
    _check_granularity(granularity)
    now = torch.as_tensor(loss_now).detach()
    if now.dim() != 1:
        raise ValueError(f"loss_now must be [n], got {tuple(now.shape)}")
    if prev_round_losses is None:
        return torch.zeros_like(now)
    prev = torch.as_tensor(prev_round_losses).detach().to(now.dtype).reshape(-1)
    if prev.numel() == 0:
        return torch.zeros_like(now)
    if granularity == "sample":
        log_mbar = torch.logsumexp(prev, 0) - math.log(prev.numel())
        return relative_gain(log_mbar, now)
    if now.numel() == 0:
        return now.new_zeros(0)
    r = relative_gain(torch.logsumexp(prev, 0), torch.logsumexp(now, 0))
    return r.expand(now.shape).clone()


def total_reward(r_round: Tensor, r_batch: Tensor, alpha: float) -> Tensor:
    """Eq. 7: ``alpha * sigmoid(r_round) + (1 - alpha) * sigmoid(r_batch)``, alpha ∈ [0, 1]."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    r_round = torch.as_tensor(r_round).detach()
    r_batch = torch.as_tensor(r_batch).detach()
    return alpha * torch.sigmoid(r_round) + (1.0 - alpha) * torch.sigmoid(r_batch)
