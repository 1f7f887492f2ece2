"""Reading back what crossed a `Channel(keep_payloads=True)`, for tests that audit the channel."""
from ladalit.core.messages import as_dict, decode


def decoded(channel) -> list[dict]:
    """Every kept message, decoded as its receiver decoded it, as a dict of its fields (and its kind)."""
    return [{"kind": m.kind, **as_dict(m)} for m in map(decode, channel.payloads)]


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
