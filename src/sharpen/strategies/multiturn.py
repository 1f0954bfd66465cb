"""Multi-turn strategies: try again after an attempt, in sharpen's retry format.

    retry        T turns; after each attempt the model is told WRONG_FEEDBACK (binary feedback:
                 the task's checker is the oracle that says an answer is wrong, RISE's
                 evaluation setting) or a neutral "try again" (no signal of correctness), and
                 answers again with the whole history in its prompt (`formats.retry_messages`).
    self_refine  the model judges its own answer ("<question><answer> right?", read from its
                 yes/no probabilities); it stops when it says yes, else it is told
                 WRONG_FEEDBACK and tries again, up to T attempts ("Self-Refine").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from sharpen.models.base import Completion, Policy, SamplingParams
from sharpen.models.formats import JUDGE_NO, JUDGE_YES, WRONG_FEEDBACK, judge_messages, retry_messages
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

NEUTRAL_FEEDBACK = "try again"
"""The feedback of retry with feedback="none": asks for another attempt and says nothing about
whether the last one was right. The embedded default model was trained only on WRONG_FEEDBACK,
so to it this string is unfamiliar; the point of the setting is that no correctness leaks in."""

FEEDBACKS = ("binary", "none")
FINALS = ("last", "majority")


@dataclass
class Retry:
    """Up to `turns` attempts per problem, each seeing the previous attempts and feedback.

    feedback="binary": after a wrong attempt (task.check says False) the model is told
    WRONG_FEEDBACK; a problem stops at its first correct attempt, and also when the checker
    cannot score an attempt (correct=None: the oracle has nothing to say). feedback="none":
    every problem runs all turns, told NEUTRAL_FEEDBACK after each; the checker is not read.
    final="last" answers with the last attempt; "majority" votes over the attempts' answers.
    """

    policy: Policy
    task: Task
    turns: int = 3
    """Maximum attempts per problem (T)."""
    feedback: str = "binary"
    """"binary" (oracle says wrong) or "none" (neutral "try again")."""
    final: str = "last"
    """"last" or "majority" over turns."""
    params: Optional[SamplingParams] = None

    def __post_init__(self) -> None:
        check_positive("retry", turns=self.turns)
        if self.feedback not in FEEDBACKS:
            raise StrategyOptionError(f"strategy 'retry': feedback must be one of {FEEDBACKS}, got {self.feedback!r}")
        if self.final not in FINALS:
            raise StrategyOptionError(f"strategy 'retry': final must be one of {FINALS}, got {self.final!r}")

    def __call__(self, problems: list[Problem]) -> list[StrategyResult]:
        base = base_params(self.task, self.params)
        attempts: list[list[Completion]] = [[] for _ in problems]
        said: list[list[str]] = [[] for _ in problems]
        traces: list[list[Call]] = [[] for _ in problems]
        active = list(range(len(problems)))
        for turn in range(self.turns):
            prompts = {i: retry_messages(problems[i].prompt, [c.text for c in attempts[i]], said[i]) for i in active}
            groups = generate_grouped(self.policy, [[prompts[i]] for i in active], round_params(base, 1, turn))
            still = []
            for i, ((group,)) in zip(active, groups):
                attempt = group[0]
                attempts[i].append(attempt)
                if self.feedback == "binary":
                    verdict = self.task.check(problems[i], attempt.text)
                    traces[i].append(Call(turn, [prompts[i]], [group], scores=[[verdict.reward]]))
                    if verdict.correct is False:
                        said[i].append(WRONG_FEEDBACK)
                        still.append(i)
                else:
                    traces[i].append(Call(turn, [prompts[i]], [group]))
                    said[i].append(NEUTRAL_FEEDBACK)
                    still.append(i)
            active = still
        return [self._result(p, a, t) for p, a, t in zip(problems, attempts, traces)]

    def _result(self, problem: Problem, attempts: list[Completion], trace: list[Call]) -> StrategyResult:
        if self.final == "majority":
            text, answer = vote(self.task, attempts)
        else:
            text = attempts[-1].text
            answer = self.task.extract(text)
        return StrategyResult(problem, text, answer, trace)


@dataclass
class SelfRefine:
    """Answer, judge yourself, and try again while you say no, up to `rounds` attempts.

    After each attempt but the last, the policy reads its answer back in the judge format;
    P(yes) = softmax(log p(JUDGE_YES), log p(JUDGE_NO))_0 from `policy.choice_logprobs`.
    P(yes) >= `threshold` stops the problem; otherwise the model is told WRONG_FEEDBACK and
    answers again with the history (retry format). The final answer is the last attempt.
    Judge calls generate no tokens (one forward pass each); they are in the trace as kind="judge".
    """

    policy: Policy
    task: Task
    rounds: int = 3
    """Maximum attempts per problem (T)."""
    threshold: float = 0.5
    """P(yes) at or above which the model's own judgement stops refinement."""
    params: Optional[SamplingParams] = None

    def __post_init__(self) -> None:
        check_positive("self_refine", rounds=self.rounds)
        if not 0.0 <= self.threshold <= 1.0:
            raise StrategyOptionError(f"strategy 'self_refine': threshold must be in [0, 1], got {self.threshold!r}")
        if not callable(getattr(self.policy, "choice_logprobs", None)):
            raise StrategyOptionError(
                f"strategy 'self_refine' reads the policy's yes/no probabilities, but "
                f"{type(self.policy).__name__} has no choice_logprobs(prompts, choices); use an HFPolicy."
            )

    def __call__(self, problems: list[Problem]) -> list[StrategyResult]:
        base = base_params(self.task, self.params)
        attempts: list[list[str]] = [[] for _ in problems]
        traces: list[list[Call]] = [[] for _ in problems]
        active = list(range(len(problems)))
        for round in range(self.rounds):
            prompts = {
                i: retry_messages(problems[i].prompt, attempts[i], [WRONG_FEEDBACK] * len(attempts[i])) for i in active
            }
            groups = generate_grouped(self.policy, [[prompts[i]] for i in active], round_params(base, 1, round))
            for i, (group,) in zip(active, groups):
                attempts[i].append(group[0].text)
                traces[i].append(Call(round, [prompts[i]], [group]))
            if round == self.rounds - 1:
                break  # judging the last attempt could change nothing
            judged = {i: judge_messages(problems[i].prompt, attempts[i][-1]) for i in active}
            p_yes = self.judge([judged[i] for i in active])
            still = []
            for i, p in zip(active, p_yes):
                traces[i].append(Call(round, [judged[i]], [[]], scores=[[p]], kind="judge"))
                if p < self.threshold:
                    still.append(i)
            active = still
            if not active:
                break
        return [
            StrategyResult(problem, texts[-1], self.task.extract(texts[-1]), trace)
            for problem, texts, trace in zip(problems, attempts, traces)
        ]

    def judge(self, prompts: list) -> list[float]:
        """P(yes) for each judge prompt, normalised over the two replies."""
        logp = self.policy.choice_logprobs(prompts, (JUDGE_YES, JUDGE_NO))  # (N, 2)
        rows = logp.tolist() if hasattr(logp, "tolist") else logp
        return [1.0 / (1.0 + math.exp(no - yes)) for yes, no in rows]
