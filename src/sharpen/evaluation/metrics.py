"""Evaluation metrics as pure functions: pass@k, maj@k, means and bootstrap intervals.

Every function takes plain numbers or lists and returns a float (or a pair of floats);
none of them knows about models, tasks or runs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from sharpen.signals.majority import majority_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of the chance that at least one of k samples is correct.

    With n samples of which c are correct (Chen et al. 2021, "Evaluating Large Language
    Models Trained on Code", eq. 1):

        pass@k = 1 − C(n−c, k) / C(n, k)

    computed in the paper's numerically stable product form

        C(n−c, k) / C(n, k) = ∏_{i=n−c+1}^{n} (1 − k/i)

    which avoids the huge binomial coefficients. If fewer than k samples are wrong
    (n − c < k), every k-subset holds a correct sample and pass@k = 1.
    """
    if n < 1:
        raise ValueError(f"pass_at_k needs n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got k={k}, n={n}; draw at least k samples")
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)  # (c,)
    return float(1.0 - np.prod(1.0 - k / i))


def majority_index(answers: Sequence[Optional[str]]) -> Optional[int]:
    """Index of the first sample that carries the majority answer (`majority_answer`'s rules:
    `None` answers do not vote, ties go to the answer seen first); None if no sample has one."""
    winner = majority_answer(answers)
    return None if winner is None else list(answers).index(winner)


def maj_at_k(answers: Sequence[Optional[str]], correct: Sequence[bool], k: int) -> float:
    """Fraction of k-sample majority votes whose answer is correct (maj@k).

    maj@k asks: if we sample k completions and keep the most frequent answer
    (self-consistency, Wang et al. 2022, "Self-Consistency Improves Chain of Thought
    Reasoning in Language Models"), is that answer right?

    With n >= k samples, the n samples are cut into n // k disjoint consecutive chunks of k
    (a remainder of n mod k samples is left out) and

        maj@k = (1 / (n//k)) · Σ_chunks 1[correct(majority answer of the chunk)]

    Rules inside a chunk: `None` answers do not vote; ties go to the answer seen first; the
    majority answer is judged by the correctness of the first sample that carries it; a
    chunk where every answer is None scores 0.
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"maj_at_k got {n} answers but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"maj_at_k needs 1 <= k <= n, got k={k}, n={n}; draw at least k samples")
    chunks = n // k
    hits = 0
    for start in range(0, chunks * k, k):
        winner = majority_index(answers[start : start + k])
        if winner is not None and correct[start + winner]:
            hits += 1
    return hits / chunks


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean (1/N) Σ v_i; an empty sequence is an error, not 0."""
    if len(values) == 0:
        raise ValueError("mean of an empty sequence is undefined")
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def bootstrap_ci(
    values_per_problem: Sequence[float],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over problems.

    Draw n_boot resamples of the P problems with replacement, take each resample's mean
    m_b, and return the (α/2, 1 − α/2) percentiles of {m_b} with α = 1 − confidence
    (Efron & Tibshirani 1993). Problems, not samples, are resampled, because the spread
    between problems dominates benchmark variance (Madaan et al. 2024, "Quantifying
    Variance in Evaluation Benchmarks"). Deterministic for a given seed.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ci needs 0 < confidence < 1, got {confidence}")
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci needs n_boot >= 1, got {n_boot}")
    values = np.asarray(values_per_problem, dtype=np.float64)  # (P,)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty flat sequence of per-problem values")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))  # (n_boot, P)
    means = values[idx].mean(axis=1)  # (n_boot,)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
