"""FedKD baseline (SPEC §8): the clients distil the LLM's chain-of-thought answers on the public set.

Clients fine-tune on private train, then on the LLM's answers for the whole public set. The LLM is not
trained, so its answers are generated and sent once (round 1's LocalRound; a client's checkpoint keeps what
it received); each round every client fine-tunes train.epochs more epochs on them."""
from __future__ import annotations

import math

from ladalit.baselines.standalone import LocalRoundsServer, PrivateClient
from ladalit.core.hooks import Hooks
from ladalit.core.messages import LocalRound, ProtocolError, Ready
from ladalit.core.prompts import zero_shot_prompt
from ladalit.core.responses import ResponseCache
from ladalit.core.roles import MethodRoles
from ladalit.core.training import supervised_finetune


class FedKDClient(PrivateClient):
    """FedKD's client role: LocalRound(1, the LLM's answers on all of D_p) ⇒ Ready after the
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
    """FedKD's server role: round 1 sends the LLM's answers on all of D_p (generated once; it is not trained),
    or the teacher hook's (the gold-teacher control, ladalit.core.hooks)."""

    def __init__(self, cfg, fabric, participant, public, transport, progress=None, hooks: Hooks | None = None):
        super().__init__(cfg, transport, fabric, participant)
        self.public, self.progress, self.hooks = public, progress, hooks or Hooks()

    def run_round(self, t: int) -> None:
        if t > 1:
            return super().run_round(t)
        if self.hooks.teacher is not None:
            answers = self.hooks.teacher(1, [x.id for x in self.public])
        else:
            cache = ResponseCache(self.cfg.generation.max_new_tokens, self.cfg.generation.batch_size, self.progress)
            answers = cache.get(1, self.participant, self.public)
        msg = LocalRound(1, answers)
        self.transport.request_all({k: msg for k in self.transport.names})


def fedkd_server(cfg, fabric, participant, public, transport, progress=None, hooks=None) -> FedKDServer:
    return FedKDServer(cfg, fabric, participant, public, transport, progress, hooks)


def fedkd_client(cfg, fabric, name, seat, participant, private, public, progress=None, hooks=None) -> FedKDClient:
    return FedKDClient(cfg, fabric, name, participant, private, public)


ROLES = MethodRoles(server=fedkd_server, client=fedkd_client)
