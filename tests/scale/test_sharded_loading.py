"""FSDP2 sharded loading (`source: hub` under `fabric.strategy: fsdp2`), on CPU: 2 processes over gloo.

A tiny qwen3 (tied embeddings) is saved once as local safetensors. Each process builds the
participant on the meta device and shards it; rank 0 alone reads the file and every process
receives its shards (`ladalit.scale.strategy.load_sharded`). The worker (this file run as a script,
re-run by Fabric for rank 1) compares, on every rank, the gathered weights and the log-probs
with the same participant loaded whole by `from_pretrained`, and writes what it measured.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

PROMPTS = ["Question: 2+3?\nAnswer: Let's think step by step.", "Question: what is 7*6?\nAnswer:"]
CHOSEN = [" 2+3=5. The answer is (B).", " 7*6=42. The answer is (A)."]
REJECTED = [" 2+3=6. The answer is (C).", " no idea"]


def save_tiny_model(path: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, ByT5Tokenizer
    tok = ByT5Tokenizer()
    config = AutoConfig.for_model("qwen3", vocab_size=len(tok), hidden_size=64, num_hidden_layers=3,
                                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, head_dim=16,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                  bos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)


def worker(out_dir: Path, model_dir: Path) -> None:
    import torch
    from lightning.fabric import Fabric
    from omegaconf import OmegaConf
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    from ladalit.scale import strategy
    import ladalit.components  # noqa: F401  registers the config sections RunConfig is built from
    from ladalit.core.config import RunConfig
    from ladalit.core.experiment import build_participant, setup_participant
    from ladalit.core.seeds import name_seed
    from ladalit.core.models import build_model
    from ladalit.core.participant import Participant

    cfg = OmegaConf.structured(RunConfig())
    cfg.fabric.devices, cfg.fabric.accelerator, cfg.fabric.strategy = 2, "cpu", "fsdp2"
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy.fsdp2_strategy(cfg), precision="32-true")
    fabric.launch()
    torch.set_num_threads(1)
    r: dict = {"rank": fabric.global_rank}
    for role, dtype, chunk in (("server", "float32", 1 << 28), ("client", "bfloat16", 4096)):
        pcfg = copy.deepcopy(cfg.server)
        pcfg.model.source, pcfg.model.name_or_path, pcfg.model.tokenizer = "hub", str(model_dir), ""
        pcfg.model.dtype, pcfg.model.lora.enabled, pcfg.model.lora.r = dtype, True, 4
        strategy.LOAD_CHUNK_BYTES = chunk  # the client: many chunks of a few tensors each
        p = build_participant(cfg, role, role, pcfg)
        r[f"{role}_meta_before"] = all(q.device.type == "meta" for n, q in p.named_parameters() if "lora_" not in n)
        r[f"{role}_buffers_real"] = all(b.device.type == "cpu" for b in p.buffers())  # rotary tables
        module = setup_participant(fabric, p)
        r[f"{role}_all_dtensor"] = all(isinstance(q, DTensor) for q in module.parameters())
        r[f"{role}_no_meta_left"] = not any(q.device.type == "meta" for q in module.parameters())
        full = {k.removeprefix("participant."): v for k, v in get_model_state_dict(
            module._forward_module, options=StateDictOptions(full_state_dict=True)).items()}

        # the same participant loaded whole, its LoRA initialised the same way
        model, tok = build_model(pcfg.model, seed=name_seed(cfg.seed, role))
        plain = Participant(role, role, model, tok, pcfg.train, pcfg.model.lora)
        strategy.init_lora_identically(plain, name_seed(cfg.seed, role))
        if role == "client":  # the client's policy trains its second adapter over the frozen "sft"
            p.freeze_reference()
            plain.freeze_reference()
        exp = plain.state_dict()
        r[f"{role}_keys_equal"] = sorted(full) == sorted(exp)
        r[f"{role}_weights_equal"] = all(torch.equal(full[k], exp[k]) for k in exp)
        r[f"{role}_dtypes"] = sorted({str(v.dtype) for k, v in full.items() if "lora_" not in k})
        lora_a = [k for k in exp if "lora_A" in k]
        r[f"{role}_lora_a_nonzero"] = bool(lora_a) and all(exp[k].abs().sum() > 0 for k in lora_a)
        r[f"{role}_lora_a_sum"] = float(sum(full[k].double().sum() for k in lora_a))  # the same on both ranks
        tied = [k for k in exp if k.endswith("lm_head.weight")]
        r[f"{role}_tied"] = bool(tied) and torch.equal(full[tied[0]], full[tied[0].replace("lm_head", "model.embed_tokens")])
        with torch.no_grad():
            got = module.pair_logprobs(PROMPTS, CHOSEN, REJECTED)
            want = plain.pair_logprobs(PROMPTS, CHOSEN, REJECTED)
        r[f"{role}_logprob_diff"] = max((a - b).abs().max().item() for a, b in zip(got, want))
        r[f"{role}_logprob_scale"] = max(b.abs().max().item() for b in want)
    (out_dir / f"rank{fabric.global_rank}.json").write_text(json.dumps(r))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded_loading")
    save_tiny_model(out / "model")
    from tests.gloo_workers import run_ranks  # the pytest process only: the workers never import it
    return run_ranks(__file__, out, str(out / "model"), env={"HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("role", ["server", "client"])
def test_built_on_meta_then_sharded_with_no_meta_left(ranks, role):
    for r in ranks:
        assert r[f"{role}_meta_before"] and r[f"{role}_buffers_real"]
        assert r[f"{role}_all_dtensor"] and r[f"{role}_no_meta_left"]


@pytest.mark.parametrize("role", ["server", "client"])
def test_the_shards_hold_exactly_the_checkpoint_and_the_same_lora_on_every_rank(ranks, role):
    for r in ranks:
        assert r[f"{role}_keys_equal"] and r[f"{role}_weights_equal"], role
        assert r[f"{role}_lora_a_nonzero"] and r[f"{role}_tied"]
    assert ranks[0][f"{role}_lora_a_sum"] == ranks[1][f"{role}_lora_a_sum"]
    assert ranks[0]["server_dtypes"] == ["torch.float32"] and ranks[0]["client_dtypes"] == ["torch.bfloat16"]


@pytest.mark.parametrize("role", ["server", "client"])
def test_sharded_outputs_equal_the_model_loaded_whole(ranks, role):
    for r in ranks:
        tol = 1e-5 if role == "server" else 2e-2  # bf16 client: gathers and matmuls round differently
        assert r[f"{role}_logprob_diff"] <= tol * max(1.0, r[f"{role}_logprob_scale"]), r


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
