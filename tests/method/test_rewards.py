import math

import pytest
import torch

from ladalit.method.rewards import batch_reward, relative_gain, round_reward, same_sample_reward, total_reward

E = math.e


def _t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_batch_reward_per_sample_hand_computed():
    # Eq. 6 (SPEC §5): the previous candidate batch's selection had e = (2, 6) before it trained -> M̄ = 4.
    # This batch's selection, before it trains: e = (1, 4, 8) -> (4-1)/4 = 0.75 ; 0 ; (4-8)/8 = -0.5
    prev = _t(math.log(2.0), math.log(6.0))
    now = _t(0.0, math.log(4.0), math.log(8.0))
    torch.testing.assert_close(batch_reward(prev, now), _t(0.75, 0.0, -0.5))
    # the same samples measured after an update play no part: only the two selections do
    torch.testing.assert_close(batch_reward(prev, now), round_reward(prev, now))


def test_batch_reward_set_is_the_literal_sums_over_two_selections():
    # Σ_prev e = 2 + 6 = 8 (n_{b-1} = 2 terms) ; Σ_now e = 1 + 4 + 8 = 13 (n_b = 3) -> (8-13)/13, broadcast
    prev = _t(math.log(2.0), math.log(6.0))
    now = _t(0.0, math.log(4.0), math.log(8.0))
    torch.testing.assert_close(batch_reward(prev, now, granularity="set"), torch.full((3,), -5 / 13, dtype=torch.float64))
    # one previous sample: Σ_prev = 16 -> (16-13)/16
    torch.testing.assert_close(batch_reward(_t(math.log(16.0)), now, granularity="set"),
                               torch.full((3,), 3 / 16, dtype=torch.float64))


def test_batch_reward_of_the_very_first_batch_is_zero():
    now = _t(0.1, 0.7)
    for g in ("sample", "set"):
        torch.testing.assert_close(batch_reward(None, now, granularity=g), _t(0.0, 0.0))
        torch.testing.assert_close(batch_reward(_t(), now, granularity=g), _t(0.0, 0.0))


def test_same_sample_reward_per_sample_hand_computed():
    # the deviation reward.batch=same_sample. e = exp(loss). sample 0: before e^1, after e^0 -> (e - 1)/e = 1 - 1/e
    # sample 1: before e^0, after e^1 -> (1 - e)/e = 1/e - 1
    # sample 2: unchanged -> 0
    # sample 3: before log 4, after log 1 -> (4 - 1)/4 = 0.75
    r = same_sample_reward(_t(1.0, 0.0, 0.3, math.log(4.0)), _t(0.0, 1.0, 0.3, 0.0))
    torch.testing.assert_close(r, _t(1 - 1 / E, 1 / E - 1, 0.0, 0.75))


def test_same_sample_reward_set_hand_computed():
    # before: e = (2, 6) -> sum 8 ; after: e = (1, 3) -> sum 4 ; (8 - 4)/8 = 0.5 for everyone
    before = _t(math.log(2.0), math.log(6.0))
    after = _t(math.log(1.0), math.log(3.0))
    torch.testing.assert_close(same_sample_reward(before, after, granularity="set"), _t(0.5, 0.5))
    # make per-sample and set differ: sample 0 now gets worse (2 -> 4)
    after2 = _t(math.log(4.0), math.log(3.0))  # sums 8 -> 7: (8-7)/8 = 0.125
    torch.testing.assert_close(same_sample_reward(before, after2, granularity="set"), _t(0.125, 0.125))
    torch.testing.assert_close(same_sample_reward(before, after2), _t((2 - 4) / 4, (6 - 3) / 6))


def test_round_reward_per_sample_hand_computed():
    # previous selection e = (1, 3) -> M̄ = 2. now e = (1, 4, 2):
    # (2-1)/2 = 0.5 ; (2-4)/4 = -0.5 ; (2-2)/2 = 0
    prev = _t(0.0, math.log(3.0))
    now = _t(0.0, math.log(4.0), math.log(2.0))
    torch.testing.assert_close(round_reward(prev, now), _t(0.5, -0.5, 0.0))


def test_round_reward_set_hand_computed():
    # M = sum over previous selection (n_{t-1}=2) = 1 + 3 = 4 ; N = sum over now (n_t=3) = 1 + 4 + 2 = 7
    # (4 - 7)/7 = -3/7 broadcast
    prev = _t(0.0, math.log(3.0))
    now = _t(0.0, math.log(4.0), math.log(2.0))
    torch.testing.assert_close(round_reward(prev, now, granularity="set"), torch.full((3,), -3 / 7, dtype=torch.float64))


def test_round_reward_first_round_is_zero():
    now = _t(0.1, 0.7)
    for g in ("sample", "set"):
        torch.testing.assert_close(round_reward(None, now, granularity=g), _t(0.0, 0.0))
        torch.testing.assert_close(round_reward(_t(), now, granularity=g), _t(0.0, 0.0))


def test_total_reward_hand_computed():
    # alpha 0.25: 0.25*σ(0) + 0.75*σ(log 3) = 0.25*0.5 + 0.75*0.75 = 0.6875
    out = total_reward(_t(0.0), _t(math.log(3.0)), alpha=0.25)
    torch.testing.assert_close(out, _t(0.6875))
    # alpha extremes pick one component
    torch.testing.assert_close(total_reward(_t(math.log(3.0)), _t(0.0), 1.0), _t(0.75))
    torch.testing.assert_close(total_reward(_t(math.log(3.0)), _t(0.0), 0.0), _t(0.5))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_total_reward_validates_alpha(alpha):
    with pytest.raises(ValueError):
        total_reward(_t(0.0), _t(0.0), alpha)


def test_granularity_validated():
    with pytest.raises(ValueError):
        batch_reward(_t(0.0), _t(0.0), granularity="token")
    with pytest.raises(ValueError):
        same_sample_reward(_t(0.0), _t(0.0), granularity="token")
    with pytest.raises(ValueError):
        round_reward(_t(0.0), _t(0.0), granularity="batch")


def test_rewards_stable_for_large_losses_and_in_range():
    # exp(800) overflows float64; the log-domain form must not
    before = _t(800.0, 1.0, 0.0)
    after = _t(799.0, 801.0, 0.0)
    r = same_sample_reward(before, after)
    assert torch.isfinite(r).all()
    torch.testing.assert_close(r, _t(1 - 1 / E, -(1 - math.exp(-800.0)), 0.0))
    # set: log(e^800 + e^802) - log(e^799 + e^801 + e^0) = 1 (to double precision) -> 1 - 1/e
    rs = round_reward(_t(800.0, 802.0), after, granularity="set")
    torch.testing.assert_close(rs, torch.full((3,), 1 - 1 / E, dtype=torch.float64))


def test_rewards_detached_and_match_direct_formula():
    g = torch.Generator().manual_seed(0)
    lb = torch.rand(50, generator=g, dtype=torch.float64, requires_grad=True) * 3
    la = torch.rand(50, generator=g, dtype=torch.float64) * 3
    eb, ea = lb.detach().exp(), la.exp()
    r = same_sample_reward(lb, la)
    assert not r.requires_grad
    torch.testing.assert_close(r, (eb - ea) / torch.maximum(eb, ea))
    torch.testing.assert_close(relative_gain(lb.detach(), la), r)
    mbar = eb.mean()
    torch.testing.assert_close(round_reward(lb, la), (mbar - ea) / torch.maximum(mbar, ea))
    torch.testing.assert_close(batch_reward(lb, la), (mbar - ea) / torch.maximum(mbar, ea))
    assert not batch_reward(lb, la).requires_grad
