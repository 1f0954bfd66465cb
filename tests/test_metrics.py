"""Metrics: pass@k against brute force, maj@k by hand, bootstrap interval behaviour."""

import math
from itertools import combinations

import numpy as np
import pytest

from sharpen.evaluation.metrics import bootstrap_ci, maj_at_k, majority_index, mean, pass_at_k


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (first c correct) holding a correct one."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 11))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_hand_values():
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)  # pass@1 = c/n
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 1, 8) == 1.0


def test_pass_at_k_large_n_is_stable():
    # C(1000, 500) overflows a float; the product form does not.
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5)
    assert pass_at_k(1000, 3, 10) == pytest.approx(1 - math.comb(997, 10) / math.comb(1000, 10), rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(4, 2, 5), (4, 2, 0), (4, 5, 1), (4, -1, 1), (0, 0, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_majority_index_ties_and_none():
    assert majority_index(["3", "4", "4"]) == 1
    assert majority_index(["4", "3", "3", "4"]) == 0  # tie: first seen wins
    assert majority_index([None, "5", None, "6"]) == 1  # None does not vote; tie -> "5"
    assert majority_index([None, None]) is None


def test_maj_at_k_hand_examples():
    # one chunk of 3: majority "7" (2 votes) is correct
    assert maj_at_k(["7", "1", "7"], [True, False, True], 3) == 1.0
    # majority "1" is wrong even though one sample is right
    assert maj_at_k(["7", "1", "1"], [True, False, False], 3) == 0.0
    # tie "7" vs "1": first occurrence ("1") wins, and it is wrong
    assert maj_at_k(["1", "7", "7", "1"], [False, True, True, False], 4) == 0.0
    # None answers do not vote: "7" wins 1 vote to 0 despite two Nones
    assert maj_at_k([None, "7", None], [False, True, False], 3) == 1.0
    # all-None chunk scores 0
    assert maj_at_k([None, None], [False, False], 2) == 0.0


def test_maj_at_k_chunks_and_remainder():
    answers = ["1", "1", "2", "2", "2", "1", "9"]  # chunks of 3: [1,1,2] [2,2,1], "9" left out
    correct = [a == "1" for a in answers]
    assert maj_at_k(answers, correct, 3) == 0.5
    # k = 1: every sample is its own chunk; a None answer scores 0 even if "correct"
    assert maj_at_k(["1", None, "2"], [True, True, False], 1) == pytest.approx(1 / 3)


def test_maj_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        maj_at_k(["1"], [True], 2)
    with pytest.raises(ValueError):
        maj_at_k(["1", "2"], [True], 1)


def test_mean():
    assert mean([1, 2, 3, 6]) == 3.0
    with pytest.raises(ValueError):
        mean([])


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    values = np.random.default_rng(1).random(50)
    lo, hi = bootstrap_ci(values, seed=3)
    assert lo < values.mean() < hi
    assert bootstrap_ci(values, seed=3) == (lo, hi)
    assert bootstrap_ci(values, seed=4) != (lo, hi)


def test_bootstrap_ci_shrinks_with_more_problems():
    rng = np.random.default_rng(2)
    small = rng.integers(0, 2, 25).astype(float)
    large = rng.integers(0, 2, 2500).astype(float)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert hi_l - lo_l < (hi_s - lo_s) / 5  # width ~ 1/sqrt(P): 100x the problems, ~1/10 the width
    assert lo_l < large.mean() < hi_l


def test_bootstrap_ci_degenerate_and_bad_input():
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], confidence=1.0)
