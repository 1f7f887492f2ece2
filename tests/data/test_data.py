"""Loaders (AQuA / CommonsenseQA files, hub-schema fixtures, malformed input) and the federated split.

The AQuA and CommonsenseQA tests run on the project's own fixture files (tests/fixtures_data.py), and
again on the real shipped files in ../shared/data when that directory exists beside the repository
(those cases are marked `shared_data`: `pytest -m shared_data` runs only them)."""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from ladalit.data.loaders import LOADERS, load_aqua, load_commonsenseqa, load_cot_collection, load_mathinstruct, \
    load_records, parse_options
from ladalit.data.records import LETTERS, DataError, MCRecord
from ladalit.data.split import ClientData, FederatedData, domain_groups, drop_short, federated_split, normalise_options
from tests.fixtures_data import AQUA_ROWS, CSQA_CONCEPTS, CSQA_ROWS, write_aqua, write_commonsenseqa
from tests.fixtures_hub import COT_ROWS, MATHINSTRUCT_ROWS, write_cot_collection, write_jsonl, write_mathinstruct

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# the real files, where a checkout has ../shared/data beside it (not in a fresh clone)
SHARED = [pytest.mark.shared_data, pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no {SHARED_DATA}")]
SOURCES = ["fixture", pytest.param("shared", marks=SHARED)]
ROWS = {("aqua", "fixture"): AQUA_ROWS, ("aqua", "shared"): 254,
        ("csqa", "fixture"): CSQA_ROWS, ("csqa", "shared"): 9741}


def raw_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module", params=SOURCES)
def aqua_path(request, tmp_path_factory) -> Path:
    if request.param == "shared":
        return SHARED_DATA / "aqua" / "dev.jsonl"
    return write_aqua(tmp_path_factory.mktemp("aqua") / "dev.jsonl")


@pytest.fixture(scope="module", params=SOURCES)
def csqa_path(request, tmp_path_factory) -> Path:
    if request.param == "shared":
        return SHARED_DATA / "commonsenseqa" / "train.jsonl"
    return write_commonsenseqa(tmp_path_factory.mktemp("csqa") / "train.jsonl")


@pytest.fixture(scope="module")
def csqa(csqa_path) -> list[MCRecord]:
    return load_commonsenseqa(str(csqa_path))


@pytest.fixture(scope="module")
def aqua(aqua_path) -> list[MCRecord]:
    return load_aqua(str(aqua_path))


def source_of(path: Path) -> str:
    return "shared" if SHARED_DATA in path.parents else "fixture"


# ------------------------------------------------------------------ AQuA and CommonsenseQA files

def test_fixture_files_cover_what_the_split_tests_need():
    """The fixture is big enough for every split below, and its questions are distinct."""
    from tests.fixtures_data import aqua_rows, csqa_rows
    aq, cs = aqua_rows(), csqa_rows()
    assert len({r["question"] for r in aq}) == len(aq) == AQUA_ROWS >= 3 * (40 + 20) + 60
    assert len({r["question"]["stem"] for r in cs}) == len(cs) == CSQA_ROWS >= 3 * (300 + 100) + 300
    assert Counter(r["question"]["question_concept"] for r in cs) == {c: CSQA_ROWS // 12 for c in CSQA_CONCEPTS}
    assert all(len(set(r["options"])) == 5 for r in aq)
    assert all(len({c["text"] for c in r["question"]["choices"]}) == 5 for r in cs)


def test_aqua_file(aqua, aqua_path):
    raw = raw_rows(aqua_path)
    assert len(aqua) == len(raw) == ROWS[("aqua", source_of(aqua_path))]
    first = aqua[0]
    assert first.id == "aqua-dev-1" and first.domain == "aqua"
    assert first.question == raw[0]["question"].strip()
    assert first.options == tuple(o.split(")", 1)[1].strip() for o in raw[0]["options"])
    assert first.answer == raw[0]["correct"] and first.rationale == raw[0]["rationale"].strip()
    assert len({r.id for r in aqua}) == len(aqua)
    for rec, row in zip(aqua, raw):
        assert rec.answer in LETTERS[: len(rec.options)]
        gold = next(o for o in row["options"] if o.startswith(row["correct"] + ")"))
        assert rec.gold_text == gold.split(")", 1)[1].strip()
        assert rec.rationale  # every AQuA row has a rationale, kept


def test_commonsenseqa_file(csqa, csqa_path):
    raw = raw_rows(csqa_path)
    assert len(csqa) == len(raw) == ROWS[("csqa", source_of(csqa_path))]
    first, row = csqa[0], raw[0]
    assert first.id == row["id"] and first.question == row["question"]["stem"].strip()
    assert first.domain == row["question"]["question_concept"]
    assert first.options == tuple(c["text"] for c in row["question"]["choices"])
    assert first.answer == row["answerKey"] and first.rationale is None
    for rec, row in zip(csqa, raw):
        gold = next(c["text"] for c in row["question"]["choices"] if c["label"] == row["answerKey"])
        assert rec.answer in LETTERS[: len(rec.options)] and rec.gold_text == gold


def test_load_records_dispatch_and_unknown_name(aqua_path):
    assert load_records("aqua", str(aqua_path)) == load_aqua(str(aqua_path))
    with pytest.raises(ValueError) as e:
        load_records("nope", str(aqua_path))
    assert "'nope'" in str(e.value)
    for name in LOADERS:
        assert name in str(e.value)


# ------------------------------------------------------- hub schemas, offline

def test_mathinstruct_fixture(tmp_path, caplog):
    path = write_mathinstruct(tmp_path)
    with caplog.at_level(logging.INFO, logger="ladalit.data.loaders"):
        recs = load_mathinstruct(path, None, "train")
    expected = [(i, e) for i, (_, e) in enumerate(MATHINSTRUCT_ROWS, 1) if e is not None]
    assert [r.id for r in recs] == [f"mathinstruct-{i}" for i, _ in expected]
    for rec, (i, (question, options, gold, domain)) in zip(recs, expected):
        row = MATHINSTRUCT_ROWS[i - 1][0]
        assert (rec.question, rec.options, rec.answer, rec.domain) == (question, options, gold, domain)
        assert rec.rationale == row["output"][: row["output"].rfind("The answer is")].strip()
        assert "The answer is" not in rec.rationale
    skipped = len(MATHINSTRUCT_ROWS) - len(expected)
    assert f"kept {len(recs)} multiple-choice items, skipped {skipped}" in caplog.text


def test_cot_collection_fixture(tmp_path, caplog):
    path = write_cot_collection(tmp_path)
    with caplog.at_level(logging.INFO, logger="ladalit.data.loaders"):
        recs = load_records("cot_collection", path, None, "train")
    expected = [(i, e) for i, (_, e) in enumerate(COT_ROWS, 1) if e is not None]
    assert [r.id for r in recs] == [f"cot-{i}" for i, _ in expected]
    for rec, (i, (question, options, gold, domain)) in zip(recs, expected):
        row = COT_ROWS[i - 1][0]
        assert (rec.question, rec.options, rec.answer, rec.domain) == (question, options, gold, domain)
        assert rec.domain == row["task"] and rec.rationale == row["rationale"]
    skipped = len(COT_ROWS) - len(expected)
    assert f"kept {len(recs)} multiple-choice items, skipped {skipped}" in caplog.text


@pytest.mark.parametrize("text, question, options, lettered", [
    ("Q?\nOptions:\n- a\n- b\n- c", "Q?", ["a", "b", "c"], False),
    ("Q?\nChoose your answer from:\n + x y\n + z", "Q?", ["x y", "z"], False),
    ("Options:\n- a\n- b\nQ: which?", "Q: which?", ["a", "b"], False),
    ("Q? Answer Choices: (A) 1 (B) 2 (C) 3", "Q?", ["1", "2", "3"], True),
    ("Q?\n(A). one\n(B). two\nAnswer:", "Q?\nAnswer:", ["one", "two"], True),
    ("Q? A) red B) green", "Q?", ["red", "green"], True),
    ("Q?\nA: first\nB: second", "Q?", ["first", "second"], True),
    ("Plain question with no options? See (A) only.", None, None, None),
    ("A list:\n- only one", None, None, None),
])
def test_parse_options_formats(text, question, options, lettered):
    got = parse_options(text)
    if question is None:
        assert got is None
    else:
        assert got == (question, options, lettered)


def test_hub_ids_and_split_reach_load_dataset(monkeypatch):
    import datasets

    calls = []
    rows = {
        "TIGER-Lab/MathInstruct": [r for r, _ in MATHINSTRUCT_ROWS],
        "tau/commonsense_qa": [{"id": "q1", "question": "Where do fish live?", "question_concept": "fish",
                                "choices": {"label": ["A", "B", "C", "D"], "text": ["sea", "sky", "sand", "shop"]},
                                "answerKey": "A"}],
        "deepmind/aqua_rat": [{"question": "1+1?", "options": ["A)1", "B)2", "C)3", "D)4"], "rationale": "1+1=2",
                               "correct": "B"}],
    }

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return rows[name]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(load_mathinstruct(None, None, "train")) == sum(e is not None for _, e in MATHINSTRUCT_ROWS)
    csqa = load_commonsenseqa(None, None, "validation")
    assert csqa == [MCRecord("q1", "Where do fish live?", ("sea", "sky", "sand", "shop"), "A", None, "fish")]
    aqua = load_aqua(None, None, "test")
    assert aqua[0].id == "aqua-test-1" and aqua[0].gold_text == "2"
    assert calls == [("TIGER-Lab/MathInstruct", None, "train"), ("tau/commonsense_qa", None, "validation"),
                     ("deepmind/aqua_rat", "raw", "test")]
    bad = dict(MATHINSTRUCT_ROWS[0][0], output="So it is 60.\nThe answer is F.")
    rows["my/mirror"] = [MATHINSTRUCT_ROWS[1][0], bad]
    with pytest.raises(DataError) as e:
        load_mathinstruct(None, "my/mirror", "train")
    assert str(e.value) == "my/mirror:2: field 'output': gold letter 'F' not among options ABCDE"


# ------------------------------------------------------------ malformed input

CSQA_ROW = {"answerKey": "B", "id": "x", "question": {
    "question_concept": "dog", "stem": "What barks?",
    "choices": [{"label": L, "text": t} for L, t in zip("ABCDE", ["cat", "dog", "fish", "bird", "cow"])]}}


@pytest.mark.parametrize("bad_line, field, problem", [
    ('{"id": "x", "answerKey": "F", "question": ' + json.dumps(CSQA_ROW["question"]) + "}",
     "answerKey", "gold letter 'F' not among options ABCDE"),
    ("this is not json", "(json)", "invalid JSON: Expecting value at column 1"),
    ("[1, 2]", "(json)", "expected a JSON object, got list"),
    (json.dumps({"id": "x", "answerKey": "A", "question": {"choices": CSQA_ROW["question"]["choices"]}}),
     "question.stem", "missing"),
    (json.dumps({**CSQA_ROW, "answerKey": 2}), "answerKey", "expected a string, got int"),
    (json.dumps({**CSQA_ROW, "question": {**CSQA_ROW["question"], "choices": [
        {"label": "A", "text": "cat"}, {"label": "B", "text": "dog"}, {"label": "C", "text": "  "}]}}),
     "question.choices", "option C is empty"),
    (json.dumps({**CSQA_ROW, "question": {**CSQA_ROW["question"], "choices": [
        {"label": "A", "text": "cat"}, {"label": "C", "text": "dog"}]}}),
     "question.choices", "labels 'AC' are not 'AB'"),
])
def test_commonsenseqa_malformed(tmp_path, bad_line, field, problem):
    path = tmp_path / "bad.jsonl"
    # line 1 good, line 2 blank (skipped, still counted), line 3 bad
    path.write_text(json.dumps(CSQA_ROW) + "\n\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_commonsenseqa(str(path))
    assert str(e.value) == f"{path}:3: field '{field}': {problem}"
    assert (e.value.source, e.value.line, e.value.field) == (str(path), 3, field)


AQUA_ROW = {"question": "2+2?", "options": ["A)3", "B)4", "C)5", "D)6", "E)7"], "rationale": "2+2=4", "correct": "B"}


@pytest.mark.parametrize("change, field, problem", [
    ({"correct": "F"}, "correct", "gold letter 'F' not among options ABCDE"),
    ({"options": ["A)3", "B)4", "C)", "D)6"]}, "options", "option C is empty"),
    ({"options": ["A)3", "B)4", "C 5"]}, "options", "option 3 'C 5' is not 'C)<text>'"),
    ({"options": "A)3 B)4"}, "options", "expected a list, got str"),
    ({"question": ""}, "question", "empty"),
    ({"correct": None}, "correct", "missing"),
])
def test_aqua_malformed(tmp_path, change, field, problem):
    path = write_jsonl(tmp_path / "bad.jsonl", [AQUA_ROW, AQUA_ROW, {**AQUA_ROW, **change}])
    with pytest.raises(DataError) as e:
        load_aqua(path)
    assert str(e.value) == f"{path}:3: field '{field}': {problem}"


@pytest.mark.parametrize("change, field, problem", [
    ({"output": "60 km/h.\nThe answer is F."}, "output", "gold letter 'F' not among options ABCDE"),
    ({"output": "Hmm.\nThe answer is 75"}, "output", "answer '75' is neither an option letter nor an option text"),
    ({"instruction": "Speed?\nAnswer Choices: (A) 40 (B) 50 (C)  (D) 70"}, "instruction", "option C is empty"),
    ({"instruction": "Speed?\nAnswer Choices: 40, 50 or 60"}, "instruction",
     "'Answer Choices' not followed by options '(A) … (B) …'"),
    ({"output": None}, "output", "missing"),
])
def test_mathinstruct_malformed(tmp_path, change, field, problem):
    good = [r for r, e in MATHINSTRUCT_ROWS[:2]]
    path = write_mathinstruct(tmp_path, good + [{**MATHINSTRUCT_ROWS[0][0], **change}])
    with pytest.raises(DataError) as e:
        load_mathinstruct(path, None, "train")
    assert str(e.value) == f"{path}:3: field '{field}': {problem}"


@pytest.mark.parametrize("row, field, problem", [
    ({"source": "Q?\nAnswer Choices: (A) a (B) b (C) c (D) d", "target": "E"}, "target",
     "gold letter 'E' not among options ABCD"),
    ({"source": "Q?\nOptions:\n- sea\n- sky", "target": "mountain"}, "target",
     "answer 'mountain' is neither an option letter nor an option text"),
    ({"source": "Q?\nOptions:\n- sea\n- \n- sky", "target": "sea"}, "source", "option B is empty"),
    ({"source": "Options:\n- sea\n- sky", "target": "sea"}, "source", "no question text besides the options"),
    ({"source": "Q?\nOptions:\n- sea\n- sky", "target": "sea", "task": None}, "task", "missing"),
])
def test_cot_collection_malformed(tmp_path, row, field, problem):
    good = [r for r, _ in COT_ROWS[:2]]
    path = write_cot_collection(tmp_path, good + [{**COT_ROWS[0][0], **row}])
    with pytest.raises(DataError) as e:
        load_cot_collection(path, None, "train")
    assert str(e.value) == f"{path}:3: field '{field}': {problem}"


def test_cot_target_matching_is_case_and_space_insensitive(tmp_path):
    row = {**COT_ROWS[0][0], "target": "  Desert. "}
    rec, = load_cot_collection(write_cot_collection(tmp_path, [row]), None, "train")
    assert rec.answer == "B" and rec.gold_text == "desert"


# ----------------------------------------------------------- normalise_options

def test_normalise_options_commonsenseqa(csqa):
    norm = normalise_options(csqa, num_options=4, seed=0)
    assert len(norm) == len(csqa)
    counts = Counter(r.answer for r in norm)
    assert set(counts) == set("ABCD")
    assert max(counts.values()) - min(counts.values()) <= 1
    for letter in "ABCD":
        assert abs(counts[letter] / len(norm) - 0.25) <= 0.02
    for old, new in zip(csqa, norm):
        assert new.gold_text == old.gold_text and new.id == old.id and new.domain == old.domain
        assert len(new.options) == 4 and len(set(new.options)) == 4
        assert set(new.options) <= set(old.options)
    assert normalise_options(csqa, 4, seed=0) == norm
    other = normalise_options(csqa, 4, seed=1)
    assert other != norm and [r.gold_text for r in other] == [r.gold_text for r in norm]


def test_normalise_options_positions_not_tied_to_source_positions(aqua):
    norm = normalise_options(aqua, 4, seed=3)
    moved = sum(a.answer != b.answer for a, b in zip(aqua, norm))
    assert moved > len(aqua) // 2
    assert [r.rationale for r in norm] == [r.rationale for r in aqua]


def test_normalise_options_errors_and_drop_short():
    three = MCRecord("r3", "q", ("a", "b", "c"), "A")
    dup = MCRecord("dup", "q", ("a", "b", "a", "b"), "A")
    with pytest.raises(DataError) as e:
        normalise_options([three])
    assert str(e.value) == "normalise_options: field 'options': record r3 has 3 options, needs at least 4"
    with pytest.raises(DataError) as e:
        normalise_options([dup])
    assert str(e.value) == "normalise_options: field 'options': record dup has 1 distinct distractors, needs 3"
    with pytest.raises(DataError) as e:
        normalise_options([MCRecord("p", "q", ("a", "b", "c", "d"))])
    assert str(e.value) == "normalise_options: field 'answer': record p has no gold letter"
    ok = MCRecord("ok", "q", ("a", "b", "c", "d", "e"), "E")
    assert drop_short([three, dup, ok]) == [ok]
    assert normalise_options(drop_short([three, ok]))[0].gold_text == "e"


# ------------------------------------------------------------ federated_split

def ids(recs: list[MCRecord]) -> list[str]:
    return [r.id for r in recs]


def all_ids(fed: FederatedData) -> list[str]:
    return [i for c in fed.clients for i in ids(c.train) + ids(c.test)] + ids(fed.public)


def test_federated_split_sizes_disjoint_private_public(aqua):
    fed = federated_split(aqua, num_clients=3, train_per_client=40, test_per_client=20, public_size=60, seed=0)
    assert isinstance(fed, FederatedData) and all(isinstance(c, ClientData) for c in fed.clients)
    assert [(len(c.train), len(c.test)) for c in fed.clients] == [(40, 20)] * 3 and len(fed.public) == 60
    every = all_ids(fed)
    assert len(every) == len(set(every)) == 3 * 60 + 60
    by_id = {r.id: r for r in aqua}
    for c in fed.clients:
        for r in c.train + c.test:
            assert r.answer == by_id[r.id].answer is not None and r.rationale is None
    for r in fed.public:
        assert r.answer is None and r.rationale is None and r.options == by_id[r.id].options


def test_federated_split_deterministic_by_seed(csqa):
    args = dict(num_clients=3, train_per_client=100, test_per_client=50, public_size=100)
    a = federated_split(csqa, seed=7, **args)
    assert a == federated_split(csqa, seed=7, **args)
    assert all_ids(a) != all_ids(federated_split(csqa, seed=8, **args))


def test_federated_split_domain_skew(csqa):
    groups = domain_groups(csqa, 3)
    assert sorted(d for g in groups for d in g) == sorted({r.domain for r in csqa})
    args = dict(num_clients=3, train_per_client=300, test_per_client=100, public_size=300, seed=0)
    full = federated_split(csqa, domain_skew=1.0, **args)
    domain = {r.id: r.domain for r in csqa}  # the split hands out records without their domain label
    assert all(r.domain == "default" for c in full.clients for r in c.train + c.test)
    doms = [{domain[r.id] for r in c.train + c.test} for c in full.clients]
    for k in range(3):
        assert doms[k] <= groups[k]
        for j in range(k + 1, 3):
            assert not doms[k] & doms[j]
    half = federated_split(csqa, domain_skew=0.5, **args)
    iid = federated_split(csqa, domain_skew=0.0, **args)
    for k in range(3):
        own_half = sum(domain[r.id] in groups[k] for r in half.clients[k].train + half.clients[k].test)
        own_iid = sum(domain[r.id] in groups[k] for r in iid.clients[k].train + iid.clients[k].test)
        assert own_half >= 200 and own_iid < own_half
        assert not (set(ids(half.clients[k].train)) & set(ids(half.clients[k].test)))
    every = all_ids(half)
    assert len(every) == len(set(every))


def test_shared_domain_is_dealt_to_no_client():
    recs = [MCRecord(f"r{i}", "q", ("a", "b", "c", "d"), "A", None, d)
            for i, d in enumerate(["shared"] * 20 + ["x"] * 10 + ["y"] * 10)]
    assert domain_groups(recs, 2) == [{"x"}, {"y"}]
    fed = federated_split(recs, 2, 4, 2, 10, seed=0, domain_skew=1.0)
    domain = {r.id: r.domain for r in recs}
    assert [{domain[r.id] for r in c.train + c.test} for c in fed.clients] == [{"x"}, {"y"}]
    assert {domain[r.id] for r in fed.public} <= {"shared", "x", "y"}


def test_public_set_is_drawn_from_everything_left_after_a_skewed_split():
    """With domain_skew=1 the clients take their own domains' first records in the shuffled order; the public
    set is a fresh draw from what is left, so it keeps the left-over mix (it once took the next records in
    that order, 91% of them from the one domain no client takes)."""
    recs = [MCRecord(f"r{i}", "q", ("a", "b", "c", "d"), "A", None, ["shared", "x", "y", "z"][i % 4])
            for i in range(4000)]
    fed = federated_split(recs, 3, 200, 100, 600, seed=0, domain_skew=1.0)
    domain = {r.id: r.domain for r in recs}
    share = sum(domain[r.id] == "shared" for r in fed.public) / 600
    assert abs(share - 1000 / 3100) < 0.06  # 1000 shared of the 3100 left


def test_federated_split_not_enough_records(aqua):
    assert len(aqua) < 550
    with pytest.raises(ValueError) as e:
        federated_split(aqua, 3, 100, 50, 100, seed=0)
    assert str(e.value) == ("federated_split needs 550 records (3 clients x (100 train + 50 test) + 100 public), "
                            f"got {len(aqua)}")
    recs = [MCRecord(f"r{i}", "q", ("a", "b", "c", "d"), "A", None, "x" if i < 3 else "y") for i in range(40)]
    with pytest.raises(ValueError) as e:
        federated_split(recs, 2, 4, 1, 5, seed=0, domain_skew=1.0)
    assert str(e.value) == "domain_skew=1.0 needs 5 records from client 0's 1 domains, there are 3"
    with pytest.raises(ValueError, match="domain_skew must be in"):
        federated_split(recs, 2, 4, 1, 5, seed=0, domain_skew=1.5)
    with pytest.raises(ValueError, match="not unique"):
        federated_split(recs + recs[:1], 2, 4, 1, 5, seed=0)
