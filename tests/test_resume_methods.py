"""Every registered method resumes: one round, then `resume=true` with rounds=2, equals a fresh 2-round run.
Its own file, so that pytest-xdist (one file per worker) can run it beside tests/test_resume.py."""
import json

import pytest

from ladalit import registry, run
from ladalit.core.run_identity import load_checkpoint

SMOKE = ["conf=smoke.yaml", "quiet=true", "eval.shots=[0]"]


def in_process(out, name, method, *extra):
    """One run through `ladalit.run.main` in this process (no interpreter start); its comparable results."""
    assert run.main([*SMOKE, f"method={method}", f"output_dir={out}", f"run_name={name}", *extra]) == 0
    r = json.loads((out / name / "results.json").read_text())
    return {k: r[k] for k in ("accuracy", "train", "selection", "selected_per_round", "reward_scale", "budget",
                              "communication", "communication_mb_total", "nonfinite_skipped")}


@pytest.mark.parametrize("method", list(registry.METHODS))
def test_every_method_run_for_one_round_then_resumed_to_two_equals_a_fresh_two_round_run(method, tmp_path, capsys):
    """The round loop (ladalit.core.rounds): a checkpoint after round 1 holds all a method's roles carry
    (weights, optimizers, references, received answers, carried state, results, channel), so round 2 after
    a resume is the round 2 of an uninterrupted run: accuracy, train rows, selections, bytes."""
    fresh = in_process(tmp_path, "fresh", method, "rounds=2")
    assert load_checkpoint(tmp_path / "fresh")["round"] == 2
    in_process(tmp_path, "part", method, "rounds=1")
    assert load_checkpoint(tmp_path / "part")["round"] == 1
    resumed = in_process(tmp_path, "part", method, "rounds=2", "resume=true")
    assert any(r["round"] == 2 for r in fresh["train"]) and any(r["round"] == 2 for r in fresh["accuracy"])
    assert resumed == fresh
    assert load_checkpoint(tmp_path / "part")["round"] == 2
