"""LaDa's client role: client k's handlers for the server's messages (ladalit.core.messages).

The client owns its participant φ_k, its private data, its pair's filter U_k, its optimizer, its answers
y^k and its rows of results. It sees the public set D_p and what the server sends; it sends back only
public ids, its answers on public questions, and acknowledgements.
"""
from __future__ import annotations

import math

from ladalit.core.messages import (AskAnswers, BeginRound, ClientAnswers, ClientRound, ClientRoundDone, Distilled,
                                   EndClientRound, EndRound, ProtocolError, Ready, SelectCandidates, SelectedIds,
                                   ServerAnswers)
from ladalit.core.hooks import Hooks
from ladalit.core.prompts import CutAnswer, private_sft_pairs, zero_shot_prompt
from ladalit.core.responses import ResponseCache
from ladalit.core.training import NonFiniteGuard, minibatches, supervised_finetune
from ladalit.method import checkpoint
from ladalit.method.distill import count_pairs, mard_optimizer, train_selection
from ladalit.method.pair import (PairState, close_round, fit_filter, make_filter, observe_rewards, reward_scale,
                                 rewards_of, select)
from ladalit.core.progress import Progress
from ladalit.core.results import Results
from ladalit.scale.vllm_backend import make_generators


def answers_message(cls, round: int, answers, **extra):
    """ServerAnswers / ClientAnswers: the texts, and which were cut at max_new_tokens."""
    return cls(round=round, texts=[str(y) for y in answers],
               cut=[i for i, y in enumerate(answers) if isinstance(y, CutAnswer)], **extra)


def received_answers(msg) -> list[str]:
    cut = set(msg.cut)
    return [CutAnswer(y) if i in cut else y for i, y in enumerate(msg.texts)]


class LadaClient:
    def __init__(self, cfg, fabric, name: str, seat: int, participant, private, public, progress: Progress | None = None,
                 hooks: Hooks | None = None):
        """`seat`: the client's position in the config (its filter's seed); `private`: its train/test split;
        `public`: D_p with its embeddings and prototypes (ladalit.method.lada.PublicSet); `hooks`: the harness's
        analysis hooks (ladalit.core.hooks; the demo world's controls), none by default."""
        self.cfg, self.fabric, self.name, self.participant, self.private, self.public = (
            cfg, fabric, name, participant, private, public)
        self.pair = PairState(make_filter(cfg, public.emb.shape[1], cfg.seed + 2 * seat)
                              if cfg.lada.filter == "lada" else None)
        self.guard, self.results, self.optimizer = NonFiniteGuard(cfg.on_nonfinite), Results(), None
        self.progress = progress or Progress(quiet=True)
        self.responses = ResponseCache(cfg.generation.max_new_tokens, cfg.generation.batch_size, self.progress,
                                       generators_for(cfg, name, participant), mark_cut=True)
        self.round, self.selection = 0, []
        self.hooks = hooks or Hooks()

    def handle(self, msg):
        handlers = {BeginRound: self.begin_round, SelectCandidates: self.select, ServerAnswers: self.distill,
                    EndClientRound: self.end_client_round, AskAnswers: self.answers, EndRound: self.end_round,
                    ClientRound: self.client_round}
        if type(msg) not in handlers:
            raise ProtocolError(f"client '{self.name}': no handler for message kind {msg.kind!r}")
        if not isinstance(msg, (BeginRound, ClientRound)) and msg.round != self.round:
            raise ProtocolError(f"client '{self.name}' is in round {self.round}, got {msg.kind!r} for round {msg.round}")
        return handlers[type(msg)](msg)

    # ----------------------------------------------------------------------- handlers
    def begin_round(self, msg: BeginRound) -> Ready:
        if msg.round != self.round + 1:
            raise ProtocolError(f"client '{self.name}' finished round {self.round}, the server starts round {msg.round}")
        self.round = msg.round
        if msg.round == 1:
            self.reference_sft()
        return Ready(msg.round)

    def client_round(self, msg: ClientRound) -> ClientRoundDone:
        """per_round: the whole phase of round t, as the per-batch messages would drive it, with y^s for all of D_p."""
        t = msg.round
        self.begin_round(BeginRound(t))
        y_s = dict(zip(msg.ids, received_answers(msg)))
        selected = []
        for b, ids in enumerate(msg.batches):
            chosen = self.select(SelectCandidates(t, b, ids)).ids
            if chosen:
                self.distill(answers_message(ServerAnswers, t, [y_s[i] for i in chosen], batch=b))
            selected.append(chosen)
        self.end_client_round(EndClientRound(t))
        return ClientRoundDone(t, selected)

    def reference_sft(self) -> None:
        """❶ the reference SLM: SFT on private train (short answer statements), then frozen as φ_ref_k."""
        fabric, client, train = self.fabric, self.participant, self.private.train
        opt = fabric.setup_optimizers(client.configure_optimizers())
        sft = supervised_finetune(fabric, client, opt, *private_sft_pairs(train, self.cfg.sft_prompt),
                                  client.train_cfg.sft_epochs, self.cfg.seed, self.guard, round=0)
        client.freeze_reference()
        self.optimizer = mard_optimizer(self.cfg.lada, fabric, client)
        self.results.add_train(0, self.name, sft_loss=sft[-1] if sft else math.nan)

    def select(self, msg: SelectCandidates) -> SelectedIds:
        """Score and select one candidate batch with U_k (Eq. 10); round 1: the prototypes ❷."""
        cand = [self.public.index[i] for i in msg.ids]
        override = None
        if self.hooks.selector is not None:  # a matched selector of the harness's controls chooses instead
            pair_name, choose = f"{self.name}<-server", self.hooks.selector
            override = lambda c: [self.public.index[i] for i in choose(msg.round, pair_name, msg.batch, list(msg.ids))]
        sel, bound = select(self.cfg, self.pair, msg.round, cand, self.public.emb, self.public.prototypes, override)
        ids = [self.public.records[i].id for i in sel]
        self.results.add_selection(msg.round, f"{self.name}<-server", "client", len(cand), len(sel), bound, ids)
        self.selection = sel
        return SelectedIds(msg.round, msg.batch, ids)

    def distill(self, msg: ServerAnswers) -> Distilled:
        """MARD updates of φ_k on the selection (Eq. 3: y^s chosen over y^k), rewards ❸–❺ per minibatch, then
        U_k's fit ❻❼."""
        t, b, sel = msg.round, msg.batch, self.selection
        xs = [self.public.records[i] for i in sel]
        y_s, y_k = received_answers(msg), self.responses.get(t, self.participant, xs)  # y^k stays here
        prompts, keys = [zero_shot_prompt(x) for x in xs], [(t, x.id) for x in xs]
        count_pairs(self.results, t, self.name, self.participant, prompts, y_s, y_k)
        mbs = minibatches(len(xs), self.participant.train_cfg.batch_size)
        losses_of = train_selection(self.cfg, self.fabric, self.participant, self.optimizer, self.guard, t, b, [
            dict(keys=[keys[i] for i in mb], prompts=[prompts[i] for i in mb],
                 chosen=[y_s[i] for i in mb], rejected=[y_k[i] for i in mb]) for mb in mbs])
        befores, afters = zip(*losses_of)
        for m, (mb, r) in enumerate(zip(mbs, rewards_of(self.cfg, self.pair, befores, afters))):
            ids = [sel[i] for i in mb]
            observe_rewards(self.cfg, self.pair, ids, self.public.emb[ids], r, self.guard, self.name, t, b)
            self.results.add_sample_rewards(t, f"{self.name}<-server", [self.public.records[i].id for i in ids], r,
                                            [self.pair.u_p_at_selection.get(i, float("nan")) for i in ids])
            self.results.add_train(t, self.name, batch=b, minibatch=m, **loss_row(befores[m], afters[m]),
                                   reward=r.mean().item())
        fit_filter(self.pair)
        return Distilled(t, b)

    def end_client_round(self, msg: EndClientRound) -> Ready:
        self.results.add_reward_scale(msg.round, f"{self.name}<-server", "client",
                                      **reward_scale(self.pair, self.cfg.filter_net.tau))
        close_round(self.pair)
        return Ready(msg.round)

    def answers(self, msg: AskAnswers) -> ClientAnswers:
        """y^k for the samples the server selected for this pair: by φ_k as it is now, after its round-t
        update, unless already generated this round (docs/method.md)."""
        answers = self.responses.get(msg.round, self.participant, [self.public.records[self.public.index[i]]
                                                                   for i in msg.ids])
        return answers_message(ClientAnswers, msg.round, answers)

    def end_round(self, msg: EndRound) -> Ready:
        record_answers(self.results, self.responses, msg.round)
        self.participant.clear_reference_cache()
        return Ready(msg.round)

    # ----------------------------------------------------------------------- local state (checkpoints)
    def state_dict(self) -> dict:
        """Everything the client carries: at a round's end the answers and rows are empty (the harness has
        them); between two messages of a round (a deployment's site) they are the round so far."""
        return checkpoint.side_state(self.fabric, self.participant, self.optimizer, {"pair": self.pair}) | {
            "round": self.round, "skipped": self.guard.skipped, "generated": self.responses.generated,
            "responses": self.responses.state_dict(), "results": self.results.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer = checkpoint.load_side_state(self.fabric, self.participant, state, {"pair": self.pair},
                                                    self.cfg.lada)
        self.round, self.guard.skipped = state["round"], list(state["skipped"])
        if "responses" in state:  # checkpoints before the deployment's sites have neither
            self.responses.load_state_dict(state["responses"])
            self.results.load_state_dict(state["results"])
        self.responses.generated = state["generated"]

    def counters(self) -> dict:
        """results.json's counters of this client (ladalit.core.rounds.merge_counters adds them up)."""
        return {"nonfinite_skipped": list(self.guard.skipped), "responses_generated": self.responses.generated,
                "bound_hits": dict(self.pair.filter.bound_hits) if self.pair.filter else None}

    def close(self) -> None:
        for g in self.responses.generators.values():
            g.close()


def loss_row(before, after) -> dict:
    """A minibatch's mean loss before its first update, and after its last where that was measured
    (`reward.batch=same_sample`, or `train.epochs=0`)."""
    return {"loss_before": before.mean().item()} | ({} if after is None else {"loss_after": after.mean().item()})


def record_answers(results: Results, responses: ResponseCache, round: int) -> None:
    """The round's answers (responses.jsonl) and their budget counts; then the cache forgets the round."""
    results.add_responses(responses.rows(round))
    for name, counts in responses.cut_counts(round).items():
        results.add_budget(round, name, "responses", **counts)
    responses.drop_before(round + 1)


def generators_for(cfg, name, participant) -> dict:
    if cfg.generation.backend != "vllm":
        return {}
    return make_generators(cfg, {name: participant})
