"""Input validation before any model loads, non-finite losses (skip | raise), no secrets in outputs."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ladalit.method import lada, losses
from ladalit.core.channel import Channel
from ladalit.core.config import load_config
from ladalit.core.experiment import build_experiment
from ladalit.core.results import Results
from ladalit.core.training import NonFiniteError
from ladalit.run import main

BASE = ["conf=smoke.yaml", "quiet=true", "rounds=1", "eval.shots=[0]"]


def cli(tmp_path, *args, env=None):
    """`python -m ladalit.run` on smoke as a process: its real exit code, and an environment of its own."""
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ladalit.run", *BASE, f"output_dir={tmp_path}", *args],
                          capture_output=True, text=True, timeout=600, env=e)


def cli_in_process(capsys, tmp_path, *args):
    """(exit code, stderr) of `ladalit.run.main` on smoke, in this process."""
    code = main([*BASE, f"output_dir={tmp_path}", *args])
    return code, capsys.readouterr().err


def test_malformed_data_record_exits_2_naming_file_line_and_field(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = '{"question": "q?", "options": ["A)1", "B)2", "C)3", "D)4", "E)5"], "rationale": "r", "correct": "A"}'
    bad.write_text(good + "\n" + good + "\n" + '{"question": "q?", "options": ["A)1", "B)2"], "rationale": "r"}\n')
    code, err = cli_in_process(capsys, tmp_path, "data.name=aqua", f"data.path={bad}")
    assert code == 2
    assert err.strip().startswith(f"error: {bad}:3: field 'correct': ")
    assert len(err.strip().splitlines()) == 1


def test_missing_local_model_path_exits_2_before_loading(capsys, tmp_path):
    code, err = cli_in_process(capsys, tmp_path, "server.model.source=hub",
                               f"server.model.name_or_path={tmp_path}/no/such/model")
    assert code == 2
    assert err.strip() == (f"error: config key 'server.model.name_or_path': local path "
                           f"'{tmp_path}/no/such/model' does not exist")


def test_hub_id_while_offline_says_so_plainly(tmp_path):
    proc = cli(tmp_path, "server.model.source=hub", "server.model.name_or_path=Qwen/Qwen3-0.6B",
               env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: config key 'server.model.name_or_path': 'Qwen/Qwen3-0.6B' is a hub id, HF_HUB_OFFLINE is set and "
        "it is not in the local hub cache; download it first or point name_or_path at a local directory")


def test_out_of_range_alpha_exits_2(capsys, tmp_path):
    code, err = cli_in_process(capsys, tmp_path, "reward.alpha=-0.1")
    assert code == 2 and "config key 'reward.alpha': value -0.1 out of range [0.0, 1.0]" in err


def poisoned_mard(batches_to_poison):
    """mard_loss that returns NaN on the n-th call for n in batches_to_poison."""
    real, calls = losses.mard_loss, {"n": 0}

    def fake(*a, **kw):
        out = real(*a, **kw)
        calls["n"] += 1
        return out * float("nan") if calls["n"] in batches_to_poison else out
    return fake


def smoke_exp(tmp_path, *extra):
    return build_experiment(load_config([*BASE, f"output_dir={tmp_path}", *extra]))


def test_nonfinite_loss_is_skipped_and_counted(tmp_path, monkeypatch):
    exp = smoke_exp(tmp_path, "on_nonfinite=skip")
    monkeypatch.setattr(losses, "mard_loss", poisoned_mard({1}))
    client1 = exp.clients["client1"]
    out = lada.run(exp, Channel(), Results())
    assert len(out["nonfinite_skipped"]) >= 1
    first = out["nonfinite_skipped"][0]
    assert first == {"participant": "client1", "round": 1, "batch": first["batch"], "what": "loss"}
    assert all(torch.isfinite(p).all() for p in client1.parameters())


def test_nonfinite_loss_raises_naming_participant_round_and_batch(tmp_path, monkeypatch):
    exp = smoke_exp(tmp_path, "on_nonfinite=raise")
    monkeypatch.setattr(losses, "mard_loss", poisoned_mard({1}))
    with pytest.raises(NonFiniteError, match=r"^non-finite loss for participant 'client1', round 1, batch \d+ "
                                             r"\(set on_nonfinite=skip to skip such steps\)$"):
        lada.run(exp, Channel(), Results())


@pytest.mark.slow
def test_no_secret_reaches_any_file_the_run_writes(tmp_path):
    secrets = {"WANDB_API_KEY": "wandb-secret-8c1f2e9d7a", "HF_TOKEN": "hf_secret_3b7d9e1f5a"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(secrets, HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "ladalit.run", *BASE, f"output_dir={tmp_path}/out", "run_name=s",
                           "tracking.wandb.mode=offline"], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert any("wandb" in str(p) for p in files) and any(p.name == "results.json" for p in files)
    for p in files:
        data = p.read_bytes()
        for value in secrets.values():
            assert value.encode() not in data, f"{value} leaked into {p}"
    for value in secrets.values():
        assert value not in proc.stdout and value not in proc.stderr


def test_counters_results_json_reports_are_checkpointed(tmp_path, monkeypatch):
    """A resumed run reports the skipped steps and generated responses of the rounds before the resume too."""
    exp = smoke_exp(tmp_path, "on_nonfinite=skip", "rounds=2")
    monkeypatch.setattr(losses, "mard_loss", poisoned_mard({1}))
    snapshots = {}
    full = lada.run(exp, Channel(), Results(),
                    on_round_end=lambda t, s: snapshots.setdefault(t, (copy.deepcopy(s), torch.get_rng_state())))
    state, rng = snapshots[1]
    counters = state["counters"]
    assert counters["nonfinite_skipped"] and counters["nonfinite_skipped"][0]["round"] == 1
    assert 0 < counters["responses_generated"] < full["responses_generated"]
    again = smoke_exp(tmp_path, "on_nonfinite=skip", "rounds=2")
    torch.set_rng_state(rng)  # as execute does from the checkpoint
    resumed = lada.run(again, Channel(), Results(), start_round=2, state=state)
    assert resumed["nonfinite_skipped"][: len(counters["nonfinite_skipped"])] == counters["nonfinite_skipped"]
    assert resumed["responses_generated"] == full["responses_generated"]
