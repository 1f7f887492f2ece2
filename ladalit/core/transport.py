"""How the server reaches its clients: request/reply messages and nothing else.

A `Transport` sends a request (ladalit.core.messages) to one client by name and returns its reply. The
server's loop holds only a transport, never a client object. `InProcess` is the default engine: the
clients live in this process, behind the codec; every request and every reply is encoded, counted on
the channel (per round, direction and client) and decoded again before the other side sees it.
"""
from __future__ import annotations

from ladalit.core.channel import DOWN, UP, Channel


class ClientFailure(RuntimeError):
    """A client that died or did not answer in time (`federation.on_client_failure: raise`)."""

    def __init__(self, client: str, round: int, why: str):
        super().__init__(f"client '{client}' failed in round {round}: {why}")
        self.client, self.round, self.why = client, round, why


class Transport:
    """The interface: `names` of the clients it reaches (those still in the run), `request(client, msg) ->
    reply`, and `request_all({client: msg}) -> {client: reply}`, which an engine may send at once. `failed`:
    the clients an engine dropped under `federation.on_client_failure: skip`, as {round, client, why} rows."""
    names: list[str]
    failed: list[dict]
    channel: Channel  # where every crossing is counted

    def request(self, client: str, msg):
        raise NotImplementedError

    def request_all(self, msgs: dict):
        return {k: self.request(k, m) for k, m in msgs.items()}


class InProcess(Transport):
    """Clients in this process; each has `handle(msg) -> reply`."""

    def __init__(self, channel: Channel, clients: dict):
        self.channel, self._clients = channel, clients
        self.names, self.failed = list(clients), []

    def request(self, client: str, msg):
        received = self.channel.send(msg.round, DOWN, client, msg)
        reply = self._clients[client].handle(received)
        return self.channel.send(reply.round, UP, client, reply)
