import statistics

import pytest

from ladalit.reporting.stats import paired_bootstrap


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
