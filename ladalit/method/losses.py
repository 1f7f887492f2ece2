"""MARD losses (paper Eq. 3 and Eq. 4) and the server's overlap weights; the training path
(`ladalit.method.distill.per_sample_loss`) calls `client_mard_loss` / `server_mard_loss`.

All functions are pure: they take summed response log-probabilities
``log p(y | x)`` (one number per row, shape ``[B]``) and return tensors.

Client side (Eq. 3): chosen = server answer y^s, rejected = client answer y^k,
policy phi_k, reference phi_ref_k.
Server side (Eq. 4): chosen = y^k, rejected = y^s, policy psi, reference psi_ref.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "mard_loss",
    "mard_nll_loss",
    "first_difference_lengths",
    "client_mard_loss",
    "server_mard_loss",
    "overlap_weights",
]


def mard_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
) -> Tensor:
    """Per-row DPO-style MARD loss ``-log sigma(beta * [(pi_c - r_c) - (pi_r - r_r)])``.

    Inputs are summed response log-probs of shape ``[B]``; returns ``[B]`` (no
    reduction). Uses ``F.logsigmoid`` so large margins neither overflow nor
    lose precision. Reference log-probs are not detached here: pass them from a
    ``no_grad`` computation (they are fixed by construction).
    """
    z = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(z)


def mard_nll_loss(mard: Tensor, policy_chosen: Tensor, chosen_tokens: Tensor, weight: float) -> Tensor:
    """The MARD loss plus an NLL term on the chosen answer, per token: ``mard - weight * pi_c / |y_c|``
    (RPO, Pang et al. 2024; DPO+SFT). DPO can lower the chosen answer's likelihood along with the
    rejected one's; the NLL term holds it up. ``weight=0`` returns ``mard`` (the paper's Eq. 3 / 4)."""
    if weight == 0:
        return mard
    return mard - weight * policy_chosen / chosen_tokens.to(policy_chosen.dtype).clamp_min(1)


def first_difference_lengths(chosen_ids: Sequence[Sequence[int]], rejected_ids: Sequence[Sequence[int]]
                             ) -> tuple[list[int], list[int]]:
    """Per pair, how many leading tokens of each answer the `lada.mard_span=first_difference` loss sums over:
    their common prefix and the first token at which they differ (where one answer ends first, the other's
    next token only). Their common prefix cancels in the MARD margin, so the loss is the preference of the
    chosen answer's token over the rejected one's at the first place they part; nothing after it, in
    particular the rejected answer's steps that follow its error, is pushed down. Identical answers keep
    their full lengths (margin 0, no gradient, as with the whole answers)."""
    out_c, out_r = [], []
    for c, r in zip(chosen_ids, rejected_ids, strict=True):
        d = next((j for j, (a, b) in enumerate(zip(c, r)) if a != b), min(len(c), len(r)))
        out_c.append(min(d + 1, len(c)))
        out_r.append(min(d + 1, len(r)))
    return out_c, out_r


def client_mard_loss(pol_ys: Tensor, pol_yk: Tensor, ref_ys: Tensor, ref_yk: Tensor, beta: float) -> Tensor:
    """Eq. 3: client k prefers the server answer y^s over its own answer y^k.

    ``pol_*`` = log phi_k(y|x), ``ref_*`` = log phi_ref_k(y|x). Returns ``[B]``.
    """
    return mard_loss(pol_ys, pol_yk, ref_ys, ref_yk, beta)


def server_mard_loss(pol_yk: Tensor, pol_ys: Tensor, ref_yk: Tensor, ref_ys: Tensor, beta: float) -> Tensor:
    """Eq. 4 (per row): the server prefers the client answer y^k over its own y^s.

    ``pol_*`` = log psi(y|x), ``ref_*`` = log psi_ref(y|x). Returns ``[B]``; rows of the same
    sample are combined with the weights of :func:`overlap_weights` as ``sum(w * loss) / sum(w)`` by
    the training skeleton (``ladalit.core.training.minibatch_loss``, ``normalise="weights"``).
    """
    return mard_loss(pol_yk, pol_ys, ref_yk, ref_ys, beta)


def overlap_weights(
    sample_ids: Sequence[Hashable],
    client_ids: Sequence[int],
    scores: Tensor,
    mode: Literal["reward", "uniform"] = "reward",
    eps: float = 1e-8,
) -> Tensor:
    """Weights w_k of Eq. 4 for server rows, one row per (client k, sample x) pair.

    Rows sharing the same sample id form a group; within a group the weights are
    >= 0 and sum to 1. A sample that only one client selected (non-overlapping)
    gets weight 1.

    - ``mode="reward"``: w_k ∝ max(scores_k, 0), where ``scores`` holds the server
      filter's predicted reward r̂_{s,k}(x) for that row. If every score of the
      group is <= ``eps`` the group falls back to uniform.
    - ``mode="uniform"``: w_k = 1 / n_x, n_x = number of rows of sample x.

    The weights carry no gradient (they are constants of the server loss).
    Raises ``ValueError`` on mismatched lengths, an unknown mode, or a repeated
    (sample, client) pair.
    """
    if mode not in ("reward", "uniform"):
        raise ValueError(f"mode must be 'reward' or 'uniform', got {mode!r}")
    n = len(sample_ids)
    if len(client_ids) != n:
        raise ValueError(f"sample_ids ({n}) and client_ids ({len(client_ids)}) differ in length")
    scores = torch.as_tensor(scores).detach()
    if scores.shape != (n,):
        raise ValueError(f"scores must have shape ({n},), got {tuple(scores.shape)}")

    groups: dict[Hashable, list[int]] = {}
    seen: set[tuple[Hashable, int]] = set()
    for row, (sid, cid) in enumerate(zip(sample_ids, client_ids)):
        key = (sid, int(cid))
        if key in seen:
            raise ValueError(f"duplicate (sample, client) row {key}")
        seen.add(key)
        groups.setdefault(sid, []).append(row)

    dtype = scores.dtype if scores.is_floating_point() else torch.float32
    w = torch.empty(n, dtype=dtype, device=scores.device)
    for rows in groups.values():
        idx = torch.tensor(rows, device=scores.device)
        if mode == "reward":
            s = scores[idx].to(dtype).clamp_min(0.0)
            total = s.sum()
            if total > eps:
                w[idx] = s / total
                continue
        w[idx] = 1.0 / len(rows)
    return w
