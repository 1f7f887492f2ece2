import math
import statistics

import pytest

from ladalit.core.stats import interval_kind, paired_bootstrap


def test_constant_differences_give_a_point_interval():
    assert paired_bootstrap([[1.0] * 5, [1.0] * 7]) == (1.0, 1.0, 1.0)


def test_mean_is_the_mean_of_per_seed_means():
    mean, low, high = paired_bootstrap([[1.0, 0.0], [0.0, 0.0, 0.0, -1.0]], samples=500)
    assert mean == pytest.approx((0.5 + -0.25) / 2)
    assert low <= mean <= high


def test_interval_matches_the_normal_approximation_for_many_items():
    # 0/1 gains on 400 items: the bootstrap interval is close to mean ± 1.96 · sd / sqrt(n)
    diffs = [1.0] * 120 + [0.0] * 200 + [-1.0] * 80
    mean, low, high = paired_bootstrap([diffs], samples=4000, seed=1)
    half = 1.96 * statistics.pstdev(diffs) / len(diffs) ** 0.5
    assert mean == pytest.approx(0.1)
    assert low == pytest.approx(mean - half, abs=0.012) and high == pytest.approx(mean + half, abs=0.012)


def test_deterministic_and_refuses_empty():
    d = [[1.0, -1.0, 0.0, 1.0]]
    assert paired_bootstrap(d, seed=3) == paired_bootstrap(d, seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap([[]])


def test_seed_variance_widens_the_interval():
    # two seeds whose gains disagree (+1 on every item of one, -1 on every item of the other): the items
    # within a seed never vary, so an interval that kept the seeds fixed would be the point 0; resampling
    # the seeds draws (+1, +1), (+1, -1), (-1, +1), (-1, -1): the interval reaches both ends
    mean, low, high = paired_bootstrap([[1.0] * 50, [-1.0] * 50], samples=2000, seed=0)
    assert mean == 0.0 and low == -1.0 and high == 1.0
    # three seeds of +0.3, +0.1, -0.1 (items constant): a bootstrap sample is the mean of 3 seeds drawn with
    # replacement; P(all three -0.1) = P(all three +0.3) = 1/27 = 3.7% > 2.5%, so the interval's ends are -0.1, +0.3
    mean, low, high = paired_bootstrap([[0.3] * 20, [0.1] * 20, [-0.1] * 20], samples=4000, seed=1)
    assert mean == pytest.approx(0.1)
    assert low == pytest.approx(-0.1) and high == pytest.approx(0.3)


def test_interval_kind_says_what_it_covers():
    assert "items only" in interval_kind(1) and "seeds" in interval_kind(3)


def test_auc_against_hand_computed_values():
    from ladalit.core.stats import auc
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0  # every positive above every negative
    assert auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    # pairs (p, n): (0.2, 0.1) win, (0.2, 0.5) loss, (0.6, 0.1) win, (0.6, 0.5) win, (0.5, 0.1) win, (0.5, 0.5) tie:
    # 4 wins + 1 half out of 6 pairs
    assert auc([0.2, 0.6, 0.5], [0.1, 0.5]) == pytest.approx(4.5 / 6)
    assert auc([1.0, 1.0], [1.0]) == 0.5  # all tied
    assert math.isnan(auc([], [1.0])) and math.isnan(auc([1.0], []))


def test_auc_matches_the_pairwise_count_on_random_scores_with_ties():
    import random as rnd

    from ladalit.core.stats import auc
    g = rnd.Random(4)
    pos = [g.randint(0, 9) / 3 for _ in range(40)]
    neg = [g.randint(0, 9) / 3 for _ in range(55)]
    pairwise = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert auc(pos, neg) == pytest.approx(pairwise, abs=1e-12)
