"""Measuring self-improvement: metrics as pure functions and `evaluate(policy, task)`."""

from sharpen.evaluation.evaluate import EvalResult, Metric, ProblemRecord, evaluate, score_group
from sharpen.evaluation.metrics import bootstrap_ci, maj_at_k, majority_index, mean, pass_at_k
from sharpen.evaluation.turns import TurnEvalResult, evaluate_turns, turn_metrics

__all__ = [
    "EvalResult",
    "Metric",
    "ProblemRecord",
    "TurnEvalResult",
    "bootstrap_ci",
    "evaluate",
    "evaluate_turns",
    "maj_at_k",
    "majority_index",
    "mean",
    "pass_at_k",
    "score_group",
    "turn_metrics",
]
