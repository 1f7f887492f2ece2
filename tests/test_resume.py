"""Checkpoint and resume: a run killed during round 2 and resumed ends with the same
results as an uninterrupted run; a checkpoint interrupted mid-write is never loaded."""
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from ladalit.core.run_identity import CHECKPOINT, load_checkpoint, save_checkpoint
from ladalit.core.run_identity import RunError

ARGS = ["conf=smoke.yaml", "rounds=3", "quiet=true", "eval.shots=[0]"]
LORA = ["clients.client1.model.lora.enabled=true", "server.model.lora.enabled=true"]  # fsdp2 needs LoRA
FSDP2 = ["fabric.strategy=fsdp2", "fabric.devices=2", "fabric.accelerator=cpu", *LORA]


def start(out, name, *extra):
    return subprocess.Popen([sys.executable, "-m", "ladalit.run", *ARGS, f"output_dir={out}", f"run_name={name}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def comparable(run_dir):
    r = json.loads((run_dir / "results.json").read_text())
    # everything but the config's own resume flag
    return {k: r[k] for k in ("accuracy", "selection", "selected_per_round", "train", "communication")}


class Uninterrupted:
    """One uninterrupted 3-round run with LoRA (ARGS + LORA), started once for this file: the SIGKILL test
    runs its victim beside it (the two processes share the 2 cores), the FSDP2 test compares with it."""
    def __init__(self, out):
        self.proc, self.dir, self.rows = start(out, "full", *LORA), out / "full", None

    def results(self):
        if self.rows is None:
            _, err = self.proc.communicate(timeout=600)
            assert self.proc.returncode == 0, err[-4000:]
            self.rows = comparable(self.dir)
        return self.rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = Uninterrupted(tmp_path_factory.mktemp("uninterrupted"))
    yield run
    if run.proc.poll() is None:
        run.proc.kill()


@pytest.mark.slow
def test_sigkill_in_round_2_then_resume_equals_uninterrupted(tmp_path, uninterrupted):
    """Also proves that two runs with one seed are identical: `victim` is a second fresh run of the
    uninterrupted run's config up to its kill, and every row it wrote before and after must equal its."""
    victim = start(tmp_path, "victim", *LORA)
    ckpt = tmp_path / "victim" / CHECKPOINT
    deadline = time.time() + 600
    while not ckpt.exists():  # round 1 is complete when its checkpoint appears
        assert victim.poll() is None, victim.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert torch.load(ckpt, weights_only=False)["round"] == 1  # killed during round 2
    resumed = start(tmp_path, "victim", *LORA, "resume=true")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert comparable(tmp_path / "victim") == uninterrupted.results()
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


def test_no_checkpoint_loads_as_none_and_a_torn_one_is_refused_and_kept(tmp_path):
    assert load_checkpoint(tmp_path) is None  # (resume=true then refuses: tests/test_run_identity.py)
    save_checkpoint(tmp_path, 1, {"x": torch.ones(3)})
    torn = (tmp_path / CHECKPOINT).read_bytes()[:100]
    (tmp_path / CHECKPOINT).write_bytes(torn)
    with pytest.raises(RunError, match=r"checkpoint.pt: cannot be read, truncated or corrupt .*left as it is"):
        load_checkpoint(tmp_path)
    assert (tmp_path / CHECKPOINT).read_bytes() == torn


def run_to_end(out, name, *extra):
    p = start(out, name, *extra)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]
    return comparable(out / name)


@pytest.mark.slow
def test_fsdp2_on_two_processes_equals_one_process_and_resumes_exactly(tmp_path, uninterrupted):
    """The whole LaDa loop under fabric.strategy=fsdp2 (2 gloo processes, Fabric launches the second):
    the same selections, evaluations and bytes as one process, per-batch losses within 1e-4 (work split
    over the processes sums in another order); a run stopped after round 1 and resumed equals the
    uninterrupted one exactly."""
    single = uninterrupted.results()  # one process
    full = run_to_end(tmp_path, "full", *FSDP2)
    for key in ("accuracy", "selection", "selected_per_round", "communication"):
        assert full[key] == single[key], key
    steps = [(a, b) for a, b in zip(full["train"], single["train"]) if "loss_before" in b]
    assert len(steps) == len([r for r in full["train"] if "loss_before" in r]) > 0
    # the steps trained something: a policy equal to its reference has a MARD loss of exactly log 2
    assert any(abs(b["loss_before"] - math.log(2)) > 1e-3 for _, b in steps)
    for a, b in steps:
        assert (a["round"], a["participant"], a["batch"]) == (b["round"], b["participant"], b["batch"])
        for k in ("loss_before", "reward"):
            assert abs(a[k] - b[k]) < 1e-4, (k, a, b)
    run_to_end(tmp_path, "part", *FSDP2, "rounds=1")
    assert load_checkpoint(tmp_path / "part")["round"] == 1
    assert run_to_end(tmp_path, "part", *FSDP2, "resume=true") == full
