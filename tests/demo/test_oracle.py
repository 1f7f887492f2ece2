"""The demo world's oracle: labels on hand-made cases, the rows it writes, and that no method can reach it."""
import ast
import json
from pathlib import Path

import pytest

from ladalit.core.config import load_config
from ladalit.core.experiment import load_data
from ladalit.demo.oracle import Oracle, Truth, accuracy_by_domain, selection_quality, world_oracle

ROOT = Path(__file__).resolve().parents[2]


def hand_made() -> Oracle:
    truth = {"s1": Truth("shared", 1, "A"), "s3": Truth("shared", 3, "B"), "s4": Truth("shared", 4, "C"),
             "m1": Truth("market", 1, "D"), "m3": Truth("market", 3, "A"), "k2": Truth("kitchen", 2, "B")}
    return Oracle(truth, {"c1": {"market"}, "c2": {"kitchen"}}, {"c1": 3, "c2": 4}, {"c1": 2, "c2": 2})


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
    assert rows == [
        {"round": 1, "pair": "c1<-server", "selected": 3, "precision": 2 / 3, "random_precision": 2 / 6,
         "chosen_correct": 1 / 3, "chosen_known": 3},
        {"round": 1, "pair": "server<-c1", "selected": 2, "precision": 1 / 2, "random_precision": 1 / 6,
         "chosen_correct": 1.0, "chosen_known": 1},
    ]


def test_accuracy_by_domain_by_hand():
    o = hand_made()
    preds = [{"round": 0, "participant": "c1", "shots": 0, "id": "m1", "gold": "D", "parsed": "D"},
             {"round": 0, "participant": "c1", "shots": 0, "id": "m1", "gold": "D", "parsed": None},
             {"round": 0, "participant": "c1", "shots": 0, "id": "s3", "gold": "B", "parsed": "B"},
             {"round": 0, "participant": "c1", "shots": 0, "id": "not-synthetic", "gold": "B", "parsed": "B"}]
    assert accuracy_by_domain(o, preds) == [
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
    assert users == ["ladalit/run.py"]


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
    assert (run_dir / "selection_quality.png").stat().st_size > 0
    by_domain = saved["accuracy_by_domain"]
    assert sum(r["n"] for r in by_domain) == sum(r["n"] for r in saved["accuracy"])
