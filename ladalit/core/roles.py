"""What every method is: a server role and client roles that talk only through messages (ladalit.core.messages).

The server role holds the server's participant and whatever the method keeps there; `run_round(t)` is one
round of the method as the server drives it, reaching the clients only through its transport
(ladalit.core.transport). A client role answers each message with its reply (`handle`). Both keep their rows
of results for the round (`results`, a `Results` the round loop takes and empties: ladalit.core.rounds), their
counters for results.json (`counters()`), and everything they carry across rounds (`state_dict` /
`load_state_dict`: a checkpoint; its "participant" entry, where there is one, is the participant's trainable
weights). `close()` frees what they hold (generators).

The same roles run in one process (`ladalit.run`, InProcess transport) and on a deployment
(ladalit.federation: the server here, each client role at its own site). A method is its `MethodRoles`:
how to build its server role and a client role, registered once by name (ladalit/registry.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ladalit.core.results import Results


class Role(Protocol):
    results: Results  # this round's rows, not yet gathered

    def counters(self) -> dict:
        """results.json's counters of this role: "nonfinite_skipped" (a list) and what else the method counts
        ("responses_generated", "bound_hits")."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def close(self) -> None: ...


class ClientRole(Role, Protocol):
    name: str
    cfg: object
    participant: object
    private: object  # its ClientData: train and test split, never sent
    round: int  # the last round it started

    def handle(self, msg):
        """The reply to one message of the server; ProtocolError for a kind or a round it cannot take."""


class ServerRole(Role, Protocol):
    def run_round(self, t: int) -> None:
        """Round t of the method: every exchange with the clients and the server's own training."""


def same_records(cfg, records):
    return records


def any_deployment(cfg) -> None:
    pass


@dataclass(frozen=True)
class MethodRoles:
    """How a method builds its roles, in one process and on a deployment alike:

        public(cfg, records) -> D_p as the roles use it (LaDa: embedded, with its prototypes), made once
        server(cfg, fabric, participant, public, transport, progress, hooks) -> ServerRole
        client(cfg, fabric, name, seat, participant, private, public, progress, hooks) -> ClientRole

    `seat`: the client's position in the config; `private`: its ClientData; `hooks`: the harness's analysis
    hooks (ladalit.core.hooks), None on a deployment. `check_deployment(cfg)` raises ConfigError (one line)
    for a setting the method cannot run with on a deployment."""
    server: Callable
    client: Callable
    public: Callable = same_records
    check_deployment: Callable = any_deployment
