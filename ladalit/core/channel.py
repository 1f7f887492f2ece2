"""The channel: every server↔client message is serialised to bytes and counted here.

`send` returns what the receiver decodes from those bytes, so nothing can reach
the other side without being counted. Payloads are plain Python containers of
str/int/float and tensors (serialised with `torch.save`, read back with
`weights_only=True`).
"""
from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass

import torch

UP, DOWN = "client->server", "server->client"


@dataclass
class Message:
    round: int
    direction: str
    client: str
    kind: str
    nbytes: int


class Channel:
    def __init__(self, keep_payloads: bool = False):
        self.messages: list[Message] = []
        # raw bytes of every message, for audits (tests scan them for private text)
        self.keep_payloads = keep_payloads
        self.payloads: list[bytes] = []

    def send(self, round: int, direction: str, client: str, kind: str, payload):
        assert direction in (UP, DOWN), direction
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        self.messages.append(Message(round, direction, client, kind, len(data)))
        if self.keep_payloads:
            self.payloads.append(data)
        return torch.load(io.BytesIO(data), weights_only=True)

    def bytes_by(self) -> dict[tuple[int, str, str], int]:
        """Total bytes per (round, direction, client)."""
        out: dict[tuple[int, str, str], int] = defaultdict(int)
        for m in self.messages:
            out[(m.round, m.direction, m.client)] += m.nbytes
        return dict(out)

    def total_mb(self) -> float:
        return sum(m.nbytes for m in self.messages) / 1e6

    def state_dict(self) -> dict:
        return {"messages": [vars(m) for m in self.messages]}

    def load_state_dict(self, state: dict) -> None:
        self.messages = [Message(**m) for m in state["messages"]]
