"""LaDa (paper Algorithm 1, SPEC §3–§5): the server's loop, driving K clients through messages only.

The server reaches a client only through its transport (ladalit.core.transport), with the messages of
ladalit.core.messages; the client's handlers are in ladalit.method.client. How the two exchange (the clients'
phase and the clients' answers y^k) is one object chosen once from `federation.protocol`, in
ladalit.method.exchange: `PerBatch`, Algorithm 1's messages, or `PerRound`, a few per client per round.
Algorithm 1, block by block:

    for t = 1..T:
      clients, for each k                                           [exchange.PerBatch.clients_phase]
        (per_round: one message each for the whole phase)           [exchange.PerRound.clients_phase]
        t = 1: ❶ SFT φ_k on its private train -> frozen φ_ref_k      [client.LadaClient.reference_sft]
               ❷ prototypes of D_p = the first selection             [public_set]
        for each candidate batch of D_p (n_c):                      [exchange.PerBatch.client_round]
          select with U_k (Eq. 10)                                  [client.LadaClient.select, pair.select]
          y^s for the selection, sent down                          [LadaServer.server_answers]
          distill: train.epochs passes of MARD (Eq. 3)              [client.LadaClient.distill, distill.train_selection]
          rewards ❸ r_round, ❹ r_batch, ❺ r_total (Eq. 5–7)         [pair.rewards_of, pair.observe_rewards]
          filter fit ❻ ExploitNet, ❼ ExploreNet (Eq. 8, 9)          [pair.fit_filter]
      server                                                        [LadaServer.server_round]
        for each candidate batch of D_p:
          server select: U_{s,k} picks for every k                   [LadaServer.server_select]
          collect answers: y^k from each client                     [LadaServer.collect_answers]
          (Algorithm 1: asked per batch; per_round: asked once)     [exchange.PerBatch.client_answers]
          weighted server step: MARD on ψ (Eq. 4), w_k               [LadaServer.weighted_server_step]
          rewards ❸–❺, then filter fit ❻❼ for each U_{s,k}           [LadaServer.server_rewards, pair.fit_filter]
      evaluate every participant                                    [run]

`run` builds the roles in this process and hands them to the experimenter's harness around the protocol
(ladalit.core.rounds, the round loop of every method): it evaluates every participant (the server
on the union of the clients' test sets, which no federated server could see), gathers every role's rows of
results, and checkpoints the roles' local states. None of this crosses the transport, and none of it is
something the server's loop can reach.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ladalit.core.channel import Channel
from ladalit.core.config import ConfigError, section
from ladalit.core.encoder import make_encoder
from ladalit.core.hooks import Hooks
from ladalit.core.messages import EndRound
from ladalit.core.prompts import format_question, zero_shot_prompt
from ladalit.core.responses import ResponseCache
from ladalit.core.training import NonFiniteGuard, minibatches
from ladalit.core.transport import Transport
from ladalit.method import checkpoint
from ladalit.method.client import LadaClient, generators_for, loss_row, record_answers
from ladalit.method.distill import count_pairs, mard_optimizer, train_selection
from ladalit.method.exchange import check_deployment, exchange_for
from ladalit.method.pair import (PairState, candidate_batches, close_round, fit_filter, make_filter, observe_rewards,
                                 record_weight_spread, reward_scale, rewards_of, select, server_weights)
from ladalit.method.prototypes import select_prototypes
from ladalit.core.progress import Progress
from ladalit.core.results import Results
from ladalit.core.roles import MethodRoles
from ladalit.core.rounds import build_in_process, run_in_process


@dataclass
class PublicSet:
    """D_p as every participant knows it: the records, their embeddings (for the filters) and ❷ the
    prototypes, indices into `records`. Public, so the same on every side; built once here."""
    records: list
    emb: torch.Tensor
    prototypes: set[int]
    index: dict[str, int]


def public_set(cfg, records) -> PublicSet:
    """Embed the public questions once (cached per sample) and pick ❷ the prototypes (k-means on them)."""
    emb = make_encoder(cfg.filter_net.encoder).encode_cached([x.id for x in records],
                                                             [format_question(x) for x in records])
    prototypes = set(select_prototypes(emb, cfg.lada.init_fraction, cfg.seed))
    return PublicSet(records, emb, prototypes, {x.id: i for i, x in enumerate(records)})


class LadaServer:
    """The server role: ψ, the server-side filters U_{s,k}, ψ's optimizer, its answers y^s, its rows of results."""

    def __init__(self, cfg, fabric, participant, public: PublicSet, transport: Transport,
                 progress: Progress | None = None, hooks: Hooks | None = None):
        """`hooks`: the harness's analysis hooks (ladalit.core.hooks; the demo world's controls), none by default."""
        self.cfg, self.fabric, self.participant, self.public, self.transport = cfg, fabric, participant, public, transport
        self.hooks = hooks or Hooks()
        self.pairs = {k: PairState(make_filter(cfg, public.emb.shape[1], cfg.seed + 2 * i + 1)
                                   if cfg.lada.filter == "lada" else None) for i, k in enumerate(transport.names)}
        self.guard, self.results, self.optimizer = NonFiniteGuard(cfg.on_nonfinite), Results(), None
        self.progress = progress or Progress(quiet=True)
        self.responses = ResponseCache(cfg.generation.max_new_tokens, cfg.generation.batch_size, self.progress,
                                       generators_for(cfg, "server", participant), mark_cut=True)
        self.exchange = exchange_for(self)  # the clients' phase and y^k: per_batch or per_round (exchange.py)

    def run_round(self, t: int) -> None:
        self.exchange.clients_phase(t)
        self.server_round(t)
        self.transport.request_all({k: EndRound(t) for k in self.transport.names})
        record_answers(self.results, self.responses, t)
        self.participant.clear_reference_cache()
        self.exchange.end_round(t)

    def server_answers(self, t: int, records) -> list[str]:
        """y^s as sent to the clients: ψ's answers, or the teacher hook's (the gold-teacher control)."""
        if self.hooks.teacher is not None:
            return self.hooks.teacher(t, [x.id for x in records])
        return self.responses.get(t, self.participant, records)

    # ----------------------------------------------------------------------- the server's phase
    def server_round(self, t: int) -> None:
        if t == 1:
            self.participant.freeze_reference()  # ψ_ref: the pretrained LLM
            self.optimizer = mard_optimizer(self.cfg.lada, self.fabric, self.participant)
        batches = candidate_batches(len(self.public.records), self.cfg.lada.n_c, self.cfg.seed + 1, t)
        bar = self.progress.task(f"round {t} server: candidate batches", len(batches))
        for b, cand in enumerate(batches):
            bar.advance()
            rows = self.server_select(t, cand, b)
            if rows:
                self.weighted_server_step(t, b, rows, self.collect_answers(t, rows))
        bar.done()
        for k in self.transport.names:
            self.results.add_reward_scale(t, f"server<-{k}", "server", **reward_scale(self.pairs[k], self.cfg.filter_net.tau))
            close_round(self.pairs[k])

    def server_select(self, t: int, cand: list[int], b: int = 0) -> list[tuple[str, int]]:
        """U_{s,k} selects from candidate batch `b` for every pair k; rows (k, index into D_p)."""
        rows, cand_ids = [], [self.public.records[i].id for i in cand]
        for k in self.transport.names:
            pair = self.pairs[k]
            sel, bound = select(self.cfg, pair, t, cand, self.public.emb, self.public.prototypes,
                                override_of(self.hooks, self.public, t, f"server<-{k}", b))
            ids = [self.public.records[i].id for i in sel]
            self.results.add_selection(t, f"server<-{k}", "server", len(cand), len(sel), bound, ids)
            if self.hooks.selected is not None:
                self.hooks.selected(t, f"server<-{k}", cand_ids, ids)
            rows += [(k, i) for i in sel]
        return rows

    def collect_answers(self, t: int, rows) -> dict[tuple[str, str], str]:
        """Each client's answers y^k on the samples chosen for its pair, through the exchange, or the client-teacher
        hook's (the server-side gold control)."""
        y_k = {}
        for k in self.transport.names:
            ids = [self.public.records[i].id for kk, i in rows if kk == k]
            if ids:
                answers = (self.hooks.client_teacher(t, k, ids) if self.hooks.client_teacher is not None
                           else self.exchange.client_answers(t, k, ids))
                y_k.update({(k, i): y for i, y in zip(ids, answers)})
        return y_k

    def weighted_server_step(self, t: int, b: int, rows, y_k) -> None:
        """MARD updates of ψ (Eq. 4): y^k chosen over y^s, rows sharing a sample weighted by w_k."""
        xs = [self.public.records[i] for _, i in rows]
        y_s = self.responses.get(t, self.participant, xs)
        weights = server_weights(self.cfg, rows, self.pairs, self.public.emb, t)
        record_weight_spread(rows, self.pairs, weights)
        prompts = [zero_shot_prompt(x) for x in xs]
        chosen = [y_k[(k, x.id)] for (k, _), x in zip(rows, xs)]
        count_pairs(self.results, t, "server", self.participant, prompts, chosen, y_s)
        js_of = sample_minibatches(rows, self.participant.train_cfg.batch_size)
        losses_of = train_selection(self.cfg, self.fabric, self.participant, self.optimizer, self.guard, t, b, [
            dict(keys=[(t, rows[j][0], xs[j].id) for j in js], prompts=[prompts[j] for j in js],
                 chosen=[chosen[j] for j in js], rejected=[y_s[j] for j in js], weights=weights[js])
            for js in js_of])
        for k in self.pairs:
            self.server_rewards(t, b, k, rows, js_of, losses_of)
        for pair in self.pairs.values():
            fit_filter(pair)

    def server_rewards(self, t: int, b: int, k: str, rows, js_of, losses_of) -> None:
        """Rewards ❸–❺ for U_{s,k} on the rows of its pair in this candidate batch, per minibatch; U_{s,k}
        observes them (and fits ❻❼ once the candidate batch is done: weighted_server_step)."""
        pair, parts = self.pairs[k], []  # (minibatch, positions of pair k's rows in it, before, after)
        for m, (js, (before, after)) in enumerate(zip(js_of, losses_of)):
            mine = torch.tensor([n for n, j in enumerate(js) if rows[j][0] == k], dtype=torch.long)
            if len(mine):
                parts.append((m, [rows[js[n]][1] for n in mine.tolist()], before[mine],
                              None if after is None else after[mine]))
        if not parts:
            return
        _, _, befores, afters = zip(*parts)
        for (m, ids, before, after), r in zip(parts, rewards_of(self.cfg, pair, befores, afters)):
            observe_rewards(self.cfg, pair, ids, self.public.emb[ids], r, self.guard, f"server<-{k}", t, b)
            self.results.add_sample_rewards(t, f"server<-{k}", [self.public.records[i].id for i in ids], r,
                                            [pair.u_p_at_selection.get(i, float("nan")) for i in ids])
            self.results.add_train(t, "server", pair=k, batch=b, minibatch=m, **loss_row(before, after),
                                   reward=r.mean().item())

    # ----------------------------------------------------------------------- local state (checkpoints)
    def counters(self) -> dict:
        """results.json's counters of the server (with the clients': `extras`)."""
        return {"nonfinite_skipped": list(self.guard.skipped), "responses_generated": self.responses.generated,
                "bound_hits": {k: dict(p.filter.bound_hits) for k, p in self.pairs.items() if p.filter}}

    def state_dict(self) -> dict:
        return checkpoint.side_state(self.fabric, self.participant, self.optimizer, self.pairs) | {
            "skipped": self.guard.skipped, "generated": self.responses.generated}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer = checkpoint.load_side_state(self.fabric, self.participant, state, self.pairs, self.cfg.lada)
        self.guard.skipped, self.responses.generated = list(state["skipped"]), state["generated"]

    def close(self) -> None:
        for g in self.responses.generators.values():
            g.close()


def override_of(hooks: Hooks, public: PublicSet, t: int, pair: str, b: int):
    """The selector hook (a matched selector of the harness's controls) for one (round, pair, candidate batch),
    as `pair.select`'s override (indices into D_p); None without one."""
    if hooks.selector is None:
        return None
    return lambda cand: [public.index[i] for i in hooks.selector(t, pair, b, [public.records[j].id for j in cand])]


def sample_minibatches(rows, batch_size: int) -> list[list[int]]:
    """Minibatches of whole samples (the rows of one sample are weighted together, Eq. 4), as row indices."""
    groups: dict[int, list[int]] = {}
    for j, (_, i) in enumerate(rows):
        groups.setdefault(i, []).append(j)
    order = list(groups)
    return [[j for s in mb for j in groups[order[s]]] for mb in minibatches(len(order), batch_size)]


# ----------------------------------------------------------------------------- config section `lada`
@dataclass
class Config:
    """`lada.*`: LaDa's own settings, read by the roles here and by `client`, `pair`, `distill` and `exchange`
    (and `ladalit.demo.controls`, which replays a run's selections of n_c candidates); its rewards and filter
    networks are the sections `reward` and `filter_net`."""
    # client/server loss: MARD (Eq. 3, 4) or the cross-entropy ablation
    loss: str = "mard"
    # learnability-aware filter, or none (all of D_p; ablation)
    filter: str = "lada"
    # weights w_k of overlapping samples on the server (Eq. 4)
    server_weights: str = "reward"
    # β of the MARD loss
    beta: float = 0.1
    # weight of an NLL term on the chosen answer (per token) added to the MARD loss, as in RPO / DPO+SFT: a
    # remedy for DPO lowering the chosen answer's likelihood too; 0 = the paper's Eq. 3 and 4
    mard_nll: float = 0.0
    # the answers' tokens the MARD loss sums log-probs over: response = all (the paper's Eq. 3 and 4);
    # first_difference = the two answers' common prefix and their first differing token (where the rejected
    # answer parts from the chosen one), so the rest of the rejected answer, often right steps taken after
    # one wrong one, is not pushed down (docs/method.md)
    mard_span: str = "response"
    # the MARD updates' learning rate as a fraction of each participant's train.lr, which the clients'
    # reference SFT on private data uses (1 = the same rate for both)
    mard_lr_scale: float = 1.0
    # candidate batch size: D_p is streamed in batches of n_c
    n_c: int = 64
    # fraction of D_p taken as first-round prototypes (k-means centroids, ladalit.method.prototypes)
    init_fraction: float = 0.1


def _check(cfg) -> None:
    """The matched selectors (analysis.selector, core's AnalysisConfig) replace the filter's choice."""
    if cfg.method == "lada" and cfg.analysis.selector != "none" and cfg.lada.filter != "lada":
        raise ConfigError("config key 'analysis.selector': replaces the filter's choice; lada.filter=none has none")


section("lada", Config, after="sft_prompt", description="LaDa's loss, filter, server weights and candidate batches",
        choices={"loss": ("mard", "ce"), "filter": ("lada", "none"), "server_weights": ("reward", "uniform"),
                 "mard_span": ("response", "first_difference")},
        ranges={"beta": (0.0, None), "mard_nll": (0.0, None), "mard_lr_scale": (0.0, None), "n_c": (1, None),
                "init_fraction": (0.0, 1.0)},
        check=_check,  # top-level keys of the run config until 2026-12-07: naming one there says where it went
        moved=("loss", "filter", "server_weights", "beta", "mard_nll", "n_c", "init_fraction"))


# ----------------------------------------------------------------------------- LaDa as the registry has it
ROLES = MethodRoles(server=LadaServer, client=LadaClient, public=public_set, check_deployment=check_deployment)


def build_roles(exp, channel: Channel, progress: Progress) -> tuple[LadaServer, dict[str, LadaClient]]:
    """Every role in this process; the server gets the clients only behind an in-process transport."""
    return build_in_process(ROLES, exp, channel, progress)


def run(exp, channel: Channel, results: Results, tracker=None, start_round: int = 1, state: dict | None = None,
        on_round_end=None, progress: Progress | None = None) -> dict:
    """LaDa in this process, over the one round loop (ladalit.core.rounds)."""
    return run_in_process(ROLES, exp, channel, results, tracker, start_round, state, on_round_end, progress)
