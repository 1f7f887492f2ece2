"""One MARD update (Eq. 3 / Eq. 4) on a selection, and `train.epochs` passes of them over one candidate batch."""
from __future__ import annotations

import torch

from ladalit.core.training import NonFiniteGuard, rows_step
from ladalit.method import losses
from ladalit.core.results import Results


def per_sample_loss(lada, participant, keys, prompts, chosen, rejected) -> torch.Tensor:
    """Eq. 3 / Eq. 4 per sample (chosen = the other side's answer), with `mard_nll` > 0 plus the NLL term on
    the chosen answer (`losses.mard_nll_loss`), or the `lada.loss=ce` ablation; with `mard_span=first_difference`
    the two answers' log-probs run to their first differing token only (`losses.first_difference_lengths`).
    `lada`: the config's `lada` section (its loss, beta, mard_nll and mard_span)."""
    if lada.loss == "ce":
        logp, mask = participant.token_logprobs(prompts, chosen)
        return -(logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    lengths = None  # mard_span=response: the whole answers (Eq. 3 / 4 as printed)
    if lada.mard_span == "first_difference":
        lengths = losses.first_difference_lengths(participant.response_ids(prompts, chosen),
                                                  participant.response_ids(prompts, rejected))
    pol_c, pol_r = participant.pair_logprobs(prompts, chosen, rejected, lengths=lengths)
    ref_c, ref_r = participant.reference_pair_logprobs(keys, prompts, chosen, rejected, lengths=lengths)
    if participant.role == "client":  # Eq. 3: chosen = the server's answer y^s, rejected = its own y^k
        mard = losses.client_mard_loss(pol_ys=pol_c, pol_yk=pol_r, ref_ys=ref_c, ref_yk=ref_r, beta=lada.beta)
    else:  # Eq. 4, per row (weighted by core.training.minibatch_loss): chosen = y^k, rejected = its own y^s
        mard = losses.server_mard_loss(pol_yk=pol_c, pol_ys=pol_r, ref_yk=ref_c, ref_ys=ref_r, beta=lada.beta)
    if not lada.mard_nll:
        return mard
    tokens = torch.tensor(participant.response_lengths(prompts, chosen), device=mard.device)
    return losses.mard_nll_loss(mard, pol_c, tokens, lada.mard_nll)


def mard_optimizer(lada, fabric, participant):
    """The optimizer of a participant's MARD updates, after its reference is frozen: AdamW at train.lr ×
    `lada.mard_lr_scale` (train.lr alone drives the reference SFT)."""
    return fabric.setup_optimizers(participant.configure_optimizers(lr=participant.train_cfg.lr * lada.mard_lr_scale))


def distill_step(lada, fabric, participant, optimizer, guard: NonFiniteGuard, round: int, batch: int,
                 keys, prompts, chosen, rejected, weights: torch.Tensor | None = None,
                 update: bool = True, measure_after: bool = True):
    """One MARD update on a selected minibatch; returns per-row losses before and after it (after: None
    unless `measure_after`; without `update` no step is taken and after = before). Under FSDP2 each process
    takes its share of the rows (ladalit.core.training.rows_step). `lada`: the config's `lada` section.

    `weights` (server, Eq. 4): rows sharing a sample x carry w_k summing to one.
    """
    def per_sample(rows):
        return per_sample_loss(lada, participant, *([xs[i] for i in rows] for xs in (keys, prompts, chosen, rejected)))
    return rows_step(fabric, participant, optimizer, guard, round, batch, len(prompts), per_sample, weights,
                     update, measure_after)


def train_selection(cfg, fabric, participant, optimizer, guard: NonFiniteGuard, round: int, batch: int,
                    minibatch_args: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`train.epochs` passes over one candidate batch's selection, one MARD update per minibatch and pass
    (the same minibatches, in the same order, every pass); per minibatch, the per-row losses before its
    first update (the rewards, Eq. 5/6) and after its last: a no-grad pass that only `reward.batch=same_sample`
    needs, None otherwise. `train.epochs=0`: no update, after = before."""
    epochs = participant.train_cfg.epochs
    need_after = cfg.reward.batch == "same_sample"
    out: list = [None] * len(minibatch_args)
    for e in range(max(epochs, 1)):
        last = e == max(epochs, 1) - 1
        for m, args in enumerate(minibatch_args):
            before, after = distill_step(cfg.lada, fabric, participant, optimizer, guard, round, batch, **args,
                                         update=epochs > 0, measure_after=last and need_after)
            out[m] = (before if e == 0 else out[m][0], after)
    return out


def count_pairs(results: Results, t: int, name: str, participant, prompts, chosen, rejected) -> None:
    """Training pairs (prompt, chosen) and (prompt, rejected) of one selection that exceed the participant's
    max_length and so lose the end of their response (Participant._rows)."""
    n = participant.overlong_pairs(prompts, chosen) + participant.overlong_pairs(prompts, rejected)
    results.add_budget(t, name, "pairs", n=2 * len(prompts), overlong=n)
