"""What one LaDa role keeps across a crash: its participant's trainable weights, its reference model, its
optimizer, and per pair the filter, last round's and last candidate batch's losses (Eq. 5's and Eq. 6's M̄) and the
selection's U^p (Eq. 9). Weights and optimizer go through
ladalit.core.checkpoint (gathered in full under FSDP2: collectives, so every rank calls these)."""
from __future__ import annotations

from ladalit.core.checkpoint import load_optimizer_state, load_participant_state, optimizer_state, participant_state
from ladalit.method.distill import mard_optimizer


def side_state(fabric, participant, optimizer, pairs: dict) -> dict:
    return {
        "participant": participant_state(fabric, participant),
        "optimizer": None if optimizer is None else optimizer_state(fabric, participant, optimizer),
        "ref_model": None if participant.ref_model is None else participant.ref_model.state_dict(),
        "filters": {k: p.filter.state_dict() for k, p in pairs.items() if p.filter is not None},
        "prev_round_losses": {k: p.prev_round_losses for k, p in pairs.items()},
        "prev_batch_losses": {k: p.prev_batch_losses for k, p in pairs.items()},
        "u_p_at_selection": {k: dict(p.u_p_at_selection) for k, p in pairs.items()},
    }


def load_side_state(fabric, participant, state: dict, pairs: dict, lada):
    """Restore what `side_state` kept; returns the participant's MARD optimizer, set up afresh and loaded.
    `lada`: the config's `lada` section."""
    load_participant_state(fabric, participant, state["participant"])
    participant.freeze_reference()
    if state["ref_model"] is not None:
        participant.ref_model.load_state_dict(state["ref_model"])
    optimizer = mard_optimizer(lada, fabric, participant)
    if state["optimizer"] is not None:
        load_optimizer_state(fabric, participant, optimizer, state["optimizer"])
    for k, p in pairs.items():
        if p.filter is not None:
            p.filter.load_state_dict(state["filters"][k])
        p.prev_round_losses = state["prev_round_losses"][k]
        p.prev_batch_losses = state["prev_batch_losses"][k]
        p.u_p_at_selection = dict(state["u_p_at_selection"][k])
    return optimizer
