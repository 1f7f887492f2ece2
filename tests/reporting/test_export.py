"""Export (ladalit/reporting/export.py): every trained participant of a conf/smoke.yaml run, loaded back with
transformers / peft, gives the run's own logits on a prompt; the CLI redoes it from the checkpoint."""
import json
import shutil

import pytest
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from ladalit.core import experiment
from ladalit.core.config import load_config
from ladalit.reporting.export import byte_tokenizer, main as export_main
from ladalit.core.models import tiny_tokenizer
from ladalit.core.prompts import format_response, zero_shot_prompt
from ladalit.run import execute


def smoke(root, *overrides):
    """A smoke run; returns (run dir, the Experiment as the run left it)."""
    built, real = [], experiment.build_experiment

    def capture(cfg, **kw):
        built.append(real(cfg, **kw))
        return built[-1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "build_experiment", capture)
        cfg = load_config(["conf=smoke.yaml", f"output_dir={root}", "run_name=r", "quiet=true", "rounds=1",
                           "eval.shots=[0]", *overrides])
        run_dir, _ = execute(cfg, quiet=True)
    return run_dir, built[0]


@pytest.fixture(scope="module")
def lada_run(tmp_path_factory):
    return smoke(tmp_path_factory.mktemp("lada"))


def prompt_of(exp) -> str:
    x = exp.data.public[0]
    return zero_shot_prompt(x) + format_response("2+2=4.", "B")


@torch.no_grad()
def run_logits(participant, text: str, reference: bool = False) -> torch.Tensor:
    ids = participant.tokenizer(text, return_tensors="pt")["input_ids"]
    if reference:
        with participant.reference() as ref:
            return ref(input_ids=ids).logits
    return participant.model(input_ids=ids).logits


@torch.no_grad()
def export_logits(path, text: str, peft: bool) -> torch.Tensor:
    tok = AutoTokenizer.from_pretrained(path)
    model = (AutoPeftModelForCausalLM if peft else AutoModelForCausalLM).from_pretrained(path).eval()
    return model(input_ids=tok(text, return_tensors="pt")["input_ids"]).logits


def participants(exp) -> dict:
    return {"server": exp.server, **exp.clients}


def test_end_of_run_export_loads_and_reproduces_each_participants_logits(lada_run):
    run_dir, exp = lada_run
    text = prompt_of(exp)
    assert sorted(p.name for p in (run_dir / "models").iterdir()) == ["client1", "client2", "server"]
    for name, p in participants(exp).items():
        out = run_dir / "models" / name
        tok = AutoTokenizer.from_pretrained(out)
        assert tok(text)["input_ids"] == p.tokenizer(text)["input_ids"]  # the run's token ids
        if p.use_lora:  # client2: a peft adapter naming its base, saved beside it (tiny: no hub id)
            config = json.loads((out / "adapter_config.json").read_text())
            assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
            assert config["base_model_name_or_path"] == str((out / "base").resolve())
            assert (out / "base" / "model.safetensors").is_file()
        else:
            assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
        got = export_logits(out, text, peft=p.use_lora)
        torch.testing.assert_close(got, run_logits(p, text), atol=1e-5, rtol=1e-5)


def test_lora_client_export_is_the_policy_sft_plus_policy_not_the_reference(lada_run):
    run_dir, exp = lada_run
    client = exp.clients["client2"]
    text = prompt_of(exp)
    got = export_logits(run_dir / "models" / "client2", text, peft=True)
    policy, reference = run_logits(client, text), run_logits(client, text, reference=True)
    assert (policy - reference).abs().max() > 1e-4  # round 1 moved the policy adapter away from "sft"
    torch.testing.assert_close(got, policy, atol=1e-5, rtol=1e-5)
    base = export_logits(run_dir / "models" / "client2" / "base", text, peft=False)
    assert (base - reference).abs().max() > 1e-4  # and the "sft" adapter is in it too


def test_model_card_names_base_method_round_accuracy_and_config(lada_run):
    run_dir, _ = lada_run
    results = json.loads((run_dir / "results.json").read_text())
    card = (run_dir / "models" / "server" / "README.md").read_text()
    acc = {(r["round"], r["shots"]): r["accuracy"] for r in results["accuracy"] if r["participant"] == "server"}
    assert "# server: lada, round 1 of 1" in card
    assert "- base model: `tiny:qwen3` (source `tiny`)" in card
    assert f"- 0-shot accuracy, round 1: {acc[(1, 0)]:.3f} (round 0: {acc[(0, 0)]:.3f}, " in card
    assert "```yaml\nmethod: lada\n" in card and "format: full weights (safetensors)" in card
    lora_card = (run_dir / "models" / "client2" / "README.md").read_text()
    assert "library_name: peft" in lora_card and "peft LoRA adapter on the base model" in lora_card


def test_cli_reexports_from_the_checkpoint_and_merge_gives_full_weights(lada_run, tmp_path, capsys):
    run_dir, exp = lada_run
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("models"))
    text = prompt_of(exp)
    assert export_main([str(copy)]) == 0
    assert capsys.readouterr().out.split() == [str(copy / "models" / n) for n in ("server", "client1", "client2")]
    for name, p in participants(exp).items():
        torch.testing.assert_close(export_logits(copy / "models" / name, text, peft=p.use_lora),
                                   run_logits(p, text), atol=1e-5, rtol=1e-5)
    assert export_main([str(copy), "--merge", "--round", "1"]) == 0
    out = copy / "models" / "client2"
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert not (out / "base").exists()
    torch.testing.assert_close(export_logits(out, text, peft=False), run_logits(exp.clients["client2"], text),
                               atol=1e-5, rtol=1e-5)


def test_cli_refuses_with_one_line(lada_run, tmp_path, capsys):
    run_dir, _ = lada_run
    assert export_main([str(run_dir), "--round", "3"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {run_dir}: --round 3: the run keeps the weights of round 1 only "
        "(checkpoint.pt holds the last complete round)")
    bare = tmp_path / "bare"
    bare.mkdir()
    assert export_main([str(bare)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bare}: no config.yaml (not a run directory)"
    shutil.copy(run_dir / "config.yaml", bare / "config.yaml")
    assert export_main([str(bare)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {bare}: no checkpoint.pt; the run completed no round")


def test_standalone_exports_the_clients_it_trained_and_not_the_untrained_server(tmp_path, capsys):
    run_dir, exp = smoke(tmp_path, "method=standalone")
    assert sorted(p.name for p in (run_dir / "models").iterdir()) == ["client1", "client2"]
    text = prompt_of(exp)
    torch.testing.assert_close(export_logits(run_dir / "models" / "client1", text, peft=False),
                               run_logits(exp.clients["client1"], text), atol=1e-5, rtol=1e-5)
    # every method checkpoints: the export is rebuilt from it, client2 with the "sft" adapter it trained
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("models"))
    assert export_main([str(copy)]) == 0
    assert capsys.readouterr().out.split() == [str(copy / "models" / n) for n in ("client1", "client2")]
    for name, peft in (("client1", False), ("client2", True)):
        torch.testing.assert_close(export_logits(copy / "models" / name, text, peft=peft),
                                   run_logits(exp.clients[name], text), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("text", ["Question: 6+2=?\nOptions: (A) 8 (B) 9", "ünïcödé — ∑ 😀", " lead and trail "])
def test_byte_tokenizer_encodes_and_decodes_like_the_tiny_models_byt5(text):
    tok = tiny_tokenizer("byt5")
    fast = byte_tokenizer(tok)
    assert fast(text)["input_ids"] == tok(text)["input_ids"] == [b + 3 for b in text.encode()]
    assert fast.decode(fast(text)["input_ids"]) == text
    assert len(fast) == len(tok) and fast.pad_token_id == tok.pad_token_id and fast.eos_token_id == tok.eos_token_id


def test_cli_refuses_a_truncated_checkpoint_with_one_line(lada_run, tmp_path, capsys):
    run_dir, _ = lada_run
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(run_dir / "config.yaml", bad / "config.yaml")
    (bad / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes()[:100])
    assert export_main([str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad / 'checkpoint.pt'}: cannot be read") and "\n" not in err
