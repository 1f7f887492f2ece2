"""The rewards of one model pair across candidate batches and rounds (pair.rewards_of, SPEC §5), and Eq. 9's
baseline recorded at selection (pair.select / pair.observe_rewards), against hand-computed values."""
import math
from types import SimpleNamespace

import pytest
import torch

from ladalit.core.training import NonFiniteGuard
from ladalit.method.filter import LearnabilityFilter
from ladalit.method.pair import PairState, close_round, observe_rewards, record_weight_spread, reward_scale, \
    rewards_of, select


def cfg(alpha=0.0, granularity="sample", batch="previous_selection", filter="lada"):
    return SimpleNamespace(reward=SimpleNamespace(alpha=alpha, granularity=granularity, batch=batch),
                           lada=SimpleNamespace(filter=filter), filter_net=SimpleNamespace(fit_every="batch"))


def _log(*es):
    return torch.tensor([math.log(e) for e in es], dtype=torch.float64)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_the_batch_reward_compares_consecutive_selections_across_minibatches_and_rounds():
    c, pair = cfg(alpha=0.0), PairState(filter=None)
    # round 1, the first trained candidate batch (two minibatches): r_batch = 0, r_total = σ(0)
    r = rewards_of(c, pair, [_log(2.0), _log(6.0)], [None, None])
    assert [x.tolist() for x in r] == [[0.5], [0.5]]
    # the next candidate batch: M̄_{b-1} = (2 + 6) / 2 = 4 over the previous *selection* (both minibatches);
    # e now = (1, 4 | 8) -> (4-1)/4, 0, (4-8)/8
    r = rewards_of(c, pair, [_log(1.0, 4.0), _log(8.0)], [None, None])
    torch.testing.assert_close(torch.cat(r), torch.tensor([sig(0.75), 0.5, sig(-0.5)], dtype=torch.float64))
    close_round(pair)
    # round 2's first batch follows round 1's last: M̄_{b-1} = (1 + 4 + 8) / 3 = 13/3; e now = 13/3 -> 0, 26/3 -> -1/2
    r = rewards_of(c, pair, [_log(13 / 3, 26 / 3)], [None])
    torch.testing.assert_close(r[0], torch.tensor([0.5, sig(-0.5)], dtype=torch.float64))


def test_the_round_reward_uses_the_whole_previous_round():
    c, pair = cfg(alpha=1.0), PairState(filter=None)
    rewards_of(c, pair, [_log(2.0, 6.0)], [None])
    rewards_of(c, pair, [_log(1.0)], [None])
    close_round(pair)  # M̄ of round 1 = (2 + 6 + 1) / 3 = 3
    r = rewards_of(c, pair, [_log(1.0, 6.0)], [None])[0]
    torch.testing.assert_close(r, torch.tensor([sig(2 / 3), sig(-0.5)], dtype=torch.float64))


def test_set_granularity_sums_each_whole_selection():
    c, pair = cfg(alpha=0.0, granularity="set"), PairState(filter=None)
    rewards_of(c, pair, [_log(2.0), _log(6.0)], [None, None])  # Σ = 8
    r = rewards_of(c, pair, [_log(1.0, 4.0), _log(8.0)], [None, None])  # Σ = 13: (8 - 13) / 13 for all
    torch.testing.assert_close(torch.cat(r), torch.full((3,), sig(-5 / 13), dtype=torch.float64))


def test_same_sample_is_the_kept_deviation():
    c, pair = cfg(alpha=0.0, batch="same_sample"), PairState(filter=None)
    rewards_of(c, pair, [_log(5.0)], [_log(5.0)])
    r = rewards_of(c, pair, [_log(4.0, 2.0)], [_log(1.0, 4.0)])[0]  # before vs after: 3/4, -1/2
    torch.testing.assert_close(r, torch.tensor([sig(0.75), sig(-0.5)], dtype=torch.float64))


def test_the_filter_learns_explore_labels_from_the_prediction_made_at_selection():
    torch.manual_seed(0)
    f = LearnabilityFilter(embed_dim=4, hidden=8, depth=1, epochs=1, tau=-10.0)
    c, pair = cfg(), PairState(filter=f)
    emb = torch.randn(6, 4)
    sel, _ = select(c, pair, 2, [0, 2, 4], emb, set())
    assert sel == [0, 2, 4]
    at_selection = f.predict(emb[sel])[1]
    f.observe(torch.randn(5, 4), torch.rand(5))
    f.fit()  # U^p moves after the selection ...
    assert not torch.allclose(f.predict(emb[sel])[1], at_selection)
    observe_rewards(c, pair, sel, emb[sel], torch.full((3,), 0.7), NonFiniteGuard("skip"), "c", 2, 0)
    _, r, u_sel = f._buffer_rows()
    torch.testing.assert_close(u_sel[-3:], at_selection)  # ... the label's baseline is what scored x then
    torch.testing.assert_close(r[-3:], torch.full((3,), 0.7))


def test_the_weight_spread_of_shared_samples():
    pairs = {"a": PairState(filter=None), "b": PairState(filter=None), "c": PairState(filter=None)}
    rows = [("a", 1), ("b", 1), ("c", 2), ("a", 3), ("b", 3), ("c", 3)]
    w = torch.tensor([0.75, 0.25, 1.0, 1 / 3, 1 / 3, 1 / 3])
    record_weight_spread(rows, pairs, w)
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)  # sample 1; sample 3 is uniform: 1
    row_a = reward_scale(pairs["a"], 0.5)
    assert row_a["overlap_samples"] == 2 and row_a["w_min"] == pytest.approx(1 / 3) and row_a["w_max"] == 0.75
    assert row_a["w_entropy_ratio"] == pytest.approx((h1 + 1.0) / 2, rel=1e-6)
    row_c = reward_scale(pairs["c"], 0.5)  # sample 2 is c's alone: not counted; sample 3 is shared uniformly
    assert row_c["overlap_samples"] == 1 and row_c["w_entropy_ratio"] == pytest.approx(1.0)
    close_round(pairs["a"])
    assert "w_min" not in reward_scale(pairs["a"], 0.5)
