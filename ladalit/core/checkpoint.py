"""A participant's weights and optimizer in a role's state, and back: gathered in full under FSDP2 (collectives:
every rank calls these). The checkpoint itself is the round loop's (`ladalit.core.rounds.snapshot`: every
role's `state_dict`, the results, the channel); `ladalit.core.run_identity` saves and loads the file.
"""
from __future__ import annotations

from ladalit.scale.strategy import is_sharded


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, **kw)


def participant_state(fabric, p) -> dict:
    """The participant's trainable weights, gathered in full under FSDP2 (a collective: all ranks call it)."""
    if not is_sharded(fabric):
        return p.trainable_state()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    sd = get_model_state_dict(p.model, options=_full_options(cpu_offload=True))
    return {k: v for k, v in sd.items() if "lora_" in k}


def load_participant_state(fabric, p, sd: dict) -> None:
    if is_sharded(fabric):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict
        set_model_state_dict(p.model, sd, options=_full_options(strict=False))
    else:
        p.model.load_state_dict(sd, strict=False)


def optimizer_state(fabric, p, opt) -> dict:
    if not is_sharded(fabric):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    return get_optimizer_state_dict(p.model, opt.optimizer, options=_full_options(cpu_offload=True))


def load_optimizer_state(fabric, p, opt, sd: dict) -> None:
    if is_sharded(fabric):
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
        set_optimizer_state_dict(p.model, opt.optimizer, sd, options=_full_options())
    else:
        opt.load_state_dict(sd)
