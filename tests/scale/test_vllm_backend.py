"""generation.backend=vllm (ladalit.scale.vllm_backend), without vLLM.

`merge_adapters` is checked for real: the merged adapter written in peft's format
and loaded by peft reproduces the base with the adapters active. The engine
orchestration is checked against `RecordingVLLM`, a recording double of the `vllm`
module put into sys.modules: it shows what ladalit asks of vLLM, not what vLLM does
(vLLM itself never runs in these tests).
"""
import copy
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from ladalit.core.config import ConfigError, GenerationConfig, LoraConfig, ModelConfig, TrainConfig, load_config
from ladalit.core.models import build_model
from ladalit.core.participant import Participant
from ladalit.scale.vllm_backend import VLLMGenerator, make_generators, max_lora_rank, merge_adapters, save_adapter

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 64], [1, 2, 3, 4, 5, 6, 7, 8]])


def tiny_qwen3(seed=0):
    cfg = AutoConfig.for_model("qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=300)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def randomize_lora(model, adapter, scale=0.3):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if f".{adapter}." in n and "lora_" in n:
                p.copy_(scale * torch.randn_like(p))


def test_merged_adapter_loaded_by_peft_equals_both_adapters_active(tmp_path):
    base = tiny_qwen3()
    fresh = copy.deepcopy(base)
    model = get_peft_model(base, PeftLoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, task_type="CAUSAL_LM",
                                                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), "sft")
    model.add_adapter("policy", PeftLoraConfig(r=6, lora_alpha=3, lora_dropout=0.3, task_type="CAUSAL_LM",
                                               target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"]))
    torch.manual_seed(1)
    randomize_lora(model, "sft")
    randomize_lora(model, "policy")
    model.base_model.set_adapter(["sft", "policy"])
    model.eval()  # dropout (0.3 here) is off at inference: the merged adapter carries none
    with torch.no_grad():
        want = model(input_ids=IDS).logits
        one = copy.deepcopy(model)
        one.base_model.set_adapter(["sft"])
        assert (one(input_ids=IDS).logits - want).abs().max() > 1e-3  # both adapters matter

    sd, cfg = merge_adapters(model, ["sft", "policy"])
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (10, 10, 0.0)
    assert cfg["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "v_proj"]
    a = sd["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"]
    assert a.shape == (10, 64) and a[4:].abs().sum() == 0  # "policy" does not touch k_proj: a zero block
    save_adapter(tmp_path / "merged", sd, cfg)
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "merged").eval()
    with torch.no_grad():
        got = loaded(input_ids=IDS).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_max_lora_rank_is_the_smallest_value_vllm_accepts():
    assert [max_lora_rank(r) for r in (1, 8, 9, 32, 33, 300, 512)] == [8, 8, 16, 32, 64, 320, 512]
    with pytest.raises(ValueError, match="above vLLM's largest max_lora_rank 512"):
        max_lora_rank(513)


# ----------------------------------------------------------------------------- the recording double

class RecordingVLLM:
    """A stand-in for the `vllm` package that records every call; it generates nothing real."""

    def __init__(self):
        self.calls, self.engines, self.adapters = [], [], []
        rec = self

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw

        class LoRARequest:
            def __init__(self, lora_name, lora_int_id, lora_path):
                self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path

        class LLM:
            def __init__(self, **kw):
                self.kw = kw
                rec.engines.append(self)
                rec.calls.append(("init", kw["model"]))

            def generate(self, prompts, sampling_params, *, lora_request, use_tqdm):
                rec.calls.append(("generate", [p["prompt_token_ids"] for p in prompts], sampling_params.kw,
                                  lora_request.lora_int_id))
                # peft loads the adapter now, while the engine would read it
                rec.adapters.append((lora_request, PeftModel.from_pretrained(
                    copy.deepcopy(rec.fresh_base), lora_request.lora_path).eval()))
                out = lambda ids: types.SimpleNamespace(outputs=[types.SimpleNamespace(
                    text=f"len{len(ids)}", finish_reason="length" if len(ids) > 20 else "stop")])
                return [out(p["prompt_token_ids"]) for p in prompts]

            def sleep(self, level):
                rec.calls.append(("sleep", level))

            def wake_up(self):
                rec.calls.append(("wake_up",))

        self.module = types.ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams = LLM, SamplingParams
        self.lora = types.ModuleType("vllm.lora")
        self.request = types.ModuleType("vllm.lora.request")
        self.request.LoRARequest = LoRARequest

    def install(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "vllm", self.module)
        monkeypatch.setitem(sys.modules, "vllm.lora", self.lora)
        monkeypatch.setitem(sys.modules, "vllm.lora.request", self.request)


def make_participant(name="client1", role="client"):
    mcfg = OmegaConf.structured(ModelConfig(arch="qwen3", lora=LoraConfig(enabled=True, r=4, alpha=8, dropout=0.1)))
    model, tok = build_model(mcfg, seed=0)
    base = copy.deepcopy(model)
    p = Participant(name, role, model, tok, OmegaConf.structured(TrainConfig(max_length=40)), mcfg.lora)
    p.freeze_reference()  # client: policy = "sft" + "policy" active
    randomize_lora(p.model, "sft")
    return p, base


def hub_cfg(**kw):
    return OmegaConf.structured(ModelConfig(source="hub", name_or_path="/models/qwen3-tiny", tokenizer="",
                                            dtype="bfloat16", **kw))


def test_generate_drives_the_engine_with_the_current_lora_policy(monkeypatch):
    vllm = RecordingVLLM()
    vllm.install(monkeypatch)
    p, vllm.fresh_base = make_participant()
    gen = VLLMGenerator(p, hub_cfg(), OmegaConf.structured(GenerationConfig(vllm_gpu_memory_utilization=0.3)))
    assert vllm.calls == []  # lazy: no engine before the first generate
    prompts = ["short", "a prompt that is much longer than the other " * 3, "mid-size prompt"]

    outs = [gen.generate(p, prompts, max_new_tokens=12)]
    randomize_lora(p.model, "policy")  # a training step between the calls
    outs.append(gen.generate(p, prompts, max_new_tokens=12))
    assert [c[0] for c in vllm.calls] == ["init", "generate", "sleep", "wake_up", "generate", "sleep"]
    assert len(vllm.engines) == 1
    kw = vllm.engines[0].kw
    assert kw == dict(model="/models/qwen3-tiny", tokenizer="/models/qwen3-tiny", dtype="bfloat16",
                      trust_remote_code=False, load_format="safetensors", enable_lora=True, max_lora_rank=8,
                      max_loras=1, enable_sleep_mode=True, gpu_memory_utilization=0.3, tensor_parallel_size=1)
    assert [c[1] for c in vllm.calls if c[0] == "sleep"] == [1, 1]

    # prompts: the participant's own token ids, cut as the HF backend cuts them (max_length 40 - 12 new tokens):
    # from the left, so that the end of a prompt (its question and instruction) survives
    sent = vllm.calls[1][1]
    assert sent == [x[-28:] for x in p.tokenizer(prompts)["input_ids"]]
    assert max(len(x) for x in sent) == 28 and len(sent[0]) < 28
    assert vllm.calls[1][2] == {"temperature": 0, "max_tokens": 12}
    assert outs[0] == outs[1] == [f"len{len(x)}" for x in sent]  # outputs in prompt order

    # a new LoRA id each call, and each adapter equals the policy at the time of that call
    (req1, m1), (req2, m2) = vllm.adapters
    assert req2.lora_int_id > req1.lora_int_id and req1.lora_path != req2.lora_path
    ids = torch.tensor([sent[0]])
    p.model.eval()
    with torch.no_grad():
        now = p.model(input_ids=ids).logits
        torch.testing.assert_close(m2(input_ids=ids).logits, now, atol=1e-5, rtol=0)
        assert (m1(input_ids=ids).logits - now).abs().max() > 1e-3  # the first adapter predates the step

    workdir = gen.workdir
    assert str(gen.adapter_dir) == req2.lora_path and not Path(req1.lora_path).exists()  # only the latest is kept
    gen.close()
    assert not workdir.exists() and gen.llm is None


def test_the_engine_sleeps_even_when_generation_fails(monkeypatch):
    vllm = RecordingVLLM()
    vllm.install(monkeypatch)
    p, vllm.fresh_base = make_participant()

    def boom(self, *a, **k):
        raise RuntimeError("engine died")
    monkeypatch.setattr(vllm.module.LLM, "generate", boom)
    gen = VLLMGenerator(p, hub_cfg(), OmegaConf.structured(GenerationConfig()))
    with pytest.raises(RuntimeError, match="engine died"):
        gen.generate(p, ["x"], 4)
    assert vllm.calls[-1] == ("sleep", 1)
    gen.close()


def test_make_generators_gives_each_participant_its_own_model_config(monkeypatch):
    vllm = RecordingVLLM()
    vllm.install(monkeypatch)
    server, vllm.fresh_base = make_participant("server", "server")
    client, _ = make_participant("client1")
    cfg = OmegaConf.create({"server": {"model": hub_cfg(allow_unsafe_weights=True)},
                            "clients": {"client1": {"model": hub_cfg(trust_remote_code=True)}},
                            "generation": OmegaConf.structured(GenerationConfig(vllm_tensor_parallel_size=2))})
    gens = make_generators(cfg, {"server": server, "client1": client})
    assert set(gens) == {"server", "client1"} and vllm.engines == []
    gens["server"].generate(server, ["p"], 3)
    gens["client1"].generate(client, ["p"], 3)
    s, c = vllm.engines
    assert (s.kw["load_format"], s.kw["trust_remote_code"], s.kw["max_lora_rank"]) == ("auto", False, 8)
    assert (c.kw["load_format"], c.kw["trust_remote_code"]) == ("safetensors", True)
    assert s.kw["tensor_parallel_size"] == c.kw["tensor_parallel_size"] == 2
    for g in gens.values():
        g.close()


def test_without_vllm_generate_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    p, _ = make_participant()
    gen = VLLMGenerator(p, hub_cfg(), OmegaConf.structured(GenerationConfig()))  # lazy: no import yet
    with pytest.raises(ImportError, match=re.escape("pip install 'ladalit[vllm]'")):
        gen.generate(p, ["x"], 4)


# ----------------------------------------------------------------------------- config

SCENARIO = """
server: {model: {source: hub, name_or_path: org/server, tokenizer: "", lora: {enabled: true}}}
clients:
  client1: {model: {source: hub, name_or_path: /models/client1, tokenizer: "", lora: {enabled: true}}}
generation: {backend: vllm}
fabric: {accelerator: cuda, devices: 1, strategy: auto}
"""


def test_vllm_backend_config_loads_and_its_knobs_are_validated(tmp_path):
    conf = tmp_path / "v.yaml"
    conf.write_text(SCENARIO)
    cfg = load_config([f"conf={conf}"])
    assert (cfg.generation.backend, cfg.generation.vllm_gpu_memory_utilization,
            cfg.generation.vllm_tensor_parallel_size) == ("vllm", 0.5, 1)
    for override, message in [
        ("generation.backend=sglang", "config key 'generation.backend': unknown value 'sglang' (allowed: hf, vllm)"),
        ("generation.vllm_gpu_memory_utilization=1.5",
         "config key 'generation.vllm_gpu_memory_utilization': value 1.5 out of range [0.01, 1.0]"),
        ("generation.vllm_gpu_memory_utilization=0", "out of range [0.01, 1.0]"),
        ("generation.vllm_tensor_parallel_size=0",
         "config key 'generation.vllm_tensor_parallel_size': value 0 out of range [1, inf]"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config([f"conf={conf}", override])


@pytest.mark.parametrize("override,message", [
    ("clients.client1.model.lora.enabled=false",
     "config key 'clients.client1.model.lora.enabled': generation.backend=vllm needs LoRA (the trained weights "
     "reach the engine as a LoRA adapter; full fine-tuning cannot be synced into vLLM through its public API)"),
    ("server.model.source=tiny",
     "config key 'server.model.source': generation.backend=vllm needs source=hub (a hub id or a local directory "
     "vLLM loads itself); a tiny model has random weights in memory only"),
    ("clients.client1.model.source=zoo",
     "config key 'clients.client1.model.source': generation.backend=vllm needs source=hub (a hub id or a local "
     "directory vLLM loads itself); zoo members are the CPU proving ground's tiny models; to try one, set "
     "source=hub and name_or_path to its cached directory"),
    ("fabric.strategy=fsdp2",
     "config key 'fabric.strategy': generation.backend=vllm does not run under fsdp2 (vLLM inside a multi-process "
     "Fabric world is not supported by this backend; generation.vllm_tensor_parallel_size spreads an engine "
     "over GPUs)"),
    ("fabric.devices=2",
     "config key 'fabric.devices': generation.backend=vllm needs 1, got 2 (vLLM inside a multi-process Fabric "
     "world is not supported by this backend; generation.vllm_tensor_parallel_size spreads an engine over GPUs)"),
    ("fabric.num_nodes=2", "config key 'fabric.num_nodes': generation.backend=vllm needs 1, got 2"),
    ("fabric.accelerator=cpu",
     "config key 'fabric.accelerator': generation.backend=vllm needs a GPU (vLLM's sleep mode, which parks idle "
     "engines, runs on CUDA and ROCm only)"),
])
def test_vllm_backend_rejects_what_it_cannot_serve_with_one_line(tmp_path, override, message):
    conf = tmp_path / "v.yaml"
    conf.write_text(SCENARIO)
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        load_config([f"conf={conf}", override])
    load_config([f"conf={conf}", override, "generation.backend=hf"])  # the hf backend takes it


def test_vllm_backend_errors_exit_2_on_the_command_line(tmp_path):
    import subprocess
    conf = tmp_path / "v.yaml"
    conf.write_text(SCENARIO)
    proc = subprocess.run([sys.executable, "-m", "ladalit.run", f"conf={conf}", "server.model.lora.enabled=false"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().startswith("error: config key 'server.model.lora.enabled': generation.backend=vllm "
                                          "needs LoRA")


def test_the_loop_response_cache_sends_a_participant_with_a_generator_to_it(monkeypatch):
    """ResponseCache: generation.backend=vllm routes public-set answers through the participant's
    VLLMGenerator (here over the recording double); the others keep HF generate_text."""
    from ladalit.data.records import MCRecord
    from ladalit.core.responses import ResponseCache
    from ladalit.core.prompts import CutAnswer
    from ladalit.core.prompts import zero_shot_prompt
    vllm = RecordingVLLM()
    vllm.install(monkeypatch)
    p, vllm.fresh_base = make_participant()
    other, _ = make_participant("client2")
    monkeypatch.setattr(p, "generate_text", lambda *a, **k: pytest.fail("HF generate_text used with vllm"))
    gen = VLLMGenerator(p, hub_cfg(), OmegaConf.structured(GenerationConfig()))
    cache = ResponseCache(max_new_tokens=5, batch_size=2, generators={"client1": gen}, mark_cut=True)
    xs = [MCRecord(id=f"x{i}", question=f"{i}+1?", options=("1", "2", "3", "4"), answer="B") for i in range(3)]
    got = cache.get(1, p, xs)
    assert [c[0] for c in vllm.calls] == ["init", "generate", "sleep"]
    sent = vllm.calls[1][1]
    assert sent == [x[-35:] for x in p.tokenizer([zero_shot_prompt(x) for x in xs])["input_ids"]]
    assert got == [f"len{len(ids)}" for ids in sent]
    assert [isinstance(y, CutAnswer) for y in got] == [len(ids) > 20 for ids in sent]  # finish_reason "length"
    assert cache.get(1, p, xs[:2]) == got[:2] and len(vllm.calls) == 3  # cached: no second call
    assert len(cache.get(1, other, xs)) == 3 and len(vllm.calls) == 3  # client2: HF generate
    gen.close()
