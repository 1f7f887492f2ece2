"""LaDa's two exchanges (ladalit.method.exchange) against a scripted client: which messages each sends in the
clients' phase, for which samples it asks y^s and y^k, and that both hand the server the same y^k."""
from types import SimpleNamespace

import pytest

from ladalit.core.channel import UP, Channel
from ladalit.core.config import ConfigError
from ladalit.core.hooks import Hooks
from ladalit.core.messages import (AskAnswers, ClientAnswers, ClientRound, ClientRoundDone, Distilled, Ready,
                                   SelectCandidates, SelectedIds, ServerAnswers)
from ladalit.core.progress import Progress
from ladalit.method.client import answers_message
from ladalit.method.exchange import PerBatch, PerRound, check_deployment, exchange_for
from ladalit.method.pair import candidate_batches

IDS = [f"p{i}" for i in range(7)]
N_C = 3


class ScriptedClients:
    """A transport to clients that each select the first id of every candidate batch and answer `k:id`."""

    def __init__(self, names):
        self.names, self.channel, self.sent = names, Channel(), []

    def reply(self, k, msg):
        self.sent.append((k, type(msg).__name__))
        if isinstance(msg, SelectCandidates):
            return SelectedIds(msg.round, msg.batch, msg.ids[:1])
        if isinstance(msg, ServerAnswers):
            return Distilled(msg.round, msg.batch)
        if isinstance(msg, ClientRound):
            return ClientRoundDone(msg.round, [ids[:1] for ids in msg.batches])
        if isinstance(msg, AskAnswers):
            return answers_message(ClientAnswers, msg.round, [f"{k}:{i}" for i in msg.ids])
        return Ready(msg.round)

    def request(self, k, msg):
        return self.reply(k, msg)

    def request_all(self, msgs):
        return {k: self.reply(k, m) for k, m in msgs.items()}


def fake_server(protocol):
    records = [SimpleNamespace(id=i) for i in IDS]
    server = SimpleNamespace(
        cfg=SimpleNamespace(lada=SimpleNamespace(n_c=N_C), seed=0, federation=SimpleNamespace(protocol=protocol)),
        transport=ScriptedClients(["a", "b"]), progress=Progress(quiet=True), hooks=Hooks(),
        public=SimpleNamespace(records=records, index={i: n for n, i in enumerate(IDS)}),
        participant=SimpleNamespace(name="server"), y_s_asked=[], forgotten=[])
    server.server_answers = lambda t, xs: server.y_s_asked.extend(x.id for x in xs) or [f"s:{x.id}" for x in xs]
    server.responses = SimpleNamespace(forget=lambda t, name, ids: server.forgotten.extend(ids))
    return server


def first_of_batches(t):
    return [IDS[c[0]] for c in candidate_batches(len(IDS), N_C, 0, t)]


def test_per_batch_sends_algorithm_1s_messages_and_y_s_for_the_selections_only():
    server = fake_server("per_batch")
    exchange = exchange_for(server)
    assert isinstance(exchange, PerBatch)
    exchange.clients_phase(1)
    n_batches = len(candidate_batches(len(IDS), N_C, 0, 1))
    per_client = ["BeginRound"] + ["SelectCandidates", "ServerAnswers"] * n_batches + ["EndClientRound"]
    assert server.transport.sent == [(k, m) for k in ("a", "b") for m in per_client]
    assert server.y_s_asked == first_of_batches(1) * 2  # each client's selections, batch by batch


def test_per_round_sends_two_messages_per_client_and_forgets_the_unselected_y_s():
    server = fake_server("per_round")
    exchange = exchange_for(server)
    assert isinstance(exchange, PerRound)
    exchange.clients_phase(1)
    assert server.transport.sent == [("a", "ClientRound"), ("b", "ClientRound"), ("a", "AskAnswers"),
                                     ("b", "AskAnswers")]
    assert server.y_s_asked == IDS
    assert sorted(server.forgotten) == sorted(set(IDS) - set(first_of_batches(1)))


def test_both_give_the_same_y_k_and_count_only_per_batchs_as_sent_then():
    got = {}
    for protocol in ("per_batch", "per_round"):
        server = fake_server(protocol)
        exchange = exchange_for(server)
        exchange.clients_phase(1)
        server.transport.sent.clear()
        server.transport.channel.answers.clear()
        got[protocol] = exchange.client_answers(1, "b", ["p5", "p2"])
        row = server.transport.channel.answers[(1, UP, "b")]
        needed = len("b:p5b:p2".encode())
        assert row == {"answers_sent": needed if protocol == "per_batch" else 0, "answers_needed": needed}
        assert server.transport.sent == ([("b", "AskAnswers")] if protocol == "per_batch" else [])
        exchange.end_round(1)
    assert got["per_batch"] == got["per_round"] == ["b:p5", "b:p2"]


def test_per_round_keeps_no_answers_past_its_round():
    server = fake_server("per_round")
    exchange = exchange_for(server)
    exchange.clients_phase(1)
    exchange.end_round(1)
    with pytest.raises(KeyError):
        exchange.client_answers(1, "a", ["p0"])


def test_only_per_round_deploys():
    check_deployment(SimpleNamespace(federation=SimpleNamespace(protocol="per_round")))
    with pytest.raises(ConfigError, match="^config key 'federation.protocol': a deployment needs per_round"):
        check_deployment(SimpleNamespace(federation=SimpleNamespace(protocol="per_batch")))
