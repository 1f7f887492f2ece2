"""FedKD baseline (SPEC §8): the clients distil the LLM's chain-of-thought answers on the public set."""
from __future__ import annotations

import math

from ladalit.baselines.standalone import (LocalRoundsServer, PrivateClient, end_round, private_sft, resume_state,
                                          round_state)
from ladalit.core.channel import DOWN, Channel
from ladalit.core.messages import LocalRound, ProtocolError, Ready, ServerAnswers
from ladalit.core.prompts import zero_shot_prompt
from ladalit.core.responses import ResponseCache
from ladalit.core.training import NonFiniteGuard, supervised_finetune
from ladalit.core.results import Results


def run_fedkd(exp, channel: Channel, results: Results, tracker=None, start_round: int = 1, state=None,
              on_round_end=None, progress=None) -> dict:
    """Clients fine-tune on private train, then on the LLM's chain-of-thought answers for the
    whole public set. The LLM is not trained, so its answers are generated and sent once (round 1;
    the checkpoint keeps what each client received); each round every client fine-tunes train.epochs
    more epochs on them."""
    cfg = exp.cfg
    guard, optimizers = NonFiniteGuard(cfg.on_nonfinite), {}
    public = exp.data.public
    prompts = [zero_shot_prompt(x) for x in public]
    received: dict[str, list[str]] = {}
    if state is not None:
        resume_state(exp, state, guard, optimizers, results, channel)
        received = state["received"]
    for t in range(start_round, cfg.rounds + 1):
        if t == 1:
            cache = ResponseCache(cfg.generation.max_new_tokens, cfg.generation.batch_size, progress)
            hooks = getattr(exp, "hooks", None)
            if hooks is not None and hooks.teacher is not None:  # the gold-teacher control (ladalit.core.hooks)
                llm_answers = hooks.teacher(1, [x.id for x in public])
            else:
                llm_answers = cache.get(1, exp.server, public)
            private_sft(exp, guard, results, optimizers, lambda c: c.train_cfg.sft_epochs, 0)
            received = {k: channel.send(t, DOWN, k, ServerAnswers(t, llm_answers)).texts for k in exp.clients}
        for k, client in exp.clients.items():
            ls = supervised_finetune(exp.fabric, client, optimizers[k], prompts, received[k],
                                     client.train_cfg.epochs, cfg.seed + t, guard, round=t)
            results.add_train(t, k, kd_loss=ls[-1] if ls else math.nan)
        end_round(exp, results, channel, tracker, progress, t, on_round_end,
                  lambda: round_state(exp, guard, optimizers, results, channel, received=received))
    return {"nonfinite_skipped": guard.skipped}


# ----------------------------------------------------------------------------- the roles, for a deployment
class FedKDClient(PrivateClient):
    """FedKD's client role on a deployment: LocalRound(1, the LLM's answers on all of D_p) ⇒ Ready after the
    private SFT and the first KD epochs; LocalRound(t) ⇒ Ready after round t's KD epochs."""

    def __init__(self, cfg, fabric, name: str, participant, private, public):
        super().__init__(cfg, fabric, name, participant, private)
        self.prompts, self.received = [zero_shot_prompt(x) for x in public], []

    def handle(self, msg):
        if not isinstance(msg, LocalRound):
            raise ProtocolError(f"client '{self.name}': no handler for message kind {msg.kind!r}")
        self.start_round(msg.round)
        if msg.round == 1:
            self.private_sft(self.participant.train_cfg.sft_epochs, 0)
            self.received = list(msg.texts)
        ls = supervised_finetune(self.fabric, self.participant, self.optimizer, self.prompts, self.received,
                                 self.participant.train_cfg.epochs, self.cfg.seed + msg.round, self.guard,
                                 round=msg.round)
        self.results.add_train(msg.round, self.name, kd_loss=ls[-1] if ls else math.nan)
        return Ready(msg.round)

    def state_dict(self) -> dict:
        return super().state_dict() | {"received": self.received}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.received = list(state["received"])


class FedKDServer(LocalRoundsServer):
    """FedKD's server role: round 1 sends the LLM's answers on all of D_p (generated once; it is not trained)."""

    def __init__(self, cfg, participant, public, transport, progress=None):
        super().__init__(cfg, transport)
        self.participant, self.public, self.progress = participant, public, progress

    def run_round(self, t: int) -> None:
        if t > 1:
            return super().run_round(t)
        cache = ResponseCache(self.cfg.generation.max_new_tokens, self.cfg.generation.batch_size, self.progress)
        msg = LocalRound(1, cache.get(1, self.participant, self.public))
        self.transport.request_all({k: msg for k in self.transport.names})
