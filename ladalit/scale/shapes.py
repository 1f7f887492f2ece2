"""Model shapes of the paper's scenarios (Table I) and what they need in GPU memory.

`SHAPES` holds each hub model's architecture numbers, copied from its public
config.json (hidden size, layers, heads, kv heads, head dim, MLP width,
vocabulary, tied embeddings) and the size its model card publishes. From them:

- `build(shape, device)`: a random-weight model of that shape; on the meta
  device to count parameters (no memory), on a real device to benchmark;
- `param_count`, `lora_param_count`: exact counts (the model's own modules;
  LoRA from the shapes of the targeted linear layers);
- `participant_memory`: bytes for one participant's training step — bf16
  weights, LoRA adapters (float32, as peft keeps them) with gradients and
  AdamW moments for the trained adapter only, and a rough activation and
  logits estimate for one MARD minibatch (chosen + rejected rows);
- `scenario_memory(cfg)`: the per-GPU memory of a scenario config under
  FSDP2 for 1, 2, 4, 8, ... GPUs and the smallest count that fits a device.

Rough by design: activations are counted per token and layer from the tensors
autograd keeps (bf16), not measured; allocator fragmentation and the CUDA
context are a flat `OVERHEAD_GB`. `benchmarks/gpu_round.py` measures the real thing.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from ladalit.scale.strategy import activation_checkpointing

GB = 1024**3
OVERHEAD_GB = 4.0  # CUDA context, NCCL buffers (flat, per GPU)
USABLE = 0.9  # of a device's memory, for allocator fragmentation and the estimate's roughness
BF16, FP32 = 2, 4


@dataclass(frozen=True)
class Shape:
    arch: str  # transformers model_type
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    published_params: float  # the model card's size
    extra: tuple = ()  # further config.json fields, as (key, value) pairs

    def config(self):
        from transformers import AutoConfig
        return AutoConfig.for_model(
            self.arch, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim,
            intermediate_size=self.intermediate_size, vocab_size=self.vocab_size,
            tie_word_embeddings=self.tie_word_embeddings, **dict(self.extra))


# config.json values of the hub models (Qwen3 cards give 0.6B/1.7B/4.0B/8.2B/32.8B; the others the hub's size)
SHAPES: dict[str, Shape] = {
    "Qwen/Qwen3-0.6B": Shape("qwen3", 1024, 28, 16, 8, 128, 3072, 151936, True, 0.6e9),
    "Qwen/Qwen3-1.7B": Shape("qwen3", 2048, 28, 16, 8, 128, 6144, 151936, True, 1.7e9),
    "Qwen/Qwen3-4B": Shape("qwen3", 2560, 36, 32, 8, 128, 9728, 151936, True, 4.0e9),
    "Qwen/Qwen3-8B": Shape("qwen3", 4096, 36, 32, 8, 128, 12288, 151936, False, 8.2e9),
    "Qwen/Qwen3-32B": Shape("qwen3", 5120, 64, 64, 8, 128, 25600, 151936, False, 32.8e9),
    "Qwen/Qwen2.5-72B-Instruct": Shape("qwen2", 8192, 80, 64, 8, 128, 29568, 152064, False, 72.7e9),
    "google/gemma-2-2b": Shape("gemma2", 2304, 26, 8, 4, 256, 9216, 256000, True, 2.61e9,
                               (("query_pre_attn_scalar", 256),)),
    "google/gemma-2-27b": Shape("gemma2", 4608, 46, 32, 16, 128, 36864, 256000, True, 27.2e9,
                                (("query_pre_attn_scalar", 144),)),
    "meta-llama/Meta-Llama-3-8B": Shape("llama", 4096, 32, 32, 8, 128, 14336, 128256, False, 8.03e9),
    # transformers builds internlm3 natively; the hub repo's remote code has the same modules
    "internlm/internlm3-8b-instruct": Shape("internlm3", 4096, 48, 32, 2, 128, 10240, 128512, False, 8.8e9,
                                            (("qkv_bias", False), ("bias", False))),
}


def build(shape: Shape, device: str | torch.device = "meta", dtype: torch.dtype = torch.bfloat16):
    """A random-weight causal LM of `shape` (meta: no memory, for counting)."""
    from transformers import AutoModelForCausalLM
    with torch.device(device):
        return AutoModelForCausalLM.from_config(shape.config(), dtype=dtype)


def param_count(model_or_shape) -> int:
    """Parameters of a model (tied weights once); a Shape is built on the meta device first."""
    if isinstance(model_or_shape, Shape):
        return _shape_params(model_or_shape)
    return sum(p.numel() for p in model_or_shape.parameters())


@functools.lru_cache(maxsize=None)
def _shape_params(shape: Shape) -> int:
    return param_count(build(shape))


def _linears(s: Shape) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one decoder layer, by module name."""
    q, kv, h, i = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.hidden_size, s.intermediate_size
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def lora_param_count(s: Shape, r: int, target_modules) -> int:
    """One adapter's parameters: r·(in + out) per targeted linear layer ("all-linear": all but the LM head)."""
    targets = list(target_modules)
    lin = _linears(s)
    names = list(lin) if targets == ["all-linear"] else [t for t in targets if t in lin]
    return s.num_layers * sum(r * sum(lin[n]) for n in names)


def activation_bytes(s: Shape, sequences: int, seq_len: int, checkpointing: bool = False) -> int:
    """Rough bytes autograd keeps for one forward over `sequences` rows of `seq_len` tokens (bf16).

    Per token and layer: norm inputs and outputs, q/k/v, attention output, the
    MLP's gate/up/activation, residuals; eager attention (gemma2, for its logit
    soft-capping) also keeps the score matrices. With activation checkpointing
    only each layer's input is kept, plus one layer recomputed at a time.
    """
    q, kv, h, i = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.hidden_size, s.intermediate_size
    tokens = sequences * seq_len
    per_layer = BF16 * tokens * (6 * h + 2 * q + 2 * kv + 3 * i)
    if s.arch == "gemma2":  # eager attention: scores and probabilities (bf16) and the fp32 softmax
        per_layer += (BF16 + BF16 + FP32) * sequences * s.num_heads * seq_len * seq_len
    if checkpointing:
        return BF16 * tokens * h * s.num_layers + per_layer
    return per_layer * s.num_layers


def logits_bytes(s: Shape, sequences: int, response_len: int) -> int:
    """bf16 logits at the response positions (the only ones Participant computes), their float32 copy
    and cross-entropy's saved tensor."""
    return sequences * response_len * s.vocab_size * (BF16 + FP32 + FP32)


def participant_memory(s: Shape, *, lora_r: int = 16, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
                       adapters: int = 1, rows: int = 16, seq_len: int = 512, response_len: int | None = None,
                       checkpointing: bool = False) -> dict:
    """Bytes one participant needs: `static` (weights and adapter state, shardable) and `step` (one update)."""
    n = param_count(s)
    lora = lora_param_count(s, lora_r, target_modules)
    weights = BF16 * n
    # adapters in float32; the trained one also has a gradient and two AdamW moments
    adapter_state = FP32 * lora * adapters + 3 * FP32 * lora
    act = activation_bytes(s, rows, seq_len, checkpointing)
    logits = logits_bytes(s, rows, seq_len if response_len is None else min(response_len, seq_len))
    lin = _linears(s)
    layer = BF16 * sum(a * b for a, b in lin.values())  # one decoder layer's linear weights, gathered
    root = BF16 * s.vocab_size * s.hidden_size * (1 if s.tie_word_embeddings else 2)
    return {"params": n, "lora_params": lora, "weights": weights, "adapter_state": adapter_state,
            "static": weights + adapter_state, "activations": act, "logits": logits,
            "layer": layer, "root": root, "step": act + logits}


def _participants(cfg):
    yield "server", cfg.server, len(cfg.clients)
    for name, c in cfg.clients.items():
        yield name, c, 1


def scenario_memory(cfg, device_gb: float = 80.0, max_gpus: int = 64, checkpointing: bool | None = None) -> dict:
    """Per-GPU memory of a scenario under FSDP2 (every participant sharded over all GPUs).

    static (weights + adapters of all participants) / N, plus the busiest
    training step on one process: its activations (every token of its rows) and
    logits (the response tokens only) for its share of the minibatch,
    ceil(rows / N) rows (ladalit.scale.data_parallel), two gathered decoder layers
    (one prefetched) and its gathered root (embedding, LM head). A server
    minibatch holds up to K rows per sample (one per client that selected it),
    each a chosen and a rejected sequence. `participants[...]["step"]` is one
    whole minibatch (one process).
    """
    if checkpointing is None:
        checkpointing = activation_checkpointing(cfg)

    def memory(p, name, rows):
        m = p.model
        adapters = (2 if name != "server" else 1) if m.lora.enabled else 0
        return participant_memory(
            SHAPES[m.name_or_path], lora_r=m.lora.r if m.lora.enabled else 0, target_modules=m.lora.target_modules,
            adapters=adapters, rows=2 * rows, seq_len=p.train.max_length,
            response_len=cfg.generation.max_new_tokens + 1, checkpointing=checkpointing)

    parts, rows = {}, {}
    for name, p, rows_per_sample in _participants(cfg):
        if p.model.name_or_path not in SHAPES:
            raise KeyError(f"{name}: no shape for {p.model.name_or_path!r} in ladalit.scale.shapes.SHAPES")
        rows[name] = (p, p.train.batch_size * rows_per_sample)
        parts[name] = {"model": p.model.name_or_path, **memory(p, name, rows[name][1])}
    static = sum(v["static"] for v in parts.values())
    per_gpu = {}
    n = 1
    while n <= max_gpus:
        peak_step = 0
        for name, (p, r) in rows.items():
            v = memory(p, name, math.ceil(r / n))
            peak_step = max(peak_step, v["step"] + 2 * v["layer"] + v["root"])
        per_gpu[n] = static / n + peak_step + OVERHEAD_GB * GB
        n *= 2
    fits = [n for n, b in per_gpu.items() if b <= USABLE * device_gb * GB]
    return {"participants": parts, "static": static, "per_gpu": per_gpu,
            "gpus": min(fits) if fits else None, "device_gb": device_gb, "checkpointing": checkpointing}


def table(cfg, name: str, devices_gb=(80.0, 141.0)) -> str:
    """A Markdown table of one scenario (used for docs/scenarios.md)."""
    server, client = cfg.server, next(iter(cfg.clients.values()))
    lora = server.model.lora
    lines = [f"**{name}** — computed from model shapes (`ladalit.scale.shapes`): server batch {server.train.batch_size} "
             f"sample(s) (up to {len(cfg.clients)} rows each), client batch {client.train.batch_size}, "
             f"max_length {server.train.max_length}, LoRA r={lora.r} ({', '.join(lora.target_modules)}), bf16 weights",
             "",
             "| participant | model | params | LoRA params | weights GB | adapters+AdamW GB | one step GB |",
             "|---|---|---|---|---|---|---|"]
    base = scenario_memory(cfg, checkpointing=False)
    for who, v in base["participants"].items():
        lines.append(f"| {who} | {v['model']} | {v['params'] / 1e9:.2f} B | {v['lora_params'] / 1e6:.1f} M | "
                     f"{v['weights'] / GB:.1f} | {v['adapter_state'] / GB:.2f} | {v['step'] / GB:.1f} |")
    lines.append("")
    lines.append("(one step: activations and logits of one MARD minibatch, chosen + rejected, "
                 "without activation checkpointing)")
    lines += ["", "| FSDP2 over N GPUs | " + " | ".join(f"N={n}" for n in base["per_gpu"] if n <= 16) + " |",
              "|---|" + "---|" * len([n for n in base["per_gpu"] if n <= 16])]
    for ckpt in (False, True):
        m = scenario_memory(cfg, checkpointing=ckpt)
        label = "GB per GPU" + (", activation checkpointing" if ckpt else "")
        lines.append(f"| {label} | " + " | ".join(f"{b / GB:.0f}" for n, b in m["per_gpu"].items() if n <= 16) + " |")
    lines.append("")
    for gb in devices_gb:
        for ckpt in (False, True):
            g = scenario_memory(cfg, device_gb=gb, checkpointing=ckpt)["gpus"]
            need = f"**{g}** GPU{'s' if g != 1 else ''}" if g else "does not fit (one step alone exceeds a GPU)"
            lines.append(f"- {gb:.0f} GB GPUs{' + activation checkpointing' if ckpt else ''}: {need}")
    return "\n".join(lines)


def gpus_needed(cfg, device_gb: float = 80.0) -> int | None:
    return scenario_memory(cfg, device_gb=device_gb)["gpus"]

def summary(configs: dict) -> str:
    """One line per scenario (name -> its loaded config): its models and the GPU counts computed for 80 GB and
    141 GB GPUs."""
    lines = ["| conf | client 1 | client 2 | client 3 | server | GPUs, 80 GB | GPUs, 141 GB |",
             "|---|---|---|---|---|---|---|"]
    for n, cfg in configs.items():
        models = [c.model.name_or_path.split("/")[1] for c in cfg.clients.values()]
        models.append(cfg.server.model.name_or_path.split("/")[1])
        counts = [gpus_needed(cfg, gb) for gb in (80.0, 141.0)]
        lines.append(f"| {n} | " + " | ".join(models) + " | " + " | ".join(str(c or "-") for c in counts) + " |")
    return "\n".join(lines)


def scenarios_markdown(configs: dict) -> str:
    """The computed part of docs/scenarios.md from the scenarios' loaded configs (name -> config):
    `python -m ladalit.reporting.scenarios` loads conf/s1-s4.yaml and prints it."""
    return "\n\n".join([summary(configs)] + [table(cfg, n) for n, cfg in configs.items()])
