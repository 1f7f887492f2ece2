"""What one LaDa role keeps across a crash: its participant's trainable weights, its reference model, its
optimizer, and per pair the filter and last round's losses (Eq. 5's M). Under FSDP2 the weights and the
optimizer are gathered in full (collectives: every rank calls these)."""
from __future__ import annotations


def _sharded(fabric) -> bool:
    from lightning.fabric.strategies import ModelParallelStrategy
    return isinstance(fabric.strategy, ModelParallelStrategy)


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, **kw)


def participant_state(fabric, p) -> dict:
    """The participant's trainable weights, gathered in full under FSDP2."""
    if not _sharded(fabric):
        return p.trainable_state()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    sd = get_model_state_dict(p.model, options=_full_options(cpu_offload=True))
    return {k: v for k, v in sd.items() if "lora_" in k}


def optimizer_state(fabric, p, opt) -> dict:
    if not _sharded(fabric):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    return get_optimizer_state_dict(p.model, opt.optimizer, options=_full_options(cpu_offload=True))


def side_state(fabric, participant, optimizer, pairs: dict) -> dict:
    return {
        "participant": participant_state(fabric, participant),
        "optimizer": None if optimizer is None else optimizer_state(fabric, participant, optimizer),
        "ref_model": None if participant.ref_model is None else participant.ref_model.state_dict(),
        "filters": {k: p.filter.state_dict() for k, p in pairs.items() if p.filter is not None},
        "prev_round_losses": {k: p.prev_round_losses for k, p in pairs.items()},
    }


def load_side_state(fabric, participant, state: dict, pairs: dict):
    """Restore what `side_state` kept; returns the participant's optimizer, set up afresh and loaded."""
    if _sharded(fabric):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict
        set_model_state_dict(participant.model, state["participant"], options=_full_options(strict=False))
    else:
        participant.model.load_state_dict(state["participant"], strict=False)
    participant.freeze_reference()
    if state["ref_model"] is not None:
        participant.ref_model.load_state_dict(state["ref_model"])
    optimizer = fabric.setup_optimizers(participant.configure_optimizers())
    if state["optimizer"] is not None:
        if _sharded(fabric):
            from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
            set_optimizer_state_dict(participant.model, optimizer.optimizer, state["optimizer"], options=_full_options())
        else:
            optimizer.load_state_dict(state["optimizer"])
    for k, p in pairs.items():
        if p.filter is not None:
            p.filter.load_state_dict(state["filters"][k])
        p.prev_round_losses = state["prev_round_losses"][k]
    return optimizer
