"""LaDa's federated loop (paper Algorithm 1, SPEC §3–§5), driven by one Fabric instance.

Read `run` top to bottom against Algorithm 1:

    for t = 1..T:
        for each client k:
            t = 1: ❶ SFT φ_k on train_k -> frozen φ_ref_k;  ❷ prototypes = first selection
            for each candidate batch of D_p (size n_c):
                score / select with U_k (Eq. 10)                      [client_select]
                responses y^s (server, sent down) and y^k (local)     [ResponseCache]
                train.epochs passes of MARD updates of φ_k (Eq. 3),
                losses before the first / after the last              [train_selection]
                rewards ❸❹❺ (Eq. 5–7), train U_k ❻❼ (Eq. 8, 9)        [reward_and_fit]
        server: for each candidate batch, U_{s,k} selects for every k, y^k sent up
                (generated now, by φ_k after its round-t update, unless already cached),
                weighted MARD update of ψ (Eq. 4), rewards, U_{s,k} training
        evaluate every participant

Everything that crosses between server and clients goes through `channel`.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch

from ladalit.scale import data_parallel

from ladalit.method import losses, rewards
from ladalit.core.channel import DOWN, UP, Channel
from ladalit.core.encoder import make_encoder
from ladalit.method.filter import LearnabilityFilter, filter_class_from_path
from ladalit.reporting.progress import Progress
from ladalit.core.prompts import format_question, format_response, zero_shot_prompt
from ladalit.method.prototypes import select_prototypes
from ladalit.reporting.results import Results
from ladalit.core.training import NonFiniteGuard, minibatches, optimizer_step, supervised_finetune
from ladalit.core.evaluation import evaluate_all
from ladalit.core.experiment import public_by_id
from ladalit.core.responses import ResponseCache, send_answers
from ladalit.reporting.results import log_round


# ----------------------------------------------------------------------------- state
@dataclass
class PairState:
    """What one side of one model pair (client k ↔ server) carries across batches and rounds."""
    filter: LearnabilityFilter | None
    prev_round_losses: torch.Tensor | None = None  # losses of last round's selection, before it trained (Eq. 5, M)
    round_losses: list[torch.Tensor] = field(default_factory=list)
    # this round's reward scale (results.json "reward_scale"): r_total of every trained sample, the filter's
    # U^p and λ·U^q on every scored candidate, candidates and selected
    round_rewards: list[torch.Tensor] = field(default_factory=list)
    round_terms: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    candidates: int = 0
    selected: int = 0


def make_filter(cfg, embed_dim: int, seed: int) -> LearnabilityFilter:
    f = cfg.filter_net
    cls = filter_class_from_path(f.class_path) if f.class_path else LearnabilityFilter
    return cls(embed_dim=embed_dim, hidden=f.hidden, depth=f.depth, lr=f.lr, epochs=f.epochs,
               batch_size=f.batch_size, lam=f.lam, tau=f.tau, min_select=f.min_select,
               max_select=f.max_select, buffer_size=f.buffer_size, seed=seed)


def candidate_batches(n: int, n_c: int, seed: int, round: int) -> list[list[int]]:
    """D_p streamed in candidate batches of n_c, in a fresh seeded order each round."""
    order = list(range(n))
    random.Random(seed * 7919 + round).shuffle(order)
    return [order[i: i + n_c] for i in range(0, n, n_c)]


# ----------------------------------------------------------------------------- one update
def per_sample_loss(cfg, participant, keys, prompts, chosen, rejected) -> torch.Tensor:
    """Eq. 3 / Eq. 4 per sample (chosen = the other side's answer), or the `loss=ce` ablation."""
    if cfg.loss == "ce":
        logp, mask = participant.token_logprobs(prompts, chosen)
        return -(logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    pol_c, pol_r = participant.pair_logprobs(prompts, chosen, rejected)
    ref_c, ref_r = participant.reference_pair_logprobs(keys, prompts, chosen, rejected)
    return losses.mard_loss(pol_c, pol_r, ref_c, ref_r, cfg.beta)


def distill_step(cfg, fabric, participant, optimizer, guard: NonFiniteGuard, round: int, batch: int,
                 keys, prompts, chosen, rejected, weights: torch.Tensor | None = None,
                 update: bool = True, measure_after: bool = True):
    """One MARD update on a selected minibatch; returns per-row losses before and after it (after: None
    unless `measure_after`; without `update` no step is taken and after = before).

    `weights` (server, Eq. 4): rows sharing a sample x carry w_k summing to one.
    """
    participant.train()
    rank, world = data_parallel.world_of(fabric)
    if world > 1:  # FSDP2: each process its share of the rows (ladalit.scale.data_parallel)
        return _distill_step_shared(cfg, fabric, participant, optimizer, guard, round, batch,
                                    keys, prompts, chosen, rejected, weights, rank, world, update, measure_after)
    before = per_sample_loss(cfg, participant, keys, prompts, chosen, rejected)
    if weights is None:
        loss = before.mean()
    else:
        loss = losses.weighted_server_loss(before, weights.to(before.device))
    if not update:
        return before.detach().float().cpu(), before.detach().float().cpu()
    if guard.ok(loss, participant.name, round, batch):
        optimizer_step(fabric, participant, optimizer, loss)
    if not measure_after:
        return before.detach().float().cpu(), None
    with torch.no_grad():
        after = per_sample_loss(cfg, participant, keys, prompts, chosen, rejected)
    return before.detach().float().cpu(), after.float().cpu()


def _distill_step_shared(cfg, fabric, participant, optimizer, guard, round, batch, keys, prompts, chosen, rejected,
                         weights, rank, world, update=True, measure_after=True):
    """`distill_step` with the rows split over the processes; the same update and per-row losses."""
    n = len(prompts)
    rows, real = data_parallel.share(n, rank, world)
    mine = [[xs[i] for i in rows] for xs in (keys, prompts, chosen, rejected)]
    weights = torch.ones(n) if weights is None else weights.detach().float().cpu()
    before = per_sample_loss(cfg, participant, *mine)
    loss = data_parallel.share_loss(before, real, weights[rows].to(before.device), weights.sum(), world)
    whole = fabric.all_reduce(loss.detach(), reduce_op="sum") / world  # the whole batch's loss, on every process
    if update and guard.ok(whole, participant.name, round, batch):
        optimizer_step(fabric, participant, optimizer, loss)
    before_all = data_parallel.gather_rows(fabric, before.detach().float(), n).cpu()
    if not update:
        return before_all, before_all
    if not measure_after:
        return before_all, None
    with torch.no_grad():
        after = per_sample_loss(cfg, participant, *mine)
    return before_all, data_parallel.gather_rows(fabric, after.float(), n).cpu()


def train_selection(cfg, fabric, participant, optimizer, guard: NonFiniteGuard, round: int, batch: int,
                    minibatch_args: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`train.epochs` passes over one candidate batch's selection, one MARD update per minibatch and pass
    (the same minibatches, in the same order, every pass); per minibatch, the per-row losses before its
    first update and after its last (the batch reward, Eq. 6). `train.epochs=0`: no update, after = before."""
    epochs = participant.train_cfg.epochs
    out: list = [None] * len(minibatch_args)
    for e in range(max(epochs, 1)):
        last = e == max(epochs, 1) - 1
        for m, args in enumerate(minibatch_args):
            before, after = distill_step(cfg, fabric, participant, optimizer, guard, round, batch, **args,
                                         update=epochs > 0, measure_after=last)
            out[m] = (before if e == 0 else out[m][0], after)
    return out


def reward_and_fit(cfg, pair: PairState, emb: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
                   guard: NonFiniteGuard, who: str, round: int, batch: int) -> torch.Tensor:
    """❸ r_round (Eq. 5), ❹ r_batch (Eq. 6), ❺ r_total (Eq. 7); ❻❼ train the filter (Eq. 8, 9)."""
    if cfg.reward.granularity == "set":
        # paper-literal Eq. 5: N sums over this round's selection, known so far (the rest is not yet selected)
        seen = torch.cat(pair.round_losses + [before])
        r_round = rewards.round_reward(pair.prev_round_losses, seen, granularity="set")[-len(before):]
    else:
        r_round = rewards.round_reward(pair.prev_round_losses, before)
    r_batch = rewards.batch_reward(before, after, granularity=cfg.reward.granularity)
    r_total = rewards.total_reward(r_round, r_batch, cfg.reward.alpha)
    pair.round_losses.append(before)
    pair.round_rewards.append(r_total.detach().float().cpu())
    if pair.filter is not None and guard.ok(r_total, who, round, batch, what="reward"):
        pair.filter.observe(emb, r_total)
        pair.filter.fit()
    return r_total


def close_round(pair: PairState) -> None:
    if pair.round_losses:
        pair.prev_round_losses = torch.cat(pair.round_losses)
    pair.round_losses, pair.round_rewards, pair.round_terms = [], [], []
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
    return row


# ----------------------------------------------------------------------------- selection
def select(cfg, pair: PairState, round: int, cand: list[int], emb: torch.Tensor, prototypes: set[int]):
    """Indices of D_p chosen from one candidate batch, and which bound fired (if any)."""
    pair.candidates += len(cand)
    if cfg.filter == "none":
        sel, bound = list(cand), None
    elif round == 1:  # ❷ the filter is untrained: prototypes form the first selection
        sel, bound = [i for i in cand if i in prototypes], None
    else:
        idx, bound = pair.filter.select(emb[cand])
        sel = [cand[j] for j in idx.tolist()]
        _, u_p, u_q = pair.filter.predict(emb[cand])
        pair.round_terms.append((u_p.float().cpu(), pair.filter.lam * u_q.float().cpu()))
    pair.selected += len(sel)
    return sel, bound


def predicted_rewards(pair: PairState, emb: torch.Tensor) -> torch.Tensor:
    r_hat, _, _ = pair.filter.predict(emb)
    return r_hat


# ----------------------------------------------------------------------------- the loop
def run(exp, channel: Channel, results: Results, tracker=None, start_round: int = 1, state: dict | None = None,
        on_round_end=None, progress: Progress | None = None) -> dict:
    cfg, fabric = exp.cfg, exp.fabric
    progress = progress or Progress(quiet=True)
    server, clients, public = exp.server, exp.clients, exp.data.public
    guard = NonFiniteGuard(cfg.on_nonfinite)
    private = {name: exp.data.clients[i] for i, name in enumerate(clients)}

    # Public questions are embedded once (cached per sample) for the filters and the prototypes.
    encoder = make_encoder(cfg.filter_net.encoder)
    emb = encoder.encode_cached([x.id for x in public], [format_question(x) for x in public])
    prototypes = set(select_prototypes(emb, cfg.init_fraction, cfg.seed))
    use_filter = cfg.filter == "lada"
    client_side = {k: PairState(make_filter(cfg, emb.shape[1], cfg.seed + 2 * i) if use_filter else None)
                   for i, k in enumerate(clients)}
    server_side = {k: PairState(make_filter(cfg, emb.shape[1], cfg.seed + 2 * i + 1) if use_filter else None)
                   for i, k in enumerate(clients)}
    generators = {}
    if cfg.generation.backend == "vllm":
        from ladalit.scale.vllm_backend import make_generators
        generators = make_generators(cfg, {"server": server, **clients})
    responses = ResponseCache(cfg.generation.max_new_tokens, cfg.generation.batch_size, progress, generators,
                              mark_cut=True)
    optimizers: dict = {}
    if state is not None:  # resume
        restore_state(exp, state, client_side, server_side, optimizers, results, channel)
        restore_counters(state, guard, responses)

    rounds_bar = progress.task("rounds", cfg.rounds - start_round + 1)
    for t in range(start_round, cfg.rounds + 1):
        # ---------------------------------------------------------------- clients
        for k, client in clients.items():
            pair = client_side[k]
            if t == 1:
                # ❶ reference SLM: SFT on private train (short answer statements), then frozen
                sft_opt = fabric.setup_optimizers(client.configure_optimizers())
                train = private[k].train
                sft = supervised_finetune(fabric, client, sft_opt, [zero_shot_prompt(x) for x in train],
                                          [format_response(None, x.answer) for x in train],
                                          client.train_cfg.sft_epochs, cfg.seed, guard, round=0)
                client.freeze_reference()
                optimizers[k] = fabric.setup_optimizers(client.configure_optimizers())
                results.add_train(0, k, sft_loss=sft[-1] if sft else math.nan)
            batches = candidate_batches(len(public), cfg.n_c, cfg.seed, t)
            bar = progress.task(f"round {t} {k}: candidate batches", len(batches))
            for b, cand in enumerate(batches):
                bar.advance()
                # score and select (Eq. 10); round 1: ❷ prototypes
                sel, bound = select(cfg, pair, t, cand, emb, prototypes)
                results.add_selection(t, f"{k}<-server", "client", len(cand), len(sel), bound)
                if not sel:
                    continue
                xs = [public[i] for i in sel]
                # the client asks for the server's answers to the samples it selected
                asked = channel.send(t, UP, k, "selected_ids", [x.id for x in xs])
                y_s = send_answers(channel, t, DOWN, k, "server_answers",
                                   responses.get(t, server, [public_by_id(exp, i) for i in asked]))
                y_k = responses.get(t, client, xs)  # stays on the client
                prompts = [zero_shot_prompt(x) for x in xs]
                keys = [(t, x.id) for x in xs]
                count_pairs(results, t, k, client, prompts, y_s, y_k)
                mbs = minibatches(len(xs), client.train_cfg.batch_size)
                losses_of = train_selection(cfg, fabric, client, optimizers[k], guard, t, b, [
                    dict(keys=[keys[i] for i in mb], prompts=[prompts[i] for i in mb],
                         chosen=[y_s[i] for i in mb], rejected=[y_k[i] for i in mb]) for mb in mbs])
                for m, (mb, (before, after)) in enumerate(zip(mbs, losses_of)):
                    r = reward_and_fit(cfg, pair, emb[[sel[i] for i in mb]], before, after, guard, k, t, b)
                    results.add_train(t, k, batch=b, minibatch=m, loss_before=before.mean().item(),
                                      loss_after=after.mean().item(), reward=r.mean().item())
            bar.done()
            results.add_reward_scale(t, f"{k}<-server", "client", **reward_scale(pair, cfg.filter_net.tau))
            close_round(pair)

        # ---------------------------------------------------------------- server
        if t == 1:
            server.freeze_reference()  # ψ_ref: the pretrained LLM
            optimizers["server"] = fabric.setup_optimizers(server.configure_optimizers())
        batches = candidate_batches(len(public), cfg.n_c, cfg.seed + 1, t)
        bar = progress.task(f"round {t} server: candidate batches", len(batches))
        for b, cand in enumerate(batches):
            bar.advance()
            rows = []  # (client k, index into D_p)
            for k in clients:
                sel, bound = select(cfg, server_side[k], t, cand, emb, prototypes)
                results.add_selection(t, f"server<-{k}", "server", len(cand), len(sel), bound)
                rows += [(k, i) for i in sel]
            if not rows:
                continue
            y_k = {}
            for k in clients:  # the server asks each client for its answers on the samples chosen for that pair
                mine = [public[i] for kk, i in rows if kk == k]
                if not mine:
                    continue
                asked = channel.send(t, DOWN, k, "selected_ids", [x.id for x in mine])
                # answered by client k's policy as it is now, after its round-t update (README, method)
                answers = send_answers(channel, t, UP, k, "client_answers",
                                       responses.get(t, clients[k], [public_by_id(exp, i) for i in asked]))
                y_k.update({(k, x.id): y for x, y in zip(mine, answers)})
            xs = [public[i] for _, i in rows]
            y_s = responses.get(t, server, xs)
            weights = server_weights(cfg, rows, server_side, emb, t)
            # minibatches of whole samples, so that the rows of one sample are weighted together
            groups = {}
            for j, (_, i) in enumerate(rows):
                groups.setdefault(i, []).append(j)
            sample_order = list(groups)
            prompts = [zero_shot_prompt(x) for x in xs]
            chosen = [y_k[(k, x.id)] for (k, _), x in zip(rows, xs)]
            count_pairs(results, t, "server", server, prompts, chosen, y_s)
            js_of = [[j for s in mb for j in groups[sample_order[s]]]
                     for mb in minibatches(len(sample_order), server.train_cfg.batch_size)]
            losses_of = train_selection(cfg, fabric, server, optimizers["server"], guard, t, b, [
                dict(keys=[(t, rows[j][0], xs[j].id) for j in js], prompts=[prompts[j] for j in js],
                     chosen=[chosen[j] for j in js], rejected=[y_s[j] for j in js], weights=weights[js])
                for js in js_of])
            for m, (js, (before, after)) in enumerate(zip(js_of, losses_of)):
                for k in clients:
                    mine = [n for n, j in enumerate(js) if rows[j][0] == k]
                    if mine:
                        idx = torch.tensor(mine)
                        r = reward_and_fit(cfg, server_side[k], emb[[rows[js[n]][1] for n in mine]],
                                           before[idx], after[idx], guard, f"server<-{k}", t, b)
                        results.add_train(t, "server", pair=k, batch=b, minibatch=m,
                                          loss_before=before[idx].mean().item(),
                                          loss_after=after[idx].mean().item(), reward=r.mean().item())
        bar.done()
        for k in clients:
            results.add_reward_scale(t, f"server<-{k}", "server", **reward_scale(server_side[k], cfg.filter_net.tau))
            close_round(server_side[k])

        # ---------------------------------------------------------------- evaluation, end of round
        results.add_responses(responses.rows(t))
        for name, counts in responses.cut_counts(t).items():
            results.add_budget(t, name, "responses", **counts)
        responses.drop_before(t + 1)
        for p in [server, *clients.values()]:
            p.clear_reference_cache()
        if cfg.eval.every_round or t == cfg.rounds:
            evaluate_all(exp, results, t, progress)
        log_round(tracker, results, channel, t)
        progress.summary(results, t, channel)
        rounds_bar.advance()
        if on_round_end is not None:
            on_round_end(t, snapshot_state(exp, client_side, server_side, optimizers, results, channel) |
                         {"counters": {"nonfinite_skipped": guard.skipped, "responses_generated": responses.generated}})
    for g in generators.values():
        g.close()
    return {"nonfinite_skipped": guard.skipped, "responses_generated": responses.generated,
            "bound_hits": {f"{side}:{k}": dict(p.filter.bound_hits) for side, d in
                           (("client", client_side), ("server", server_side)) for k, p in d.items() if p.filter}}


def count_pairs(results: Results, t: int, name: str, participant, prompts, chosen, rejected) -> None:
    """Training pairs (prompt, chosen) and (prompt, rejected) of one selection that exceed the participant's
    max_length and so lose the end of their response (Participant._rows)."""
    n = participant.overlong_pairs(prompts, chosen) + participant.overlong_pairs(prompts, rejected)
    results.add_budget(t, name, "pairs", n=2 * len(prompts), overlong=n)


def server_weights(cfg, rows, server_side, emb, t) -> torch.Tensor:
    """w_k for rows sharing a sample (Eq. 4): ∝ the server filter's r̂_{s,k}(x), or uniform."""
    ids = [i for _, i in rows]
    index = {k: n for n, k in enumerate(server_side)}
    client_ids = [index[k] for k, _ in rows]
    mode = cfg.server_weights
    if mode == "reward" and (cfg.filter == "none" or t == 1):
        mode = "uniform"  # no trained server filter yet
    if mode == "reward":
        scores = torch.stack([predicted_rewards(server_side[k], emb[[i]])[0] for k, i in rows])
    else:
        scores = torch.ones(len(rows))
    return losses.overlap_weights(ids, client_ids, scores, mode)


# ----------------------------------------------------------------------------- evaluation and logging
# ----------------------------------------------------------------------------- checkpoint state
def _sharded(exp) -> bool:
    from lightning.fabric.strategies import ModelParallelStrategy
    return isinstance(exp.fabric.strategy, ModelParallelStrategy)


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def participant_state(exp, p) -> dict:
    """The participant's trainable weights, gathered in full under FSDP2 (a collective: all ranks call it)."""
    if not _sharded(exp):
        return p.trainable_state()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    sd = get_model_state_dict(p.model, options=_full_options())
    return {k: v for k, v in sd.items() if "lora_" in k}


def optimizer_state(exp, p, opt) -> dict:
    if not _sharded(exp):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    return get_optimizer_state_dict(p.model, opt.optimizer, options=_full_options())


def snapshot_state(exp, client_side, server_side, optimizers, results, channel) -> dict:
    parts = {"server": exp.server, **exp.clients}
    return {
        "participants": {n: participant_state(exp, p) for n, p in parts.items()},
        "optimizers": {n: optimizer_state(exp, parts[n], o) for n, o in optimizers.items()},
        "filters": {f"{side}:{k}": p.filter.state_dict() for side, d in (("client", client_side), ("server", server_side))
                    for k, p in d.items() if p.filter is not None},
        "prev_round_losses": {f"{side}:{k}": p.prev_round_losses for side, d in
                              (("client", client_side), ("server", server_side)) for k, p in d.items()},
        "ref_models": {n: p.ref_model.state_dict() for n, p in parts.items() if p.ref_model is not None},
        "results": results.state_dict(),
        "channel": channel.state_dict(),
    }


def restore_counters(state, guard: NonFiniteGuard, responses: ResponseCache) -> None:
    """The counters results.json reports, as the checkpoint holds them (older checkpoints have none)."""
    counters = state.get("counters", {})
    guard.skipped = list(counters.get("nonfinite_skipped", []))
    responses.generated = counters.get("responses_generated", 0)


def restore_state(exp, state, client_side, server_side, optimizers, results, channel) -> None:
    fabric = exp.fabric
    parts = {"server": exp.server, **exp.clients}
    for n, p in parts.items():
        if _sharded(exp):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
            set_model_state_dict(p.model, state["participants"][n],
                                 options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            p.model.load_state_dict(state["participants"][n], strict=False)
        p.freeze_reference()
        if n in state["ref_models"]:
            p.ref_model.load_state_dict(state["ref_models"][n])
        optimizers[n] = fabric.setup_optimizers(p.configure_optimizers())
        if n in state["optimizers"]:
            if _sharded(exp):
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
                set_optimizer_state_dict(p.model, optimizers[n].optimizer, state["optimizers"][n],
                                         options=StateDictOptions(full_state_dict=True))
            else:
                optimizers[n].load_state_dict(state["optimizers"][n])
    for side, d in (("client", client_side), ("server", server_side)):
        for k, p in d.items():
            if p.filter is not None:
                p.filter.load_state_dict(state["filters"][f"{side}:{k}"])
            p.prev_round_losses = state["prev_round_losses"][f"{side}:{k}"]
    results.load_state_dict(state["results"])
    channel.load_state_dict(state["channel"])
