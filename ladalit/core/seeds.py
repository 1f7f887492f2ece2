"""Seeds derived from the run's `seed`, one function per stream, so that every stream is reproducible and
no two collide. The mixing constants are primes (kept as they were, so results stay the same)."""
from __future__ import annotations

import zlib


def round_seed(seed: int, round: int) -> int:
    """A per-round stream: candidate-batch order (LaDa), rStar's question sample, WASP's pool tie-break and
    its sampled question writing (wasp.temperature > 0)."""
    return seed * 7919 + round


def client_seed(seed: int, round: int, client: int) -> int:
    """A per-round, per-client stream (the client's index in config order): WASP's vote noise, rStar's cuts."""
    return seed * 1_000_003 + round * 101 + client


def item_seed(seed: int, round: int, item: int) -> int:
    """A per-round, per-item stream: WASP's examples for its i-th generation prompt."""
    return (seed * 1_000_003 + round) * 100_003 + item


def name_seed(seed: int, name: str) -> int:
    """A participant's stream, by its name: its model's initial weights (and LoRA init)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)
