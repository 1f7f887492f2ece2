"""Keep idle participants off the accelerator (`fabric.offload_idle`).

LaDa trains one participant at a time; the others only wait. `Residency` keeps
exactly one participant on the accelerator: every participant method that
computes (`pair_logprobs`, `generate_text`, ... : `Participant.on_device`)
first asks its residency to bring it there (`activate`), which parks the one
that was there before. Peak accelerator memory is then one participant plus
activations, whatever K is; a participant used many times in a row moves once.

`park` moves a participant's parameters, buffers, gradients and the state of
every optimizer made by its `configure_optimizers` to the
CPU (page-locked when CUDA is available, so that `activate` copies back
asynchronously); `activate` brings them to `device`. Tensors are replaced in
place (`param.data = ...`): parameter objects keep their identity, so the
optimizer still holds the right parameters, and values are copied bit-exactly.

AdamW's `step` counters stay on the CPU unless the optimizer is `capturable`
or `fused` (as torch keeps them). FSDP2-sharded participants (DTensor
parameters) are not moved: their memory is already split across processes and
FSDP owns the shard storage; `park`/`activate` return False for them.
"""
from __future__ import annotations

import torch


def _plain_module(m):
    from lightning.fabric.wrappers import _FabricModule
    return m.module if isinstance(m, _FabricModule) else m


def _plain_optimizer(o):
    from lightning.fabric.wrappers import _FabricOptimizer
    return o.optimizer if isinstance(o, _FabricOptimizer) else o


def _is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor
    return any(isinstance(p, DTensor) for p in module.parameters())


def _move(t: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    """A copy of `t` on `device` (always a new tensor); page-locked when parking with CUDA present."""
    if pin and device.type == "cpu" and t.device.type != "cpu":
        out = torch.empty(t.shape, dtype=t.dtype, layout=t.layout, device="cpu", pin_memory=True)
        return out.copy_(t, non_blocking=True)
    return t.to(device, copy=True, non_blocking=t.is_pinned())


def _module_tensors(module: torch.nn.Module):
    """Every parameter and buffer once (tied weights are one parameter)."""
    seen = set()
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            yield t


def _keeps_step_on_cpu(group: dict) -> bool:
    return not (group.get("capturable") or group.get("fused"))


def _optimizers_of(module, optimizer) -> list:
    """The given optimizer, else every live optimizer the participant made (`Participant.configure_optimizers`)."""
    if optimizer is not None:
        return [optimizer]
    return list(getattr(module, "optimizers_made", ()))


def _move_all(participant, optimizer, device: torch.device, pin: bool) -> bool:
    module = _plain_module(participant)
    if _is_sharded(module):
        return False
    for t in _module_tensors(module):
        t.data = _move(t.data, device, pin)
        if isinstance(t, torch.nn.Parameter) and t.grad is not None:
            t.grad = _move(t.grad, device, pin)
    for opt in map(_plain_optimizer, _optimizers_of(module, optimizer)):
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state.get(p, {})
                for k, v in state.items():
                    if not isinstance(v, torch.Tensor):
                        continue
                    if k == "step" and v.dim() == 0 and _keeps_step_on_cpu(group):
                        continue  # torch keeps the step counter on the CPU
                    state[k] = _move(v, device, pin)
    if pin and torch.cuda.is_available():
        torch.cuda.synchronize()  # the non-blocking device->host copies have landed
    from lightning.fabric.utilities.device_dtype_mixin import _update_properties
    _update_properties(participant, device=device)  # LightningModule.device, used to place inputs
    return True


def park(participant, optimizer=None) -> bool:
    """Move the participant's weights and optimizer state to the CPU. False if not moved (sharded).

    `optimizer`: the one to move; None = every optimizer the participant made."""
    return _move_all(participant, optimizer, torch.device("cpu"), pin=torch.cuda.is_available())


def activate(participant, optimizer=None, device: torch.device | str = "cuda") -> bool:
    """Bring a parked participant (weights, optimizer state as in `park`) to `device`. False if not moved (sharded)."""
    return _move_all(participant, optimizer, torch.device(device), pin=False)


class Residency:
    """One participant on `device` at a time: the others are parked on the CPU.

    `attach` parks a participant and gives it this residency, so that any computing call into it
    first makes it the resident. `enabled=False` attaches nothing and moves nothing.
    """

    def __init__(self, device: torch.device | str, enabled: bool = True):
        self.device, self.enabled = torch.device(device), enabled
        self.resident = None  # the plain Participant now on `device`
        self.swaps = 0  # activations so far (a measure of host<->device traffic)

    def attach(self, participant) -> None:
        module = _plain_module(participant)
        if not self.enabled or module.residency is self:
            return
        park(module)
        module.residency = self

    def use(self, participant) -> None:
        """Make `participant` the resident (parking the previous one); nothing if it already is."""
        module = _plain_module(participant)
        if not self.enabled or module is self.resident:
            return
        if self.resident is not None:
            park(self.resident)
        activate(module, device=self.device)
        self.resident = module
        self.swaps += 1
