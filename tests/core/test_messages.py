"""The codec: every message kind survives encode/decode field for field; the channel counts the encoded bytes."""
import dataclasses

import pytest
import torch

from ladalit.core import messages as M
from ladalit.core.channel import DOWN, UP, Channel


def example(cls):
    """One instance of a message kind, every field filled (tensors of several dtypes)."""
    values = {}
    for n, f in enumerate(dataclasses.fields(cls)):
        t = str(f.type)
        if f.name == "round":
            values[f.name] = 3
        elif "Tensor" in t:
            values[f.name] = torch.arange(6, dtype=(torch.float16, torch.int32, torch.float32)[n % 3]).reshape(2, 3)
        elif t == "int":
            values[f.name] = 7
        elif "list[list[str]]" in t:
            values[f.name] = [["(A) ü", "(B)"], []]
        elif "list[int]" in t:
            values[f.name] = [0, 2]
        else:
            values[f.name] = ["x-1", "Schritt 1: 2+2=4. ✓", ""]
    return cls(**values)


@pytest.mark.parametrize("kind", sorted(M.KINDS))
def test_every_kind_round_trips(kind):
    msg = example(M.KINDS[kind])
    back = M.decode(M.encode(msg))
    assert type(back) is type(msg) and back.kind == kind
    for f in dataclasses.fields(msg):
        a, b = getattr(msg, f.name), getattr(back, f.name)
        if isinstance(a, torch.Tensor):
            assert b.dtype == a.dtype and torch.equal(a, b)
        else:
            assert a == b


def test_unknown_kind_is_refused():
    data = bytearray(M.encode(M.Ready(1)))
    data[4:] = bytes(data[4:]).replace(b'"ready"', b'"rready"')
    data[:4] = (len(data) - 4).to_bytes(4, "big")
    with pytest.raises(M.ProtocolError, match="unknown message kind 'rready'"):
        M.decode(bytes(data))


def test_the_channel_counts_the_encoded_bytes_and_hands_over_the_decoded_message():
    channel = Channel(keep_payloads=True)
    sent = M.ServerAnswers(2, ["a", "b"], [1], batch=0)
    got = channel.send(2, DOWN, "client1", sent)
    assert got == sent and got is not sent
    channel.send(2, UP, "client1", M.Ready(2))
    assert [m.nbytes for m in channel.messages] == [len(M.encode(sent)), len(M.encode(M.Ready(2)))]
    assert [m.nbytes for m in channel.messages] == [len(p) for p in channel.payloads]
    assert channel.bytes_by() == {(2, DOWN, "client1"): len(M.encode(sent)), (2, UP, "client1"): len(M.encode(M.Ready(2)))}
    assert channel.bytes_by_kind() == {"server_answers": len(M.encode(sent)), "ready": len(M.encode(M.Ready(2)))}
