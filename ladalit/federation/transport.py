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
import time
from dataclasses import dataclass

from ladalit.core.channel import DOWN, UP, Channel
from ladalit.core.messages import ProtocolError, Refused, RoundReport, decode, encode
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
        self.round_seconds: list[dict] = []  # per round: the wall seconds of the round (ladalit.federation.server)
        self.exchanges: list[dict] = []  # per request_all: round, kind, clients, wall seconds (the overhead benchmark)
        self.reports: dict = {}  # client -> its last RoundReport (ladalit.federation.server takes them)
        self.enough: int | None = None  # an engine may stop waiting once this many replies are in (Join)

    def carry(self, requests: dict[str, bytes], timeout_s: float | None = None) -> dict[str, Crossed | Lost]:
        """The bytes to each client (`self.address[name]`), and what came back (within `timeout_s`, when
        given, instead of the engine's own)."""
        raise NotImplementedError

    def discover(self, until: float) -> list[str]:
        """Nodes the engine reaches now that it did not before (their keys, added to `names`), waiting for one
        no later than `until` (time.time()); none here."""
        return []

    def rename(self, names: dict[str, str]) -> None:
        """Address the clients by the names they gave (RoundReport.client), instead of the engine's keys."""
        seen = [n for n in names.values()]
        twice = sorted({n for n in seen if seen.count(n) > 1})
        if twice:
            raise ProtocolError(f"more than one node says it is client {', '.join(twice)}: check their node configs")
        self.address = {names[k]: self.address[k] for k in self.address if k in names}
        self.names = list(self.address)
        for m in self.channel.messages:  # the Join exchange, counted before the names were known
            m.client = names.get(m.client, m.client)
        self.reports = {names[k]: r for k, r in self.reports.items() if k in names}

    def take_reports(self, round: int) -> dict:
        """Every client's RoundReport of `round`, in `names` order; a client still in the run without one
        counts as failed."""
        for k in list(self.names):
            if k not in self.reports or self.reports[k].round != round:
                self.fail(k, round, f"no report of round {round}")
        got = {k: self.reports.pop(k) for k in self.names}
        return got

    def keep(self, names: list[str]) -> None:
        """Only these clients, in this order (the config's)."""
        self.names = [k for k in names if k in self.address]

    def request(self, client: str, msg):
        return self.request_all({client: msg})[client]

    def request_all(self, msgs: dict, unknown_ok: bool = False, timeout_s: float | None = None) -> dict:
        """`unknown_ok`: a node that does not answer is left out silently (Join: a node that died before
        saying which client it is; the clients that are missing are named afterwards)."""
        out = {}
        sent = {k: encode(m) for k, m in msgs.items()}
        start = time.perf_counter()
        got = self.carry(sent, timeout_s)
        first = next(iter(msgs.values()))
        self.exchanges.append({"round": first.round, "kind": first.kind, "clients": len(msgs),
                               "seconds": time.perf_counter() - start})
        for k, m in msgs.items():
            r = got[k]
            self.channel.record(m.round, DOWN, k, m.kind, r.down_bytes, sent[k])
            if isinstance(r, Lost):
                if unknown_ok:
                    self.names.remove(k)
                else:
                    self.fail(k, m.round, r.why)
                continue
            reply = decode(r.data)
            self.channel.record(reply.round, UP, k, reply.kind, r.up_bytes, r.data)
            if isinstance(reply, Refused):
                raise ProtocolError(f"client '{k}' refused {m.kind!r} of round {m.round}: {reply.why}")
            if reply.round != m.round:
                raise ProtocolError(f"client '{k}' answered {m.kind!r} of round {m.round} for round {reply.round}")
            if isinstance(reply, RoundReport):  # the round's rows, with the client's last reply of the round
                self.reports[k] = reply
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
    """Client sites in this process (ClientSite, or a worker's Forwarder), reached by bytes only. `fresh`: each
    message goes to a new site object built from the node config, as a fresh ClientApp process would take it
    (the role is rebuilt from the site's disk); otherwise the site keeps its role between messages, as a
    site's worker does."""

    def __init__(self, channel: Channel, sites: dict, on_failure: str = "raise", fresh: bool = True):
        super().__init__(channel, sites, on_failure)
        self.fresh = fresh

    def carry(self, requests: dict[str, bytes], timeout_s: float | None = None) -> dict[str, Crossed | Lost]:
        out = {}
        for k, data in requests.items():
            site = self.address[k]
            reply = (type(site)(site.node_config) if self.fresh else site).handle_bytes(data)
            out[k] = Crossed(reply, len(data), len(reply))
        return out
