"""FSDP2 for the large participants: `fabric.strategy: fsdp2`.

`fsdp2_strategy(cfg)` is Lightning Fabric's `ModelParallelStrategy` (data
parallel = every process, tensor parallel = 1) whose `parallelize_fn` applies
`torch.distributed.fsdp.fully_shard` to every decoder layer and then to a thin
root module around the `Participant` (`ShardedRoot`). The root owns what is
left (token embedding, final norm, LM head, tied or not) and gathers it when
its `__call__` runs. Fabric routes every method marked with
`mark_forward_method` (`pair_logprobs`, `generate_text`, ...) through the
wrapped module's `__call__` only when the wrapped module is a different object
from the participant; `fully_shard` works in place, hence the extra root. Inside,
HF `generate` and peft (whose LoraModel calls the causal LM's `forward`
directly) reach the decoder layers through their `__call__`, so each layer
gathers and frees its own shard. `fully_shard` marks the HF model as FSDP-managed,
so `generate` runs with `synced_gpus`: a process whose sequences end early keeps
doing forward passes until all have finished, which keeps the all-gathers matched.

LoRA: only the adapters train; the frozen base is sharded like the rest and
never gets a gradient. With `fabric.precision: bf16-*` parameters are gathered
in bfloat16 and gradients reduced in float32 (`MixedPrecisionPolicy`); this
also lets float32 LoRA weights sit beside a bfloat16 base in one unit.

Work is split too: each process generates and trains on its share of a
batch's rows and gathers the results (`ladalit.scale.data_parallel`, used by
`Participant.generate_text`, `ladalit.method.distill.distill_step` and the SFT of
`training.supervised_finetune`); the baselines' own steps still run the whole
minibatch on every process.

Sharded loading (`source: hub` under fsdp2, `load_sharded`): every process builds the
model with its parameters on the meta device (`ladalit.core.models.build_model(meta=True)`),
the LoRA adapters are materialised and initialised by peft under one seed on every
process (`init_lora_identically`), the model is sharded, and then rank 0 alone reads
the safetensors, a chunk of tensors at a time, and each process receives its shards
(`set_model_state_dict(..., StateDictOptions(full_state_dict=True,
broadcast_from_rank0=True))`). No process ever holds a full copy: the sum over
processes stays near one copy (`benchmarks/sharded_loading.py`).

Checkpoints: `save_participant(..., full=False)` writes one shard per process
(the whole module: base and adapters); `full=True` gathers to rank 0 and writes
a single file, with LoRA only the adapters (small: the right choice for LoRA).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.fabric.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def decoder_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a HF causal LM, also under a peft wrapper.

    A block's class is named in the model's `_no_split_modules` (all HF decoder
    models set it), else its class name ends with "DecoderLayer".
    """
    names: set[str] = set()
    for m in module.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    layers = [m for m in module.modules()
              if type(m).__name__ in names or type(m).__name__.endswith("DecoderLayer")]
    # outermost only (a block never contains another here, but be safe)
    inner = {id(c) for m in layers for c in m.modules() if c is not m}
    return [m for m in layers if id(m) not in inner]


def mixed_precision(precision: str) -> MixedPrecisionPolicy:
    if str(precision).startswith("bf16"):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if str(precision).startswith("16"):
        return MixedPrecisionPolicy(param_dtype=torch.float16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def enable_activation_checkpointing(module: torch.nn.Module) -> bool:
    """Recompute decoder-layer activations in backward (HF's non-reentrant checkpointing, outermost HF model)."""
    from transformers import PreTrainedModel
    hf = next((m for m in module.modules() if isinstance(m, PreTrainedModel)), None)
    if hf is None or not hf.supports_gradient_checkpointing:
        return False
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers 5.2x
        hf.activation_checkpointing_enable({"use_reentrant": False})
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


class ShardedRoot(torch.nn.Module):
    """The FSDP2 root around a participant; a separate object so that Fabric redirects marked methods."""

    def __init__(self, participant: torch.nn.Module):
        super().__init__()
        self.participant = participant

    def forward(self, *args, **kwargs):
        return self.participant(*args, **kwargs)


def make_parallelize_fn(precision: str = "32-true", activation_checkpointing: bool = False,
                        reshard_after_forward: bool = True):
    mp = mixed_precision(precision)

    def parallelize(module: torch.nn.Module, device_mesh) -> torch.nn.Module:
        if getattr(module, "use_lora", True) is False and getattr(module, "ref_model", 0) is None:
            raise ValueError(
                f"fsdp2: participant {getattr(module, 'name', '?')!r} has no LoRA; its frozen reference would be a "
                "deepcopy of the sharded model, which FSDP2 cannot make: set model.lora.enabled=true")
        mesh = device_mesh["data_parallel"]
        layers = decoder_layers(module)
        if not layers:
            raise ValueError(f"fsdp2: no decoder layers found in {type(module).__name__}")
        if activation_checkpointing:
            enable_activation_checkpointing(module)
        load = sharded_load_of(module)
        if load is not None:
            init_lora_identically(module, load["seed"])
        for layer in layers:
            fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
        root = ShardedRoot(module)
        fully_shard(root, mesh=mesh, mp_policy=mp)
        if load is not None:
            load_sharded(root, load["path"], mesh)
        return root

    return parallelize


# ----------------------------------------------------------------------------- sharded loading
def loads_sharded(cfg, pcfg) -> bool:
    """Whether this participant is built on the meta device and loaded shard by shard (fsdp2, `source: hub`)."""
    return cfg.fabric.strategy == "fsdp2" and pcfg.model.source == "hub"


def _hf_model(module: torch.nn.Module):
    from transformers import PreTrainedModel
    return next(((n, m) for n, m in module.named_modules() if isinstance(m, PreTrainedModel)), (None, None))


def sharded_load_of(module: torch.nn.Module) -> dict | None:
    """{"path", "seed"} recorded by `build_model(meta=True)` on the HF model inside `module`, else None."""
    return getattr(_hf_model(module)[1], "ladalit_sharded_load", None)


def init_lora_identically(module: torch.nn.Module, seed: int) -> int:
    """Materialise every LoRA adapter on the CPU and initialise it with peft's own `reset_lora_parameters`
    (the adapter's `init_lora_weights`), in module order under `seed`: the same values on every process,
    whether the base is real or on the meta device. Returns the number of LoRA layers."""
    from peft.tuners.lora import LoraLayer
    configs = {}
    for m in module.modules():
        configs.update(getattr(m, "peft_config", {}) or {})
    n = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if not isinstance(m, LoraLayer):
                continue
            n += 1
            for attr in m.adapter_layer_names:
                getattr(m, attr).to_empty(device="cpu")
            for adapter in [*m.lora_A.keys(), *m.lora_embedding_A.keys()]:
                m.reset_lora_parameters(adapter, configs[adapter].init_lora_weights if adapter in configs else True)
    return n


def _checkpoint_index(path: Path) -> dict[str, str]:
    """Tensor name -> safetensors file, for one file or a sharded checkpoint with an index."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return {k: str(path / f) for k, f in json.loads(index.read_text())["weight_map"].items()}
    from safetensors import safe_open
    file = path / "model.safetensors"
    with safe_open(str(file), framework="pt") as f:
        return {k: str(file) for k in f.keys()}


def _checkpoint_names(root: torch.nn.Module) -> list[tuple[list[str], list[str]]]:
    """One (candidate checkpoint names, root parameter names) per parameter of the HF model that is not a
    LoRA adapter: peft's `.base_layer` removed; a tied weight has several names and is saved under one."""
    prefix = _hf_model(root)[0] + "."
    groups: dict[int, tuple[list[str], list[str]]] = {}
    for key, p in root.named_parameters(remove_duplicate=False):
        if key.startswith(prefix) and "lora_" not in key:
            cands, keys = groups.setdefault(id(p), ([], []))
            cands.append(key[len(prefix):].replace(".base_layer.", "."))
            keys.append(key)
    return list(groups.values())


LOAD_CHUNK_BYTES = 1 << 28  # what rank 0 reads from the safetensors before each broadcast


def load_sharded(root: torch.nn.Module, path: str | Path, mesh, chunk_bytes: int | None = None) -> dict:
    """Give a sharded model built on the meta device its weights: rank 0 reads `path`'s safetensors,
    `chunk_bytes` of tensors at a time, and every process receives its shards.

    Every process first allocates its (uninitialised) shards on its device; what was already real
    (the LoRA adapters, the buffers) is kept. Returns {"tensors", "bytes", "chunks"} read on rank 0."""
    import torch.distributed as dist
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor
    chunk_bytes = LOAD_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    device = torch.device(mesh.device_type, torch.cuda.current_device()) if mesh.device_type == "cuda" \
        else torch.device(mesh.device_type)
    keep = {n: (p.to_local() if isinstance(p, DTensor) else p).detach().clone()
            for n, p in root.named_parameters() if p.device.type != "meta"}
    keep_buffers = {n: b.detach().clone() for n, b in root.named_buffers() if b.device.type != "meta"}
    root.to_empty(device=device)
    with torch.no_grad():
        for n, p in root.named_parameters():
            if n in keep:
                (p.to_local() if isinstance(p, DTensor) else p).copy_(keep[n])
        for n, b in root.named_buffers():
            if n in keep_buffers:
                b.copy_(keep_buffers[n])

    plan = [None]
    if dist.get_rank() == 0:
        index, names = _checkpoint_index(Path(path)), {}
        for cands, keys in _checkpoint_names(root):
            found = next((c for c in cands if c in index), None)
            if found is None:
                raise ValueError(f"{path}: the checkpoint has no {cands[0]}")
            names[found] = keys
        chunks, size = [[]], 0
        order = {k: i for i, k in enumerate(index)}
        for name in sorted(names, key=order.get):  # the checkpoint's order
            with safe_open(index[name], framework="pt") as f:
                sl = f.get_slice(name)
                nbytes = max(1, _numel(sl.get_shape())) * _dtype_bytes(sl.get_dtype())
            if chunks[-1] and size + nbytes > chunk_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(name)
            size += nbytes
        plan = [{"chunks": chunks, "index": index, "names": names}]
    dist.broadcast_object_list(plan, src=0, group=mesh.get_group())
    plan = plan[0]
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    read = {"tensors": 0, "bytes": 0, "chunks": len(plan["chunks"])}
    for chunk in plan["chunks"]:
        state = {}
        if dist.get_rank() == 0:
            for name in chunk:
                with safe_open(plan["index"][name], framework="pt") as f:
                    t = f.get_tensor(name)
                for key in plan["names"][name]:
                    state[key] = t
                read["tensors"] += 1
                read["bytes"] += t.numel() * t.element_size()
        set_model_state_dict(root, state, options=options)
        del state
    return read


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _dtype_bytes(name: str) -> int:
    return {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "I8": 1, "U8": 1,
            "BOOL": 1}.get(name, 4)


def activation_checkpointing(cfg) -> bool:
    """`fabric.activation_checkpointing`, on by default under fsdp2: the 32B/72B scenarios need it
    (see ladalit.scale.shapes)."""
    return bool(cfg.fabric.activation_checkpointing)


def fsdp2_strategy(cfg) -> ModelParallelStrategy:
    """Fabric strategy for `fabric.strategy: fsdp2`: FSDP2 over all processes (data parallel), no TP."""
    f = cfg.fabric
    world = int(f.devices) * int(f.num_nodes)
    return ModelParallelStrategy(
        parallelize_fn=make_parallelize_fn(f.precision, activation_checkpointing(cfg)),
        data_parallel_size=world, tensor_parallel_size=1)


# ----------------------------------------------------------------------------- checkpoints
def _lora_only(key: str, value) -> bool:
    return "lora_" in key


def _participant_of(module):
    """The Participant under Fabric's wrapper (and under ShardedRoot): checkpoint keys do not depend on the strategy."""
    module = getattr(module, "module", module)  # _FabricModule -> the module given to setup_module
    return module.participant if isinstance(module, ShardedRoot) else module


def save_participant(fabric, participant, path, full: bool, optimizer=None, extra: dict | None = None) -> None:
    """Save a (Fabric-wrapped) participant, its optimizer and `extra` metadata.

    fsdp2: `full=False` -> a directory with one shard file per process (everything);
    `full=True` -> one file gathered on rank 0 (with LoRA: the adapters only).
    Other strategies always write one file (with LoRA: the adapters only).
    Keys are the Participant's own, so a full checkpoint loads under any strategy.
    """
    inner = _participant_of(participant)
    state = {"model": inner, **(extra or {})}
    if optimizer is not None:
        state["optimizer"] = optimizer
    strategy = fabric.strategy
    sharded = is_sharded(fabric) and not full
    filt = None if sharded or not getattr(inner, "use_lora", False) else {"model": _lora_only}
    if is_sharded(fabric):
        previous = strategy._save_distributed_checkpoint  # chosen per call, not per strategy
        strategy._save_distributed_checkpoint = sharded
        try:
            fabric.save(Path(path), state, filter=filt)
        finally:
            strategy._save_distributed_checkpoint = previous
    else:  # optimizer state keyed by parameter names, as under fsdp2: the file loads under either
        if optimizer is not None:
            state["optimizer"] = get_optimizer_state_dict(inner, plain_optimizer(optimizer))
        fabric.save(Path(path), state, filter=filt)


def load_participant(fabric, participant, path, optimizer=None, extra_keys: tuple[str, ...] = ()) -> dict:
    """Restore what `save_participant` wrote (sharded directory or full file); returns the extra metadata."""
    inner = _participant_of(participant)
    state = {"model": inner, **{k: None for k in extra_keys}}
    if is_sharded(fabric):
        if optimizer is not None:
            state["optimizer"] = optimizer
        rest = fabric.load(Path(path), state, strict=False)
    else:
        if optimizer is not None:
            state["optimizer"] = None
        rest = fabric.load(Path(path), state, strict=False)
        if optimizer is not None:
            set_optimizer_state_dict(inner, plain_optimizer(optimizer), state.pop("optimizer"))
    return {**{k: state[k] for k in extra_keys}, **rest}


def is_sharded(fabric) -> bool:
    """The run is under fsdp2 (Fabric's ModelParallelStrategy): weights and optimizer states are sharded."""
    return isinstance(fabric.strategy, ModelParallelStrategy)


def plain_optimizer(optimizer):
    """The torch optimizer inside a Fabric-wrapped one (or the optimizer itself)."""
    from lightning.fabric.wrappers import _FabricOptimizer
    return optimizer.optimizer if isinstance(optimizer, _FabricOptimizer) else optimizer
