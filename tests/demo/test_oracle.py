"""The demo world's oracle: labels on hand-made cases, the rows it writes, and that no method can reach it."""
import ast
import json
import math
from pathlib import Path

import pytest

from ladalit.core.config import load_config
from ladalit.core.experiment import load_data
from ladalit.demo.oracle import (LABELS, Oracle, Truth, accuracy_by_domain, label, label_shares, sample_labels,
                                 selection_quality, world_oracle)

ROOT = Path(__file__).resolve().parents[2]


def hand_made() -> Oracle:
    truth = {"s1": Truth("shared", 1, "A"), "s3": Truth("shared", 3, "B"), "s4": Truth("shared", 4, "C"),
             "m1": Truth("market", 1, "D"), "m3": Truth("market", 3, "A"), "k2": Truth("kitchen", 2, "B")}
    return Oracle(truth, {"c1": {"market"}, "c2": {"kitchen"}}, {"c1": 3, "c2": 4, "server": 4}, {"c1": 2, "c2": 2})


def test_useful_labels_on_hand_made_cases():
    o = hand_made()
    # k <- server: shared operations (the server knows them) within what k can learn
    assert [i for i in o.truth if o.useful("c1<-server", i)] == ["s1", "s3"]  # c1 learns up to 3 steps
    assert [i for i in o.truth if o.useful("c2<-server", i)] == ["s1", "s3", "s4"]
    # server <- k: k's own domain (facts only k knows), as long as the chains k was taught
    assert [i for i in o.truth if o.useful("server<-c1", i)] == ["m1"]
    assert [i for i in o.truth if o.useful("server<-c2", i)] == ["k2"]


def test_selection_quality_rows_by_hand():
    o = hand_made()
    public = list(o.truth)
    selected = [{"round": 1, "pair": "c1<-server", "ids": ["s1", "s4"]},
                {"round": 1, "pair": "c1<-server", "ids": ["s3"]},
                {"round": 1, "pair": "server<-c1", "ids": ["m1", "m3"]}]
    responses = [{"round": 1, "participant": "server", "id": "s1", "text": " 1+1=2. The answer is (A)."},
                 {"round": 1, "participant": "server", "id": "s4", "text": " The answer is (A)."},
                 {"round": 1, "participant": "server", "id": "s3", "text": " 2*2=4."},  # no answer: wrong
                 {"round": 1, "participant": "c1", "id": "m1", "text": " The answer is (D)."},
                 {"round": 2, "participant": "c1", "id": "m3", "text": " The answer is (A)."}]  # another round
    rows = selection_quality(o, public, selected, responses)
    old = ("round", "pair", "selected", "precision", "random_precision", "chosen_correct", "chosen_known")
    assert [{k: r[k] for k in old} for r in rows] == [
        {"round": 1, "pair": "c1<-server", "selected": 3, "precision": 2 / 3, "random_precision": 2 / 6,
         "chosen_correct": 1 / 3, "chosen_known": 3},
        {"round": 1, "pair": "server<-c1", "selected": 2, "precision": 1 / 2, "random_precision": 1 / 6,
         "chosen_correct": 1.0, "chosen_known": 1},
    ]


def test_label_partitions_by_the_two_answers_and_reach():
    assert label(True, False, True) == "correctable"
    assert label(True, False, False) == "out_of_reach"
    assert label(True, True, True) == label(True, True, False) == "redundant"
    assert label(False, True, True) == label(False, True, False) == "harmful"
    assert label(False, False, True) == label(False, False, False) == "noise"
    assert {label(a, b, c) for a in (True, False) for b in (True, False) for c in (True, False)} == set(LABELS)


def said(rows: list[tuple[int, str, str, str]]) -> list[dict]:
    return [{"round": t, "participant": p, "id": i, "text": f" so it is ({y})." if y else " no idea"}
            for t, p, i, y in rows]


# round 1: what the server and c1 answered on every public sample (truth: s1 A, s3 B, s4 C, m1 D, m3 A, k2 B)
ROUND1 = said([(1, "server", "s1", "A"), (1, "c1", "s1", "B"),   # server right, c1 wrong, 1 step
               (1, "server", "s3", "B"), (1, "c1", "s3", "C"),   # server right, c1 wrong, 3 steps
               (1, "server", "s4", "C"), (1, "c1", "s4", ""),    # server right, c1 no letter, 4 steps
               (1, "server", "m1", "A"), (1, "c1", "m1", "D"),   # server wrong, c1 right
               (1, "server", "m3", "B"), (1, "c1", "m3", "C"),   # both wrong
               (1, "server", "k2", "B"), (1, "c1", "k2", "B")])  # both right


def test_sample_labels_by_hand():
    o = hand_made()
    answers = {(r["round"], r["participant"], r["id"]): r["text"] for r in ROUND1}
    keys = [(1, "c1<-server", i) for i in ("s1", "s3", "s4", "m1", "m3", "k2")]
    # c1 learns up to 3 steps: s4's right server answer is out of its reach
    assert list(sample_labels(o.truth, keys, answers, o.learnable_steps).values()) == [
        "correctable", "correctable", "out_of_reach", "harmful", "noise", "redundant"]
    # the learnable steps are a parameter: a (measured) table of 1 step for c1 puts s3 out of reach too
    assert list(sample_labels(o.truth, keys, answers, {"c1": 1}).values()) == [
        "correctable", "out_of_reach", "out_of_reach", "harmful", "noise", "redundant"]
    # server <- c1: c1's answer is the chosen one, the server's the rejected one
    back = sample_labels(o.truth, [(1, "server<-c1", i) for i in ("s1", "m1", "k2")], answers, o.learnable_steps)
    assert list(back.values()) == ["harmful", "correctable", "redundant"]
    # another round's answers, or a participant that did not answer, give no label
    missing = [(2, "c1<-server", "s1"), (1, "c2<-server", "s1")]
    assert sample_labels(o.truth, missing, answers, o.learnable_steps) == dict.fromkeys(missing)


def test_label_shares():
    assert label_shares(["noise", None, "redundant", "noise"]) == (
        3, {"correctable": 0.0, "out_of_reach": 0.0, "redundant": 1 / 3, "harmful": 0.0, "noise": 2 / 3})
    n, shares = label_shares([None])
    assert n == 0 and all(math.isnan(v) for v in shares.values()) and list(shares) == list(LABELS)


def test_selection_quality_label_shares_against_random_by_hand():
    o = hand_made()
    public = ["s1", "s3", "s4", "m1", "m3", "k2"]
    selected = [{"round": 1, "pair": "c1<-server", "ids": ["s1", "s3"]},
                {"round": 1, "pair": "c1<-server", "ids": ["s4", "m1"]},
                {"round": 1, "pair": "server<-c1", "ids": ["m1", "s4"]},
                {"round": 2, "pair": "c2<-server", "ids": ["k2"]}]
    responses = ROUND1 + said([(2, "server", "k2", "B")])  # c2 never answered
    rows = {(r["round"], r["pair"]): r for r in selection_quality(o, public, selected, responses)}
    down = rows[(1, "c1<-server")]
    assert (down["labelled"], down["random_labelled"]) == (4, 6)
    assert down["shares"] == {"correctable": 2 / 4, "out_of_reach": 1 / 4, "redundant": 0.0, "harmful": 1 / 4,
                              "noise": 0.0}
    assert down["random_shares"] == {"correctable": 2 / 6, "out_of_reach": 1 / 6, "redundant": 1 / 6,
                                     "harmful": 1 / 6, "noise": 1 / 6}
    up = rows[(1, "server<-c1")]
    assert up["shares"] == {"correctable": 0.5, "out_of_reach": 0.0, "redundant": 0.0, "harmful": 0.5, "noise": 0.0}
    assert up["random_shares"] == {"correctable": 1 / 6, "out_of_reach": 0.0, "redundant": 1 / 6, "harmful": 3 / 6,
                                   "noise": 1 / 6}
    none = rows[(2, "c2<-server")]
    assert none["labelled"] == none["random_labelled"] == 0 and all(math.isnan(v) for v in none["shares"].values())
    # a measured table replaces the oracle's: the server learning nothing puts m1 out of its reach
    up0 = {(r["round"], r["pair"]): r for r in selection_quality(o, public, selected, responses,
                                                                   learnable_steps={"server": 0})}[(1, "server<-c1")]
    assert up0["shares"]["out_of_reach"] == 0.5 and up0["shares"]["correctable"] == 0.0


def test_analysis_answers_complete_the_random_pool_and_the_gold_teacher_is_always_right():
    o = hand_made()
    public = ["s1", "s3", "s4", "m1", "m3", "k2"]
    selected = [{"round": 1, "pair": "c1<-server", "ids": ["s1"]}]
    exchanged = [r for r in ROUND1 if r["id"] == "s1"]  # only the selected sample's answers crossed the channel
    alone = selection_quality(o, public, selected, exchanged)[0]
    assert alone["random_labelled"] == 1 and alone["random_shares"]["correctable"] == 1.0
    # the harness's analysis answers (analysis.all_answers) on the rest of D_p: the random pool is all of it, the
    # selection's own labels stay the exchanged answers' (an exchanged answer wins over an analysis one)
    analysis = [dict(r, text=" so it is (D).") if r["id"] == "s1" else r for r in ROUND1]
    full = selection_quality(o, public, selected, exchanged, analysis_responses=analysis)[0]
    assert full["random_labelled"] == 6 and full["labelled"] == 1 and full["shares"]["correctable"] == 1.0
    assert full["random_shares"] == {"correctable": 2 / 6, "out_of_reach": 1 / 6, "redundant": 1 / 6,
                                     "harmful": 1 / 6, "noise": 1 / 6}
    # the gold teacher: the client learns from the gold answer, right by definition, whatever the server said;
    # the server <- c1 direction keeps the server's own answer as its rejected one
    answers = {(r["round"], r["participant"], r["id"]): r["text"] for r in ROUND1}
    keys = [(1, "c1<-server", i) for i in ("s1", "s3", "s4", "m1", "m3", "k2")]
    assert list(sample_labels(o.truth, keys, answers, o.learnable_steps, gold_teacher=True).values()) == [
        "correctable", "correctable", "out_of_reach", "redundant", "correctable", "redundant"]
    assert sample_labels(o.truth, [(1, "c1<-server", "s1")], {(1, "c1", "s1"): " (B)"}, o.learnable_steps,
                         gold_teacher=True) == {(1, "c1<-server", "s1"): "correctable"}  # no server answer needed
    back = sample_labels(o.truth, [(1, "server<-c1", "m1")], answers, o.learnable_steps, gold_teacher=True)
    assert back == {(1, "server<-c1", "m1"): "correctable"}
    gold = selection_quality(o, public, [{"round": 1, "pair": "c1<-server", "ids": ["m1", "m3"]}], ROUND1,
                             gold_teacher=True)[0]
    assert gold["chosen_correct"] == 1.0 and gold["chosen_known"] == 2
    assert o.label_of("c1<-server", "m1", " (A)", " (D)") == "harmful"
    assert o.label_of("c1<-server", "m1", " (A)", " (B)", gold_teacher=True) == "correctable"
    assert o.label_of("c1<-server", "s4", " (C)", " (B)") == "out_of_reach"
    # the gold clients (analysis.gold_clients): the server learns from the gold answer, and the clients' direction
    # keeps the server's answer as its chosen one
    up = [(1, "server<-c1", i) for i in ("s1", "m1")]
    assert list(sample_labels(o.truth, up, answers, o.learnable_steps).values()) == ["harmful", "correctable"]
    assert list(sample_labels(o.truth, up, answers, o.learnable_steps, gold_clients=True).values()) == [
        "redundant", "correctable"]  # s1: c1's wrong (B) replaced by the gold answer; the server said (A), right
    assert sample_labels(o.truth, [(1, "server<-c1", "m1")], {(1, "server", "m1"): answers[(1, "server", "m1")]},
                         o.learnable_steps, gold_clients=True)[(1, "server<-c1", "m1")] is not None  # no y^k needed
    assert sample_labels(o.truth, keys, answers, o.learnable_steps, gold_clients=True) == sample_labels(
        o.truth, keys, answers, o.learnable_steps)
    back_gold = selection_quality(o, public, [{"round": 1, "pair": "server<-c1", "ids": ["s1", "m1"]}], ROUND1,
                                  gold_clients=True)[0]
    assert back_gold["chosen_correct"] == 1.0 and back_gold["chosen_known"] == 2


def test_reward_auc_by_hand():
    from ladalit.demo.oracle import reward_auc
    o = hand_made()
    # c1 <- server in round 1: s1, s3 correctable, m1 harmful, m3 noise, k2 redundant (ROUND1)
    rewards = [{"round": 1, "pair": "c1<-server", "id": i, "r_total": r, "predicted": u}
               for i, r, u in (("s1", 0.7, 0.2), ("s3", 0.4, 0.9), ("m1", 0.5, 0.1), ("m3", 0.3, 0.9),
                               ("k2", 0.6, 0.5))]
    rewards.append({"round": 1, "pair": "c2<-server", "id": "s1", "r_total": 0.5, "predicted": 0.5})  # c2: no answer
    rows = {(r["round"], r["pair"]): r for r in reward_auc(o, rewards, ROUND1)}
    row = rows[(1, "c1<-server")]
    assert (row["n"], row["labelled"], row["correctable"], row["harmful"]) == (5, 5, 2, 1)
    # r_total: correctable {0.7, 0.4} against harmful {0.5}: one win of two
    assert row["auc_r_total"] == 0.5
    # U^p: {0.2, 0.9} against {0.1}: two wins of two
    assert row["auc_predicted"] == 1.0
    # against the rest {m1 0.5, m3 0.3, k2 0.6}: 0.7 beats all three, 0.4 beats 0.3 only: 4 of 6
    assert row["auc_r_total_rest"] == pytest.approx(4 / 6)
    # U^p against {0.1, 0.9, 0.5}: 0.2 beats 0.1; 0.9 beats 0.1 and 0.5, ties 0.9: 3.5 of 6
    assert row["auc_predicted_rest"] == pytest.approx(3.5 / 6)
    none = rows[(1, "c2<-server")]
    assert none["labelled"] == 0 and math.isnan(none["auc_r_total"]) and math.isnan(none["auc_predicted_rest"])


def test_accuracy_by_domain_by_hand():
    o = hand_made()
    preds = [{"round": 0, "participant": "c1", "shots": 0, "id": "m1", "gold": "D", "parsed": "D"},
             {"round": 0, "participant": "c1", "shots": 0, "id": "m1", "gold": "D", "parsed": None},
             {"round": 0, "participant": "c1", "shots": 0, "id": "s3", "gold": "B", "parsed": "B"},
             {"round": 0, "participant": "c1", "shots": 0, "id": "not-synthetic", "gold": "B", "parsed": "B"}]
    assert accuracy_by_domain(o.truth, preds) == [
        {"round": 0, "participant": "c1", "shots": 0, "domain": "market", "steps": 1, "n": 2, "accuracy": 0.5},
        {"round": 0, "participant": "c1", "shots": 0, "domain": "shared", "steps": 3, "n": 1, "accuracy": 1.0}]


def test_methods_get_no_oracle_label():
    """What the split hands the methods has no domain, and the public set no answer; the truth (after the
    options were shuffled) is only the oracle's."""
    cfg = load_config(["conf=smoke.yaml", "quiet=true"])
    data = load_data(cfg)
    oracle = world_oracle(cfg)
    for c in data.clients:
        for x in c.train + c.test:
            assert x.domain == "default" and x.rationale is None
            assert oracle.truth[x.id].gold == x.answer
    assert all(x.domain == "default" and x.answer is None and x.rationale is None for x in data.public)
    assert {oracle.truth[x.id].domain for x in data.public} > {"shared"}
    assert world_oracle(load_config(["conf=smoke.yaml", "data.name=aqua", "data.path=x.jsonl"])) is None


def test_world_oracle_learnable_steps_default_and_replaced():
    cfg = load_config(["conf=demo.yaml", "quiet=true"])
    assert world_oracle(cfg).learnable_steps == {"server": 4, "client1": 4, "client2": 4, "client3": 3}  # the zoo's
    assert world_oracle(cfg, {"client1": 2}).learnable_steps == {"server": 4, "client1": 2, "client2": 4,
                                                                 "client3": 3}
    with pytest.raises(ValueError, match="learnable_steps names client9, not a participant"):
        world_oracle(cfg, {"client9": 2})


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_only_the_harness_imports_the_oracle():
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "ladalit").rglob("*.py")
                   if p.name != "oracle.py" and any(n.startswith("ladalit.demo.oracle") for n in imports_of(p)))
    # the harness of each engine: the in-process run, and a deployment's server and its sites' reports (a
    # site scores its own predictions per domain); never a method's roles
    assert users == ["ladalit/federation/server.py", "ladalit/federation/site.py", "ladalit/run.py"]


def check_selection_quality(cfg, run_dir):
    """A finished smoke LaDa run's oracle rows agree with its selections.jsonl and responses.jsonl (called by
    tests/test_run.py's LaDa smoke test, which pays for the run)."""
    saved = json.loads((run_dir / "results.json").read_text())
    rows = saved["selection_quality"]
    assert {(r["round"], r["pair"], r["selected"]) for r in rows} == \
        {(s["round"], s["pair"], s["selected"]) for s in saved["selected_per_round"]}
    oracle = world_oracle(cfg)
    public = [x.id for x in load_data(cfg).public]
    chosen = [json.loads(line) for line in (run_dir / "selections.jsonl").read_text().splitlines()]
    said = {(r["round"], r["participant"], r["id"]): r["text"]
            for r in map(json.loads, (run_dir / "responses.jsonl").read_text().splitlines())}
    for row in rows:
        ids = [i for c in chosen if (c["round"], c["pair"]) == (row["round"], row["pair"]) for i in c["ids"]]
        assert len(ids) == row["selected"] > 0
        assert row["precision"] == pytest.approx(sum(oracle.useful(row["pair"], i) for i in ids) / len(ids))
        assert row["random_precision"] == pytest.approx(sum(oracle.useful(row["pair"], i) for i in public) / len(public))
        teacher = row["pair"].split("<-")[1]
        assert row["chosen_known"] == len(ids)  # every chosen answer was exchanged and recorded
        assert all((row["round"], teacher, i) in said for i in ids)
        # the labels: both answers of every selected sample were exchanged, so every one has a label
        labels = sample_labels(oracle.truth, [(row["round"], row["pair"], i) for i in ids], said,
                               oracle.learnable_steps, cfg.data.num_options)
        assert row["labelled"] == len(ids) and None not in labels.values()
        assert row["shares"] == pytest.approx(label_shares(labels.values())[1])
        assert len(ids) <= row["random_labelled"] <= len(public)
        assert sum(row["random_shares"].values()) == pytest.approx(1.0)
    # every participant's evaluation is in accuracy_by_domain (the server's on the union of the clients' tests)
    assert {r["participant"] for r in saved["accuracy_by_domain"]} == {"server", *cfg.clients}
    assert (run_dir / "selection_quality.png").stat().st_size > 0
    by_domain = saved["accuracy_by_domain"]
    assert sum(r["n"] for r in by_domain) == sum(r["n"] for r in saved["accuracy"])


def test_run_oracle_uses_the_measured_learnable_steps(tmp_path, monkeypatch):
    """analysis.learnable_steps (precondition c's measured table) is what the run's oracle labels with."""
    from ladalit.demo import oracle
    from ladalit.run import main
    seen, real = [], oracle.world_oracle
    monkeypatch.setattr(oracle, "world_oracle", lambda cfg, steps=None: seen.append(steps) or real(cfg, steps))
    args = ["conf=smoke.yaml", f"output_dir={tmp_path}", "quiet=true", "rounds=1"]
    assert main([*args, "run_name=measured", "analysis.learnable_steps.client1=1"]) == 0
    assert main([*args, "run_name=asserted"]) == 0
    assert seen == [{"client1": 1}, None]  # one oracle report per run; without the key, the zoo's values
