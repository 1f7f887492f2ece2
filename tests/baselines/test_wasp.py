"""WASP: Top-Q votes, weights, contrastive pools, question parsing, and end-to-end runs on conf/smoke.yaml
where only the synthetic samples go down and only small vote vectors go up."""
import math

import pytest
import torch

from ladalit.baselines import wasp
from ladalit.core.channel import DOWN, UP, Channel
from ladalit.core.config import load_config
from ladalit.data.records import MCRecord
from ladalit.core.encoder import HashingEncoder
from ladalit.core.experiment import build_experiment
from ladalit.core.participant import Sampling
from ladalit.core.seeds import round_seed
from ladalit.core.prompts import format_response
from ladalit.core.results import Results
from ladalit.core.rounds import run_in_process
from tests.channel_audit import decoded, strings_in

SHORT = ["server.train.max_length=128", "clients.client1.train.max_length=128",
         "clients.client2.train.max_length=128"]
BASE = ["conf=smoke.yaml", "quiet=true", "eval.shots=[0]", "eval.limit=2", "eval.max_new_tokens=8",
        "generation.max_new_tokens=8", "data.train_per_client=8", *SHORT]


# ----------------------------------------------------------------------------- pieces
def test_top_q_votes_by_hand():
    priv = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    syn = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    # private 0: nearest 0 (1.0) then 1 (0.8); private 1: nearest 2 (1.0) then 1 (0.6); harmonic 2/3, 1/3
    v = wasp.top_q_votes(priv, syn, top_q=2)
    assert v.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 0.0])
    assert v.sum().item() == pytest.approx(2.0)  # one vote per private question
    u = wasp.top_q_votes(priv, syn, top_q=2, decay="uniform")
    assert u.tolist() == pytest.approx([0.5, 1.0, 0.5, 0.0])
    assert wasp.top_q_votes(priv, syn, top_q=10).sum().item() == pytest.approx(2.0)  # q capped at n_synthetic
    assert wasp.top_q_votes(priv, syn[:0], top_q=2).shape == (0,)
    g = torch.Generator().manual_seed(0)
    noisy = wasp.top_q_votes(priv, syn, top_q=2, noise_std=0.1, generator=g)
    assert noisy.dtype == torch.float32 and not torch.equal(noisy, v)


def test_votes_follow_sentence_similarity():
    enc = HashingEncoder(dim=512)
    priv = enc.encode(["How many apples does Ann have after buying 3 apples?"])
    syn = enc.encode(["Quantum chromodynamics of gluon fields.",
                      "How many apples does Ben have after buying 5 apples?"])
    v = wasp.top_q_votes(priv, syn, top_q=1)
    assert v.tolist() == [0.0, 1.0]


def test_vote_weights_and_pools():
    w = wasp.vote_weights(torch.tensor([3.0, 1.0, 0.0, -1.0]))
    assert w.tolist() == pytest.approx([3.0, 1.0, 0.0, 0.0])  # mean 1, negatives (noise) clipped
    assert wasp.vote_weights(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]
    top, bottom = wasp.contrastive_pools(torch.tensor([0.5, 3.0, 0.0, 2.0, 1.0]), 2, seed=0)
    assert top == [1, 3] and bottom == [2, 0]
    top, bottom = wasp.contrastive_pools(torch.tensor([1.0, 2.0, 3.0]), 2, seed=0)
    assert top == [2, 1] and bottom == [0]  # disjoint
    assert wasp.contrastive_pools(torch.zeros(0), 2, 0) == ([], [])


def test_parse_question_and_generation_prompt():
    ok = " How much is 2+2?\nOptions: (A) 3 (B) 4 (C) 5 (D) 6\nAnswer: ..."
    assert wasp.parse_question(ok, 4) == ("How much is 2+2?", ("3", "4", "5", "6"))
    assert wasp.parse_question(" Q?\nOptions: (A) 3 (B) 4 (C) 5", 4) is None  # too few
    assert wasp.parse_question(" Q?\nOptions: (A) 3 (B) 3 (C) 5 (D) 6", 4) is None  # duplicates
    assert wasp.parse_question(" Q? (A) 3 (B) 4 (C) 5 (D) 6", 4) is None  # no options line
    assert wasp.parse_question("", 4) is None
    good = MCRecord("g", "Good one?", ("1", "2", "3", "4"))
    bad = MCRecord("b", "Bad one?", ("1", "2", "3", "4"))
    p = wasp.generation_prompt([good], [bad], [], 4)
    assert "Good example 1:\nQuestion: Good one?" in p and "Bad example 1:\nQuestion: Bad one?" in p
    assert "unlike the bad examples" in p and p.endswith("New question:\nQuestion:")
    plain = wasp.generation_prompt([], [], [good], 4)
    assert "Example 1:\nQuestion: Good one?" in plain and "bad" not in plain


# ----------------------------------------------------------------------------- end to end
class FakeServer:
    """Canned LLM generations: well-formed questions (every 5th malformed, some duplicates)."""

    def __init__(self):
        self.prompts: list[str] = []
        self.samplings: list = []

    def __call__(self, participant, prompts, max_new_tokens, batch_size, sampling=None):
        assert participant.name == "server"
        self.samplings.append(sampling)
        out = []
        for p in prompts:
            i = len(self.prompts) % 20  # the same 20 texts every round (20 prompts a round)
            self.prompts.append(p)
            if i % 5 == 4:
                out.append(" nonsense without options")
            elif i % 7 == 6:
                out.append(" How many pens are 1 plus 1?\nOptions: (A) 2 (B) 3 (C) 4 (D) 5\n")  # duplicate
            else:
                out.append(f" How many pens are {i} plus {i}?\nOptions: (A) {2 * i} (B) {2 * i + 1} "
                           f"(C) {2 * i + 2} (D) {2 * i + 3}\n")
        return out


class CannedAnswers(wasp.ResponseCache):
    """The server's reasoning answers: every 4th states no answer (dropped)."""

    def get(self, round, participant, samples):
        self.generated += len(samples)
        return ["I am not sure." if n % 4 == 3 else format_response(f"Add up: {x.question}", "A")
                for n, x in enumerate(samples)]


@pytest.mark.parametrize("weights", ["global", "local"])
def test_wasp_smoke_run_sends_samples_down_and_votes_up(monkeypatch, weights):
    fake = FakeServer()
    monkeypatch.setattr(wasp, "generate", fake)
    monkeypatch.setattr(wasp, "ResponseCache", CannedAnswers)
    sampled = ["wasp.temperature=0.8", "wasp.top_p=0.9"] if weights == "global" else []  # (either weights)
    # the server's prompt budget: 508 - 8 new tokens = 500 of its (character) tokens
    cfg = load_config(BASE + ["rounds=2", "wasp.samples_per_round=20", "wasp.top_q=3", "wasp.pool_size=3",
                              f"wasp.weights={weights}", *sampled, "server.train.max_length=508"])
    exp = build_experiment(cfg)
    channel = Channel(keep_payloads=True)
    results = Results()
    out = run_in_process(wasp.ROLES, exp, channel, results)
    # questions written greedily, or sampled from a per-round seed
    assert fake.samplings == ([Sampling(0.8, 0.9, round_seed(cfg.seed, t)) for t in (1, 2)] if sampled else [None] * 2)

    # every participant evaluated every round; every client trained on synthetic samples each round
    assert {r["participant"] for r in results.accuracy} == {"server", *cfg.clients}
    assert {r["round"] for r in results.accuracy} == {1, 2}
    trained = {(r["round"], r["participant"]) for r in results.train if r.get("synthetic")}
    assert trained == {(t, k) for t in (1, 2) for k in cfg.clients}
    assert all(math.isfinite(r["wasp_loss"]) for r in results.train if "wasp_loss" in r)
    assert not out["nonfinite_skipped"]

    # 20 prompts a round: 4 malformed, 2 duplicates -> 14 parsed; every 4th answer unstated -> 11 kept
    for t in ("1", "2"):
        assert out["wasp"][t]["prompts"] == 20 and out["wasp"][t]["parsed"] == 14 and out["wasp"][t]["kept"] == 11
    # prompts over the server's budget are counted: round 1's (two public questions as examples: 370-409
    # tokens) fit, round 2's (two good and two bad synthetic ones: 545 and more) do not
    lengths = [len(x) for x in exp.server.tokenizer(fake.prompts, add_special_tokens=True)["input_ids"]]
    assert max(lengths[:20]) <= 500 < min(lengths[20:])
    assert [(r["round"], r["n"], r["prompts_cut"]) for r in results.budget if r["what"] == "synthetic_questions"] == [
        (1, 20, 0), (2, 20, 20)]

    # what crosses: samples down, votes up, then weights down (global; local: the round's end) and Ready up --
    # per round and client
    end = "sample_weights" if weights == "global" else "end_round"
    assert [(m.round, m.direction, m.client, m.kind) for m in channel.messages] == [
        (t, d, k, kind) for t in (1, 2) for pair in (("synthetic_samples", "votes"), (end, "ready"))
        for k in cfg.clients for d, kind in zip((DOWN, UP), pair)]
    payloads = decoded(channel)
    for m, p in zip(channel.messages, payloads):
        if m.kind in ("end_round", "ready"):
            assert set(p) == {"kind", "round"}
        elif m.kind == "synthetic_samples":
            assert set(p) == {"kind", "round", "ids", "questions", "options", "targets"} and len(p["ids"]) == 11
            assert all(len(o) == 4 for o in p["options"])
            assert all(y.rstrip().endswith("The answer is (A).") for y in p["targets"])
        else:  # votes up / weights down: one float per synthetic sample, nothing else
            assert set(p) == {"kind", "round", "votes" if m.kind == "votes" else "weights"}
            p = p["votes"] if m.kind == "votes" else p["weights"]
            assert isinstance(p, torch.Tensor) and p.dtype == torch.float32 and p.shape == (11,)
            assert m.nbytes < 2500
        if m.kind == "votes":
            assert p.sum().item() == pytest.approx(cfg.data.train_per_client, rel=1e-5)  # one vote per question
    size = {(m.round, m.client, m.kind): m.nbytes for m in channel.messages}
    for t in (1, 2):
        for k in cfg.clients:  # a vote vector is smaller than the samples it votes on
            assert size[(t, k, "votes")] < size[(t, k, "synthetic_samples")]

    # no private text crosses
    public_text = {x.question for x in exp.data.public}
    private = [x for c in exp.data.clients for x in c.train + c.test if x.question not in public_text]
    blob = b"".join(channel.payloads)
    crossed = {s for p in payloads for s in strings_in(p)}
    for x in private:
        assert x.question.encode() not in blob and x.id not in crossed
        assert not any(x.question in s for s in crossed)

    # round 2's prompts show round 1's top / bottom voted samples as good / bad examples
    r2 = fake.prompts[20:]
    assert all("Good example 1:" in p and "Bad example 1:" in p for p in r2)
    assert not any("Good example" in p for p in fake.prompts[:20])  # round 1: public examples
    assert all("Example 1:" in p for p in fake.prompts[:20])
    good_ids = out["wasp"]["1"]["good"]
    sent = payloads[0]
    good_q = [q for i, q in zip(sent["ids"], sent["questions"]) if i in good_ids]
    assert good_q and all(any(f"Question: {q}\n" in p for p in r2) for q in good_q)


def test_wasp_with_empty_generations_sends_no_sample_and_still_evaluates():
    # the smoke models are random: their generations parse as no question at all
    cfg = load_config(BASE + ["rounds=1", "data.public_size=8", "wasp.samples_per_round=4"])
    exp = build_experiment(cfg)
    channel = Channel(keep_payloads=True)
    results = Results()
    out = run_in_process(wasp.ROLES, exp, channel, results)
    assert out["wasp"]["1"]["kept"] == 0
    for p in decoded(channel):  # the round's start and end only: no sample, no vote
        assert p["kind"] in ("synthetic_samples", "votes", "end_round", "ready")
        assert not p.get("ids") and (p["kind"] != "votes" or p["votes"].numel() == 0)
    assert {r["participant"] for r in results.accuracy} == {"server", *cfg.clients}
