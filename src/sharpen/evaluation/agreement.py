"""Accuracy without labels, from agreement between sampled answers (METHODS.md §8).

Pure functions on extracted answers (None: nothing readable, it never agrees with anything):

    pairwise_agreement(["7", "7", "8"])        # 1/3: one agreeing pair of three
    top_vote_share(["7", "7", "8"])            # 2/3
    cross_agreement(["7", "8"], ["7", "7"])    # 1/2
    fit = fit_agreement_line(agr_source, agr_target)   # probit least squares
    fit.predict(acc_source)                              # ALine-S
    aline_d(acc_source, agr_source, agr_target, slope)   # ALine-D

`estimate_from_groups` averages the per-problem estimates over problems with the bootstrap
interval of `metrics.bootstrap_ci`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from statistics import NormalDist
from typing import Optional, Sequence

import numpy as np

from sharpen.evaluation.metrics import bootstrap_ci, mean

PROBIT_EPS = 1e-3
"""Rates are clipped to [ε, 1 − ε] before the probit, so 0 and 1 stay finite."""

_NORMAL = NormalDist()


def _counts(answers: Sequence[Optional[str]]) -> Counter:
    """c_a: how many samples gave answer a (None answers are not counted as an answer)."""
    return Counter(a for a in answers if a is not None)


def pairwise_agreement(answers: Sequence[Optional[str]]) -> float:
    """Unbiased chance that two different samples of one problem give the same answer.

        agreement = Σ_a c_a (c_a − 1) / (n (n − 1))

    over the n samples, c_a of which answer a (None answers count in n but agree with
    nothing). For a calibrated model it estimates single-sample accuracy (pass@1):
    "Assessing Generalization of SGD via Disagreement" (Jiang et al. 2022); "Agreement-on-
    the-Line" (Baek et al. 2022).
    """
    n = len(answers)
    if n < 2:
        raise ValueError(f"pairwise_agreement needs at least 2 samples of a problem, got {n}")
    return sum(c * (c - 1) for c in _counts(answers).values()) / (n * (n - 1))


def top_vote_share(answers: Sequence[Optional[str]]) -> float:
    """max_a c_a / n: the majority answer's share, an estimate of maj@n accuracy
    (Wang et al. 2022, self-consistency; 0 when no sample has an answer)."""
    n = len(answers)
    if n < 1:
        raise ValueError("top_vote_share needs at least 1 sample")
    counts = _counts(answers)
    return max(counts.values()) / n if counts else 0.0


def cross_agreement(answers_a: Sequence[Optional[str]], answers_b: Sequence[Optional[str]]) -> float:
    """Chance that a sample of model A and a sample of model B agree on one problem:

        agreement(A, B) = Σ_a c_a^A c_a^B / (n_A n_B)

    (unbiased, since the two models' samples are independent)."""
    if not answers_a or not answers_b:
        raise ValueError("cross_agreement needs at least 1 sample of each model")
    ca, cb = _counts(answers_a), _counts(answers_b)
    return sum(c * cb[a] for a, c in ca.items()) / (len(answers_a) * len(answers_b))


@dataclass(frozen=True)
class Estimate:
    """A mean over problems with its bootstrap interval."""

    value: float
    ci: tuple[float, float]


def average(values_per_problem: Sequence[float], seed: int = 0, n_boot: int = 1000) -> Estimate:
    """Mean over problems and its 95% percentile-bootstrap interval over problems."""
    return Estimate(mean(values_per_problem), bootstrap_ci(values_per_problem, n_boot, 0.95, seed))


def estimate_from_groups(groups: Sequence[Sequence[Optional[str]]], seed: int = 0) -> dict[str, Estimate]:
    """Label-free estimates from each problem's sampled answers (P groups of n answers):
    "pass@1" (mean pairwise agreement) and "maj@n" (mean top vote share)."""
    if not groups:
        raise ValueError("estimate_from_groups needs at least one problem")
    n = len(groups[0])
    return {
        "pass@1": average([pairwise_agreement(g) for g in groups], seed),
        f"maj@{n}": average([top_vote_share(g) for g in groups], seed),
    }


def mean_cross_agreement(groups_a: Sequence[Sequence[Optional[str]]],
                         groups_b: Sequence[Sequence[Optional[str]]], seed: int = 0) -> Estimate:
    """`cross_agreement` averaged over the problems both models answered (same order)."""
    if len(groups_a) != len(groups_b):
        raise ValueError(f"cross agreement needs the same problems: got {len(groups_a)} and {len(groups_b)}")
    return average([cross_agreement(a, b) for a, b in zip(groups_a, groups_b)], seed)


def probit(p: "np.ndarray | float") -> np.ndarray:
    """Φ⁻¹(p), the standard normal quantile, with p clipped to [PROBIT_EPS, 1 − PROBIT_EPS]."""
    q = np.clip(np.asarray(p, dtype=np.float64), PROBIT_EPS, 1 - PROBIT_EPS)
    return np.vectorize(_NORMAL.inv_cdf, otypes=[np.float64])(q)


def normal_cdf(z: "np.ndarray | float") -> np.ndarray:
    """Φ(z), the standard normal distribution function."""
    return np.vectorize(_NORMAL.cdf, otypes=[np.float64])(np.asarray(z, dtype=np.float64))


@dataclass(frozen=True)
class LineFit:
    """Φ⁻¹(y) = slope · Φ⁻¹(x) + intercept, fitted by least squares."""

    slope: float
    intercept: float
    r2: float
    """Coefficient of determination of the fit in probit space."""

    def predict(self, x: Sequence[float]) -> np.ndarray:
        """Φ(slope · Φ⁻¹(x) + intercept)."""
        return normal_cdf(self.slope * probit(x) + self.intercept)


def fit_agreement_line(x: Sequence[float], y: Sequence[float]) -> LineFit:
    """Least-squares line through (Φ⁻¹ x_i, Φ⁻¹ y_i): agreement-on-the-line (Baek et al. 2022,
    "Agreement-on-the-Line: Predicting the Performance of Neural Networks under Distribution
    Shift"). x: agreement of each model pair on the labelled source data, y: on the unlabelled
    target data (M pairs each, M >= 2)."""
    px, py = probit(x), probit(y)  # (M,), (M,)
    if px.size < 2 or px.size != py.size:
        raise ValueError(f"the agreement line needs at least 2 paired points, got {px.size} and {py.size}")
    design = np.stack([px, np.ones_like(px)], axis=1)  # (M, 2)
    (slope, intercept), *_ = np.linalg.lstsq(design, py, rcond=None)
    residual = py - design @ np.array([slope, intercept])
    total = float(((py - py.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return LineFit(float(slope), float(intercept), r2)


def aline_d(acc_source: Sequence[float], pairs: Sequence[tuple[int, int]], agr_source: Sequence[float],
            agr_target: Sequence[float], slope: float) -> np.ndarray:
    """ALine-D (Baek et al. 2022): every model's target accuracy from one least-squares solve.

    For each model pair (h, h′), with Φ⁻¹ written z:
        ½[z acc_t(h) + z acc_t(h′)] = z agr_t(h, h′) + slope · (½[z acc_s(h) + z acc_s(h′)] − z agr_s(h, h′))
    The unknowns are z acc_t of the K models; with at least K pairs touching every model the
    system is solved by least squares and Φ is applied back. Returns (K,) accuracies.
    """
    z_acc = probit(acc_source)  # (K,)
    z_src, z_tgt = probit(agr_source), probit(agr_target)  # (M,), (M,)
    K = z_acc.size
    design = np.zeros((len(pairs), K))  # (M, K)
    rhs = np.zeros(len(pairs))  # (M,)
    for m, (i, j) in enumerate(pairs):
        design[m, i] += 0.5
        design[m, j] += 0.5
        rhs[m] = z_tgt[m] + slope * (0.5 * (z_acc[i] + z_acc[j]) - z_src[m])
    solution, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    return normal_cdf(solution)
