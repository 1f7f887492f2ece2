"""One side of one model pair (client k ↔ server): its filter, its selection and its rewards.

Both roles use these: client k for its pair's U_k, the server for each U_{s,k}. Pure bookkeeping and
math around `LearnabilityFilter`; nothing here sends anything.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from omegaconf import OmegaConf

from ladalit.core.seeds import round_seed
from ladalit.core.training import NonFiniteGuard
from ladalit.method import losses, rewards
from ladalit.method.filter import LearnabilityFilter, filter_class_from_path


@dataclass
class PairState:
    """What one side of one model pair (client k ↔ server) carries across batches and rounds."""
    filter: LearnabilityFilter | None
    prev_round_losses: torch.Tensor | None = None  # losses of last round's selection, before it trained (Eq. 5, M)
    # losses of the last trained candidate batch's selection, before it trained (Eq. 6, M̄_{b-1}); it carries over
    # from a round's last batch to the next round's first
    prev_batch_losses: torch.Tensor | None = None
    # U^p(x) of each sample (index into D_p) of the current selection, as the filter scored it when it selected
    # (Eq. 9's label is r_total minus it)
    u_p_at_selection: dict[int, float] = field(default_factory=dict)
    round_losses: list[torch.Tensor] = field(default_factory=list)
    # this round's reward scale (results.json "reward_scale"): r_total of every trained sample, the filter's
    # U^p and λ·U^q on every scored candidate, candidates and selected
    round_rewards: list[torch.Tensor] = field(default_factory=list)
    round_terms: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # server side (Eq. 4): this pair's w_k on samples other pairs selected too, and each such sample's
    # normalised entropy H(w) / log(n) over its n weights (1 = uniform)
    round_weights: list[torch.Tensor] = field(default_factory=list)
    round_weight_entropy: list[torch.Tensor] = field(default_factory=list)
    candidates: int = 0
    selected: int = 0
    unfit: bool = False  # observations since the filter's last fit (within one candidate batch only)


def make_filter(cfg, embed_dim: int, seed: int) -> LearnabilityFilter:
    f = cfg.filter_net
    cls = filter_class_from_path(f.class_path) if f.class_path else LearnabilityFilter
    own = OmegaConf.to_container(f.init_args) if f.class_path and f.get("init_args") else {}  # the subclass's
    return cls(embed_dim=embed_dim, hidden=f.hidden, depth=f.depth, lr=f.lr, epochs=f.epochs,
               batch_size=f.batch_size, lam=f.lam, tau=f.tau, min_select=f.min_select,
               max_select=f.max_select, buffer_size=f.buffer_size, seed=seed, **own)


def candidate_batches(n: int, n_c: int, seed: int, round: int) -> list[list[int]]:
    """D_p streamed in candidate batches of n_c, in a fresh seeded order each round."""
    order = list(range(n))
    random.Random(round_seed(seed, round)).shuffle(order)
    return [order[i: i + n_c] for i in range(0, n, n_c)]


def rewards_of(cfg, pair: PairState, befores: list[torch.Tensor], afters: list) -> list[torch.Tensor]:
    """❸ r_round (Eq. 5), ❹ r_batch (Eq. 6), ❺ r_total (Eq. 7) of one candidate batch's selection, split as its
    minibatches: `befores[m]` are the losses of minibatch m's samples before their first update (under φ^{t,b}
    as batch b trains, SPEC §5); `afters[m]` after their last (only `reward.batch=same_sample` reads them).
    Then this selection's losses become the next batch's M̄_{b-1} and part of the next round's M̄."""
    now = torch.cat(list(befores))
    if cfg.reward.granularity == "set":
        # paper-literal Eq. 5: N sums over this round's selection, known so far (the rest is not yet selected)
        seen = torch.cat(pair.round_losses + [now])
        r_round = rewards.round_reward(pair.prev_round_losses, seen, granularity="set")[-len(now):]
    else:
        r_round = rewards.round_reward(pair.prev_round_losses, now)
    if cfg.reward.batch == "same_sample":
        r_batch = rewards.same_sample_reward(now, torch.cat(list(afters)), granularity=cfg.reward.granularity)
    else:
        r_batch = rewards.batch_reward(pair.prev_batch_losses, now, granularity=cfg.reward.granularity)
    r_total = rewards.total_reward(r_round, r_batch, cfg.reward.alpha)
    pair.round_losses.append(now)
    pair.prev_batch_losses = now
    pair.round_rewards.append(r_total.detach().float().cpu())
    return list(r_total.split([len(b) for b in befores]))


def observe_rewards(cfg, pair: PairState, ids: list[int], emb: torch.Tensor, r_total: torch.Tensor,
                    guard: NonFiniteGuard, who: str, round: int, batch: int) -> None:
    """The filter observes (x, r_total, U^p(x) at selection) of one minibatch's samples `ids` (indices into D_p;
    a non-finite reward is skipped, by the guard); `filter_net.fit_every=minibatch`: it trains on its buffer
    at once (`fit_filter`)."""
    if pair.filter is not None and guard.ok(r_total, who, round, batch, what="reward"):
        u_p = torch.tensor([pair.u_p_at_selection[i] for i in ids], dtype=torch.float32)
        pair.filter.observe(emb, r_total, u_p)
        pair.unfit = True
        if cfg.filter_net.fit_every == "minibatch":
            fit_filter(pair)


def fit_filter(pair: PairState) -> None:
    """❻ ExploitNet (Eq. 8), then ❼ ExploreNet (Eq. 9), on the whole replay buffer: once per candidate
    batch, after its update and rewards; nothing to do if the filter observed nothing since its last fit."""
    if pair.filter is not None and pair.unfit:
        pair.filter.fit()
        pair.unfit = False


def close_round(pair: PairState) -> None:
    if pair.round_losses:
        pair.prev_round_losses = torch.cat(pair.round_losses)
    pair.round_losses, pair.round_rewards, pair.round_terms = [], [], []
    pair.round_weights, pair.round_weight_entropy = [], []
    pair.candidates = pair.selected = 0


def reward_scale(pair: PairState, tau: float) -> dict:
    """The round's reward scale for one pair: r_total (Eq. 7) of the trained samples — mean, std, the
    fraction above τ —, the fraction of candidates selected, and the mean exploitation U^p(x) and
    exploration λ·U^q(h^p(x)) terms of Eq. 10 over the scored candidates (NaN when no filter scored, e.g.
    round 1's prototypes)."""
    nan = float("nan")
    r = torch.cat(pair.round_rewards) if pair.round_rewards else torch.zeros(0)
    row = {"observations": r.numel(),
           "r_total_mean": r.mean().item() if r.numel() else nan,
           "r_total_std": r.std(unbiased=False).item() if r.numel() else nan,
           "r_total_above_tau": (r > tau).float().mean().item() if r.numel() else nan,
           "selected_fraction": pair.selected / pair.candidates if pair.candidates else nan}
    if pair.round_terms:
        u_p = torch.cat([a for a, _ in pair.round_terms])
        u_q = torch.cat([b for _, b in pair.round_terms])
        row |= {"exploit_mean": u_p.mean().item(), "explore_mean": u_q.mean().item()}
    else:
        row |= {"exploit_mean": nan, "explore_mean": nan}
    if pair.round_weights:  # server side: the spread of w_k (Eq. 4) on samples shared with other pairs
        w, h = torch.cat(pair.round_weights), torch.cat(pair.round_weight_entropy)
        row |= {"overlap_samples": w.numel(), "w_min": w.min().item(), "w_max": w.max().item(),
                "w_entropy_ratio": h.mean().item()}
    return row


def select(cfg, pair: PairState, round: int, cand: list[int], emb: torch.Tensor, prototypes: set[int],
           override=None):
    """Indices of D_p chosen from one candidate batch, and which bound fired (if any). `override` (a matched
    selector of the harness's controls, `analysis.selector`): cand -> the indices it chooses, instead of the
    filter or the prototypes; the filter then only records U^p of that selection (Eq. 9's baseline)."""
    pair.candidates += len(cand)
    if override is not None:
        sel, bound = list(override(cand)), None
    elif cfg.lada.filter == "none":
        sel, bound = list(cand), None
    elif round == 1:  # ❷ the filter is untrained: prototypes form the first selection
        sel, bound = [i for i in cand if i in prototypes], None
    else:
        idx, bound = pair.filter.select(emb[cand])
        sel = [cand[j] for j in idx.tolist()]
        _, u_p, u_q = pair.filter.predict(emb[cand])
        pair.round_terms.append((u_p.float().cpu(), pair.filter.lam * u_q.float().cpu()))
        pair.u_p_at_selection = dict(zip(sel, u_p[idx].float().cpu().tolist()))  # Eq. 9's baseline: what scored x
    if pair.filter is not None and (round == 1 or override is not None):  # prototypes or a control chose: U^p now
        u_p_sel = pair.filter.predict(emb[sel])[1].float().cpu() if sel else torch.zeros(0)
        pair.u_p_at_selection = dict(zip(sel, u_p_sel.tolist()))
    pair.selected += len(sel)
    return sel, bound


def predicted_rewards(pair: PairState, emb: torch.Tensor) -> torch.Tensor:
    r_hat, _, _ = pair.filter.predict(emb)
    return r_hat


def server_weights(cfg, rows, server_side, emb, t) -> torch.Tensor:
    """w_k for rows sharing a sample (Eq. 4): ∝ the server filter's r̂_{s,k}(x), or uniform."""
    ids = [i for _, i in rows]
    index = {k: n for n, k in enumerate(server_side)}
    client_ids = [index[k] for k, _ in rows]
    mode = cfg.lada.server_weights
    if mode == "reward" and (cfg.lada.filter == "none" or t == 1):
        mode = "uniform"  # no trained server filter yet
    if mode == "reward":
        scores = torch.stack([predicted_rewards(server_side[k], emb[[i]])[0] for k, i in rows])
    else:
        scores = torch.ones(len(rows))
    return losses.overlap_weights(ids, client_ids, scores, mode)


def record_weight_spread(rows, server_side, weights: torch.Tensor) -> None:
    """Per pair, the w_k of its rows on samples other pairs selected too, and each such sample's normalised
    entropy H(w) / log(n) (1: uniform), for the round's reward scale (`reward_scale`)."""
    shared: dict[int, list[int]] = {}
    for j, (_, i) in enumerate(rows):
        shared.setdefault(i, []).append(j)
    for js in shared.values():
        if len(js) < 2:
            continue
        w = weights[js].detach().double().cpu()
        p = w / w.sum()
        h = -(p * torch.log(p.clamp_min(1e-300))).sum() / torch.log(torch.tensor(float(len(js)), dtype=torch.float64))
        for j in js:
            pair = server_side[rows[j][0]]
            pair.round_weights.append(weights[[j]].detach().float().cpu())
            pair.round_weight_entropy.append(h.float().reshape(1))


# ----------------------------------------------------------------------------- evaluation and logging
