"""Preference pairs built from one problem's group of completions (METHODS.md §3).

Three builders, one per source of preference:

| builder | preference from | paper |
|---|---|---|
| `correctness_pairs` | the task's checker (correct ≻ incorrect) | IRPO |
| `consistency_pairs` | the group's own votes, no labels (most-voted ≻ least-voted) | ScPO |
| `judge_pairs` | the model's own judge scores (best ≻ worst) | Self-Rewarding |

Every builder is deterministic: ties are broken by position in the group (the earlier
completion wins), so the same group always gives the same pairs. A builder returns an empty
list when the group holds no preference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from sharpen.models.base import Completion
from sharpen.signals.majority import majority_answer
from sharpen.tasks.base import Problem, Verdict


@dataclass(frozen=True, eq=False)
class PreferencePair:
    """One preference: for `problem`, `chosen` ≻ `rejected`, with a weight for the loss."""

    problem: Problem
    chosen: Completion
    """The preferred completion y_w."""
    rejected: Completion
    """The dispreferred completion y_l."""
    weight: float = 1.0
    """The pair's weight w_i in the loss's weighted mean (ScPO: the vote margin)."""


def _check_lengths(who: str, completions: Sequence[Completion], other: Sequence, what: str) -> None:
    if len(completions) != len(other):
        raise ValueError(
            f"{who}: got {len(completions)} completions but {len(other)} {what}; give one per completion."
        )


def _correct(verdict: Union[Verdict, Optional[bool]]) -> Optional[bool]:
    return verdict.correct if isinstance(verdict, Verdict) else verdict


def correctness_pairs(
    problem: Problem,
    completions: Sequence[Completion],
    verdicts: Sequence[Union[Verdict, Optional[bool]]],
) -> list[PreferencePair]:
    """(correct, incorrect) pairs, as in Iterative Reasoning Preference Optimization.

    Pang et al. (2024) "Iterative Reasoning Preference Optimization": winners are sampled
    completions whose answer is correct, losers ones whose answer is wrong. Here the i-th
    correct completion (in group order) is paired with the i-th incorrect one, so each
    completion appears in at most one pair and there are min(#correct, #incorrect) pairs.
    Unscorable completions (verdict None) take no side. Weight 1.

        verdicts [T, F, T, None, F, F] → pairs (0, 1), (2, 4)
    """
    _check_lengths("correctness_pairs", completions, verdicts, "verdicts")
    correct = [c for c, v in zip(completions, verdicts) if _correct(v) is True]
    wrong = [c for c, v in zip(completions, verdicts) if _correct(v) is False]
    return [PreferencePair(problem, w, l) for w, l in zip(correct, wrong)]


def consistency_pairs(
    problem: Problem,
    completions: Sequence[Completion],
    answers: Sequence[Optional[str]],
) -> list[PreferencePair]:
    """One label-free pair: most-voted answer ≻ least-voted answer, weighted by the vote margin.

    Prasad et al. (2024) "Self-Consistency Preference Optimization": with V(a) the number of
    completions in the group whose extracted answer is a, and n the group size,

        chosen   = a completion with argmax_a V(a)
        rejected = a completion with argmin_a V(a)
        weight   = (V(chosen) − V(rejected)) / n

    `answers` are the task's label-free extractions (`Task.extract`), one per completion;
    None answers do not vote and are never chosen nor rejected (but count in n). No pair when
    fewer than two distinct answers were read (all agree: no preference). `problem` is only
    carried into the pair: its reference answer is never read.

    Ties: the most-voted answer is `majority_answer`'s (the earliest seen among the tied);
    the least-voted is the earliest seen among those with the fewest votes; each side's
    completion is the first one in the group that carries its answer.
    """
    _check_lengths("consistency_pairs", completions, answers, "answers")
    votes: dict[str, int] = {}
    for a in answers:
        if a is not None:
            votes[a] = votes.get(a, 0) + 1
    if len(votes) < 2:
        return []
    top = majority_answer(answers)
    bottom = min(votes, key=votes.__getitem__)  # dict order + min: the earliest fewest-voted
    chosen = completions[list(answers).index(top)]
    rejected = completions[list(answers).index(bottom)]
    weight = (votes[top] - votes[bottom]) / len(completions)
    return [PreferencePair(problem, chosen, rejected, weight)]


def judge_pairs(
    problem: Problem,
    completions: Sequence[Completion],
    scores: Sequence[Optional[float]],
) -> list[PreferencePair]:
    """One pair: the completion the model's own judge scored highest ≻ the one scored lowest.

    Yuan et al. (2024) "Self-Rewarding Language Models" (and "Meta-Rewarding Language Models"):
    the model scores its own N completions as a judge; the highest- and lowest-scoring form a
    pair, and a group whose scores are all equal gives none. None scores (the judge gave no
    score) take no side. Ties: the earliest completion with the highest score and the earliest
    with the lowest. Weight 1.
    """
    _check_lengths("judge_pairs", completions, scores, "scores")
    scored = [(i, s) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return []
    best = max(scored, key=lambda x: x[1])  # max/min return the first extreme: earliest wins
    worst = min(scored, key=lambda x: x[1])
    if best[1] == worst[1]:
        return []
    return [PreferencePair(problem, completions[best[0]], completions[worst[0]])]


PAIR_BUILDERS = {
    "correctness": correctness_pairs,
    "consistency": consistency_pairs,
    "judge": judge_pairs,
}
"""name → builder(problem, completions, per-completion values) -> list[PreferencePair]; the
values are verdicts, extracted answers or judge scores respectively."""
