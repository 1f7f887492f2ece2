"""docs/results.md's lm-evaluation-harness command, run for real and offline: lm_eval evaluates a smoke run's
exported LoRA adapter on its base (`pretrained=...,peft=...`, the command line) and its exported full weights
(`pretrained=...`, the Python API) on the committed local task docs/examples/lm_eval/ladalit_mc.yaml, and
scores what the exported models themselves score."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ladalit.core.config import load_config
from ladalit.run import execute

ROOT = Path(__file__).resolve().parents[2]
TASK_DIR = ROOT / "docs" / "examples" / "lm_eval"
CHOICES = [f" The answer is ({x})." for x in "ABCD"]


def test_the_committed_items_are_the_projects_own_and_current():
    sys.path.insert(0, str(TASK_DIR))
    try:
        import make_items
    finally:
        sys.path.remove(str(TASK_DIR))
    assert (TASK_DIR / "ladalit_mc.jsonl").read_text() == make_items.text()  # regenerate: python .../make_items.py
    rows = make_items.items()
    assert len(rows) == 40 and len({r["prompt"] for r in rows}) == 40
    assert all(r["prompt"].endswith("\nAnswer:") and "ABCD"[r["label"]] == r["answer"] for r in rows)


def loglikelihood(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context), tokenized as lm-eval's hf model does: the context and the whole text each
    encoded with the tokenizer's default special tokens, the continuation the whole's tokens past the context's."""
    ctx = tok.encode(context)
    whole = tok.encode(context + continuation)
    cont = whole[len(ctx):]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = model(ids).logits.log_softmax(-1)[0, len(ctx) - 1:-1]
    return float(logp.gather(-1, torch.tensor(cont)[:, None]).sum())


@pytest.mark.slow
def test_lm_eval_scores_a_smoke_runs_exported_adapter_and_model_offline(tmp_path, monkeypatch):
    cfg = load_config(["conf=smoke.yaml", f"output_dir={tmp_path}", "run_name=r", "quiet=true", "rounds=1",
                       "eval.shots=[0]", "eval.limit=2"])
    run_dir, _ = execute(cfg, quiet=True)
    monkeypatch.chdir(ROOT)  # the task's data_files path is relative to the repository root
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    export = run_dir / "models" / "client2"  # LoRA: the adapter, its base saved beside it
    assert (export / "adapter_config.json").is_file() and (export / "base" / "config.json").is_file()
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    out = tmp_path / "lm_eval"
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf",
         "--model_args", f"pretrained={export / 'base'},peft={export}", "--device", "cpu", "--batch_size", "8",
         "--include_path", str(TASK_DIR), "--tasks", "ladalit_mc", "--output_path", str(out), "--log_samples"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ladalit_mc" in proc.stdout
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = [json.loads(line) for line in next(out.rglob("samples_ladalit_mc_*.jsonl")).read_text().splitlines()]
    assert results["results"]["ladalit_mc"]["acc,none"] == pytest.approx(
        sum(s["acc"] for s in samples) / len(samples)) and len(samples) == 40

    # what lm-eval computed is the exported adapter's own log-likelihood, not its base's
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoPeftModelForCausalLM.from_pretrained(export).eval()
    base = AutoModelForCausalLM.from_pretrained(export / "base").eval()
    first = min(samples, key=lambda s: s["doc_id"])
    pairs = [(a["arg_0"], a["arg_1"]) for a in first["arguments"].values()]
    assert pairs == [(first["doc"]["prompt"], c) for c in CHOICES]  # the project's prompt and answer statements
    theirs = [float(r[0][0]) for r in first["resps"]]
    ours = [loglikelihood(model, tok, *pair) for pair in pairs]
    assert theirs == pytest.approx(ours, abs=1e-3)
    assert ours != pytest.approx([loglikelihood(base, tok, *pair) for pair in pairs], abs=1e-4)

    # full weights (the server: no LoRA), through lm-eval's Python API in this process
    import lm_eval
    from lm_eval.tasks import TaskManager
    server = run_dir / "models" / "server"
    assert (server / "model.safetensors").is_file() and not (server / "adapter_config.json").exists()
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={server}", tasks=["ladalit_mc"], device="cpu",
                                  batch_size=8, task_manager=TaskManager(include_path=str(TASK_DIR)), log_samples=True,
                                  random_seed=None, numpy_random_seed=None, torch_random_seed=None,
                                  fewshot_random_seed=None)  # leave this process's seeds alone
    first = min(out["samples"]["ladalit_mc"], key=lambda s: s["doc_id"])
    model = AutoModelForCausalLM.from_pretrained(server).eval()
    tok = AutoTokenizer.from_pretrained(server)
    theirs = [float(r[0][0]) for r in first["resps"]]
    assert theirs == pytest.approx([loglikelihood(model, tok, first["doc"]["prompt"], c) for c in CHOICES], abs=1e-3)
    assert 0.0 <= out["results"]["ladalit_mc"]["acc,none"] <= 1.0 and len(out["samples"]["ladalit_mc"]) == 40
