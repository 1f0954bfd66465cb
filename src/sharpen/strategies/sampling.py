"""Strategies that sample independently and pick: one sample, best-of-N, self-consistency.

    single            one sample, its answer
    best_of_n         N samples, the one a signal scores highest
    self_consistency  N samples, the majority answer ("Self-Consistency Improves Chain of
                      Thought Reasoning in Language Models"); with `window` = w, sample in
                      windows of w and stop as soon as one window is unanimous ("Escape
                      Sky-high Cost: Early-stopping Self-Consistency for Multi-step Reasoning")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sharpen.models.base import Completion, Policy, SamplingParams
from sharpen.signals.base import Signal
from sharpen.strategies.base import (
    Call,
    StrategyOptionError,
    StrategyResult,
    base_params,
    check_positive,
    generate_grouped,
    round_params,
    vote,
)
from sharpen.tasks.base import Problem, Task

ORACLE_SIGNALS = ("correctness",)
"""Signals that read the reference answer: picking with them is cheating unless asked for."""


@dataclass
class Single:
    """One sample per problem."""

    policy: Policy
    task: Task
    params: Optional[SamplingParams] = None
    """Sampling parameters; default: the task's budget and stop strings at temperature 1."""

    def __call__(self, problems: list[Problem]) -> list[StrategyResult]:
        params = round_params(base_params(self.task, self.params), n=1, round=0)
        groups = generate_grouped(self.policy, [[p.prompt] for p in problems], params)
        results = []
        for problem, (group,) in zip(problems, groups):
            text = group[0].text
            call = Call(round=0, prompts=[problem.prompt], completions=[group])
            results.append(StrategyResult(problem, text, self.task.extract(text), [call]))
        return results


@dataclass
class BestOfN:
    """N samples; the final answer is the completion the signal scores highest.

    Ties go to the earliest completion; completions scored None never win over a scored one
    (if none is scored, the first completion is kept).
    """

    policy: Policy
    task: Task
    signal: Signal
    """Any signal from sharpen.signals (e.g. build_signal("self_certainty", ...))."""
    n: int = 8
    """Samples per problem."""
    params: Optional[SamplingParams] = None
    allow_oracle: bool = False
    """Allow a signal that reads the reference answer (correctness): an upper bound, not a method."""

    def __post_init__(self) -> None:
        check_positive("best_of_n", n=self.n)
        refuse_oracle(getattr(self.signal, "name", ""), self.allow_oracle)

    def __call__(self, problems: list[Problem]) -> list[StrategyResult]:
        params = round_params(base_params(self.task, self.params), n=self.n, round=0)
        groups = [g for (g,) in generate_grouped(self.policy, [[p.prompt] for p in problems], params)]
        scores = self.signal(problems, groups)
        results = []
        for problem, group, row in zip(problems, groups, scores):
            best = pick_best(row)
            text = group[best].text
            call = Call(round=0, prompts=[problem.prompt], completions=[group], scores=[list(row)])
            results.append(StrategyResult(problem, text, self.task.extract(text), [call]))
        return results


def refuse_oracle(signal_name: str, allow_oracle: bool) -> None:
    """Raise a StrategyOptionError if `signal_name` reads references and the oracle is not allowed."""
    if signal_name in ORACLE_SIGNALS and not allow_oracle:
        raise StrategyOptionError(
            f"strategy 'best_of_n': signal {signal_name!r} reads the reference answers, so picking "
            "with it is an oracle (pass@N), not an inference-time method; pass allow_oracle=True "
            "if you mean to measure that upper bound."
        )


def pick_best(scores: list[Optional[float]]) -> int:
    """Index of the highest score; None never wins; ties go to the earliest; 0 if none scored."""
    best, best_score = 0, None
    for i, s in enumerate(scores):
        if s is not None and (best_score is None or s > best_score):
            best, best_score = i, s
    return best


@dataclass
class SelfConsistency:
    """N samples, majority vote over their answers (task.extract; unreadable answers do not vote).

    With `window` = w: sample w at a time; a problem stops as soon as one window's w answers
    are all readable and equal, or when N samples are drawn (the last window may be smaller).
    The vote is over everything sampled. Tokens count only what was sampled.
    """

    policy: Policy
    task: Task
    n: int = 8
    """Maximum samples per problem."""
    window: Optional[int] = None
    """Early-stopping window size w; None samples all N at once."""
    params: Optional[SamplingParams] = None

    def __post_init__(self) -> None:
        check_positive("self_consistency", n=self.n, window=self.window)

    def __call__(self, problems: list[Problem]) -> list[StrategyResult]:
        base = base_params(self.task, self.params)
        window = self.window or self.n
        sampled: list[list[Completion]] = [[] for _ in problems]
        traces: list[list[Call]] = [[] for _ in problems]
        active = list(range(len(problems)))
        round = 0
        while active:
            # every active problem has drawn the same number of samples so far
            size = min(window, self.n - len(sampled[active[0]]))
            params = round_params(base, n=size, round=round)
            groups = generate_grouped(self.policy, [[problems[i].prompt] for i in active], params)
            still = []
            for i, (group,) in zip(active, groups):
                sampled[i].extend(group)
                traces[i].append(Call(round=round, prompts=[problems[i].prompt], completions=[group]))
                if not unanimous([self.task.extract(c.text) for c in group]) and len(sampled[i]) < self.n:
                    still.append(i)
            active, round = still, round + 1
        results = []
        for problem, group, trace in zip(problems, sampled, traces):
            text, answer = vote(self.task, group)
            results.append(StrategyResult(problem, text, answer, trace))
        return results


def unanimous(answers: list[Optional[str]]) -> bool:
    """True if every answer was read and they are all the same."""
    return bool(answers) and answers[0] is not None and all(a == answers[0] for a in answers)
