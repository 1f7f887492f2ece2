"""Statistics over seeds and test items: a paired bootstrap of one method's gain over another."""
from __future__ import annotations

import random


def paired_bootstrap(diffs_by_seed: list[list[float]], samples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the mean paired difference, with a percentile bootstrap interval.

    `diffs_by_seed[s][i]` is method A's score minus method B's on test item i of seed s (the same items
    for both: a seed fixes the split). The statistic is the mean over seeds of each seed's mean
    difference; each bootstrap sample redraws the items of every seed with replacement (the seeds are
    the runs, kept as they are)."""
    seeds = [d for d in diffs_by_seed if d]
    if not seeds:
        raise ValueError("no differences to bootstrap")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")

    def stat(per_seed):
        return sum(sum(d) / len(d) for d in per_seed) / len(per_seed)

    rng = random.Random(seed)
    draws = sorted(stat([rng.choices(d, k=len(d)) for d in seeds]) for _ in range(samples))
    tail = (1 - level) / 2
    low = draws[min(samples - 1, int(tail * samples))]
    high = draws[min(samples - 1, int((1 - tail) * samples))]
    return stat(seeds), low, high
