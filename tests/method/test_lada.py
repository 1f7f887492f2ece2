"""LaDa's loop on conf/smoke.yaml: train.epochs passes per selection, budgets checked in each
participant's own tokens, cut answers carried across the channel, the reward scale and the cut
counts in results.json, and which policy answers the server."""
import json
import math

import pytest
import torch

from ladalit.method import distill, lada
from ladalit.core.budgets import check_budgets, needs, reference_responses
from ladalit.core.channel import DOWN, Channel
from ladalit.core.config import ConfigError, load_config
from ladalit.core.experiment import build_experiment
from ladalit.core.participant import Participant
from ladalit.core.messages import ServerAnswers, decode
from ladalit.method.client import answers_message, received_answers
from ladalit.core.prompts import CutAnswer, zero_shot_prompt
from ladalit.core.results import Results
from ladalit.core.run_identity import CHECKPOINT
from ladalit.run import execute, main


def smoke(tmp_path, *overrides):
    return load_config(["conf=smoke.yaml", f"output_dir={tmp_path}", "run_name=r", "quiet=true", *overrides])


def test_optimizer_steps_are_epochs_times_minibatches(tmp_path):
    """train.epochs passes over each candidate batch's selection: Adam's step count equals epochs × the
    minibatches of every selection (client: ceil(selected / batch_size) per candidate batch)."""
    epochs = {"client1": 2, "client2": 3, "server": 2}
    cfg = smoke(tmp_path, "rounds=2", "eval.shots=[0]", "clients.client1.train.epochs=2",
                "clients.client2.train.epochs=3", "server.train.epochs=2")
    run_dir, saved = execute(cfg, quiet=True)
    state = torch.load(run_dir / CHECKPOINT, weights_only=False)["state"]["roles"]

    def adam_steps(name):
        steps = {int(s["step"]) for s in state[name]["optimizer"]["state"].values()}
        assert len(steps) == 1
        return steps.pop()
    for k in cfg.clients:
        bs = cfg.clients[k].train.batch_size
        minibatches = sum(math.ceil(s["selected"] / bs) for s in saved["selection"] if s["pair"] == f"{k}<-server")
        assert minibatches > 0
        assert adam_steps(k) == epochs[k] * minibatches
    server_minibatches = {(r["round"], r["batch"], r["minibatch"]) for r in saved["train"] if r["participant"] == "server"}
    assert server_minibatches and adam_steps("server") == epochs["server"] * len(server_minibatches)


@pytest.mark.parametrize("fit_every", ["batch", "minibatch"])
def test_each_filter_fits_once_per_candidate_batch_or_per_minibatch(tmp_path, fit_every):
    """filter_net.fit_every=batch (Algorithm 1's ❻❼ per batch b): one fit per candidate batch with a
    selection; minibatch: one per training minibatch of it (client: ceil(selected / batch_size))."""
    cfg = smoke(tmp_path, "rounds=2", "eval.shots=[0]", f"filter_net.fit_every={fit_every}")
    run_dir, saved = execute(cfg, quiet=True)
    roles = torch.load(run_dir / CHECKPOINT, weights_only=False)["state"]["roles"]

    def fits(role, key):
        return roles[role]["filters"][key]["_extra_state"]["n_fits"]
    spans = []  # per client: does some selection span two minibatches (the two settings differ)?
    for k in cfg.clients:
        sel = [s["selected"] for s in saved["selection"] if s["pair"] == f"{k}<-server" and s["selected"]]
        bs = cfg.clients[k].train.batch_size
        minibatches = sum(math.ceil(n / bs) for n in sel)
        assert fits(k, "pair") == (len(sel) if fit_every == "batch" else minibatches) and sel
        server_sel = [s for s in saved["selection"] if s["pair"] == f"server<-{k}" and s["selected"]]
        server_mbs = {(r["round"], r["batch"], r["minibatch"]) for r in saved["train"]
                      if r["participant"] == "server" and r.get("pair") == k}
        assert fits("server", k) == (len(server_sel) if fit_every == "batch" else len(server_mbs))
        spans.append(minibatches > len(sel))
    assert any(spans)


def test_epochs_zero_trains_nothing_and_the_same_sample_batch_reward_is_neutral(tmp_path):
    # reward.batch=same_sample compares a sample before and after its update: with no update, r_batch = 0
    cfg = smoke(tmp_path, "rounds=1", "eval.shots=[0]", "clients.client1.train.epochs=0", "reward.batch=same_sample")
    exp = build_experiment(cfg)
    results = Results()
    lada.run(exp, Channel(), results)
    rows = [r for r in results.train if r["participant"] == "client1" and "loss_before" in r]
    assert rows and all(r["loss_after"] == r["loss_before"] for r in rows)
    # round 1: r_round = 0 and r_batch = 0, so r_total = σ(0) = 0.5
    assert all(r["reward"] == pytest.approx(0.5) for r in rows)


def test_a_budget_that_does_not_fit_fails_naming_the_participant_and_the_length(tmp_path, capsys):
    args = ["conf=smoke.yaml", f"output_dir={tmp_path}", "run_name=b", "quiet=true", "generation.check_budgets=true"]
    assert main(args) == 2
    assert not (tmp_path / "b").exists()  # checked before anything is written: the name stays free
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    # the server is checked first: its tokens for the longest reference answer, plus EOS
    cfg = load_config(args)
    exp = build_experiment(cfg)
    tok = exp.server.tokenizer
    longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for r in reference_responses(cfg, exp.example))
    need = longest + (tok.eos_token_id is not None)
    assert err == (f"error: server: a full answer needs {need} of its tokens, but generation.max_new_tokens is 16 "
                   f"(set generation.max_new_tokens>={need}, or generation.check_budgets=false)")


def test_max_length_must_hold_the_longest_zero_shot_prompt_and_the_answer(tmp_path):
    exp = build_experiment(smoke(tmp_path, "generation.check_budgets=true"))
    prompts = [zero_shot_prompt(x) for x in exp.data.public] + [zero_shot_prompt(x) for c in exp.data.clients for x in c.test]
    need = {name: needs(p, prompts, reference_responses(exp.cfg, exp.example))
            for name, p in [("server", exp.server), *exp.clients.items()]}
    n = max(a for _, a in need.values())
    fits = [f"generation.max_new_tokens={n}", f"eval.max_new_tokens={n}", f"server.train.max_length={need['server'][0] + n}"]
    fits += [f"clients.{k}.train.max_length={need[k][0] + n}" for k in exp.clients]
    check_budgets(build_experiment(smoke(tmp_path, "generation.check_budgets=true", *fits)))  # fits: no error
    short = f"clients.client2.train.max_length={need['client2'][0] + n - 1}"
    with pytest.raises(ConfigError, match=rf"^clients\.client2: train\.max_length {need['client2'][0] + n - 1} must hold "
                                          rf"the longest zero-shot prompt \({need['client2'][0]} of its tokens\) and {n} new"):
        check_budgets(build_experiment(smoke(tmp_path, "generation.check_budgets=true", *fits, short)))


def test_cut_answers_cross_the_channel_with_their_flag():
    channel = Channel(keep_payloads=True)
    msg = answers_message(ServerAnswers, 1, [CutAnswer("6+2=8. (A) 8 vs"), "done."], batch=3)
    got = received_answers(channel.send(1, DOWN, "client1", msg))
    assert got == ["6+2=8. (A) 8 vs", "done."]
    assert isinstance(got[0], CutAnswer) and not isinstance(got[1], CutAnswer)
    sent = decode(channel.payloads[0])  # plain fields only
    assert sent == ServerAnswers(round=1, texts=["6+2=8. (A) 8 vs", "done."], cut=[0], batch=3)
    assert channel.messages[0].nbytes == len(channel.payloads[0])


def test_results_report_cuts_strict_invalid_rates_and_the_reward_scale(tmp_path):
    cfg = smoke(tmp_path, "rounds=2")
    run_dir, saved = execute(cfg, quiet=True)
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    for r in saved["accuracy"]:
        mine = [p for p in preds if (p["round"], p["participant"], p["shots"]) == (r["round"], r["participant"], r["shots"])]
        assert r["prompts_cut"] == sum(p["prompt_cut"] for p in mine)
        assert r["answers_cut"] == sum(p["answer_cut"] for p in mine)
        assert r["invalid_strict"] == pytest.approx(sum(p["stated"] is None for p in mine) / len(mine))
        assert r["invalid_strict"] >= r["invalid_rate"]
        if r["shots"] == 0:
            assert r["prompts_cut"] == 0  # zero-shot prompts fit the smoke budgets
    # the untrained smoke models never end an answer: every one is cut at max_new_tokens
    assert all(p["answer_cut"] for p in preds)
    # one-shot prompts longer than the budget: their question and instruction survive (tests/test_evaluation.py)
    assert any(r["prompts_cut"] > 0 for r in saved["accuracy"] if r["shots"] == 1)

    responses = [json.loads(line) for line in (run_dir / "responses.jsonl").read_text().splitlines()]
    budget = {(b["round"], b["participant"], b["what"]): b for b in saved["budget"]}
    for t in (1, 2):
        for name in ("server", *cfg.clients):
            mine = [x for x in responses if (x["round"], x["participant"]) == (t, name)]
            row = budget[(t, name, "responses")]
            assert row["n"] == len(mine) and row["answers_cut"] == sum(x["cut"] for x in mine) == len(mine)
            assert row["prompts_cut"] == 0
            assert budget[(t, name, "pairs")]["n"] > 0 and budget[(t, name, "pairs")]["overlong"] == 0

    scale = {(r["round"], r["pair"]): r for r in saved["reward_scale"]}
    assert set(scale) == {(t, p) for t in (1, 2) for k in cfg.clients for p in (f"{k}<-server", f"server<-{k}")}
    for (t, pair), r in scale.items():
        sel = [s for s in saved["selection"] if (s["round"], s["pair"]) == (t, pair)]
        assert r["selected_fraction"] == pytest.approx(sum(s["selected"] for s in sel) / sum(s["candidates"] for s in sel))
        assert r["observations"] == sum(s["selected"] for s in sel)
        assert 0.0 < r["r_total_mean"] < 1.0 and r["r_total_std"] >= 0.0 and 0.0 <= r["r_total_above_tau"] <= 1.0
        if t == 1:  # the prototypes: no filter scored
            assert math.isnan(r["exploit_mean"]) and math.isnan(r["explore_mean"])
        else:
            assert math.isfinite(r["exploit_mean"]) and math.isfinite(r["explore_mean"])


def test_the_server_gets_answers_of_the_clients_policy_at_the_start_of_the_server_phase(tmp_path, monkeypatch):
    """Client answers for samples the client did not select itself are generated in the server phase,
    by the client's policy after its round-t update (docs/method.md)."""
    events = []  # ("gen", name, policy fingerprint, prompts) and ("step", name)
    generate = Participant.generate_text
    step = distill.distill_step

    def fingerprint(p):
        return round(sum(float(q.detach().double().sum()) for q in p.model.parameters()), 10)

    def spy_generate(self, prompts, *a, **kw):
        events.append(("gen", self.name, fingerprint(self), list(prompts)))
        return generate(self, prompts, *a, **kw)

    def spy_step(cfg, fabric, participant, *a, **kw):
        events.append(("step", participant.name))
        return step(cfg, fabric, participant, *a, **kw)
    monkeypatch.setattr(Participant, "generate_text", spy_generate)
    monkeypatch.setattr(distill, "distill_step", spy_step)
    cfg = smoke(tmp_path, "rounds=2", "eval.shots=[0]", "eval.every_round=false")
    exp = build_experiment(cfg)
    rounds = []
    lada.run(exp, Channel(), Results(), on_round_end=lambda t, _: rounds.append(len(events)))
    public = {zero_shot_prompt(x) for x in exp.data.public}
    round2 = events[rounds[0]: rounds[1]]
    for k, client in exp.clients.items():
        last_step = max(i for i, e in enumerate(round2) if e == ("step", k))
        own = [e for e in round2[:last_step] if e[0] == "gen" and e[1] == k]
        later = [e for e in round2[last_step:] if e[0] == "gen" and e[1] == k and set(e[3]) <= public]
        assert own and later  # the server asked for answers the client had not made for itself
        assert not set(p for e in later for p in e[3]) & set(p for e in own for p in e[3])
        final = fingerprint(client)  # after the run: the client did not train after its round-2 phase
        assert all(e[2] == final for e in later)
        assert own[0][2] != final  # the client's policy moved during its phase: the check can fail
