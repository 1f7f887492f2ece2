"""Reading back what crossed a `Channel(keep_payloads=True)`, for tests that audit the channel."""
import io

import torch


def decoded(channel) -> list:
    """Every kept payload, decoded as its receiver decoded it."""
    return [torch.load(io.BytesIO(raw), weights_only=True) for raw in channel.payloads]


def strings_in(obj):
    """Every string inside a payload (nested lists, tuples and dicts)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from strings_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from strings_in(v)
