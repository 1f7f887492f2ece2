"""Run identity: a resume may only raise `rounds` (and change the harmless keys), and equals an
uninterrupted run with more rounds; no user mistake changes or deletes a finished run's results."""
import json
import os
import signal
from pathlib import Path

import pytest

from ladalit import run
from ladalit.core.config import load_config
from ladalit.core.run_identity import CHECKPOINT, FINGERPRINT, differences, fingerprint, load_checkpoint

BASE = ["conf=smoke.yaml", "quiet=true", "eval.shots=[0]"]


def cfg_of(*args):
    return load_config([*BASE, *args])


def comparable(run_dir):
    r = json.loads((run_dir / "results.json").read_text())
    keys = ("accuracy", "selection", "selected_per_round", "train", "communication", "communication_mb_total",
            "nonfinite_skipped", "responses_generated", "bound_hits")
    return {k: r[k] for k in keys}


def files_of(run_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def refused(capsys, *args) -> str:
    code = run.main([*BASE, *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.slow
def test_resume_allows_only_larger_rounds_and_no_mistake_touches_a_finished_run(tmp_path, capsys):
    out = f"output_dir={tmp_path}"
    full_dir, _ = run.execute(cfg_of(out, "run_name=full", "rounds=3"), quiet=True)
    part_dir, _ = run.execute(cfg_of(out, "run_name=part", "rounds=2"), quiet=True)
    assert load_checkpoint(part_dir)["round"] == 2
    # the one allowed change: a larger rounds continues the run, equal to the uninterrupted one
    run.execute(cfg_of(out, "run_name=part", "rounds=3", "resume=true", "quiet=false"), quiet=True)
    assert comparable(part_dir) == comparable(full_dir)
    assert comparable(part_dir)["responses_generated"] > 0  # a counter carried over the resume, not restarted
    assert load_checkpoint(part_dir)["round"] == 3
    assert json.loads((part_dir / FINGERPRINT).read_text())["rounds"] == 3

    finished = files_of(part_dir)
    name = [out, "run_name=part"]
    for change, message in [
        (["rounds=3", "seed=5"], "seed: 0 -> 5"),
        (["rounds=4", "seed=5"], "seed: 0 -> 5"),
        (["rounds=4", "data.name=commonsenseqa"], "data.name: 'synthetic' -> 'commonsenseqa'"),
        (["rounds=4", "data.synthetic.num_records=300"], "data.synthetic.num_records: 200 -> 300"),
        (["rounds=4", "server.model.num_layers=1"], "server.model.num_layers: 2 -> 1"),
        (["rounds=4", "filter_net.tau=0.6"], "filter_net.tau: 0.5 -> 0.6"),
        (["rounds=4", "lada.loss=ce"], "lada.loss: 'mard' -> 'ce'"),
        (["rounds=2"], "rounds: 3 -> 2 (rounds may only grow)"),
        (["rounds=3"], f"{part_dir} is complete (3 of 3 rounds)"),
        (["rounds=3", "quiet=false", "tracking.wandb.mode=offline"], "is complete"),  # harmless keys: no difference
        (["rounds=4", "method=standalone"], "method: 'lada' -> 'standalone'"),
    ]:
        err = refused(capsys, *name, "resume=true", *change)
        assert message in err, (change, err)
        assert files_of(part_dir) == finished, change
    # the refusal names the one difference only (a larger rounds is none)
    assert refused(capsys, *name, "resume=true", "rounds=4", "seed=5").split("settings: ")[1].startswith(
        "seed: 0 -> 5 (a resume")
    # a reused name without resume: refused, naming both ways on
    err = refused(capsys, *name, "rounds=3")
    assert "already holds a run: resume=true continues it, overwrite=true replaces it" in err
    assert files_of(part_dir) == finished

    # overwrite=true replaces the run and leaves nothing of the old one (its round-3 checkpoint)
    (part_dir / "stale.txt").write_text("old")
    run.execute(cfg_of(*name, "rounds=1", "overwrite=true"), quiet=True)
    assert load_checkpoint(part_dir)["round"] == 1
    assert not (part_dir / "stale.txt").exists()
    assert {r["round"] for r in json.loads((part_dir / "results.json").read_text())["accuracy"]} == {0, 1}  # round 0: before any transfer


def test_fingerprint_ignores_the_harmless_keys_and_names_every_other_change(tmp_path):
    base = fingerprint(cfg_of())
    same = fingerprint(cfg_of("quiet=false", "tracking.wandb.mode=offline", f"output_dir={tmp_path}",
                              "run_name=x", "rounds=9"))
    assert differences(base, same) == []
    changed = fingerprint(cfg_of("seed=3", "rounds=1", "clients.client3.train.lr=0.1"))
    assert differences(base, changed) == ["seed: 0 -> 3", "clients.client3: added", "rounds: 2 -> 1 (rounds may only grow)"]
    assert differences(changed, base) == ["seed: 3 -> 0", "clients.client3: removed"]


def test_fingerprint_holds_the_data_file_hash_and_the_code_version(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"x": 1}\n')
    cfg = load_config(["conf=smoke.yaml", "data.name=aqua", f"data.path={data}"])
    before = fingerprint(cfg)
    assert set(before["data_files"]) == {str(data)} and len(before["code"]) == 16
    data.write_text('{"x": 2}\n')
    assert differences(before, fingerprint(cfg)) == [f"data file {data}: its contents changed"]
    assert differences({**before, "code": "abc"}, before) == [
        f"code version: abc -> {before['code']} (the ladalit sources changed)"]


def test_interrupted_line_names_the_last_complete_round_and_the_resume_command(tmp_path):
    cfg = cfg_of("rounds=5")
    argv = ["conf=smoke.yaml", "rounds=5", "overwrite=true"]
    assert run.interrupted_line(cfg, argv, {}) == "interrupted before the run started; nothing was written"
    line = run.interrupted_line(cfg, argv, {"run_dir": tmp_path / "x", "round": 2})
    assert line == (f"interrupted after round 2 of 5 (the last complete round, in {tmp_path}/x); resume with: "
                    "python -m ladalit.run conf=smoke.yaml rounds=5 run_name=x resume=true")
    assert "start again with: python -m ladalit.run conf=smoke.yaml rounds=5 run_name=x overwrite=true" in \
        run.interrupted_line(cfg, argv, {"run_dir": tmp_path / "x", "round": 0})
    # every method writes checkpoints, so every method is resumed the same way
    assert run.interrupted_line(cfg_of("rounds=5", "method=fedkd"), argv, {"run_dir": tmp_path / "x", "round": 2}) == line


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt, as in a terminal: a suite started as a shell's background job
    (`&`, nohup) inherits SIGINT ignored, and Python then installs no handler for it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("how,code", [("sigterm", 143), ("sigint", 130)])
def test_a_signal_ends_main_with_one_line_and_130_or_143(how, code, tmp_path, capsys, monkeypatch, sigint_raises):
    def execute(cfg, quiet=False, status=None, **_):
        status.update(run_dir=tmp_path / "r", round=1)
        os.kill(os.getpid(), signal.SIGTERM if how == "sigterm" else signal.SIGINT)
        raise AssertionError("the signal did not stop the run")
    monkeypatch.setattr(run, "execute", execute)
    previous = signal.getsignal(signal.SIGTERM)
    assert run.main([*BASE, f"output_dir={tmp_path}", "run_name=r"]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted after round 1 of 2") and err.endswith("run_name=r resume=true")
    assert len(err.splitlines()) == 1
    assert signal.getsignal(signal.SIGTERM) is previous  # main restores the handler it replaced


def test_refused_resume_writes_nothing_into_an_unfinished_run(tmp_path, capsys):
    """config.yaml used to be written before the resume was validated."""
    d = tmp_path / "r"
    d.mkdir()
    (d / "config.yaml").write_text("seed: 0\n")
    err = refused(capsys, f"output_dir={tmp_path}", "run_name=r", "resume=true")
    assert "has no checkpoint.pt" in err
    assert [p.name for p in d.iterdir()] == ["config.yaml"] and (d / "config.yaml").read_text() == "seed: 0\n"
    assert not (d / CHECKPOINT).exists()
