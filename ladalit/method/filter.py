"""Model learnability-aware data filter (paper §IV-B, Eq. 8–10; SPEC §6).

One :class:`LearnabilityFilter` per model pair (client k ↔ server, and the
server's own filter per client). It scores frozen text embeddings x with

    r̂(x) = U^p(x) + λ · U^q(h^p(x))                      (Eq. 10)

where U^p (:class:`ExploitNet`) regresses the observed reward r_total (Eq. 8)
and U^q (:class:`ExploreNet`) regresses r_total − U^p_sel(x) from the
concatenated hidden states h^p of U^p (Eq. 9), acting as an exploration bonus:
U^p_sel(x) is the prediction that scored x when it was selected (θ^p_{t,b},
recorded with the observation), so U^q learns where U^p was wrong when it chose.

Loop usage, per candidate batch::

    emb = encoder.encode_cached(ids, texts)
    idx, bound = filt.select(emb)         # r̂ > τ, bounded by min/max_select
    ...                                   # train on the selection, compute rewards
    filt.observe(emb[idx], r_total, u_p)  # replay buffer; u_p: U^p(x) when x was selected
    filt.fit()                            # Eq. 8 then Eq. 9

Swap either network by subclassing and overriding :meth:`LearnabilityFilter.build_exploit_net`
/ :meth:`LearnabilityFilter.build_explore_net`, then name the class in the config
(:func:`filter_class_from_path`). A custom exploit net must return
``(score [n], hidden [n, h])`` from ``forward(x)``; a custom explore net maps
``[n, h] -> [n]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ladalit.core.classpath import import_class
from ladalit.core.config import ConfigError, check_encoder, class_key, section
from ladalit.method.flat_adamw import adamw_steps

__all__ = [
    "ResidualBlock",
    "ExploitNet",
    "ExploreNet",
    "LearnabilityFilter",
    "filter_class_from_path",
]


class ResidualBlock(nn.Module):
    """Pre-norm residual MLP block: ``h + W2 · GELU(W1 · LN(h))``."""

    def __init__(self, dim: int, mult: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mult * dim)
        self.fc2 = nn.Linear(mult * dim, dim)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.fc2(F.gelu(self.fc1(self.norm(h))))


class _ResidualMLP(nn.Module):
    """Input projection, ``depth`` residual blocks, final LayerNorm, scalar head."""

    def __init__(self, in_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        if in_dim < 1 or hidden < 1 or depth < 0:
            raise ValueError("need in_dim >= 1, hidden >= 1, depth >= 0")
        self.proj = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 1)

    def trunk(self, x: Tensor) -> list[Tensor]:
        hs = [self.proj(x)]
        for block in self.blocks:
            hs.append(block(hs[-1]))
        return hs

    def score(self, h: Tensor) -> Tensor:
        return self.head(self.norm(h)).squeeze(-1)


class ExploitNet(_ResidualMLP):
    """U^p: residual MLP ``x [n, in_dim] -> (score [n], h^p [n, hidden*(depth+1)])``.

    ``h^p`` concatenates the input projection and the output of every residual
    block along the last dimension ("intermediate hidden states of U^p").
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hs = self.trunk(x)
        return self.score(hs[-1]), torch.cat(hs, dim=-1)


class ExploreNet(_ResidualMLP):
    """U^q: residual MLP ``h^p [n, in_dim] -> score [n]``.

    The head starts at zero, so an untrained filter adds no exploration bonus.
    """

    def __init__(self, in_dim: int, hidden: int, depth: int) -> None:
        super().__init__(in_dim, hidden, depth)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, h: Tensor) -> Tensor:
        return self.score(self.trunk(h)[-1])


class LearnabilityFilter(L.LightningModule):
    """Exploit/explore reward predictor with a bounded replay buffer.

    Args:
        embed_dim: dimension of the frozen text embeddings.
        hidden: width of both networks.
        depth: residual blocks of both networks.
        lr: AdamW learning rate.
        epochs: epochs over the replay buffer per :meth:`fit`.
        batch_size: minibatch size.
        lam: λ of Eq. 10 (exploration strength).
        tau: selection threshold τ on r̂.
        min_select: per-batch lower bound on the selection size.
        max_select: per-batch upper bound on the selection size (``None`` = no max).
        buffer_size: capacity of the FIFO replay buffer.
        seed: seeds network initialisation and the shuffling generator.
        weight_decay: AdamW weight decay.
        fit_threads: on CPU, :meth:`fit` runs with ``torch.set_num_threads(fit_threads)``
            and restores the previous count afterwards. The networks are tiny, so
            intra-op threading only adds overhead; on a loaded 2-core machine 1
            thread was measured 20-60x faster than 2. ``None`` leaves threads alone.
    """

    def __init__(
        self,
        embed_dim: int,
        hidden: int = 128,
        depth: int = 2,
        lr: float = 3e-4,
        epochs: int = 10,
        batch_size: int = 64,
        lam: float = 0.33,
        tau: float = 0.5,
        min_select: int = 1,
        max_select: int | None = None,
        buffer_size: int = 4096,
        seed: int = 0,
        weight_decay: float = 0.01,
        fit_threads: int | None = 1,
    ) -> None:
        super().__init__()
        if min_select < 0 or (max_select is not None and max_select < min_select):
            raise ValueError(f"need 0 <= min_select <= max_select, got {min_select}, {max_select}")
        if buffer_size < 1 or batch_size < 1 or epochs < 0:
            raise ValueError("need buffer_size >= 1, batch_size >= 1, epochs >= 0")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.embed_dim = embed_dim
        self.hidden = hidden
        self.depth = depth
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.lam = lam
        self.tau = tau
        self.min_select = min_select
        self.max_select = max_select
        self.buffer_size = buffer_size
        self.seed = seed
        self.weight_decay = weight_decay
        self.fit_threads = fit_threads

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.exploit_net = self.build_exploit_net()
            h_dim = self._probe_hidden_dim()
            self.explore_net = self.build_explore_net(h_dim)

        # FIFO replay buffer (a tensor ring); registered buffers so checkpoints keep it.
        self.register_buffer("buf_x", torch.zeros(buffer_size, embed_dim))
        self.register_buffer("buf_r", torch.zeros(buffer_size))
        self.register_buffer("buf_up", torch.zeros(buffer_size))  # U^p(x) when x was selected (Eq. 9)
        self.register_buffer("buf_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("buf_count", torch.zeros((), dtype=torch.long))

        self._gen = torch.Generator().manual_seed(seed)
        self._filter_opts: list[torch.optim.Optimizer] | None = None
        self.bound_hits = {"min": 0, "max": 0}
        self.n_fits = 0

    # ----------------------------------------------------------------- networks
    def build_exploit_net(self) -> nn.Module:
        """U^p. Override to swap the network: ``forward(x [n, embed_dim]) -> (score [n], h [n, *])``."""
        return ExploitNet(self.embed_dim, self.hidden, self.depth)

    def build_explore_net(self, in_dim: int) -> nn.Module:
        """U^q over h^p of width ``in_dim``. Override to swap: ``forward(h [n, in_dim]) -> score [n]``."""
        return ExploreNet(in_dim, self.hidden, self.depth)

    @torch.no_grad()
    def _probe_hidden_dim(self) -> int:
        was_training = self.exploit_net.training
        self.exploit_net.eval()
        out = self.exploit_net(torch.zeros(2, self.embed_dim))
        self.exploit_net.train(was_training)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("exploit net must return (score, hidden_states)")
        return int(out[1].shape[-1])

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """``[AdamW(U^p), AdamW(U^q)]``. :meth:`fit` takes a default AdamW's steps on one flat tensor per
        network (same bits, fewer ops: `ladalit.method.flat_adamw.adamw_steps`); any other optimizer steps as it is."""
        opt_p = torch.optim.AdamW(self.exploit_net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        opt_q = torch.optim.AdamW(self.explore_net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return [opt_p, opt_q]

    def _opts(self) -> list[torch.optim.Optimizer]:
        if self._filter_opts is None:
            self._filter_opts = list(self.configure_optimizers())
        return self._filter_opts

    # --------------------------------------------------------------- inference
    def _prep(self, emb: Tensor) -> Tensor:
        emb = torch.as_tensor(emb)
        if emb.dim() != 2 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"expected embeddings [n, {self.embed_dim}], got {tuple(emb.shape)}")
        return emb.detach().to(device=self.device, dtype=torch.float32)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(r̂, U^p(x), U^q(h^p(x)))`` with gradients; see :meth:`predict`."""
        u_p, h_p = self.exploit_net(x)
        u_q = self.explore_net(h_p)
        return u_p + self.lam * u_q, u_p, u_q

    @torch.no_grad()
    def predict(self, emb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. 10 without grad: ``(r̂, u_p, u_q)``, each ``[n]`` on ``emb``'s device."""
        x = self._prep(emb)
        was_training = self.training
        self.eval()
        out = self(x)
        self.train(was_training)
        dev = torch.as_tensor(emb).device
        return tuple(t.to(dev) for t in out)  # type: ignore[return-value]

    def select(self, emb: Tensor) -> tuple[Tensor, str | None]:
        """Indices (ascending, ``LongTensor`` on ``emb``'s device) with r̂ > τ.

        If fewer than ``min_select`` pass, the top-``min_select`` by r̂ are taken
        (``bound="min"``); if more than ``max_select`` pass, only the top
        ``max_select`` are kept (``bound="max"``). ``self.bound_hits`` counts both.
        """
        r_hat, _, _ = self.predict(emb)
        n = r_hat.numel()
        idx = torch.nonzero(r_hat > self.tau, as_tuple=False).flatten()
        bound: str | None = None
        k_min = min(self.min_select, n)
        if idx.numel() < k_min:
            idx = torch.topk(r_hat, k_min).indices
            bound = "min"
        elif self.max_select is not None and idx.numel() > self.max_select:
            idx = torch.topk(r_hat, self.max_select).indices
            bound = "max"
        if bound is not None:
            self.bound_hits[bound] += 1
        return torch.sort(idx).values.long(), bound

    # ------------------------------------------------------------------ buffer
    @property
    def num_observed(self) -> int:
        """Number of observations currently held in the replay buffer."""
        return int(self.buf_count)

    def observe(self, emb: Tensor, rewards: Tensor, u_p: Tensor | None = None) -> None:
        """Append ``(emb [m, d], rewards [m], u_p [m])`` to the FIFO replay buffer (oldest overwritten).

        ``u_p``: U^p(x) as it scored each x when x was selected, Eq. 9's baseline (the loop records it at
        selection). ``None``: U^p(x) now, which is the same where the filter has not been fitted since."""
        x = self._prep(emb)
        r = torch.as_tensor(rewards).detach().to(device=self.device, dtype=torch.float32).reshape(-1)
        if r.numel() != x.shape[0]:
            raise ValueError(f"{x.shape[0]} embeddings but {r.numel()} rewards")
        u = self.predict(x)[1] if u_p is None else torch.as_tensor(u_p).detach().to(self.device, torch.float32)
        u = u.reshape(-1)
        if u.numel() != x.shape[0]:
            raise ValueError(f"{x.shape[0]} embeddings but {u.numel()} selection-time predictions")
        if x.shape[0] > self.buffer_size:
            x, r, u = x[-self.buffer_size :], r[-self.buffer_size :], u[-self.buffer_size :]
        m = x.shape[0]
        if m == 0:
            return
        pos = (int(self.buf_ptr) + torch.arange(m, device=self.device)) % self.buffer_size
        self.buf_x[pos] = x
        self.buf_r[pos] = r
        self.buf_up[pos] = u
        self.buf_ptr.fill_((int(self.buf_ptr) + m) % self.buffer_size)
        self.buf_count.fill_(min(int(self.buf_count) + m, self.buffer_size))

    def buffer(self) -> tuple[Tensor, Tensor]:
        """The buffer contents ``(x [n, d], r [n])``, oldest first."""
        x, r, _ = self._buffer_rows()
        return x, r

    def _buffer_rows(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, r, u_p at selection)``, oldest first."""
        n = self.num_observed
        if n < self.buffer_size:
            return self.buf_x[:n], self.buf_r[:n], self.buf_up[:n]
        p = int(self.buf_ptr)
        return tuple(torch.cat([b[p:], b[:p]]) for b in (self.buf_x, self.buf_r, self.buf_up))

    # ---------------------------------------------------------------- training
    def _minibatches(self, n: int):
        perm = torch.randperm(n, generator=self._gen).to(self.device)
        for i in range(0, n, self.batch_size):
            yield perm[i : i + self.batch_size]

    def fit(self) -> dict[str, float]:
        """Train on the whole replay buffer: ``epochs`` epochs of Eq. 8 on U^p, then
        ``epochs`` epochs of Eq. 9 on U^q: inputs h^p of the updated U^p (fixed), labels
        r_total − U^p_sel(x), the prediction recorded when x was selected.

        Returns ``{"loss_p", "loss_q"}`` — sample-weighted means over each
        network's last epoch (Eq. 8/9 values, i.e. ½·MSE) — and ``"n"``, the
        number of observations used. An empty buffer returns ``{"n": 0}``.
        """
        if self.fit_threads is None or self.device.type != "cpu":
            return self._fit()
        prev = torch.get_num_threads()
        torch.set_num_threads(self.fit_threads)
        try:
            return self._fit()
        finally:
            torch.set_num_threads(prev)

    def _fit(self) -> dict[str, float]:
        x, r, u_p_sel = self._buffer_rows()
        n = x.shape[0]
        if n == 0:
            return {"n": 0}
        opt_p, opt_q = self._opts()
        was_training = self.training
        self.train()

        loss_p = float("nan")
        with adamw_steps(opt_p, list(self.exploit_net.parameters())) as step:
            for _ in range(self.epochs):
                tot = 0.0
                for mb in self._minibatches(n):
                    u_p, _ = self.exploit_net(x[mb])
                    loss = 0.5 * F.mse_loss(u_p, r[mb])  # Eq. 8
                    opt_p.zero_grad(set_to_none=True)
                    loss.backward()
                    step()
                    tot += loss.item() * mb.numel()
                loss_p = tot / n

        with torch.no_grad():  # h^p is a fixed input, r − U^p_sel a fixed label for Eq. 9
            self.exploit_net.eval()
            _, h_all = self.exploit_net(x)
            self.exploit_net.train()
            target_q = r - u_p_sel

        loss_q = float("nan")
        with adamw_steps(opt_q, list(self.explore_net.parameters())) as step:
            for _ in range(self.epochs):
                tot = 0.0
                for mb in self._minibatches(n):
                    u_q = self.explore_net(h_all[mb])
                    loss = 0.5 * F.mse_loss(u_q, target_q[mb])  # Eq. 9
                    opt_q.zero_grad(set_to_none=True)
                    loss.backward()
                    step()
                    tot += loss.item() * mb.numel()
                loss_q = tot / n

        self.train(was_training)
        self.n_fits += 1
        return {"loss_p": loss_p, "loss_q": loss_q, "n": n}

    # ------------------------------------------------------------- checkpoints
    def get_extra_state(self) -> dict[str, Any]:
        """Counters, shuffling-generator state and optimiser states go into ``state_dict``."""
        return {
            "bound_hits": dict(self.bound_hits),
            "n_fits": self.n_fits,
            "gen_state": self._gen.get_state(),
            "opt_states": [o.state_dict() for o in self._filter_opts] if self._filter_opts is not None else None,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.bound_hits = dict(state["bound_hits"])
        self.n_fits = int(state["n_fits"])
        self._gen.set_state(state["gen_state"])
        if state.get("opt_states") is not None:
            self._filter_opts = None
            for opt, sd in zip(self._opts(), state["opt_states"]):
                opt.load_state_dict(sd)
        else:
            self._filter_opts = None


def filter_class_from_path(path: str) -> type[LearnabilityFilter]:
    """Import ``"pkg.mod:Class"`` (or ``"pkg.mod.Class"``) and check it subclasses
    :class:`LearnabilityFilter`."""
    return import_class(path, LearnabilityFilter)


# the __init__ arguments the loop passes from filter_net.* (ladalit.method.pair.make_filter); a subclass's own
# take their values from filter_net.init_args
LOOP_ARGS = ("embed_dim", "hidden", "depth", "lr", "epochs", "batch_size", "lam", "tau", "min_select", "max_select",
             "buffer_size", "seed")
# validated at start once this module is imported (ladalit.components)
class_key("filter_net.class_path", LearnabilityFilter, init_args="filter_net.init_args", passed=LOOP_ARGS)


# ----------------------------------------------------------------------------- config section `filter_net`
@dataclass
class Config:
    """`filter_net.*`: the filter networks of Eq. 8-10 and their selection."""
    # frozen text encoder: minilm | hashing | package.module:Class
    encoder: str = "minilm"
    # "package.module:Class", a LearnabilityFilter subclass; empty = the default
    class_path: str = ""
    # the class_path subclass's own settings, passed to its `__init__` and checked against it at start
    init_args: Dict[str, Any] = field(default_factory=dict)
    # width of ExploitNet / ExploreNet
    hidden: int = 128
    # residual blocks per network
    depth: int = 2
    # filter learning rate
    lr: float = 3e-4
    # epochs over the replay buffer per filter update
    epochs: int = 10
    # when the filter trains on its buffer: after each candidate batch's update (batch, Algorithm 1's
    # ❻❼ per batch b) or after each training minibatch of it (minibatch: up to ceil(selected / batch_size)
    # times as many fits, the behaviour before 2026-12-02)
    fit_every: str = "batch"
    # filter minibatch size
    batch_size: int = 64
    # λ of Eq. 10: weight of the exploration bonus
    lam: float = 0.33
    # τ: select samples with predicted reward above it
    tau: float = 0.5
    # fewest samples selected per candidate batch (a bound; hits are counted)
    min_select: int = 1
    # most samples selected per candidate batch (empty = no bound)
    max_select: Optional[int] = None
    # replay buffer size (observations per model pair)
    buffer_size: int = 4096


def _check(cfg) -> None:
    fn = cfg.filter_net
    if fn.max_select is not None and fn.max_select < max(fn.min_select, 1):
        raise ConfigError(f"config key 'filter_net.max_select': {fn.max_select} is below min_select {fn.min_select}")
    check_encoder("filter_net.encoder", fn.encoder)


section("filter_net", Config, after="reward", description="the filter networks (Eq. 8-10)",
        choices={"fit_every": ("batch", "minibatch")},
        ranges={"lam": (0.0, None), "epochs": (0, None), "lr": (0.0, None), "min_select": (0, None),
                "max_select": (1, None), "hidden": (1, None), "depth": (0, None), "batch_size": (1, None),
                "buffer_size": (1, None)},
        check=_check)
