"""AdamW steps of a small network, taken on one flat tensor where that gives torch's bits (the filter's fits).

On CPU torch's AdamW loops over the parameter tensors, ~10 small ops each; AdamW is elementwise, so one step on
a flat tensor that every parameter and its exp_avg / exp_avg_sq are views of gives the same bits in ~10 ops
(`tests/method/test_filter.py`). Used by `ladalit.method.filter.LearnabilityFilter.fit`.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn


def _flat_over(ts: list[Tensor]) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    """``(flat, None)`` where ``ts`` already lie one after the other in one storage (``flat`` views them), else
    ``(flat, views)``: a new 1-d copy of them and its views shaped as ``ts``, to put in their place."""
    storage, ptr = ts[0].untyped_storage().data_ptr(), ts[0].data_ptr()
    for t in ts:
        if not t.is_contiguous() or t.untyped_storage().data_ptr() != storage or t.data_ptr() != ptr:
            flat = torch.cat([t.detach().reshape(-1) for t in ts])
            return flat, tuple(v.view_as(t) for v, t in zip(flat.split([t.numel() for t in ts]), ts))
        ptr += t.numel() * t.element_size()
    return ts[0].detach().as_strided((sum(t.numel() for t in ts),), (1,)), None


def _flat_adamw(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> torch.optim.AdamW | None:
    """An AdamW with ``opt``'s settings over one flat tensor, once ``params`` and their exp_avg / exp_avg_sq are
    views of it and of its state; None while ``opt`` lacks a state, at one step count, for every parameter."""
    states = [opt.state.get(p) for p in params]
    if not all(states) or len({float(s["step"]) for s in states}) != 1:
        return None
    flat, views = _flat_over([p.data for p in params])
    for p, v in zip(params, views or ()):
        p.data = v
    flat.grad = torch.empty_like(flat)
    fast = torch.optim.AdamW([flat])
    fast.param_groups[0].update({k: v for k, v in opt.param_groups[0].items() if k != "params"})
    fast.state[flat]["step"] = states[0]["step"].clone()
    for k in ("exp_avg", "exp_avg_sq"):
        fast.state[flat][k], views = _flat_over([s[k] for s in states])
        for s, v in zip(states, views or ()):
            s[k] = v
    return fast


@contextlib.contextmanager
def adamw_steps(opt: torch.optim.Optimizer, params: list[nn.Parameter]):
    """Yields ``step()``: ``opt.step()``, taken where that gives the same bits as one AdamW step on one flat tensor.

    On CPU torch's AdamW loops over the parameter tensors, ~10 small ops each (~180 per step for a network
    here). AdamW is elementwise, so the same step on one flat tensor that every parameter, and its exp_avg /
    exp_avg_sq, is a view of gives the same bits (tests/method/test_filter.py) in ~10 ops. ``opt`` keeps its
    per-parameter state all along (views of the flat one; the step count is copied back), so checkpoints and
    ``configure_optimizers`` see torch's AdamW. Plain ``opt.step()`` where the flat step could differ: an
    optimizer other than a default AdamW over exactly ``params`` (contiguous, float32, on CPU), a parameter
    without gradient (torch skips it) or without state yet (torch's own first step makes it).
    """
    g = opt.param_groups[0]
    eligible = (type(opt) is torch.optim.AdamW and len(opt.param_groups) == 1 and len(g["params"]) == len(params)
                and all(a is b for a, b in zip(g["params"], params))
                and not any(g.get(k) for k in ("amsgrad", "maximize", "foreach", "fused", "capturable",
                                               "differentiable"))
                and all(p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous() for p in params))
    fast: torch.optim.AdamW | None = None

    def sync() -> None:  # the flat step count back into opt's per-parameter states
        count = next(iter(fast.state.values()))["step"]
        for p in params:
            opt.state[p]["step"].copy_(count)

    def step() -> None:
        nonlocal fast
        if eligible and all(p.grad is not None for p in params):
            if fast is None:
                fast = _flat_adamw(opt, params)
        elif fast is not None:
            sync()
            fast = None
        if fast is None:
            opt.step()
            return
        flat = fast.param_groups[0]["params"][0]
        torch.cat([p.grad.reshape(-1) for p in params], out=flat.grad)
        fast.step()

    try:
        yield step
    finally:
        if fast is not None:
            sync()
