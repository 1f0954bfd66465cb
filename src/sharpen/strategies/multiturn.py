"""Multi-turn strategies: try again after an attempt, in sharpen's retry format.

    retry        T turns of `episodes.run_episodes`; after each attempt the model is told
                 its templates' retry_feedback (binary feedback: the task's checker is the
                 oracle that says an answer is wrong, RISE's evaluation setting) or their
                 neutral re-ask (no signal of correctness), and answers again with the whole
                 history in its prompt (`formats.retry_messages`).
    self_refine  the model judges its own answer (its templates' judge prompt, read from its
                 yes/no probabilities); it stops when it says yes, else it is told the
                 templates' refine_feedback and tries again, up to T attempts ("Self-Refine",
                 Madaan et al. 2023).

The templates are the policy's (`formats.template_set_for`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

from sharpen.episodes import Episode, next_prompt, run_episodes
from sharpen.models.base import Policy, SamplingParams
from sharpen.models.formats import TemplateSet, retry_messages, template_set_for
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


@dataclass(frozen=True)
class RetryFeedback:
    """How one of retry's feedback settings runs its episodes."""

    mode: str
    """The episodes' feedback mode (`sharpen.episodes.FEEDBACK_MODES`)."""
    oracle: bool
    """The checker decides: a problem stops at its first attempt not called wrong (right, or
    unscorable), and the trace carries the checker's 1/0/None."""


FEEDBACKS: dict[str, RetryFeedback] = {
    "binary": RetryFeedback("binary", oracle=True),
    "none": RetryFeedback("none", oracle=False),
}
"""retry's `feedback` option → how its episodes run."""


def final_last(task: Task, episode: Episode) -> tuple[str, Optional[str]]:
    """The last attempt and its extracted answer."""
    text = episode.turns[-1].completion.text
    return text, task.extract(text)


def final_majority(task: Task, episode: Episode) -> tuple[str, Optional[str]]:
    """A majority vote over the attempts' answers (`strategies.base.vote`)."""
    return vote(task, [t.completion for t in episode.turns])


FINALS = {"last": final_last, "majority": final_majority}
"""retry's `final` option → (task, episode) -> (final text, final answer)."""


@dataclass
class Retry:
    """Up to `turns` attempts per problem, each seeing the previous attempts and feedback: the
    episodes of `sharpen.episodes.run_episodes`.

    feedback="binary": after a wrong attempt (task.check says False) the model is told its
    templates' retry_feedback; a problem stops at its first correct attempt, and also when the
    checker cannot score an attempt (correct=None: the oracle has nothing to say). feedback="none":
    every problem runs all turns, told the neutral re-ask after each; no verdict reaches the
    model or the trace. final="last" answers with the last attempt; "majority" votes over the
    attempts' answers.
    """

    policy: Policy
    task: Task
    turns: int = 3
    """Maximum attempts per problem (T)."""
    feedback: str = "binary"
    """"binary" (oracle says wrong) or "none" (the neutral re-ask)."""
    final: str = "last"
    """"last" or "majority" over turns."""
    params: Optional[SamplingParams] = None

    def __post_init__(self) -> None:
        check_positive("retry", turns=self.turns)
        if self.feedback not in FEEDBACKS:
            raise StrategyOptionError(
                f"strategy 'retry': feedback must be one of {tuple(FEEDBACKS)}, got {self.feedback!r}")
        if self.final not in FINALS:
            raise StrategyOptionError(f"strategy 'retry': final must be one of {tuple(FINALS)}, got {self.final!r}")

    def __call__(self, problems: list[Problem]) -> list[StrategyResult]:
        params = replace(base_params(self.task, self.params), n=1)
        how = FEEDBACKS[self.feedback]
        episodes = run_episodes(
            self.policy, self.task, problems, turns=self.turns, feedback=how.mode, params=params,
            stop_when_correct=how.oracle, stop_when_unscorable=how.oracle, seed=params.seed,
        )
        return [self._result(e, how.oracle) for e in episodes]

    def _result(self, episode: Episode, scored: bool) -> StrategyResult:
        trace = [
            Call(t, [next_prompt(episode.problem, episode.turns[:t])], [[turn.completion]],
                 scores=[[None if turn.correct is None else float(turn.correct)]] if scored else None)
            for t, turn in enumerate(episode.turns)
        ]
        text, answer = FINALS[self.final](self.task, episode)
        return StrategyResult(episode.problem, text, answer, trace)


@dataclass
class SelfRefine:
    """Answer, judge yourself, and try again while you say no, up to `rounds` attempts.

    After each attempt but the last, the policy reads its answer back in its templates' judge
    format; P(yes) = softmax(log p(judge_yes), log p(judge_no))_0 from `policy.choice_logprobs`.
    P(yes) >= `threshold` stops the problem; otherwise the model is told the templates'
    refine_feedback and answers again with the history (retry format). The final answer is
    the last attempt.
    Judge calls generate no tokens (one forward pass each); they are in the trace as kind="judge".
    """

    policy: Policy
    task: Task
    rounds: int = 3
    """Maximum attempts per problem (T)."""
    threshold: float = 0.5
    """P(yes) at or above which the model's own judgement stops refinement."""
    params: Optional[SamplingParams] = None
    templates: TemplateSet = field(init=False)
    """The judge prompt and feedback: the policy's (`template_set_for`)."""

    def __post_init__(self) -> None:
        check_positive("self_refine", rounds=self.rounds)
        self.templates = template_set_for(self.policy)
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
                i: retry_messages(problems[i].prompt, attempts[i], [self.templates.refine_feedback] * len(attempts[i]))
                for i in active
            }
            groups = generate_grouped(self.policy, [[prompts[i]] for i in active], round_params(base, 1, round))
            for i, (group,) in zip(active, groups):
                attempts[i].append(group[0].text)
                traces[i].append(Call(round, [prompts[i]], [group]))
            if round == self.rounds - 1:
                break  # judging the last attempt could change nothing
            judged = {i: self.templates.judge_messages(problems[i].prompt, attempts[i][-1]) for i in active}
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
        replies = (self.templates.judge_yes, self.templates.judge_no)
        logp = self.policy.choice_logprobs(prompts, replies)  # (N, 2)
        rows = logp.tolist() if hasattr(logp, "tolist") else logp
        return [1.0 / (1.0 + math.exp(no - yes)) for yes, no in rows]
