"""What every method's checkpoint holds in common, and how it comes back (`run.execute` writes it at
every round end through the runner's `on_round_end(t, snapshot)`; `ladalit.core.run_identity` saves and
loads the file).

`snapshot_state` returns the generic part: every participant's trainable weights (gathered in full under
FSDP2), the optimizers made so far, the frozen references, the results and the channel's counts. A method
adds what it carries itself (LaDa: the filters and last round's losses; fedkd: the answers received;
fedmkt / wasp: their carried state) as further keys, and `restore_state` puts the generic part back
before the method reads its own keys.
"""
from __future__ import annotations

from ladalit.scale.strategy import is_sharded


def participants(exp) -> dict:
    """Every participant by name: the server first, then the clients in config order."""
    return {"server": exp.server, **exp.clients}


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


def snapshot_state(exp, optimizers: dict, results, channel, **extra) -> dict:
    """The generic checkpoint state after a round, plus the method's own `extra` keys."""
    parts = participants(exp)
    return {
        "participants": {n: participant_state(exp.fabric, p) for n, p in parts.items()},
        "optimizers": {n: optimizer_state(exp.fabric, parts[n], o) for n, o in optimizers.items()},
        "frozen": [n for n, p in parts.items() if p.reference_frozen],
        "ref_models": {n: p.ref_model.state_dict() for n, p in parts.items() if p.ref_model is not None},
        "results": results.state_dict(),
        "channel": channel.state_dict(),
        **extra,
    }


def restore_state(exp, state: dict, optimizers: dict, results, channel) -> None:
    """Put `snapshot_state`'s generic part back: weights, references frozen where they were (then their
    saved weights), fresh optimizers with the saved state for those that existed, results, channel.
    Checkpoints without "frozen" (LaDa's before it was recorded) froze every participant."""
    parts = participants(exp)
    frozen = set(state.get("frozen", parts))
    for n, p in parts.items():
        load_participant_state(exp.fabric, p, state["participants"][n])
        if n in frozen:
            p.freeze_reference()
        if n in state["ref_models"]:
            p.ref_model.load_state_dict(state["ref_models"][n])
        if n in state["optimizers"]:
            optimizers[n] = exp.fabric.setup_optimizers(p.configure_optimizers())
            load_optimizer_state(exp.fabric, p, optimizers[n], state["optimizers"][n])
    results.load_state_dict(state["results"])
    channel.load_state_dict(state["channel"])
