"""A new method: a client-only baseline that repeats private SFT with a decaying number of epochs.

A method is its roles (ladalit.core.roles): here Standalone's server role, which starts every client's round
(LocalRound), and a client role that fine-tunes on its private data, 4 epochs in round 1, then half as many
each round. The one round loop (ladalit.core.rounds) runs them in this process and on a deployment, with
evaluation, checkpoints and resume: a role carries across rounds only what its state_dict holds.

Register it with one line in ladalit/registry.py's METHODS (here the module is docs/examples/decay.py;
in the package it would be ladalit/baselines/decay.py, registered as "ladalit.baselines.decay:ROLES"):

    "decay": "decay:ROLES",

The config reads its allowed `method=` values from the registry when it is imported.

then `PYTHONPATH=docs/examples python -m ladalit.run conf=smoke.yaml method=decay` runs it.
"""
from ladalit.baselines.standalone import PrivateClient, standalone_server
from ladalit.core.messages import LocalRound, ProtocolError, Ready
from ladalit.core.roles import MethodRoles


class DecayClient(PrivateClient):
    """LocalRound(t) ⇒ Ready after `epochs` epochs of private SFT; the epochs halve every round."""

    def __init__(self, cfg, fabric, name, participant, private):
        super().__init__(cfg, fabric, name, participant, private)
        self.epochs = 4

    def handle(self, msg):
        if not isinstance(msg, LocalRound):
            raise ProtocolError(f"client '{self.name}': no handler for message kind {msg.kind!r}")
        self.start_round(msg.round)
        self.private_sft(self.epochs, msg.round)
        self.epochs = max(1, self.epochs // 2)
        return Ready(msg.round)

    def state_dict(self) -> dict:  # resume: what PrivateClient carries, and the epochs
        return super().state_dict() | {"epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.epochs = state["epochs"]


def decay_client(cfg, fabric, name, seat, participant, private, public, progress=None, hooks=None):
    return DecayClient(cfg, fabric, name, participant, private)


ROLES = MethodRoles(server=standalone_server, client=decay_client)
