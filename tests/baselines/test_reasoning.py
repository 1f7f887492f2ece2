"""Reasoning-transfer baselines (paper Table IV): text helpers by hand, and end-to-end runs on
conf/smoke.yaml with canned generations, checking what crosses the channel."""
import math
import random

import pytest

from ladalit import registry
from ladalit.baselines import reasoning as rb
from ladalit.core.channel import DOWN, UP, Channel
from ladalit.core.config import load_config
from ladalit.core.experiment import build_experiment
from ladalit.core.prompts import ONE_SHOT_EXAMPLES, zero_shot_prompt
from ladalit.core.results import Results
from ladalit.core.rounds import run_in_process
from tests.channel_audit import decoded, strings_in

SHORT = ["server.train.max_length=128", "clients.client1.train.max_length=128",
         "clients.client2.train.max_length=128"]
BASE = ["conf=smoke.yaml", "quiet=true", "eval.shots=[0]", "eval.limit=2", "eval.max_new_tokens=8",
        "generation.max_new_tokens=8", "data.public_size=12", "data.train_per_client=8", *SHORT]


# ----------------------------------------------------------------------------- helpers by hand
def test_final_answer_and_clean_rationale():
    assert rb.final_answer("2+2=4. The answer is (B). Then the answer is (C).") == "B"
    assert rb.final_answer("so the answer is C") == "C"
    assert rb.final_answer("I pick (B).") is None  # no answer statement: not parseable here
    assert rb.final_answer("The answer is (E).") is None  # not among 4 options
    assert rb.clean_rationale(" 2+2=4. The answer is (B). Ramble.") == ("2+2=4.", "B")
    assert rb.normalised_target(" 2+2=4. The answer is (B). Ramble.") == " 2+2=4. The answer is (B)."
    assert rb.normalised_target("The answer is (A)") == " The answer is (A)."
    assert rb.normalised_target("no idea") is None
    assert rb.split_steps("a=1. b=2!\nc=3") == ["a=1.", "b=2!", "c=3"]


def test_socratic_prompt_and_chain():
    ex = ONE_SHOT_EXAMPLES["math"]
    rec = ONE_SHOT_EXAMPLES["commonsense"]
    p = rb.socratic_prompt(rec, ex)
    assert p.startswith(rb.SOCRATIC_INSTRUCTION) and p.endswith("Sub-question 1:")
    assert "Sub-question 2: How much change" in p and "Where would you put a plate" in p
    chain = rb.socratic_chain(" Why? Answer: because.\nSub-question 2: So? Answer: B.\nThe answer is (B). more")
    assert chain == " Sub-question 1: Why? Answer: because.\nSub-question 2: So? Answer: B. The answer is (B)."
    assert rb.socratic_chain(" Why? The answer is (B).") is None  # no answered sub-question
    assert rb.socratic_chain(" Why? Answer: because.") is None  # no final answer
    # an example without a hand-written decomposition gets one from its rationale
    other = ex.__class__(id="x", question="q", options=("1", "2", "3", "4"), answer="C", rationale="a. b.")
    assert rb.socratic_demo(other).endswith("Answer: b.\nThe answer is (C).")


def test_rstar_partial_cuts_between_the_bounds():
    steps = [f"s{i}." for i in range(10)]
    rng = random.Random(0)
    for _ in range(50):
        n = len(rb.rstar_partial(steps, rng, 0.2, 0.8).split())
        assert 2 <= n <= 8
    assert rb.rstar_partial(steps, rng, 0.0, 0.0) == ""
    assert rb.rstar_partial(["only."], rng, 0.2, 0.8) == ""  # one step: the discriminator starts fresh


# ----------------------------------------------------------------------------- end to end
class Canned:
    """Canned generations by who generates and for what (the smoke models generate empty strings)."""

    def __init__(self):
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, participant, prompts, max_new_tokens, batch_size):
        self.calls.append((participant.name, list(prompts)))
        out = []
        for i, p in enumerate(prompts):
            if participant.name != "server":  # the SLM generator: answers (C) and (D) alternate
                out.append(f" Step one. Step two. Step three. The answer is ({'C' if i % 2 else 'D'}).")
            elif p.startswith(rb.SOCRATIC_INSTRUCTION):  # the LLM's decompositions; every 3rd has none
                out.append(" Just guess." if i % 3 == 2 else
                           " What is asked? Answer: a sum.\nSub-question 2: Its value? Answer: 4.\nThe answer is (C).")
            else:  # the LLM's zero-shot rationales / completions: every 3rd states no answer
                out.append(" no idea" if i % 3 == 2 else " We compute it. The answer is (C).")
        return out


def run_method(monkeypatch, method, *overrides):
    """The method's roles in this process (the one round loop), with canned generations."""
    canned = Canned()
    monkeypatch.setattr(rb, "generate", canned)
    cfg = load_config(BASE + list(overrides))
    exp = build_experiment(cfg)
    channel, results = Channel(keep_payloads=True), Results()
    out = run_in_process(registry.roles(method), exp, channel, results)
    assert {r["participant"] for r in results.accuracy} == {"server", *cfg.clients}
    assert {r["round"] for r in results.accuracy} == set(range(1, cfg.rounds + 1))
    assert {r["participant"] for r in results.train if r["round"] == 0 and "sft_loss" in r} == set(cfg.clients)
    assert not out["nonfinite_skipped"]
    # no private text crosses
    public_text = {x.question for x in exp.data.public}
    private = [x for c in exp.data.clients for x in c.train + c.test if x.question not in public_text]
    blob = b"".join(channel.payloads)
    crossed = {s for p in decoded(channel) for s in strings_in(p)}
    for x in private:
        assert x.question.encode() not in blob and x.id not in crossed
    return cfg, exp, channel, results, out, canned


def sent(channel) -> list[tuple]:
    """(round, direction, client, kind) of every message, in order."""
    return [(m.round, m.direction, m.client, m.kind) for m in channel.messages]


@pytest.mark.parametrize("method,kind,loss", [("sft_cot", "server_rationales", "cot_loss"),
                                              ("socratic_cot", "socratic_chains", "socratic_loss")])
def test_server_targets_sent_once_and_only_the_parseable_ones(monkeypatch, method, kind, loss):
    cfg, exp, channel, results, out, canned = run_method(monkeypatch, method, "rounds=2")
    # round 1 brings the targets, round 2 only starts the clients' epochs; every client answers Ready
    assert sent(channel) == [(t, d, k, m) for t, first in ((1, kind), (2, "local_round")) for k in cfg.clients
                             for d, m in ((DOWN, first), (UP, "ready"))]
    n = len(exp.data.public)
    kept = [i for i in range(n) if i % 3 != 2]
    assert out[kind] == {"generated": n, "kept": len(kept)}
    targets = [p for p in decoded(channel) if p["kind"] == kind]
    assert len(targets) == len(cfg.clients)
    for p in targets:
        assert p["ids"] == [exp.data.public[i].id for i in kept]
        assert all(y.endswith(" The answer is (C).") for y in p["targets"])
        if method == "socratic_cot":
            assert all(y.startswith(" Sub-question 1: What is asked? Answer: a sum.") for y in p["targets"])
    # the LLM was prompted once (zero-shot / decomposition), the SLMs trained every round on the kept targets
    assert [who for who, _ in canned.calls] == ["server"]
    prompts = canned.calls[0][1]
    if method == "socratic_cot":
        assert all(p.startswith(rb.SOCRATIC_INSTRUCTION) and p.endswith("Sub-question 1:") for p in prompts)
    else:
        assert prompts == [zero_shot_prompt(x) for x in exp.data.public]
    trained = [(r["round"], r["participant"], r["targets"]) for r in results.train if loss in r]
    assert sorted(trained) == [(t, k, len(kept)) for t in (1, 2) for k in cfg.clients]
    assert all(math.isfinite(r[loss]) for r in results.train if loss in r)


def test_rstar_keeps_only_mutually_consistent_trajectories(monkeypatch):
    cfg, exp, channel, results, out, canned = run_method(monkeypatch, "rstar", "rounds=2")
    n = len(exp.data.public)
    # per round: every client is asked for its cut trajectories (up), then gets the completions' answers (down)
    expected = [(t, d, k, kind) for t in (1, 2) for ask, reply in (("ask_trajectories", "partial_trajectories"),
                                                                   ("completion_answers", "ready"))
                for k in cfg.clients for d, kind in ((DOWN, ask), (UP, reply))]
    assert sent(channel) == expected
    payloads = decoded(channel)
    asked = [p for p in payloads if p["kind"] == "ask_trajectories"]
    assert all(p["ids"] == [x.id for x in exp.data.public] for p in asked)  # all of D_p: rstar_questions unset
    for p in payloads:
        if p["kind"] == "partial_trajectories":
            assert len(p["ids"]) == n  # zero-shot and one-shot trajectories are the same text: deduplicated
            # cut trajectories of the SLM's own text: never its answer statement
            assert all("answer is" not in s and s in "Step one. Step two. Step three." for s in p["partials"])
        elif p["kind"] == "completion_answers":
            assert len(p["ids"]) == n and set(p["answers"]) <= {"C", ""}  # letters only
    # the generator answers (D) for even, (C) for odd questions; the discriminator reaches (C) except
    # for every 3rd prompt, so a trajectory is kept iff odd and not ≡ 2 (mod 3)
    keep = sum(1 for i in range(n) if i % 2 == 1 and i % 3 != 2)
    for t in (1, 2):
        for k in cfg.clients:
            assert out["rstar"][f"{t}:{k}"] == {"generated": 2 * n, "answered": n, "consistent": keep}
    trained = [(r["round"], r["participant"], r["targets"]) for r in results.train if "rstar_loss" in r]
    assert sorted(trained) == [(t, k, keep) for t in (1, 2) for k in cfg.clients]
    # the SLMs generated (zero-shot + one-shot prompts), then the LLM completed each one's cut trajectories
    who = [w for w, _ in canned.calls]
    assert who == [w for _ in (1, 2) for w in [*cfg.clients, *["server"] * len(cfg.clients)]]
    completions = [p for w, ps in canned.calls if w == "server" for p in ps]
    ups = [p for p in payloads if p["kind"] == "partial_trajectories"]
    by_id = {x.id: x for x in exp.data.public}
    assert completions == [rb.discriminator_prompt(by_id[i], s) for p in ups for i, s in zip(p["ids"], p["partials"])]
    assert any(s for p in ups for s in p["partials"])


def test_rstar_asks_for_the_rounds_sample_of_questions(monkeypatch):
    cfg, exp, channel, *_ = run_method(monkeypatch, "rstar", "rounds=2", "reasoning.rstar_questions=5")
    asked = [(p["round"], p["ids"]) for p in decoded(channel) if p["kind"] == "ask_trajectories"]
    by_round = {t: [ids for r, ids in asked if r == t] for t in (1, 2)}
    for t, lists in by_round.items():
        assert len(lists) == len(cfg.clients) and all(ids == lists[0] for ids in lists)  # the same for every client
        assert lists[0] == [x.id for x in rb.rstar_questions(cfg, exp.data.public, t)] and len(lists[0]) == 5
    assert by_round[1][0] != by_round[2][0]  # a sample per round


@pytest.mark.parametrize("method", ["sft_cot", "rstar"])
def test_methods_complete_with_the_random_smoke_models(method):
    # nothing the random models generate states an answer: nothing to distil, no target crosses, still evaluated
    cfg = load_config(BASE + ["rounds=1", "data.public_size=4"])
    exp = build_experiment(cfg)
    channel, results = Channel(keep_payloads=True), Results()
    run_in_process(registry.roles(method), exp, channel, results)
    assert not [p for p in decoded(channel) if p.get("targets") or p.get("partials") or p.get("answers")]
    assert {r["participant"] for r in results.accuracy} == {"server", *cfg.clients}
