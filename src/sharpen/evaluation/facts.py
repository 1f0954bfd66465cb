"""Fact precision of judged statements (FActScore), as pure functions.

For one response with statements S (`sharpen.tasks.statements.FactCheck`):

    precision(S)    = |{s ∈ S : s is correct}| / |S|                        (undefined when S = ∅)
    penalty(|S|)    = exp(1 − γ/|S|) if |S| < γ else 1,   γ = 10
    penalised(S)    = precision(S) · penalty(|S|)

Min et al. (2023) "FActScore: Fine-grained Atomic Evaluation of Factual Precision in Long
Form Text Generation": the score is averaged over the responses that did not abstain (made
at least one statement); the length penalty keeps a model from scoring high with one safe
statement. A problem's values are means over its sampled responses (`fact_problem_metrics`),
and `sharpen.evaluation.evaluate` averages them over problems with bootstrap intervals.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from sharpen.tasks.statements import FactCheck

LENGTH_PENALTY_GAMMA = 10
"""FActScore's γ: responses with fewer statements are penalised."""
FACT_METRICS = ("fact_precision", "fact_precision_penalized", "statements_per_response", "abstention_rate")
"""The held-out metrics of a fact task (`fact_problem_metrics`)."""


def fact_precision(check: FactCheck) -> Optional[float]:
    """Correct statements / all statements; None when the response abstained (no statement)."""
    if check.abstained:
        return None
    return check.count("correct") / len(check.statements)


def length_penalty(n_statements: int, gamma: int = LENGTH_PENALTY_GAMMA) -> float:
    """FActScore's length penalty exp(1 − γ/n) for n < γ statements, else 1 (n ≥ 1)."""
    if n_statements < 1:
        raise ValueError(f"the length penalty needs at least one statement, got {n_statements}")
    return math.exp(1.0 - gamma / n_statements) if n_statements < gamma else 1.0


def fact_problem_metrics(checks: Sequence[FactCheck], gamma: int = LENGTH_PENALTY_GAMMA) -> dict[str, Optional[float]]:
    """One problem's fact metrics over its responses:

        fact_precision             mean precision of the responses that did not abstain
        fact_precision_penalized   the same with the length penalty
        statements_per_response    mean number of statements (abstentions count 0)
        abstention_rate            fraction of responses with no statement

    The two precisions are None when every response abstained (left out of the mean over problems).
    """
    if not checks:
        raise ValueError("fact metrics need at least one response")
    answered = [c for c in checks if not c.abstained]
    precisions = [fact_precision(c) for c in answered]
    penalised = [p * length_penalty(len(c.statements), gamma) for p, c in zip(precisions, answered)]
    return {
        "fact_precision": sum(precisions) / len(answered) if answered else None,
        "fact_precision_penalized": sum(penalised) / len(answered) if answered else None,
        "statements_per_response": sum(len(c.statements) for c in checks) / len(checks),
        "abstention_rate": 1.0 - len(answered) / len(checks),
    }
