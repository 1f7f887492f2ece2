"""Keep idle participants off the accelerator (`fabric.offload_idle`).

LaDa trains one participant at a time; the others only wait. `Residency` keeps
exactly one participant on the accelerator: every participant method that
computes (`pair_logprobs`, `generate_text`, ... : `Participant.on_device`)
first asks its residency to bring it there (`activate`), which parks the one
that was there before. Peak accelerator memory is then one participant plus
activations, whatever K is; a participant used many times in a row moves once.

Every parameter, buffer and optimizer-state tensor has one host copy, allocated
the first time it is parked (page-locked when CUDA is available) and reused on
every later park. `activate` copies every host copy to `device`. `park` then
copies back only what may have changed: trainable parameters, their gradients
and the optimizer state. A frozen parameter or a buffer whose device tensor is
the one `activate` made and whose version counter has not moved since (no
in-place write through the tensor: an optimizer step, `load_state_dict`, a
`no_grad` `copy_`) just drops its device copy and points back at its host copy:
no bytes move. (A write through `.data` bypasses the version counter and is not
seen; nothing in ladalit writes frozen weights that way.) With LoRA a park after
the first therefore moves the adapters and their optimizer state, not the base.

Tensors are replaced in place (`param.data = ...`): parameter objects keep their
identity, so the optimizer still holds the right parameters, and values are
copied bit-exactly. `park`/`activate` return a `Moved` record (bytes and tensors
copied, seconds); `Residency` sums them per direction.

AdamW's `step` counters stay on the CPU unless the optimizer is `capturable`
or `fused` (as torch keeps them). FSDP2-sharded participants (DTensor
parameters) are not moved: their memory is already split across processes and
FSDP owns the shard storage; `park`/`activate` return None for them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ladalit.scale.strategy import plain_optimizer


@dataclass
class Moved:
    """What one `park` or `activate` copied."""
    bytes: int = 0
    tensors: int = 0
    seconds: float = 0.0


@dataclass
class _Host:
    tensor: torch.Tensor  # the host copy, allocated once
    device_ptr: int = -1  # data_ptr of the device copy `activate` made from it (-1: none)
    version: int = -1  # the parameter's version counter right after that copy


_HOST: WeakIdKeyDictionary = WeakIdKeyDictionary()  # parameter/buffer object -> _Host
_STATE_HOST: WeakIdKeyDictionary = WeakIdKeyDictionary()  # parameter -> {state key: host tensor}


def _plain_module(m):
    from lightning.fabric.wrappers import _FabricModule
    return m.module if isinstance(m, _FabricModule) else m


def _is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor
    return any(isinstance(p, DTensor) for p in module.parameters())


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _host_buffer(like: torch.Tensor, old: torch.Tensor | None, pin: bool) -> torch.Tensor:
    """`old` if it can hold `like`, else a new host tensor (page-locked when `pin`)."""
    if old is not None and old.shape == like.shape and old.dtype == like.dtype and old.layout == like.layout:
        return old
    return torch.empty(like.shape, dtype=like.dtype, layout=like.layout, device="cpu", pin_memory=pin)


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


def _optimizer_states(module, optimizer):
    """(param, state dict, key, tensor) for every optimizer-state tensor that moves (not CPU step counters)."""
    for opt in map(plain_optimizer, _optimizers_of(module, optimizer)):
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state.get(p, {})
                for k, v in list(state.items()):
                    if not isinstance(v, torch.Tensor):
                        continue
                    if k == "step" and v.dim() == 0 and _keeps_step_on_cpu(group):
                        continue  # torch keeps the step counter on the CPU
                    yield p, state, k, v


def _unchanged(t: torch.Tensor, host: _Host | None) -> bool:
    """A frozen tensor still holding the device copy `activate` made, not written since."""
    return (host is not None and not t.requires_grad and t.data_ptr() == host.device_ptr
            and t._version == host.version)


def _finish(participant, device: torch.device, moved: Moved, t0: float) -> Moved:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the non-blocking copies have landed
    from lightning.fabric.utilities.device_dtype_mixin import _update_properties
    _update_properties(participant, device=device)  # LightningModule.device, used to place inputs
    moved.seconds = time.perf_counter() - t0
    return moved


def park(participant, optimizer=None) -> Moved | None:
    """Copy what may have changed into the host copies and point every tensor at its host copy.

    `optimizer`: the one to move; None = every optimizer the participant made. None if not moved (sharded)."""
    module = _plain_module(participant)
    if _is_sharded(module):
        return None
    t0, moved, pin = time.perf_counter(), Moved(), torch.cuda.is_available()
    for t in _module_tensors(module):
        host = _HOST.get(t)
        if host is not None and t.data_ptr() == host.tensor.data_ptr():
            continue  # already parked
        if not _unchanged(t, host):
            buf = _host_buffer(t.data, host.tensor if host is not None else None, pin)
            buf.copy_(t.data, non_blocking=buf.is_pinned())
            host = _HOST[t] = _Host(buf)
            moved.bytes, moved.tensors = moved.bytes + _nbytes(buf), moved.tensors + 1
        t.data = host.tensor
        host.device_ptr = host.version = -1
        if isinstance(t, torch.nn.Parameter) and t.grad is not None:
            t.grad = _move(t.grad, torch.device("cpu"), pin)
            moved.bytes, moved.tensors = moved.bytes + _nbytes(t.grad), moved.tensors + 1
    for p, state, k, v in _optimizer_states(module, optimizer):
        hosts = _STATE_HOST.setdefault(p, {})
        if v is hosts.get(k):
            continue  # already parked
        buf = hosts[k] = _host_buffer(v, hosts.get(k), pin)
        state[k] = buf.copy_(v, non_blocking=buf.is_pinned())
        moved.bytes, moved.tensors = moved.bytes + _nbytes(v), moved.tensors + 1
    return _finish(participant, torch.device("cpu"), moved, t0)


def activate(participant, optimizer=None, device: torch.device | str = "cuda") -> Moved | None:
    """Copy a parked participant (weights, gradients, optimizer state as in `park`) to `device`.

    The host copies stay for the next `park`. None if not moved (sharded)."""
    module = _plain_module(participant)
    if _is_sharded(module):
        return None
    device = torch.device(device)
    t0, moved = time.perf_counter(), Moved()
    for t in _module_tensors(module):
        t.data = _move(t.data, device, pin=False)
        moved.bytes, moved.tensors = moved.bytes + _nbytes(t), moved.tensors + 1
        host = _HOST.get(t)
        if host is not None:
            host.device_ptr, host.version = t.data_ptr(), t._version
        if isinstance(t, torch.nn.Parameter) and t.grad is not None:
            t.grad = _move(t.grad, device, pin=False)
            moved.bytes, moved.tensors = moved.bytes + _nbytes(t.grad), moved.tensors + 1
    for _p, state, k, v in _optimizer_states(module, optimizer):
        state[k] = _move(v, device, pin=False)
        moved.bytes, moved.tensors = moved.bytes + _nbytes(v), moved.tensors + 1
    return _finish(participant, device, moved, t0)


class Residency:
    """One participant on `device` at a time: the others are parked on the CPU.

    `attach` parks a participant and gives it this residency, so that any computing call into it
    first makes it the resident. `enabled=False` attaches nothing and moves nothing.
    `parked` / `activated` sum what every park / activation copied (bytes, tensors, seconds).
    """

    def __init__(self, device: torch.device | str, enabled: bool = True):
        self.device, self.enabled = torch.device(device), enabled
        self.resident = None  # the plain Participant now on `device`
        self.swaps = 0  # activations so far
        self.parked, self.activated = Moved(), Moved()

    def _count(self, total: Moved, moved: Moved | None) -> None:
        if moved is not None:
            total.bytes += moved.bytes
            total.tensors += moved.tensors
            total.seconds += moved.seconds

    def attach(self, participant) -> None:
        module = _plain_module(participant)
        if not self.enabled or module.residency is self:
            return
        self._count(self.parked, park(module))
        module.residency = self

    def use(self, participant) -> None:
        """Make `participant` the resident (parking the previous one); nothing if it already is."""
        module = _plain_module(participant)
        if not self.enabled or module is self.resident:
            return
        if self.resident is not None:
            self._count(self.parked, park(self.resident))
        self._count(self.activated, activate(module, device=self.device))
        self.resident = module
        self.swaps += 1
