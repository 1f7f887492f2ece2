"""Standalone baseline (SPEC §8): clients train on their private data only; nothing but the server's
LocalRound(t) and the clients' Ready crosses. Its client role (`PrivateClient`: the private-train SFT every
method starts with) and server role (`LocalRoundsServer`) are what the other baselines' roles extend."""
from __future__ import annotations

import math

from ladalit.core import checkpoint
from ladalit.core.messages import LocalRound, ProtocolError, Ready
from ladalit.core.roles import MethodRoles
from ladalit.core.prompts import private_sft_pairs
from ladalit.core.training import NonFiniteGuard, supervised_finetune
from ladalit.core.results import Results


# ----------------------------------------------------------------------------- the roles
class PrivateClient:
    """Standalone's client role: LocalRound(t) ⇒ Ready after fine-tuning on its private train set (round 1:
    train.sft_epochs, the same SFT as LaDa's reference step; every later round train.epochs more).
    The other baselines' client roles extend it (`private_sft`, `start_round`, its state)."""

    def __init__(self, cfg, fabric, name: str, participant, private):
        self.cfg, self.fabric, self.name, self.participant, self.private = cfg, fabric, name, participant, private
        self.guard, self.results, self.optimizer, self.round = NonFiniteGuard(cfg.on_nonfinite), Results(), None, 0

    def handle(self, msg):
        if not isinstance(msg, LocalRound):
            raise ProtocolError(f"client '{self.name}': no handler for message kind {msg.kind!r}")
        self.start_round(msg.round)
        train_cfg = self.participant.train_cfg
        self.private_sft(train_cfg.sft_epochs if msg.round == 1 else train_cfg.epochs, msg.round)
        return Ready(msg.round)

    def start_round(self, t: int) -> None:
        if t != self.round + 1:
            raise ProtocolError(f"client '{self.name}' finished round {self.round}, the server starts round {t}")
        self.round = t

    def private_sft(self, epochs: int, round: int) -> None:
        """`private_sft` for this client alone."""
        if self.optimizer is None:
            self.optimizer = self.fabric.setup_optimizers(self.participant.configure_optimizers())
        train = self.private.train
        ls = supervised_finetune(self.fabric, self.participant, self.optimizer,
                                 *private_sft_pairs(train, self.cfg.sft_prompt), epochs, self.cfg.seed + round,
                                 self.guard, round=round)
        self.results.add_train(round, self.name, sft_loss=ls[-1] if ls else math.nan)

    def counters(self) -> dict:
        return {"nonfinite_skipped": list(self.guard.skipped)}

    def state_dict(self) -> dict:
        return {"participant": checkpoint.participant_state(self.fabric, self.participant), "round": self.round,
                "optimizer": None if self.optimizer is None else
                checkpoint.optimizer_state(self.fabric, self.participant, self.optimizer),
                "skipped": self.guard.skipped, "results": self.results.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        checkpoint.load_participant_state(self.fabric, self.participant, state["participant"])
        if state["optimizer"] is not None:
            self.optimizer = self.fabric.setup_optimizers(self.participant.configure_optimizers())
            checkpoint.load_optimizer_state(self.fabric, self.participant, self.optimizer, state["optimizer"])
        self.round, self.guard.skipped = state["round"], list(state["skipped"])
        self.results.load_state_dict(state["results"])

    def close(self) -> None:
        pass


class LocalRoundsServer:
    """Standalone's server role: it starts every client's round and trains nothing. Its state holds the server's
    (untrained) weights all the same: a checkpoint has every participant's (the export rebuilds from them)."""

    def __init__(self, cfg, transport, fabric, participant):
        self.cfg, self.transport, self.results = cfg, transport, Results()
        self.fabric, self.participant = fabric, participant

    def run_round(self, t: int) -> None:
        self.transport.request_all({k: LocalRound(t) for k in self.transport.names})

    def counters(self) -> dict:
        return {"nonfinite_skipped": []}

    def state_dict(self) -> dict:
        return {"participant": checkpoint.participant_state(self.fabric, self.participant)}

    def load_state_dict(self, state: dict) -> None:
        checkpoint.load_participant_state(self.fabric, self.participant, state["participant"])

    def close(self) -> None:
        pass


def standalone_server(cfg, fabric, participant, public, transport, progress=None, hooks=None) -> LocalRoundsServer:
    return LocalRoundsServer(cfg, transport, fabric, participant)


def standalone_client(cfg, fabric, name, seat, participant, private, public, progress=None,
                      hooks=None) -> PrivateClient:
    return PrivateClient(cfg, fabric, name, participant, private)


ROLES = MethodRoles(server=standalone_server, client=standalone_client)
