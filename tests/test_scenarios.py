"""The paper's scenarios (Table I): configs load, name the right models, and their memory is computed from shapes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ladalit.reporting import scenarios
from ladalit.scale import shapes
from ladalit.core.config import load_config

ROOT = Path(__file__).resolve().parent.parent
TABLE_I = {  # client 1, client 2, client 3, server
    "s1": ("google/gemma-2-2b", "google/gemma-2-27b", "meta-llama/Meta-Llama-3-8B", "Qwen/Qwen3-32B"),
    "s2": ("google/gemma-2-2b", "meta-llama/Meta-Llama-3-8B", "Qwen/Qwen3-32B", "Qwen/Qwen2.5-72B-Instruct"),
    "s3": ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-32B"),
    "s4": ("Qwen/Qwen3-8B", "meta-llama/Meta-Llama-3-8B", "internlm/internlm3-8b-instruct", "Qwen/Qwen3-32B"),
}


@pytest.mark.parametrize("name", sorted(TABLE_I))
def test_scenario_config_loads_with_the_table_i_models_and_paper_settings(name):
    cfg = load_config([f"conf={name}.yaml"])
    *clients, server = TABLE_I[name]
    assert [c.model.name_or_path for c in cfg.clients.values()] == clients
    assert cfg.server.model.name_or_path == server
    assert len(cfg.clients) == 3 and cfg.rounds == 5 and cfg.lada.beta == 0.1
    assert (cfg.data.name, cfg.data.train_per_client, cfg.data.test_per_client, cfg.data.public_size) == (
        "mathinstruct", 1000, 500, 1000)
    assert cfg.filter_net.lr == 3e-4 and cfg.filter_net.epochs == 10
    assert (cfg.fabric.strategy, cfg.fabric.precision) == ("fsdp2", "bf16-mixed")
    for p in [cfg.server, *cfg.clients.values()]:
        m = p.model
        assert m.source == "hub" and m.dtype == "bfloat16"
        assert m.lora.enabled and m.lora.r == 16
        assert list(m.lora.target_modules) in (["q_proj", "k_proj", "v_proj", "o_proj"], ["all-linear"])
        # remote code only where the model needs it
        assert m.trust_remote_code == (m.name_or_path == "internlm/internlm3-8b-instruct")
        assert m.name_or_path in shapes.SHAPES


@pytest.mark.parametrize("name", sorted(TABLE_I))
def test_cot_collection_is_an_override_and_devices_are_the_computed_gpu_count(name):
    cfg = load_config([f"conf={name}.yaml", "data.name=cot_collection"])
    assert cfg.data.name == "cot_collection"
    # fabric.devices is what ladalit.scale.shapes computes for 80 GB GPUs (fsdp2 checkpoints activations by default)
    assert cfg.fabric.devices == shapes.gpus_needed(cfg, device_gb=80.0)


def test_meta_device_parameter_counts_are_within_2_percent_of_the_published_sizes():
    for hub_id, s in shapes.SHAPES.items():
        model = shapes.build(s)  # meta device: no memory
        assert next(model.parameters()).device.type == "meta"
        n = shapes.param_count(model)
        assert abs(n / s.published_params - 1) < 0.02, (hub_id, n)
    assert abs(shapes.param_count(shapes.SHAPES["Qwen/Qwen3-32B"]) / 32.8e9 - 1) < 0.02
    assert abs(shapes.param_count(shapes.SHAPES["meta-llama/Meta-Llama-3-8B"]) / 8.03e9 - 1) < 0.005


@pytest.mark.parametrize("hub_id", ["Qwen/Qwen3-0.6B", "google/gemma-2-2b"])
@pytest.mark.parametrize("targets", [["q_proj", "k_proj", "v_proj", "o_proj"], ["all-linear"]])
def test_lora_count_from_shapes_equals_peft_on_the_meta_model(hub_id, targets):
    from peft import LoraConfig, get_peft_model
    s = shapes.SHAPES[hub_id]
    with torch.device("meta"):
        model = get_peft_model(shapes.build(s), LoraConfig(r=16, target_modules=targets[0] if targets == [
            "all-linear"] else targets))
    n = sum(p.numel() for k, p in model.named_parameters() if "lora_" in k)
    assert n == shapes.lora_param_count(s, 16, targets)


def test_a_real_random_model_builds_from_a_scaled_down_shape_and_runs():
    from dataclasses import replace
    s = replace(shapes.SHAPES["Qwen/Qwen3-0.6B"], hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                head_dim=16, intermediate_size=64, vocab_size=100)
    model = shapes.build(s, "cpu", torch.float32)
    logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 100) and torch.isfinite(logits).all()
    assert model.config.head_dim == 16 and model.config.tie_word_embeddings


def test_memory_estimate_is_consistent():
    s = shapes.SHAPES["Qwen/Qwen3-8B"]
    m = shapes.participant_memory(s, lora_r=16, adapters=2, rows=8, seq_len=256)
    assert m["weights"] == 2 * m["params"]  # bf16
    assert m["adapter_state"] == 4 * m["lora_params"] * 2 + 12 * m["lora_params"]  # fp32 + grad + 2 moments
    ckpt = shapes.participant_memory(s, lora_r=16, adapters=2, rows=8, seq_len=256, checkpointing=True)
    assert ckpt["activations"] < m["activations"] / 5
    double = shapes.participant_memory(s, lora_r=16, adapters=2, rows=16, seq_len=256)
    assert double["activations"] == 2 * m["activations"] and double["logits"] == 2 * m["logits"]
    cfg = load_config(["conf=s2.yaml"])
    per_gpu = shapes.scenario_memory(cfg)["per_gpu"]
    assert all(per_gpu[2 * n] < per_gpu[n] for n in per_gpu if 2 * n in per_gpu)
    # the 72B server's weights alone exceed one 80 GB GPU
    assert shapes.scenario_memory(cfg)["participants"]["server"]["weights"] > 80 * shapes.GB


def test_docs_tables_are_the_computed_ones():
    text = (ROOT / "docs" / "scenarios.md").read_text()
    assert scenarios.markdown() in text  # regenerate with `python -m ladalit.reporting.scenarios`


def test_gpu_round_benchmark_dry_run_runs_on_cpu():
    spec = importlib.util.spec_from_file_location("gpu_round", ROOT / "benchmarks" / "gpu_round.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--dry-run"])
    assert [r["K"] for r in out] == [1, 3]
    for r in out:
        assert set(r["phases"]) == {"gen_server", "gen_client", "client_update", "server_update"}
        assert all(p["tokens"] > 0 and p["tokens_per_s"] > 0 for p in r["phases"].values())
        assert r["skipped_steps"] == 0
    assert len(out[1]["clients"]) == 3


def test_gpu_round_benchmark_with_offload_swaps_one_participant_in_per_phase_change():
    spec = importlib.util.spec_from_file_location("gpu_round", ROOT / "benchmarks" / "gpu_round.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--dry-run", "--offload"])
    for r in out:  # server, client1, server, client2, ..., server (its update)
        assert r["offload"] and r["swaps"] == 2 * r["K"] + 1
        assert r["skipped_steps"] == 0
