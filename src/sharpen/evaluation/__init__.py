"""Measuring self-improvement: metrics as pure functions and `evaluate(policy, task)`."""

from sharpen.evaluation.evaluate import EvalResult, Metric, ProblemRecord, evaluate, score_group
from sharpen.evaluation.metrics import bootstrap_ci, maj_at_k, majority_index, mean, pass_at_k
from sharpen.evaluation.turns import turn_metrics

__all__ = [
    "EvalResult",
    "Metric",
    "ProblemRecord",
    "bootstrap_ci",
    "evaluate",
    "maj_at_k",
    "majority_index",
    "mean",
    "pass_at_k",
    "score_group",
    "turn_metrics",
]
