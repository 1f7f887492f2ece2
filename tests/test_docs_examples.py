"""The code of docs/extending.md is docs/examples/*.py (the page includes the files): each runs on smoke here, so
the page cannot drift from the API."""
import csv
import json
from pathlib import Path

import pytest

from ladalit.core import config as C
from ladalit.core.config import load_config
from ladalit.core.prompts import DATA_FAMILY
from ladalit.data import loaders
from ladalit.data.records import DataError
from ladalit.demo import synthetic
from ladalit.registry import METHODS
from ladalit.run import execute

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture
def examples(monkeypatch):
    """docs/examples on sys.path, as the page's commands put it (PYTHONPATH=docs/examples)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


def smoke(tmp_path, *overrides, name="r"):
    cfg = load_config(["conf=smoke.yaml", f"output_dir={tmp_path}", f"run_name={name}", "quiet=true",
                       "eval.shots=[0]", *overrides])
    run_dir, _ = execute(cfg, quiet=True)
    return json.loads((run_dir / "results.json").read_text())


def test_the_page_includes_every_example_file():
    page = (ROOT / "docs" / "extending.md").read_text()
    for f in sorted(EXAMPLES.glob("*.py")):
        assert f'--8<-- "docs/examples/{f.name}"' in page, f.name


def test_wide_filter_example_is_the_filter_lada_trains(tmp_path, examples, monkeypatch):
    import wide_filter
    calls = []
    forward = wide_filter.WideExploit.forward
    monkeypatch.setattr(wide_filter.WideExploit, "forward", lambda self, x: calls.append(x.shape) or forward(self, x))
    widths = []
    init = wide_filter.WideExploit.__init__
    monkeypatch.setattr(wide_filter.WideExploit, "__init__", lambda self, d, width: widths.append(width) or init(self, d, width))
    saved = smoke(tmp_path, "rounds=1", "filter_net.class_path=wide_filter:WideFilter", "filter_net.init_args.width=24")
    assert calls and all(len(s) == 2 for s in calls)  # the filter's fits and scores went through WideExploit
    assert widths and set(widths) == {24}  # its own setting, from the config's init_args
    assert {r["round"] for r in saved["accuracy"]} == {0, 1}


def test_decay_example_runs_as_a_registered_method_and_resumes(tmp_path, examples, monkeypatch):
    # the one line the page adds to ladalit/registry.py; the config takes its allowed values from it at import
    monkeypatch.setitem(METHODS, "decay", "decay:ROLES")
    monkeypatch.setitem(C.CHOICES, "method", (*C.CHOICES["method"], "decay"))
    import ladalit.baselines.standalone as standalone
    epochs = []
    sft = standalone.supervised_finetune

    def spy(fabric, participant, optimizer, prompts, responses, n_epochs, *args, **kwargs):
        epochs.append(n_epochs)
        return sft(fabric, participant, optimizer, prompts, responses, n_epochs, *args, **kwargs)

    monkeypatch.setattr(standalone, "supervised_finetune", spy)
    fresh = smoke(tmp_path, "method=decay", "rounds=2", name="fresh")
    cfg_clients = list(fresh["config"]["clients"])
    assert epochs == [4, 4, 2, 2]  # two clients, 4 epochs in round 1, then halved
    assert fresh["config"]["method"] == "decay" and {r["round"] for r in fresh["accuracy"]} == {0, 1, 2}
    # nothing crossed the channel but each round's start (LocalRound) and the clients' Ready
    assert {(r["round"], r["client"]) for r in fresh["communication"]} == {(t, k) for t in (1, 2) for k in cfg_clients}
    assert all(r["bytes"] < 100 and r["answers_sent"] == 0 for r in fresh["communication"])
    epochs.clear()
    smoke(tmp_path, "method=decay", "rounds=1", name="resumed")
    resumed = smoke(tmp_path, "method=decay", "rounds=2", "resume=true", name="resumed")
    assert epochs == [4, 4, 2, 2]  # the checkpoint carried `epochs`
    key = lambda r: (r["round"], r["participant"], r["shots"])  # noqa: E731
    assert sorted((key(r), r["accuracy"]) for r in resumed["accuracy"]) == \
        sorted((key(r), r["accuracy"]) for r in fresh["accuracy"])


def write_csv(path: Path, n: int) -> None:
    records, seen = [], set()
    for r in synthetic.generate(synthetic.SyntheticConfig(num_records=3 * n, min_steps=1, max_steps=2, seed=7)):
        if r.question not in seen:
            seen.add(r.question)
            records.append(r)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "A", "B", "C", "D", "answer"])
        for r in records[:n]:
            w.writerow([r.id, r.question, *r.options, r.answer])


def test_csv_loader_example_feeds_a_run(tmp_path, examples, monkeypatch):
    import csv_loader
    monkeypatch.setitem(loaders.LOADERS, "csv", csv_loader.load_csv)
    monkeypatch.setitem(C.CHOICES, "data.name", (*C.CHOICES["data.name"], "csv"))
    monkeypatch.setitem(DATA_FAMILY, "csv", "math")  # whose worked example the one-shot prompts show
    path = tmp_path / "questions.csv"
    write_csv(path, 100)
    records = csv_loader.load_csv(str(path))
    assert len(records) == 100 and all(len(r.options) == 4 and r.answer in "ABCD" for r in records)
    saved = smoke(tmp_path, "method=standalone", "rounds=1", "data.name=csv", f"data.path={path}")
    assert saved["config"]["data"]["name"] == "csv"
    assert {r["n"] for r in saved["accuracy"] if r["participant"] != "server"} == {8}


def test_csv_loader_example_names_the_line_and_field_of_a_bad_record(tmp_path, examples):
    import csv_loader
    path = tmp_path / "bad.csv"
    path.write_text("id,question,A,B,answer\n1,What?,yes,no,A\n2,Which?,one,two,C\n")
    with pytest.raises(DataError) as err:
        csv_loader.load_csv(str(path))
    assert str(err.value) == f"{path}:3: field 'answer': 'C' is not one of AB"
