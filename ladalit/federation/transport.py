"""Transports to clients that are other processes or hosts: messages cross as bytes (ladalit.core.messages).

`SiteTransport` is what every such engine shares: it encodes each request, hands the bytes to `carry`,
counts what crossed on the channel (per round, direction and client, with the engine's own byte count),
decodes the replies, refuses a reply from another round, and applies `federation.on_client_failure` to a
client that died or did not answer: `raise` stops the run (ClientFailure), `skip` drops the client from
`names` for the rest of the run, says so in one line and keeps a row in `failed`.

`LocalSites` carries the bytes to ClientSite objects in this process (tests, and the proof that the
deployment protocol changes no result); `FlowerTransport` (ladalit.federation.flower) carries them as
Flower messages.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from ladalit.core.channel import DOWN, UP, Channel
from ladalit.core.messages import ProtocolError, Refused, decode, encode
from ladalit.core.transport import ClientFailure, Transport


@dataclass
class Crossed:
    """A reply that came back: its bytes (the ladalit message) and what the engine counts for each way."""
    data: bytes
    down_bytes: int
    up_bytes: int


@dataclass
class Lost:
    """No reply: why (the client died, or did not answer within the timeout)."""
    why: str
    down_bytes: int


class SiteTransport(Transport):
    """`address`: how the engine reaches each client, by name (before `rename`: by the engine's own keys)."""

    def __init__(self, channel: Channel, address: dict, on_failure: str = "raise"):
        self.channel, self.address, self.on_failure, self.failed = channel, dict(address), on_failure, []
        self.names = list(self.address)

    def carry(self, requests: dict[str, bytes]) -> dict[str, Crossed | Lost]:
        """The bytes to each client (`self.address[name]`), and what came back."""
        raise NotImplementedError

    def rename(self, names: dict[str, str]) -> None:
        """Address the clients by the names they gave (NodeName), instead of the engine's keys."""
        seen = [n for n in names.values()]
        twice = sorted({n for n in seen if seen.count(n) > 1})
        if twice:
            raise ProtocolError(f"more than one node says it is client {', '.join(twice)}: check their node configs")
        self.address = {names[k]: self.address[k] for k in self.names if k in names}
        self.names = list(self.address)
        for m in self.channel.messages:  # the Hello exchange, counted before the names were known
            m.client = names.get(m.client, m.client)

    def keep(self, names: list[str]) -> None:
        """Only these clients, in this order (the config's)."""
        self.names = [k for k in names if k in self.address]

    def request(self, client: str, msg):
        return self.request_all({client: msg})[client]

    def request_all(self, msgs: dict) -> dict:
        out = {}
        sent = {k: encode(m) for k, m in msgs.items()}
        got = self.carry(sent)
        for k, m in msgs.items():
            r = got[k]
            self.channel.record(m.round, DOWN, k, m.kind, r.down_bytes, sent[k])
            if isinstance(r, Lost):
                self.fail(k, m.round, r.why)
                continue
            reply = decode(r.data)
            self.channel.record(reply.round, UP, k, reply.kind, r.up_bytes, r.data)
            if isinstance(reply, Refused):
                raise ProtocolError(f"client '{k}' refused {m.kind!r} of round {m.round}: {reply.why}")
            if reply.round != m.round:
                raise ProtocolError(f"client '{k}' answered {m.kind!r} of round {m.round} for round {reply.round}")
            out[k] = reply
        return out

    def fail(self, client: str, round: int, why: str) -> None:
        if self.on_failure == "raise":
            raise ClientFailure(client, round, why)
        print(f"client '{client}' failed in round {round} ({why}); the run goes on without it "
              "(federation.on_client_failure=skip)", file=sys.stderr, flush=True)
        self.names.remove(client)
        self.failed.append({"round": round, "client": client, "why": why})


class LocalSites(SiteTransport):
    """Client sites in this process, reached by bytes only (each message handled as a fresh process would:
    the site rebuilds its role from its own disk)."""

    def carry(self, requests: dict[str, bytes]) -> dict[str, Crossed | Lost]:
        out = {}
        for k, data in requests.items():
            reply = self.address[k].handle_bytes(data)
            out[k] = Crossed(reply, len(data), len(reply))
        return out
