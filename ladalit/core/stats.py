"""Statistics over seeds and test items: a hierarchical paired bootstrap of one method's gain over another."""
from __future__ import annotations

import random


def paired_bootstrap(diffs_by_seed: list[list[float]], samples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the mean paired difference, with a percentile bootstrap interval that counts
    both sources of variance (SPEC §7): each bootstrap sample redraws the seeds with replacement (the
    training runs: another seed is another split, initialisation and training), then the test items
    within each drawn seed with replacement.

    `diffs_by_seed[s][i]` is method A's score minus method B's on test item i of seed s (the same items
    for both: a seed fixes the split). The statistic is the mean over seeds of each seed's mean
    difference. With one seed only the items are resampled, so the interval covers the test items, not
    training variance: say so wherever it is shown (`interval_kind`)."""
    seeds = [d for d in diffs_by_seed if d]
    if not seeds:
        raise ValueError("no differences to bootstrap")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")

    def stat(per_seed):
        return sum(sum(d) / len(d) for d in per_seed) / len(per_seed)

    rng = random.Random(seed)

    def draw():
        drawn = rng.choices(seeds, k=len(seeds)) if len(seeds) > 1 else seeds
        return stat([rng.choices(d, k=len(d)) for d in drawn])

    draws = sorted(draw() for _ in range(samples))
    tail = (1 - level) / 2
    low = draws[min(samples - 1, int(tail * samples))]
    high = draws[min(samples - 1, int((1 - tail) * samples))]
    return stat(seeds), low, high


def interval_kind(n_seeds: int) -> str:
    """What a `paired_bootstrap` interval over `n_seeds` seeds covers, for the tables that show one."""
    if n_seeds > 1:
        return f"95% interval, hierarchical bootstrap over {n_seeds} seeds, then test items within each"
    return "95% interval over test items only (one seed: training variance is not in it)"


def auc(pos: list[float], neg: list[float]) -> float:
    """The probability that a positive's score is above a negative's, ties counting one half (the area under
    the ROC curve; Mann-Whitney U / (|pos| |neg|)), from average ranks; NaN where either side is empty.
    0.5: the score does not separate the two; 1: every positive above every negative."""
    if not pos or not neg:
        return float("nan")
    scored = sorted([(float(x), 1) for x in pos] + [(float(x), 0) for x in neg])
    rank_sum, i = 0.0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        mid = (i + 1 + j) / 2  # the average of ranks i+1..j, shared by the tied scores
        rank_sum += mid * sum(s[1] for s in scored[i:j])
        i = j
    n, m = len(pos), len(neg)
    return (rank_sum - n * (n + 1) / 2) / (n * m)
