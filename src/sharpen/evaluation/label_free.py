"""Label-free accuracy estimates of evaluations, next to the labelled truth where it exists.

    estimates = label_free(result)                      # one model's EvalResult
    estimates["pass@1"].estimate, .truth, .abs_error
    line = agreement_on_the_line(source_results, target_results)   # >= 3 models

`label_free` reads only the extracted answers of each problem's samples (METHODS.md §8);
the checker's verdicts are used only to print the truth beside the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Optional, Sequence

import numpy as np

from sharpen.evaluation.agreement import (
    Estimate, aline_d, estimate_from_groups, fit_agreement_line, mean_cross_agreement,
)
from sharpen.evaluation.evaluate import EvalResult


@dataclass(frozen=True)
class Compared:
    """A label-free estimate and, where labels exist, the labelled value it estimates."""

    estimate: Estimate
    truth: Optional[float]

    @property
    def abs_error(self) -> Optional[float]:
        return None if self.truth is None else abs(self.estimate.value - self.truth)


def has_labels(result: EvalResult) -> bool:
    """True when the checker scored at least one completion (a task with references)."""
    return result.unscorable < result.n_problems * result.samples


def label_free(result: EvalResult, seed: int = 0) -> dict[str, Compared]:
    """{"pass@1": …, "maj@n": …}: mean pairwise agreement and mean top vote share over the
    problems, each with the evaluation's own pass@1 / maj@n as truth when labels exist."""
    groups = [r.answers for r in result.problems]
    labelled = has_labels(result)
    out = {}
    for name, est in estimate_from_groups(groups, seed).items():
        truth = result.metrics.get(name)
        out[name] = Compared(est, truth.value if labelled and truth is not None else None)
    return out


def label_free_metrics(result: EvalResult, seed: int = 0) -> dict[str, float]:
    """`label_free` as flat run-store metrics: eval/label_free/<name> with /lo and /hi, and
    eval/label_free/<name>/abs_error where labels exist."""
    out = {}
    for name, c in label_free(result, seed).items():
        key = f"eval/label_free/{name}"
        out[key], out[f"{key}/lo"], out[f"{key}/hi"] = c.estimate.value, *c.estimate.ci
        if c.abs_error is not None:
            out[f"{key}/abs_error"] = c.abs_error
    return out


def cross_agreements(results: Sequence[EvalResult], seed: int = 0) -> dict[tuple[int, int], Estimate]:
    """Mean cross-model agreement of every pair (i < j) of evaluations on the same problems."""
    for r in results[1:]:
        if [p.problem_id for p in r.problems] != [p.problem_id for p in results[0].problems]:
            raise ValueError("cross-model agreement needs every model evaluated on the same problems")
    groups = [[p.answers for p in r.problems] for r in results]
    return {(i, j): mean_cross_agreement(groups[i], groups[j], seed)
            for i, j in combinations(range(len(results)), 2)}


@dataclass(frozen=True)
class LineEstimates:
    """The agreement-on-the-line fit and each model's predicted target pass@1."""

    slope: float
    intercept: float
    r2: float
    aline_s: list[float]
    aline_d: list[float]


def agreement_on_the_line(source: Sequence[EvalResult], target: Sequence[EvalResult],
                          seed: int = 0) -> LineEstimates:
    """Fit Φ⁻¹ agr_target = a · Φ⁻¹ agr_source + b over model pairs and predict every model's
    target pass@1 with ALine-S and ALine-D (Baek et al. 2022). `source` holds the K >= 3
    models' evaluations on labelled in-distribution problems, `target` on the problems to
    estimate, in the same model order."""
    if len(source) != len(target) or len(source) < 3:
        raise ValueError(f"agreement on the line needs the same K >= 3 models on source and target, "
                         f"got {len(source)} and {len(target)}")
    if not all(has_labels(r) for r in source):
        raise ValueError("agreement on the line needs labels on the source task")
    agr_s, agr_t = cross_agreements(source, seed), cross_agreements(target, seed)
    pairs = list(agr_s)
    xs = np.array([agr_s[p].value for p in pairs])  # (M,)
    ys = np.array([agr_t[p].value for p in pairs])  # (M,)
    fit = fit_agreement_line(xs, ys)
    acc_s = np.array([r.metrics["pass@1"].value for r in source])  # (K,)
    return LineEstimates(
        fit.slope, fit.intercept, fit.r2,
        [float(v) for v in fit.predict(acc_s)],
        [float(v) for v in aline_d(acc_s, pairs, xs, ys, fit.slope)],
    )
