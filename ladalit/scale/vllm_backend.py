"""Response generation with vLLM (`generation.backend: vllm`, `pip install 'ladalit[vllm]'`).

One `VLLMGenerator` per participant. Its engine is built on the first
`generate` from the participant's base model (`source: hub`: a hub id or a
local directory) with LoRA and sleep mode on. The policy being trained lives in
peft LoRA adapters ("sft" + "policy" for a client, "policy" for the server);
vLLM applies one LoRA per request, so every `generate` concatenates the
adapters active at that moment into one (`merge_adapters`), writes it in peft's
on-disk format and passes it under a new LoRA id: vLLM never serves weights
from before the last training step. After each call the engine sleeps (level 1:
weights copied to CPU memory, KV cache dropped) and the next call wakes it, so
an idle participant's engine holds no GPU memory for weights or KV cache.

Only vLLM's public API is used: `vllm.LLM(...)`, `LLM.generate`, `LLM.sleep`,
`LLM.wake_up`, `vllm.SamplingParams`, `vllm.lora.request.LoRARequest`, as
documented at docs.vllm.ai (features/sleep_mode, examples/features/lora) and in
vllm/entrypoints/llm.py, vllm/config/lora.py (the max_lora_rank values) and
vllm/lora/peft_helper.py (the adapter_config.json fields vLLM reads).

Verified, and not:
- verified on CPU (tests/scale/test_vllm_backend.py): `merge_adapters` is exact: the
  written directory, loaded by `peft.PeftModel.from_pretrained` onto the same
  base, gives the logits of the base with both adapters active (tiny qwen3,
  adapters of different rank, alpha and target modules);
- verified against a recording double of the `vllm` module, not vLLM: the
  engine arguments, greedy sampling, a new LoRA id and a peft-loadable adapter
  equal to the current policy on every call, wake_up/sleep order, outputs in
  prompt order, one engine per participant;
- NOT verified: this module has never run against a real vLLM (it could not be
  installed where it was written). Only a GPU run can show vLLM's support for a
  participant's architecture and LoRA target modules, several sleeping engines
  beside the training process on one GPU (each `LLM` runs its engine in its own
  process, vLLM's default; sleep mode allows one engine per process), float32
  models with LoRA, and the speed-up itself.
"""
from __future__ import annotations

import gc
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

# vLLM accepts only these values of max_lora_rank (vllm/config/lora.py: MaxLoRARanks)
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_lora_ids = itertools.count(1)  # LoRA ids are never reused, so vLLM never serves a cached adapter


def merge_adapters(peft_model, names: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """One LoRA equal to the adapters `names` active together.

    Per module, W + sum_i s_i B_i A_i = W + B A with A = cat(A_i) along the rank
    and B = cat(s_i B_i), s_i the adapter's own scaling (alpha_i / r_i, or its
    rsLoRA form); the merged adapter has r = lora_alpha = sum r_i (scaling 1).
    Returns (state dict with peft's saved keys, adapter_config.json as a dict).
    Dropout is an identity at inference and is not carried over.
    """
    rank = {n: _rank(peft_model, n) for n in names}
    sd: dict[str, torch.Tensor] = {}
    targets: set[str] = set()
    for mod_name, module in peft_model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if lora_a is None:
            continue
        if any(n in module.lora_embedding_A or module.use_dora.get(n) or module.lora_bias.get(n) for n in names):
            raise NotImplementedError(f"{mod_name}: only plain LoRA on linear layers can be merged for vLLM")
        if not any(n in lora_a for n in names):
            continue
        a, b = [], []
        for n in names:  # every block padded to the adapter's rank; an adapter without this module gives zeros
            a_n = lora_a[n].weight.detach().float().cpu() if n in lora_a else torch.zeros(0, module.in_features)
            b_n = (lora_b[n].weight.detach().float().cpu() * module.scaling[n] if n in lora_b
                   else torch.zeros(module.out_features, 0))
            a.append(F.pad(a_n, (0, 0, 0, rank[n] - a_n.shape[0])))
            b.append(F.pad(b_n, (0, rank[n] - b_n.shape[1])))
        sd[f"{mod_name}.lora_A.weight"] = torch.cat(a, 0).contiguous()
        sd[f"{mod_name}.lora_B.weight"] = torch.cat(b, 1).contiguous()
        targets.add(mod_name.rsplit(".", 1)[-1])
    if not sd:
        raise ValueError(f"no LoRA weights for adapters {names}")
    r = sum(rank.values())
    first = peft_model.peft_config[names[0]]
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM",
              "base_model_name_or_path": first.base_model_name_or_path,
              "r": r, "lora_alpha": r, "lora_dropout": 0.0, "target_modules": sorted(targets),
              "bias": "none", "use_rslora": False, "use_dora": False, "modules_to_save": None,
              "fan_in_fan_out": bool(first.fan_in_fan_out)}
    return sd, config


def _rank(peft_model, name: str) -> int:
    """The rank of adapter `name` (the widest, should its rank vary by module)."""
    cfg = peft_model.peft_config[name]
    return max([cfg.r, *dict(cfg.rank_pattern or {}).values()])


def save_adapter(path: Path, state_dict: dict[str, torch.Tensor], config: dict) -> Path:
    """Write a LoRA in peft's on-disk format: adapter_model.safetensors + adapter_config.json."""
    from safetensors.torch import save_file
    path.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(config, indent=1))
    return path


def max_lora_rank(r: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds rank `r`."""
    for allowed in LORA_RANKS:
        if r <= allowed:
            return allowed
    raise ValueError(f"merged LoRA rank {r} is above vLLM's largest max_lora_rank {LORA_RANKS[-1]}")


class VLLMGenerator:
    """Greedy generation for one participant through a vLLM engine serving its current LoRA policy."""

    def __init__(self, participant, model_cfg, generation_cfg):
        if model_cfg.source != "hub":  # config validation rejects this first
            raise ValueError(f"{participant.name}: the vLLM backend loads source=hub models, not {model_cfg.source!r}")
        self.name = participant.name
        self.model_cfg, self.generation_cfg = model_cfg, generation_cfg
        self.llm = None
        self.asleep = False
        self.workdir: Path | None = None
        self.adapter_dir: Path | None = None

    def _engine(self, LLM, rank: int):
        m, g = self.model_cfg, self.generation_cfg
        local = Path(m.name_or_path).expanduser()
        model = str(local) if local.exists() else m.name_or_path  # a local directory, else a hub id
        tokenizer = m.tokenizer or model
        return LLM(model=model, tokenizer=tokenizer, dtype=m.dtype, trust_remote_code=m.trust_remote_code,
                   load_format="auto" if m.allow_unsafe_weights else "safetensors",
                   enable_lora=True, max_lora_rank=max_lora_rank(rank), max_loras=1,
                   enable_sleep_mode=True, gpu_memory_utilization=g.vllm_gpu_memory_utilization,
                   tensor_parallel_size=g.vllm_tensor_parallel_size)

    def generate(self, participant, prompts: list[str], max_new_tokens: int, cut: list | None = None) -> list[str]:
        """Greedy continuations of `prompts` (in their order) by the participant's current policy; `cut`,
        when given, receives whether each answer reached max_new_tokens (as `Participant.generate_text`)."""
        if not prompts:
            return []
        try:
            from vllm import LLM, SamplingParams
            from vllm.lora.request import LoRARequest
        except ImportError as err:
            raise ImportError(f"generation.backend=vllm needs vLLM: pip install 'ladalit[vllm]' ({err})") from err
        if not participant.use_lora:
            raise ValueError(f"{participant.name}: the vLLM backend needs LoRA (model.lora.enabled)")
        # the policy: the adapters active now, as one LoRA under a new id
        model = participant.model
        sd, config = merge_adapters(model, list(model.base_model.active_adapters))
        config["base_model_name_or_path"] = self.model_cfg.name_or_path
        lora_id = next(_lora_ids)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"ladalit-vllm-{self.name}-"))
        old, self.adapter_dir = self.adapter_dir, save_adapter(self.workdir / f"lora-{lora_id}", sd, config)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        lora = LoRARequest(f"{self.name}-{lora_id}", lora_id, str(self.adapter_dir))
        # the prompts as the HF backend sees them: the participant's tokenizer, cut to leave room for the answer
        ids, _ = participant.prompt_ids(prompts, max_new_tokens)
        if self.llm is None:  # built awake; max_lora_rank covers every adapter the participant has
            self.llm = self._engine(LLM, sum(_rank(model, n) for n in model.peft_config))
        elif self.asleep:
            self.llm.wake_up()
        self.asleep = False
        try:
            outs = self.llm.generate([{"prompt_token_ids": list(x)} for x in ids],
                                     SamplingParams(temperature=0, max_tokens=max_new_tokens),
                                     lora_request=lora, use_tqdm=False)
        finally:
            self.llm.sleep(level=1)  # weights to CPU memory, KV cache dropped
            self.asleep = True
        if cut is not None:
            cut += [o.outputs[0].finish_reason == "length" for o in outs]
        return [o.outputs[0].text for o in outs]

    def close(self) -> None:
        """Drop the engine (its process ends when collected) and the adapter files."""
        self.llm = None
        gc.collect()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = self.adapter_dir = None


def make_generators(cfg, participants: dict) -> dict[str, VLLMGenerator]:
    """One generator per participant name; the server's model config is cfg.server.model."""
    return {name: VLLMGenerator(p, cfg.server.model if p.role == "server" else cfg.clients[name].model,
                                cfg.generation)
            for name, p in participants.items()}
