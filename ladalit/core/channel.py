"""The channel: every message between the server and a client is encoded to bytes and counted here.

`send` returns what the receiver decodes from those bytes (ladalit.core.messages), so nothing reaches
the other side without being counted. The ledger (`messages`) holds, per message, its round, direction,
client, kind and encoded size; `payloads` keeps the raw bytes for audits (tests scan them for private text).
`answers` counts, per round, direction and client, the bytes of reasoning-answer texts sent and of those the
receiver used: Algorithm 1 needs only the latter; `federation.protocol: per_round` sends every answer on D_p.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ladalit.core.messages import decode, encode

UP, DOWN = "client->server", "server->client"


@dataclass
class Sent:
    round: int
    direction: str
    client: str
    kind: str
    nbytes: int


class Channel:
    def __init__(self, keep_payloads: bool = False):
        self.messages: list[Sent] = []
        self.keep_payloads = keep_payloads
        self.payloads: list[bytes] = []
        self.answers: dict[tuple[int, str, str], dict[str, int]] = {}

    def send(self, round: int, direction: str, client: str, msg):
        """Encode `msg`, count its bytes, and return it as the receiver decodes it."""
        assert direction in (UP, DOWN), direction
        data = encode(msg)
        self.messages.append(Sent(round, direction, client, msg.kind, len(data)))
        if self.keep_payloads:
            self.payloads.append(data)
        return decode(data)

    def record(self, round: int, direction: str, client: str, kind: str, nbytes: int, data: bytes = b"") -> None:
        """Count a message that another engine carried (ladalit.federation: the bytes of its Flower content)."""
        assert direction in (UP, DOWN), direction
        self.messages.append(Sent(round, direction, client, kind, nbytes))
        if self.keep_payloads:
            self.payloads.append(data)

    def count_answers(self, round: int, direction: str, client: str, sent: list, needed: list) -> None:
        """The UTF-8 bytes of the answer texts `sent` and of those `needed` (used by the receiver)."""
        row = self.answers.setdefault((round, direction, client), {"answers_sent": 0, "answers_needed": 0})
        row["answers_sent"] += sum(len(str(y).encode()) for y in sent)
        row["answers_needed"] += sum(len(str(y).encode()) for y in needed)

    def bytes_by(self) -> dict[tuple[int, str, str], int]:
        """Total bytes per (round, direction, client)."""
        out: dict[tuple[int, str, str], int] = defaultdict(int)
        for m in self.messages:
            out[(m.round, m.direction, m.client)] += m.nbytes
        return dict(out)

    def bytes_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for m in self.messages:
            out[m.kind] += m.nbytes
        return dict(out)

    def total_mb(self) -> float:
        return sum(m.nbytes for m in self.messages) / 1e6

    def state_dict(self) -> dict:
        return {"messages": [vars(m) for m in self.messages],
                "answers": [[*key, row] for key, row in self.answers.items()]}

    def load_state_dict(self, state: dict) -> None:
        self.messages = [Sent(**m) for m in state["messages"]]
        self.answers = {(r, d, c): dict(row) for r, d, c, row in state.get("answers", [])}
