"""Label-free accuracy estimates of evaluations, next to the labelled truth where it exists.

    estimates = label_free(result)                      # one model's EvalResult
    estimates["pass@1"].estimate, .truth, .abs_error
    line = agreement_on_the_line(source_results, target_results)   # >= 3 models
    report = label_free_report(["base", "step-50"], target_results)   # tables for the CLI

`label_free` reads only the extracted answers of each problem's samples (METHODS.md §8);
the checker's verdicts are used only to print the truth beside the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Optional, Sequence

import numpy as np
from rich.table import Table

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


@dataclass(frozen=True)
class LabelFreeReport:
    """Label-free estimates of one or more models on a task: per model, per model pair, and
    (with >= 3 models and a labelled source task) the agreement-on-the-line predictions."""

    models: list[str]
    estimates: list[dict[str, Compared]]
    """Per model: {"pass@1": …, "maj@n": …}."""
    pairs: dict[tuple[int, int], Estimate]
    """Cross-model agreement of every model pair on the target problems."""
    truth_pass1: list[Optional[float]]
    """Each model's labelled pass@1 on the target (None without labels)."""
    line: Optional[LineEstimates] = None

    def tables(self) -> list[Table]:
        """Rich tables: estimates next to truth, cross-model agreement, the line fit."""
        fmt = lambda v: "-" if v is None else f"{v:.3f}"
        out = []
        t = Table(title="label-free estimates (95% CI) next to the labelled truth")
        for col in ("model", "metric", "estimate", "95% CI", "truth", "|error|"):
            t.add_column(col, justify="right", overflow="fold")  # model paths wrap, not cut
        for model, est in zip(self.models, self.estimates):
            for name, c in est.items():
                t.add_row(model, name, f"{c.estimate.value:.3f}", f"[{c.estimate.ci[0]:.3f}, {c.estimate.ci[1]:.3f}]",
                          fmt(c.truth), fmt(c.abs_error))
        errors = [c.abs_error for est in self.estimates for c in est.values() if c.abs_error is not None]
        if errors:
            t.caption = f"mean absolute error {sum(errors) / len(errors):.3f} over {len(errors)} estimates"
        out.append(t)
        if self.pairs:
            t = Table(title="cross-model agreement (chance a sample of each gives the same answer)")
            for col in ("model A", "model B", "agreement", "95% CI"):
                t.add_column(col, justify="right", overflow="fold")  # model paths wrap, not cut
            for (i, j), e in self.pairs.items():
                t.add_row(self.models[i], self.models[j], f"{e.value:.3f}", f"[{e.ci[0]:.3f}, {e.ci[1]:.3f}]")
            out.append(t)
        if self.line is not None:
            ln = self.line
            t = Table(title="agreement on the line: predicted pass@1 (ALine-S, ALine-D)",
                      caption=f"Φ⁻¹ agr_target = {ln.slope:.3f} · Φ⁻¹ agr_source + {ln.intercept:.3f}, R² {ln.r2:.3f}")
            for col in ("model", "ALine-S", "ALine-D", "truth", "|error| S", "|error| D"):
                t.add_column(col, justify="right", overflow="fold")  # model paths wrap, not cut
            for k, model in enumerate(self.models):
                truth = self.truth_pass1[k]
                err = lambda p: None if truth is None else abs(p - truth)
                t.add_row(model, fmt(ln.aline_s[k]), fmt(ln.aline_d[k]), fmt(truth),
                          fmt(err(ln.aline_s[k])), fmt(err(ln.aline_d[k])))
            out.append(t)
        return out

    def to_json(self) -> dict:
        ci = lambda e: {"value": e.value, "ci": list(e.ci)}
        out = {
            "estimates": {m: {n: {**ci(c.estimate), "truth": c.truth, "abs_error": c.abs_error} for n, c in est.items()}
                          for m, est in zip(self.models, self.estimates)},
            "cross_agreement": [{"a": self.models[i], "b": self.models[j], **ci(e)} for (i, j), e in self.pairs.items()],
        }
        if self.line is not None:
            out["agreement_on_the_line"] = {"slope": self.line.slope, "intercept": self.line.intercept,
                                            "r2": self.line.r2, "aline_s": self.line.aline_s,
                                            "aline_d": self.line.aline_d, "truth_pass@1": self.truth_pass1}
        return out


def label_free_report(models: Sequence[str], target: Sequence[EvalResult],
                      source: Optional[Sequence[EvalResult]] = None, seed: int = 0) -> LabelFreeReport:
    """Estimates of every model on `target`; cross-model agreement with >= 2 models; the
    agreement-on-the-line fit when `source` (labelled, same model order) is given for >= 3."""
    line = agreement_on_the_line(source, target, seed) if source is not None else None
    truth = [r.metrics["pass@1"].value if has_labels(r) and "pass@1" in r.metrics else None for r in target]
    return LabelFreeReport(list(models), [label_free(r, seed) for r in target],
                           cross_agreements(target, seed) if len(target) > 1 else {}, truth, line)
