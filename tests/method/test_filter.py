import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ladalit.method.filter import ExploitNet, ExploreNet, LearnabilityFilter, filter_class_from_path


def _unit(n, d, g):
    x = torch.randn(n, d, generator=g)
    return x / x.norm(dim=1, keepdim=True)


# --------------------------------------------------------------------- networks
def test_exploit_and_explore_shapes():
    net = ExploitNet(in_dim=10, hidden=16, depth=3)
    score, h = net(torch.randn(7, 10))
    assert score.shape == (7,)
    assert h.shape == (7, 16 * 4)  # projection + 3 residual blocks
    q = ExploreNet(in_dim=64, hidden=8, depth=1)
    assert q(h).shape == (7,)
    # explore head starts at zero: no bonus before training
    assert torch.equal(q(h), torch.zeros(7))


def test_exploit_hidden_states_are_the_intermediate_states():
    net = ExploitNet(in_dim=5, hidden=4, depth=2)
    x = torch.randn(3, 5)
    _, h = net(x)
    h0 = net.proj(x)
    h1 = net.blocks[0](h0)
    h2 = net.blocks[1](h1)
    torch.testing.assert_close(h, torch.cat([h0, h1, h2], dim=-1))
    # residual: block output = input + MLP(LN(input))
    b = net.blocks[0]
    torch.testing.assert_close(h1, h0 + b.fc2(torch.nn.functional.gelu(b.fc1(b.norm(h0)))))


def test_predict_is_eq10_composition():
    f = LearnabilityFilter(embed_dim=12, hidden=16, depth=2, lam=0.7, seed=1)
    # give the explore net a non-trivial head so U^q != 0
    with torch.no_grad():
        f.explore_net.head.weight.normal_()
        f.explore_net.head.bias.fill_(0.3)
    x = torch.randn(9, 12)
    r_hat, u_p, u_q = f.predict(x)
    assert r_hat.shape == u_p.shape == u_q.shape == (9,)
    assert u_q.abs().sum() > 0
    torch.testing.assert_close(r_hat, u_p + 0.7 * u_q)
    # and the parts are what the two networks compute
    s, h = f.exploit_net(x)
    torch.testing.assert_close(u_p, s.detach())
    torch.testing.assert_close(u_q, f.explore_net(h).detach())
    assert not r_hat.requires_grad


def test_construction_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = LearnabilityFilter(embed_dim=8, seed=4)
    after = torch.rand(1)
    b = LearnabilityFilter(embed_dim=8, seed=4)
    c = LearnabilityFilter(embed_dim=8, seed=5)
    assert torch.equal(expected, after)
    x = torch.randn(5, 8)
    assert torch.equal(a.predict(x)[0], b.predict(x)[0])
    assert not torch.equal(a.predict(x)[0], c.predict(x)[0])


# -------------------------------------------------------------------- selection
class _FixedScores(LearnabilityFilter):
    """Filter whose r̂ is the first embedding coordinate (to test select exactly)."""

    def predict(self, emb):
        r = emb[:, 0].clone()
        return r, r, torch.zeros_like(r)


def test_select_threshold_and_bounds_are_counted():
    f = _FixedScores(embed_dim=2, tau=0.5, min_select=2, max_select=3)
    emb = lambda v: torch.stack([torch.tensor(v), torch.zeros(len(v))], 1)  # noqa: E731

    idx, bound = f.select(emb([0.1, 0.9, 0.6, 0.2, 0.55]))
    assert idx.tolist() == [1, 2, 4] and bound is None
    assert idx.dtype == torch.long

    idx, bound = f.select(emb([0.1, 0.9, 0.3, 0.2]))  # only one above τ -> top-2
    assert idx.tolist() == [1, 2] and bound == "min"

    idx, bound = f.select(emb([0.7, 0.9, 0.8, 0.6, 0.95]))  # five above τ -> top-3
    assert idx.tolist() == [1, 2, 4] and bound == "max"

    idx, bound = f.select(emb([0.1]))  # fewer candidates than min_select -> all of them
    assert idx.tolist() == [0] and bound == "min"

    assert f.bound_hits == {"min": 2, "max": 1}


def test_select_with_real_networks_matches_predict():
    f = LearnabilityFilter(embed_dim=6, tau=0.0, min_select=0)
    x = torch.randn(20, 6)
    idx, bound = f.select(x)
    r_hat = f.predict(x)[0]
    assert idx.tolist() == torch.nonzero(r_hat > 0.0).flatten().tolist()
    assert bound is None


# ----------------------------------------------------------------------- buffer
def test_observe_is_a_bounded_fifo():
    f = LearnabilityFilter(embed_dim=2, buffer_size=5)
    xs = torch.arange(14, dtype=torch.float32).reshape(7, 2)
    f.observe(xs[:3], torch.arange(3.0))
    assert f.num_observed == 3
    f.observe(xs[3:], torch.arange(3.0, 7.0))
    assert f.num_observed == 5
    x, r = f.buffer()
    assert r.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]  # oldest two dropped, oldest first
    torch.testing.assert_close(x, xs[2:])
    f.observe(torch.zeros(8, 2), torch.arange(10.0, 18.0))  # more than capacity: keep the last 5
    assert f.buffer()[1].tolist() == [13.0, 14.0, 15.0, 16.0, 17.0]
    with pytest.raises(ValueError):
        f.observe(torch.zeros(2, 2), torch.zeros(3))
    with pytest.raises(ValueError):
        f.observe(torch.zeros(2, 3), torch.zeros(2))


def test_fit_reduces_losses_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    r = torch.sigmoid(x[:, 0] - x[:, 1])

    def make():
        f = LearnabilityFilter(embed_dim=8, hidden=32, depth=2, lr=1e-3, epochs=5, batch_size=32, seed=3)
        f.observe(x, r)
        return f

    a, b = make(), make()
    u_p_sel = a.predict(x)[1]  # observe() without u_p recorded this (nothing fitted yet)
    loss0 = 0.5 * ((u_p_sel - r) ** 2).mean().item()
    out_a = [a.fit() for _ in range(3)]
    out_b = [b.fit() for _ in range(3)]
    assert out_a == out_b
    assert torch.equal(a.predict(x)[0], b.predict(x)[0])
    assert out_a[-1]["n"] == 200
    assert out_a[-1]["loss_p"] < 0.2 * loss0
    # Eq. 9's label is r − U^p_sel(x), the prediction at observation: U^q fits it below the loss of U^q = 0
    assert out_a[-1]["loss_q"] < 0.5 * 0.5 * ((r - u_p_sel) ** 2).mean().item()
    assert LearnabilityFilter(embed_dim=8).fit() == {"n": 0}


def test_fit_restores_thread_count():
    prev = torch.get_num_threads()
    seen = []

    class Spy(LearnabilityFilter):
        def _fit(self):
            seen.append(torch.get_num_threads())
            return super()._fit()

    f = Spy(embed_dim=4, epochs=1, fit_threads=1)
    f.observe(torch.randn(8, 4), torch.rand(8))
    f.fit()
    assert seen == [1] and torch.get_num_threads() == prev
    f.fit_threads = None
    f.fit()
    assert seen == [1, prev]


def test_fit_trains_explore_net_on_exploit_residual():
    """Eq. 9: with U^p frozen (lr 0 for it), U^q alone should learn r - U^p(x)."""

    class FrozenExploit(LearnabilityFilter):
        def configure_optimizers(self):
            opt_p = torch.optim.SGD(self.exploit_net.parameters(), lr=0.0)
            opt_q = torch.optim.AdamW(self.explore_net.parameters(), lr=3e-3)
            return [opt_p, opt_q]

    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 6, generator=g)
    r = torch.sigmoid(2 * x[:, 2])
    f = FrozenExploit(embed_dim=6, hidden=32, lam=1.0, epochs=40, batch_size=64)
    _, u_p0, _ = f.predict(x)
    f.observe(x, r)
    f.fit()
    r_hat, u_p, u_q = f.predict(x)
    torch.testing.assert_close(u_p, u_p0)  # U^p untouched
    resid = r - u_p
    # U^q explains most of the residual's variance -> r̂ = U^p + U^q is close to r
    assert ((u_q - resid) ** 2).mean() < 0.25 * resid.var()
    assert ((r_hat - r) ** 2).mean() < 0.25 * ((u_p - r) ** 2).mean()


# -------------------------------------------------------------- the filter learns
def test_filter_learns_a_contextual_bandit():
    """Reward depends on the embedding through a hidden direction w; only selected
    samples' rewards are observed. After a few rounds the filter's selections must
    beat random selections of the same size."""
    d = 32
    g = torch.Generator().manual_seed(0)
    w = _unit(1, d, g)[0]

    def reward(x):  # sqrt(d)*<w,x> is ~N(0,1) for random unit x, so r spans (0, 1)
        return torch.sigmoid(2.0 * d**0.5 * (x @ w))

    f = LearnabilityFilter(embed_dim=d, seed=0)  # paper defaults: lr 3e-4, 10 epochs
    x0 = _unit(128, d, g)  # round 1: a random (prototype-like) first selection
    f.observe(x0, reward(x0))
    f.fit()
    for _ in range(6):
        cand = _unit(128, d, g)
        idx, _ = f.select(cand)
        f.observe(cand[idx], reward(cand[idx]))
        f.fit()

    test = _unit(2000, d, g)
    r = reward(test)
    idx, _ = f.select(test)
    assert 100 < idx.numel() < 1900
    rand_idx = torch.randperm(2000, generator=g)[: idx.numel()]
    selected, random_sel = r[idx].mean().item(), r[rand_idx].mean().item()
    assert selected - random_sel >= 0.15, (selected, random_sel)  # measured ~0.23-0.26 over seeds 0-5
    r_hat = f.predict(test)[0]
    assert torch.corrcoef(torch.stack([r_hat, r]))[0, 1] > 0.8


# ------------------------------------------------------------ custom subclasses
class LinearExploit(nn.Module):
    """A different U^p: linear score, hidden state = a 7-d random projection."""

    def __init__(self, in_dim):
        super().__init__()
        self.lin = nn.Linear(in_dim, 1)
        self.feat = nn.Linear(in_dim, 7)

    def forward(self, x):
        return self.lin(x).squeeze(-1), torch.tanh(self.feat(x))


class LinearExploitFilter(LearnabilityFilter):
    def build_exploit_net(self):
        return LinearExploit(self.embed_dim)


def test_custom_exploit_net_is_used_by_predict_and_fit():
    f = LinearExploitFilter(embed_dim=10, hidden=16, lr=1e-2, epochs=3)
    assert isinstance(f.exploit_net, LinearExploit)
    assert isinstance(f.explore_net, ExploreNet)
    assert f.explore_net.proj.in_features == 7  # sized from the custom hidden state
    x = torch.randn(40, 10)
    torch.testing.assert_close(f.predict(x)[1], f.exploit_net(x)[0].detach())
    lin0, feat0 = f.exploit_net.lin.weight.detach().clone(), f.exploit_net.feat.weight.detach().clone()
    f.observe(x, torch.rand(40))
    f.fit()
    assert not torch.equal(f.exploit_net.lin.weight, lin0)  # Eq. 8 trained the custom scorer
    # h^p feeds U^q detached (Eq. 9), so the custom hidden-state layer gets no gradient
    assert torch.equal(f.exploit_net.feat.weight, feat0)
    torch.testing.assert_close(f.predict(x)[1], f.exploit_net(x)[0].detach())


def test_filter_class_from_path():
    mod = types.ModuleType("_ladalit_test_filters")
    mod.LinearExploitFilter = LinearExploitFilter
    mod.NotAFilter = nn.Linear
    sys.modules[mod.__name__] = mod
    try:
        assert filter_class_from_path("_ladalit_test_filters:LinearExploitFilter") is LinearExploitFilter
        assert filter_class_from_path("_ladalit_test_filters.LinearExploitFilter") is LinearExploitFilter
        assert filter_class_from_path("ladalit.method.filter:LearnabilityFilter") is LearnabilityFilter
        with pytest.raises(TypeError):
            filter_class_from_path("_ladalit_test_filters:NotAFilter")
        with pytest.raises(ValueError):
            filter_class_from_path("nomodule")
    finally:
        del sys.modules[mod.__name__]


# ------------------------------------------------- a subclass with its own setting, from YAML
class NarrowExploit(nn.Module):
    """U^p of one hidden layer `width` wide."""

    def __init__(self, in_dim, width):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, width), nn.GELU())
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        h = self.body(x)
        return self.head(h).squeeze(-1), h


class NarrowFilter(LearnabilityFilter):
    """`width`: a setting of its own (filter_net.init_args.width); `built` records every instance."""
    built: list = []

    def __init__(self, *args, width: int = 512, **kwargs):
        self.width = width  # before LearnabilityFilter.__init__, which builds the networks
        super().__init__(*args, **kwargs)
        NarrowFilter.built.append(self)

    def build_exploit_net(self):
        return NarrowExploit(self.embed_dim, self.width)


def smoke_yaml(tmp_path, filter_net: dict) -> Path:
    """conf/smoke.yaml with `filter_net` merged in, as a YAML file of its own."""
    conf = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "smoke.yaml").read_text())
    conf["filter_net"].update(filter_net)
    path = tmp_path / "narrow.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def test_a_subclass_configured_from_yaml_with_a_setting_of_its_own_is_the_filter_lada_trains(tmp_path, monkeypatch):
    from ladalit import run
    monkeypatch.setattr(NarrowFilter, "built", [])
    conf = smoke_yaml(tmp_path, {"class_path": f"{__name__}:NarrowFilter", "init_args": {"width": 7}})
    assert run.main([f"conf={conf}", f"output_dir={tmp_path}", "run_name=r", "quiet=true", "rounds=1",
                     "eval.shots=[0]"]) == 0
    # one filter per pair and side (2 clients: the clients' and the server's), each 7 wide and trained
    assert len(NarrowFilter.built) == 4
    for f in NarrowFilter.built:
        assert f.width == 7 and f.exploit_net.body[0].out_features == 7 and f.explore_net.proj.in_features == 7
    assert sum(f.n_fits for f in NarrowFilter.built) > 0
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["filter_net"]["init_args"] == {"width": 7}


@pytest.mark.parametrize("init_args,line", [
    ({"widht": 7}, "config key 'filter_net.init_args.widht': not a parameter of tests.method.test_filter:NarrowFilter"
                   ".__init__ (its settings: fit_threads, weight_decay, width)"),
    ({"width": "wide"}, "config key 'filter_net.init_args.width': 'wide' is not of type int"),
    ({"hidden": 7}, "config key 'filter_net.init_args.hidden': passed by the loop from its own config key"),
    ({"weight_decay": float("inf")}, "config key 'filter_net.init_args.weight_decay': value inf is not a finite number"),
])
def test_init_args_are_checked_against_the_subclass_init_at_start_in_one_line(tmp_path, capsys, init_args, line):
    from ladalit import run
    conf = smoke_yaml(tmp_path, {"class_path": f"{__name__}:NarrowFilter", "init_args": init_args})
    assert run.main([f"conf={conf}", f"output_dir={tmp_path}", "run_name=r", "quiet=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {line}") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()  # nothing written


def test_init_args_without_a_class_path_or_a_required_argument_are_refused():
    from ladalit.core.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="'filter_net.init_args': settings of a class, but filter_net.class_path"):
        load_config(["conf=smoke.yaml", "filter_net.init_args.width=7"])
    mod = types.ModuleType("_ladalit_test_required")

    class Required(LearnabilityFilter):
        def __init__(self, *args, width: int, **kwargs):
            self.width = width
            super().__init__(*args, **kwargs)
    mod.Required = Required
    sys.modules[mod.__name__] = mod
    try:
        with pytest.raises(ConfigError, match=r"'filter_net.init_args.width': required by _ladalit_test_required:Req"):
            load_config(["conf=smoke.yaml", "filter_net.class_path=_ladalit_test_required:Required"])
        cfg = load_config(["conf=smoke.yaml", "filter_net.class_path=_ladalit_test_required:Required",
                           "filter_net.init_args.width=3"])
        assert cfg.filter_net.init_args == {"width": 3}
    finally:
        del sys.modules[mod.__name__]


# ----------------------------------------------------------------- checkpoints
def test_state_dict_round_trip_restores_buffer_predictions_and_training(tmp_path):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 8, generator=g)
    r = torch.rand(50, generator=g)
    f = LearnabilityFilter(embed_dim=8, hidden=16, buffer_size=32, epochs=2, seed=7, min_select=3)
    f.observe(x, r)  # wraps the ring
    f.fit()
    f.select(torch.randn(4, 8, generator=g))
    path = tmp_path / "filter.pt"
    torch.save(f.state_dict(), path)

    f2 = LearnabilityFilter(embed_dim=8, hidden=16, buffer_size=32, epochs=2, seed=99, min_select=3)
    f2.load_state_dict(torch.load(path, weights_only=True))
    for a, b in zip(f.buffer(), f2.buffer()):
        assert torch.equal(a, b)
    assert f2.num_observed == 32 and int(f2.buf_ptr) == int(f.buf_ptr)
    probe = torch.randn(20, 8, generator=g)
    for a, b in zip(f.predict(probe), f2.predict(probe)):
        assert torch.equal(a, b)
    assert f2.bound_hits == f.bound_hits
    # shuffling generator and optimiser states come along: the next fit is identical
    assert f.fit() == f2.fit()
    assert torch.equal(f.predict(probe)[0], f2.predict(probe)[0])


# ------------------------------------------------------------ fit's flat AdamW
class _TorchAdamW(torch.optim.AdamW):
    """torch's own AdamW, tensor by tensor: fit leaves a subclass to itself (no flat step)."""


def _reference(cls):
    class Reference(cls):
        def configure_optimizers(self):
            return [_TorchAdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
                    for net in (self.exploit_net, self.explore_net)]
    return Reference


def _assert_same(a, b):
    """Same parameters, buffers, counters, generator and optimizer states, bit for bit, under the same keys."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), k
    ea, eb = sa["_extra_state"], sb["_extra_state"]
    assert ea["bound_hits"] == eb["bound_hits"] and ea["n_fits"] == eb["n_fits"]
    assert torch.equal(ea["gen_state"], eb["gen_state"])
    assert (ea["opt_states"] is None) == (eb["opt_states"] is None)
    for oa, ob in zip(ea["opt_states"] or [], eb["opt_states"] or [], strict=True):
        assert oa["param_groups"] == ob["param_groups"] and list(oa["state"]) == list(ob["state"])
        for i in oa["state"]:
            assert list(oa["state"][i]) == list(ob["state"][i]) == ["step", "exp_avg", "exp_avg_sq"]
            for k in oa["state"][i]:
                assert torch.equal(oa["state"][i][k], ob["state"][i][k]), (i, k)


@pytest.mark.parametrize("cls", [LearnabilityFilter, LinearExploitFilter])
def test_fit_is_bit_identical_to_torch_adamw_over_each_tensor(cls, tmp_path):
    """fit's flat AdamW == torch's AdamW tensor by tensor: fits over buffers of 1 .. 65 observations and a
    wrapped ring (buffer 100), a checkpoint and its load (either kind loads into either), fits after it.
    LinearExploitFilter's `feat` gets no gradient in Eq. 8 (torch skips it): the plain step there."""
    g = torch.Generator().manual_seed(5)
    kw = dict(embed_dim=24, hidden=16, depth=2, epochs=2, batch_size=16, buffer_size=100, seed=3)
    fast, ref = cls(**kw), _reference(cls)(**kw)
    _assert_same(fast, ref)

    def fit_both(m):
        x, r = torch.randn(m, 24, generator=g), torch.rand(m, generator=g)
        for f in (fast, ref):
            f.observe(x, r)
        assert fast.fit() == ref.fit()
        _assert_same(fast, ref)

    for m in (1, 14, 1, 47, 1, 1, 65, 130):  # 1, 15, 16, 63, 64, 65, then the ring wraps
        fit_both(m)
    if cls is LearnabilityFilter:  # the flat step ran: each network's parameters lie in one tensor
        assert len({p.untyped_storage().data_ptr() for p in fast.exploit_net.parameters()}) == 1
    torch.save(fast.state_dict(), tmp_path / "fast.pt")
    torch.save(ref.state_dict(), tmp_path / "ref.pt")
    fast, ref = cls(**{**kw, "seed": 9}), _reference(cls)(**{**kw, "seed": 9})
    fast.load_state_dict(torch.load(tmp_path / "ref.pt", weights_only=True))
    ref.load_state_dict(torch.load(tmp_path / "fast.pt", weights_only=True))
    _assert_same(fast, ref)
    for m in (3, 70):
        fit_both(m)


def test_explore_label_is_the_reward_minus_the_prediction_recorded_at_selection():
    """Eq. 9: U^q regresses r_total − U^p_sel(x). Rewards equal to the recorded predictions leave U^q at its
    zero start, however far the refitted U^p is from them; a constant gap c is what U^q learns."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(128, 6, generator=g)
    r = torch.sigmoid(2 * x[:, 0])
    f = LearnabilityFilter(embed_dim=6, hidden=16, lam=1.0, epochs=30, batch_size=32, lr=3e-3)
    f.observe(x, r, u_p=r)
    f.fit()
    _, u_p, u_q = f.predict(x)
    assert not torch.allclose(u_p, r, atol=1e-3)  # the refit residual r − U^p(x) is not zero ...
    assert torch.equal(u_q, torch.zeros(128))      # ... but the label r − U^p_sel(x) is
    f2 = LearnabilityFilter(embed_dim=6, hidden=16, lam=1.0, epochs=30, batch_size=32, lr=3e-3)
    f2.observe(x, r, u_p=r - 0.3)
    f2.fit()
    assert f2.predict(x)[2].mean().item() == pytest.approx(0.3, abs=0.05)


def test_observe_without_a_recorded_prediction_takes_the_current_one():
    f = LearnabilityFilter(embed_dim=3, hidden=4, depth=1)
    x = torch.randn(5, 3)
    f.observe(x, torch.rand(5))
    torch.testing.assert_close(f._buffer_rows()[2], f.predict(x)[1])
    with pytest.raises(ValueError):
        f.observe(x, torch.rand(5), u_p=torch.zeros(4))
