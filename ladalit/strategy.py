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
batch's rows and gathers the results (`ladalit.data_parallel`, used by
`Participant.generate_text`, `lada.distill_step` and the SFT of
`training.supervised_finetune`); the baselines' own steps still run the whole
minibatch on every process.

Checkpoints: `save_participant(..., full=False)` writes one shard per process
(the whole module: base and adapters); `full=True` gathers to rank 0 and writes
a single file, with LoRA only the adapters (small: the right choice for LoRA).
"""
from __future__ import annotations

from pathlib import Path

import torch
from lightning.fabric.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
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
        for layer in layers:
            fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
        root = ShardedRoot(module)
        fully_shard(root, mesh=mesh, mp_policy=mp)
        return root

    return parallelize


def activation_checkpointing(cfg) -> bool:
    """`fabric.activation_checkpointing`, on by default under fsdp2: the 32B/72B scenarios need it
    (see ladalit.shapes)."""
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
    sharded = isinstance(strategy, ModelParallelStrategy) and not full
    filt = None if sharded or not getattr(inner, "use_lora", False) else {"model": _lora_only}
    if isinstance(strategy, ModelParallelStrategy):
        previous = strategy._save_distributed_checkpoint  # chosen per call, not per strategy
        strategy._save_distributed_checkpoint = sharded
        try:
            fabric.save(Path(path), state, filter=filt)
        finally:
            strategy._save_distributed_checkpoint = previous
    else:  # optimizer state keyed by parameter names, as under fsdp2: the file loads under either
        if optimizer is not None:
            state["optimizer"] = get_optimizer_state_dict(inner, _plain_optimizer(optimizer))
        fabric.save(Path(path), state, filter=filt)


def load_participant(fabric, participant, path, optimizer=None, extra_keys: tuple[str, ...] = ()) -> dict:
    """Restore what `save_participant` wrote (sharded directory or full file); returns the extra metadata."""
    inner = _participant_of(participant)
    state = {"model": inner, **{k: None for k in extra_keys}}
    if isinstance(fabric.strategy, ModelParallelStrategy):
        if optimizer is not None:
            state["optimizer"] = optimizer
        rest = fabric.load(Path(path), state, strict=False)
    else:
        if optimizer is not None:
            state["optimizer"] = None
        rest = fabric.load(Path(path), state, strict=False)
        if optimizer is not None:
            set_optimizer_state_dict(inner, _plain_optimizer(optimizer), state.pop("optimizer"))
    return {**{k: state[k] for k in extra_keys}, **rest}


def _plain_optimizer(optimizer):
    from lightning.fabric.wrappers import _FabricOptimizer
    return optimizer.optimizer if isinstance(optimizer, _FabricOptimizer) else optimizer
