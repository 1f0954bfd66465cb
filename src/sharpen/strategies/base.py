"""What a strategy is, the records it returns, and the helpers strategies share.

A *strategy* turns problems into final answers at inference time, spending extra samples
(and sometimes the model's own judgement) to answer better than one sample would:

    strategy(problems) -> results          # results[i] answers problems[i]

Strategies are batched over problems: each round makes one `policy.generate` call for every
problem still running. Every result carries its full trace (each call's prompts, completions
and scores) and the tokens it generated, so strategies can be compared at equal compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Protocol, Sequence

from sharpen.models.base import Completion, Policy, SamplingParams
from sharpen.signals.majority import majority_answer
from sharpen.tasks.base import Problem, Prompt, Task

Score = Optional[float]


# ---- records --------------------------------------------------------------------------------


@dataclass
class Call:
    """One call a strategy made for one problem: what it sent and what came back."""

    round: int
    """The round (turn, window, debate round) of the strategy, from 0."""
    prompts: list[Prompt]
    """The prompts sent for this problem (several for debate: one per agent)."""
    completions: list[list[Completion]]
    """completions[i] is the group sampled for prompts[i]; empty lists for a judge call."""
    scores: Optional[list[list[Score]]] = None
    """scores[i][j] scores completions[i][j] (a signal, or the checker's 1/0/None under binary
    feedback); for a judge call scores[i] = [P(yes)] for prompts[i]. None when nothing scored."""
    kind: str = "sample"
    """"sample" (policy.generate) or "judge" (policy.choice_logprobs, which generates nothing)."""

    @property
    def tokens(self) -> int:
        """Generated tokens in this call (a judge call generates none)."""
        return sum(c.n_tokens for group in self.completions for c in group)


@dataclass
class StrategyResult:
    """A strategy's final answer to one problem, with everything it did to get there."""

    problem: Problem
    text: str
    """The final completion text."""
    answer: Optional[str]
    """task.extract(text) for single-answer strategies; the voted answer for majority votes."""
    trace: list[Call] = field(default_factory=list)
    """Every call made for this problem, in order."""

    @property
    def tokens(self) -> int:
        """Total generated tokens, summed over every call of the trace."""
        return sum(call.tokens for call in self.trace)


class Strategy(Protocol):
    """Anything that answers a batch of problems."""

    def __call__(self, problems: list[Problem]) -> list[StrategyResult]:
        ...


# ---- errors ---------------------------------------------------------------------------------


class UnknownStrategyError(KeyError):
    """No strategy is registered under a name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class StrategyOptionError(ValueError):
    """A strategy was given an option it does not have or a value it cannot use."""


class StrategySpecError(ValueError):
    """A strategy spec string ("self_consistency-8") does not follow the grammar."""


# ---- helpers --------------------------------------------------------------------------------


def base_params(task: Task, params: Optional[SamplingParams]) -> SamplingParams:
    """The sampling parameters a strategy starts from: the caller's, or the task's budget
    and stop strings at temperature 1."""
    if params is not None:
        return params
    return SamplingParams(max_new_tokens=task.max_new_tokens, stop=task.stop)


def round_params(params: SamplingParams, n: int, round: int) -> SamplingParams:
    """`params` with n completions per prompt; a fixed seed moves on with the round, so
    rounds do not repeat each other's samples."""
    seed = None if params.seed is None else params.seed + round
    return replace(params, n=n, seed=seed)


def generate_grouped(
    policy: Policy, prompts: Sequence[Sequence[Prompt]], params: SamplingParams
) -> list[list[list[Completion]]]:
    """One `policy.generate` call for the prompts of many problems.

    prompts[i] are problem i's prompts; returns out[i][k] = the group for prompts[i][k].
    """
    flat = [p for group in prompts for p in group]
    if not flat:
        return [[] for _ in prompts]
    groups = policy.generate(flat, params)
    if len(groups) != len(flat) or any(len(g) != params.n for g in groups):
        raise RuntimeError(
            f"policy {type(policy).__name__}.generate returned {len(groups)} groups of sizes "
            f"{sorted({len(g) for g in groups})} for {len(flat)} prompts with n={params.n}; "
            "a policy must return one group of n completions per prompt."
        )
    out, start = [], 0
    for group in prompts:
        out.append(list(groups[start : start + len(group)]))
        start += len(group)
    return out


def vote(task: Task, completions: Sequence[Completion]) -> tuple[str, Optional[str]]:
    """Majority vote over completions: (the first completion text carrying the majority
    answer, that answer). With no readable answer: (the first text, None)."""
    answers = [task.extract(c.text) for c in completions]
    winner = majority_answer(answers)
    if winner is None:
        return (completions[0].text if completions else ""), None
    return completions[answers.index(winner)].text, winner


def check_positive(who: str, **values: Optional[int]) -> None:
    """Raise a StrategyOptionError unless every given value is an int >= 1."""
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StrategyOptionError(f"strategy {who!r}: option {name!r} must be an integer >= 1, got {value!r}")
