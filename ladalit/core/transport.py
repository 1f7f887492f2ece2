"""How the server reaches its clients: request/reply messages and nothing else.

A `Transport` sends a request (ladalit.core.messages) to one client by name and returns its reply. The
server's loop holds only a transport, never a client object. `InProcess` is the default engine: the
clients live in this process, behind the codec; every request and every reply is encoded, counted on
the channel (per round, direction and client) and decoded again before the other side sees it.
"""
from __future__ import annotations

from ladalit.core.channel import DOWN, UP, Channel


class Transport:
    """The interface: `names` of the clients it reaches, `request(client, msg) -> reply`."""
    names: list[str]

    def request(self, client: str, msg):
        raise NotImplementedError


class InProcess(Transport):
    """Clients in this process; each has `handle(msg) -> reply`."""

    def __init__(self, channel: Channel, clients: dict):
        self.channel, self._clients = channel, clients
        self.names = list(clients)

    def request(self, client: str, msg):
        received = self.channel.send(msg.round, DOWN, client, msg)
        reply = self._clients[client].handle(received)
        return self.channel.send(reply.round, UP, client, reply)
