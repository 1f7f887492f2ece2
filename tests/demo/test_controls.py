"""The demo world's controls (ladalit.demo.controls): the gold answer's shape, the matched selectors' choice, and
their plumbing on smoke runs: what a client received under the gold teacher, the replayed selection sizes, and
that the analysis answers leave a run as it was."""
import json
import random
import re
import shutil

import pytest
from omegaconf import OmegaConf

from ladalit.core.config import ConfigError, load_config
from ladalit.core.experiment import load_data, prepared_records
from ladalit.core.prompts import parse_answer, stated_answer
from ladalit.data.records import MCRecord
from ladalit.demo.controls import choose, gold_response, replay_sizes
from ladalit.method.pair import candidate_batches
from ladalit.run import execute, main

SMOKE = ["conf=smoke.yaml", "quiet=true", "tracking.wandb.mode=disabled"]


def test_gold_response_rebuilds_the_option_check_in_the_records_option_order():
    # the stored rationale checked the options as they were drawn; the split re-drew them (normalise_options)
    rec = MCRecord(id="r", question="Tom has 6 apples. He gets 2 more. How many apples now?", options=("3", "8", "5", "9"),
                   answer="B", rationale="6+2=8. (A) 8 vs 8 yes. (B) 5 vs 8 no. (C) 9 vs 8 no. (D) 4 vs 8 no.")
    assert gold_response(rec) == " 6+2=8. (A) 3 vs 8 no. (B) 8 vs 8 yes. (C) 5 vs 8 no. (D) 9 vs 8 no. The answer is (B)."
    with pytest.raises(ValueError, match="no synthetic rationale"):
        gold_response(MCRecord(id="x", question="q", options=("1", "2"), answer="A", rationale="because"))


def test_gold_responses_of_the_smoke_world_state_their_gold_letter():
    cfg = load_config(SMOKE)
    for rec in prepared_records(cfg)[:50]:
        y = gold_response(rec)
        assert parse_answer(y) == stated_answer(y) == rec.answer  # the strict scorer accepts it
        assert f"({rec.answer}) {rec.gold_text} vs {rec.gold_text} yes." in y
        assert y.count(" yes.") == 1 and re.match(r" \d", y)  # the answer format: a leading space, the chain first


def test_choose_takes_exactly_n_the_preferred_first_in_candidate_order():
    cand = [f"c{i}" for i in range(10)]
    for kind in ("random", "disagreement", "correctable"):
        for n in (0, 3, 10):
            got = choose(kind, cand, n, {"c1", "c7"}, random.Random(0))
            assert len(got) == n and got == [c for c in cand if c in got]
    assert choose("correctable", cand, 2, {"c1", "c7"}, random.Random(0)) == ["c1", "c7"]
    three = choose("disagreement", cand, 3, {"c1", "c7"}, random.Random(0))
    assert {"c1", "c7"} < set(three)  # filled up at random from the rest
    some = choose("correctable", cand, 1, {"c1", "c7"}, random.Random(0))
    assert some in (["c1"], ["c7"])
    assert choose("random", cand, 4, set(), random.Random(5)) == choose("random", cand, 4, set(), random.Random(5))
    with pytest.raises(ValueError):
        choose("random", cand, 11, set(), random.Random(0))


def smoke_run(out, name, *overrides):
    cfg = load_config([*SMOKE, f"output_dir={out}", f"run_name={name}", *overrides])
    run_dir, saved = execute(cfg, quiet=True)
    return cfg, run_dir, saved


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One LaDa smoke run of 2 rounds: the run the matched selectors replay."""
    return smoke_run(tmp_path_factory.mktemp("controls"), "lada")


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_gold_teacher_lada_clients_learn_from_the_gold_rationale(tmp_path, monkeypatch):
    from ladalit.method import client as client_mod
    received, real = [], client_mod.LadaClient.distill

    def spy(self, msg):
        received.append((self.name, msg.round, [self.public.records[i].id for i in self.selection], list(msg.texts)))
        return real(self, msg)

    monkeypatch.setattr(client_mod.LadaClient, "distill", spy)
    cfg, run_dir, saved = smoke_run(tmp_path, "gold", "analysis.gold_teacher=true")
    gold = {r.id: gold_response(r) for r in prepared_records(cfg)}
    assert {(k, t) for k, t, _, _ in received} == {(k, t) for k in cfg.clients for t in (1, 2)}
    for _, _, ids, texts in received:
        assert ids and texts == [gold[i] for i in ids]  # what the client received and trained on: the gold answers
    # the server's own answers are still its own (the rejected y^s of its step): generated, never the gold ones
    server_said = [r for r in lines(run_dir / "responses.jsonl") if r["participant"] == "server"]
    assert server_said and all(r["text"] != gold[r["id"]] for r in server_said)
    down = [r for r in saved["selection_quality"] if r["pair"].endswith("<-server")]
    assert down and all(r["chosen_correct"] == 1.0 and r["chosen_known"] == r["selected"] for r in down)


def test_gold_clients_the_server_learns_from_the_gold_rationale_and_the_clients_keep_their_own(tmp_path, monkeypatch):
    from ladalit.method import lada as lada_mod
    chosen_seen, real_step = [], lada_mod.LadaServer.weighted_server_step

    def spy(self, t, b, rows, y_k):
        chosen_seen.append([(k, self.public.records[i].id, y_k[(k, self.public.records[i].id)]) for k, i in rows])
        return real_step(self, t, b, rows, y_k)

    monkeypatch.setattr(lada_mod.LadaServer, "weighted_server_step", spy)
    cfg, run_dir, saved = smoke_run(tmp_path, "gold-clients", "analysis.gold_clients=true")
    gold = {r.id: gold_response(r) for r in prepared_records(cfg)}
    rows = [row for batch in chosen_seen for row in batch]
    assert rows and all(y == gold[i] for _, i, y in rows)  # the server's chosen answers: the gold ones
    # the clients' own answers (their rejected y^k) are still generated, and never the gold ones; the server's y^s too
    said = lines(run_dir / "responses.jsonl")
    for who in ("server", *cfg.clients):
        mine = [r for r in said if r["participant"] == who]
        assert mine and all(r["text"] != gold[r["id"]] for r in mine), who
    up = [r for r in saved["selection_quality"] if r["pair"].startswith("server<-")]
    assert up and all(r["chosen_correct"] == 1.0 and r["chosen_known"] == r["selected"] for r in up)
    down = [r for r in saved["selection_quality"] if r["pair"].endswith("<-server")]
    assert down and not all(r["chosen_correct"] == 1.0 for r in down)  # the clients still learn from the server
    with pytest.raises(ConfigError, match="analysis.gold_clients"):
        load_config([*SMOKE, "method=fedkd", "analysis.gold_clients=true"])


def test_gold_teacher_fedkd_clients_learn_from_the_gold_rationale_on_all_of_the_public_set(tmp_path, monkeypatch):
    from ladalit.baselines import fedkd
    seen, real = [], fedkd.supervised_finetune

    def spy(fabric, participant, optimizer, prompts, responses, *args, **kwargs):
        seen.append((participant.name, list(responses)))
        return real(fabric, participant, optimizer, prompts, responses, *args, **kwargs)

    monkeypatch.setattr(fedkd, "supervised_finetune", spy)
    cfg, _, _ = smoke_run(tmp_path, "fedkd-gold", "method=fedkd", "analysis.gold_teacher=true", "rounds=1")
    gold = {r.id: gold_response(r) for r in prepared_records(cfg)}
    want = [gold[x.id] for x in load_data(cfg).public]
    assert sorted(n for n, _ in seen) == sorted(cfg.clients)
    assert all(responses == want for _, responses in seen)


def test_all_answers_leave_the_run_as_it_was_and_cover_the_public_set(base, tmp_path):
    cfg, run_dir, saved = base
    _, run2, with_all = smoke_run(tmp_path, "all", "analysis.all_answers=true")
    for key in ("accuracy", "selection", "train", "selected_per_round", "communication", "responses_generated"):
        assert with_all[key] == saved[key], key  # neither sent, counted nor trained on
    for f in ("responses.jsonl", "selections.jsonl", "sample_rewards.jsonl", "predictions.jsonl"):
        assert (run2 / f).read_text() == (run_dir / f).read_text(), f
    public = len(load_data(cfg).public)
    assert all(r["random_labelled"] == public for r in with_all["selection_quality"])
    assert not all(r["random_labelled"] == public for r in saved["selection_quality"])  # the caveat it fixes
    extra = lines(run2 / "analysis_responses.jsonl")
    assert len(extra) == with_all["analysis_generated"] > 0
    exchanged = {(r["round"], r["participant"], r["id"]) for r in lines(run_dir / "responses.jsonl")}
    assert {(r["round"], r["participant"]) for r in extra} <= {(t, p) for t in (1, 2) for p in ("server", *cfg.clients)}
    # each (round, participant, sample) answered once, and mostly where no answer was exchanged
    assert len({(r["round"], r["participant"], r["id"]) for r in extra}) == len(extra)
    assert len([r for r in extra if (r["round"], r["participant"], r["id"]) not in exchanged]) > len(extra) / 2


@pytest.mark.parametrize("kind", ["random", "disagreement", "correctable"])
def test_matched_selectors_select_the_recorded_size_from_the_same_candidates(base, tmp_path, kind):
    cfg, run_dir, _ = base
    _, run2, saved = smoke_run(tmp_path, kind, f"analysis.selector={kind}", f"analysis.sizes_from={run_dir}")
    public = [x.id for x in load_data(cfg).public]
    mine, theirs = lines(run2 / "selections.jsonl"), lines(run_dir / "selections.jsonl")
    assert [(r["round"], r["pair"], len(r["ids"])) for r in mine] == [(r["round"], r["pair"], len(r["ids"])) for r in theirs]
    for t in (1, 2):
        for pair in ["client1<-server", "client2<-server", "server<-client1", "server<-client2"]:
            seed = cfg.seed + (pair.startswith("server") and 1)  # the server streams D_p in its own order
            batches = candidate_batches(len(public), cfg.lada.n_c, seed, t)
            rows = [r for r in mine if (r["round"], r["pair"]) == (t, pair)]
            assert len(rows) == len(batches)
            for row, cand in zip(rows, batches):
                assert set(row["ids"]) <= {public[i] for i in cand}
    generated = saved["analysis_generated"]
    assert (generated == 0) if kind == "random" else (generated > 0)  # the answers a selector needs, its own
    assert saved["responses_generated"] > 0 and saved["selection_quality"]


def test_a_selector_replaying_a_run_that_does_not_fit_exits_2_and_writes_nothing(base, tmp_path, capsys):
    _, run_dir, _ = base
    args = [*SMOKE, f"output_dir={tmp_path}", "run_name=x", "analysis.selector=random"]
    assert main([*args, f"analysis.sizes_from={run_dir}", "seed=1"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: config key 'analysis.sizes_from': {run_dir} has another seed "
                                               "(0, this run: 1); the candidate batches would differ")
    assert main([*args, f"analysis.sizes_from={run_dir}", "rounds=3"]) == 2
    assert "has 0 selections of round 3, pair client1<-server, not 2" in capsys.readouterr().err
    assert main([*args, f"analysis.sizes_from={tmp_path / 'nope'}"]) == 2
    assert "is not a finished run directory" in capsys.readouterr().err
    assert main([*args, f"analysis.sizes_from={run_dir}", "lada.n_c=8"]) == 2
    assert "has another lada.n_c (16, this run: 8)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_run_written_before_n_c_moved_into_lada_is_replayed_by_its_top_level_n_c(base, tmp_path):
    """A LaDa run whose config.yaml has n_c at the top level (before 2026-12-07) is a source like today's."""
    _, run_dir, _ = base
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    src = OmegaConf.load(old / "config.yaml")
    n_c = src.lada.n_c
    del src["lada"]
    src.n_c = n_c
    OmegaConf.save(src, old / "config.yaml")
    args = [*SMOKE, f"output_dir={tmp_path}", "run_name=x", "analysis.selector=random"]
    assert replay_sizes(load_config([*args, f"analysis.sizes_from={old}"])) == replay_sizes(
        load_config([*args, f"analysis.sizes_from={run_dir}"]))
    src.n_c = 8
    OmegaConf.save(src, old / "config.yaml")
    with pytest.raises(ConfigError, match=r"has another lada.n_c \(8, this run: 16\)"):
        replay_sizes(load_config([*args, f"analysis.sizes_from={old}"]))


def test_all_answers_survive_a_resume(base, tmp_path, monkeypatch):
    """The controls' own answers go into the checkpoint beside the method's state: a run stopped after round 1
    and resumed has round 1's analysis answers too, and the method's results of the uninterrupted run."""
    import ladalit.run as run_mod
    real = run_mod.save_checkpoint

    def stop_after_round_1(run_dir, t, snapshot):
        real(run_dir, t, snapshot)
        if t == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "save_checkpoint", stop_after_round_1)
    with pytest.raises(KeyboardInterrupt):
        smoke_run(tmp_path, "r", "analysis.all_answers=true")
    monkeypatch.setattr(run_mod, "save_checkpoint", real)
    cfg, run_dir, saved = smoke_run(tmp_path, "r", "analysis.all_answers=true", "resume=true")
    for key in ("accuracy", "selection", "selected_per_round", "train"):
        assert saved[key] == base[2][key], key
    assert {r["round"] for r in lines(run_dir / "analysis_responses.jsonl")} == {1, 2}
    assert all(r["random_labelled"] == len(load_data(cfg).public) for r in saved["selection_quality"])


def test_only_the_harness_imports_the_controls():
    """The controls reach a method only as hooks (ladalit.core.hooks): no module but the harness imports them,
    and they do not import the oracle (the harness passes it in)."""
    from tests.demo.test_oracle import ROOT, imports_of
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "ladalit").rglob("*.py")
                   if p.name != "controls.py" and any(n.startswith("ladalit.demo.controls") for n in imports_of(p)))
    assert users == ["ladalit/run.py"]
    assert not any(n.startswith("ladalit.demo.oracle") for n in imports_of(ROOT / "ladalit/demo/controls.py"))
