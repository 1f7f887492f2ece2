"""Checkpoint and resume: a run killed during round 2 and resumed ends with the same
results as an uninterrupted run; a checkpoint interrupted mid-write is never loaded."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from ladalit.run import CHECKPOINT, load_checkpoint, save_checkpoint

ARGS = ["conf=smoke.yaml", "rounds=3", "quiet=true", "eval.shots=[0]"]


def start(out, name, *extra):
    return subprocess.Popen([sys.executable, "-m", "ladalit.run", *ARGS, f"output_dir={out}", f"run_name={name}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def comparable(run_dir):
    r = json.loads((run_dir / "results.json").read_text())
    # everything but the config's own resume flag
    return {k: r[k] for k in ("accuracy", "selection", "selected_per_round", "train", "communication")}


@pytest.mark.slow
def test_sigkill_in_round_2_then_resume_equals_uninterrupted(tmp_path):
    full = start(tmp_path, "full")
    victim = start(tmp_path, "victim")
    ckpt = tmp_path / "victim" / CHECKPOINT
    deadline = time.time() + 600
    while not ckpt.exists():  # round 1 is complete when its checkpoint appears
        assert victim.poll() is None, victim.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert torch.load(ckpt, weights_only=False)["round"] == 1  # killed during round 2
    resumed = start(tmp_path, "victim", "resume=true")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    _, err = full.communicate(timeout=600)
    assert full.returncode == 0, err
    assert comparable(tmp_path / "victim") == comparable(tmp_path / "full")
    assert load_checkpoint(tmp_path / "victim")["round"] == 3


def test_a_checkpoint_interrupted_mid_write_is_never_loaded(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"x": torch.ones(3)})
    real_save = torch.save

    def dies_mid_write(obj, f, *a, **kw):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped mid-write

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, {"x": torch.zeros(3)})
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / (CHECKPOINT + ".tmp")).exists()  # the torn file is there...
    ckpt = load_checkpoint(tmp_path)  # ...but never loaded
    assert ckpt["round"] == 1 and torch.equal(ckpt["state"]["x"], torch.ones(3))


def test_resume_without_a_checkpoint_starts_from_round_1(tmp_path):
    assert load_checkpoint(tmp_path) is None


def test_two_runs_with_one_seed_are_identical(tmp_path):
    a, b = start(tmp_path, "a", "rounds=2"), start(tmp_path, "b", "rounds=2")
    for p in (a, b):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    assert comparable(tmp_path / "a") == comparable(tmp_path / "b")
