"""Multi-turn episodes: a model answers, is told something, and tries again, up to T turns.

An episode is what RISE ("Recursive Introspection: Teaching Language Model Agents How to
Self-Improve") and SCoRe ("Training Language Models to Self-Correct via Reinforcement
Learning") roll out and measure: turn 1 asks the problem; after each attempt a feedback
message is appended and the model answers again, seeing the whole history in the retry
format of `models.formats.retry_messages`:

    user "37+58="  → assistant "96"  → user "wrong"  → assistant "95"

The words are the policy's template set's (`formats.template_set_for`): the embedded model
is told "wrong", a chat model "Your answer is incorrect. Please try again.". What the model
is told after an attempt depends on the feedback mode:

- "none":     always the neutral re-ask (`TemplateSet.neutral_feedback`, unless `neutral`
              is given), which says nothing about correctness (intrinsic self-correction;
              SCoRe's setting).
- "binary":   `TemplateSet.retry_feedback` after a wrong attempt (RISE's oracle "your answer
              is incorrect"). After a right attempt the episode ends if `stop_when_correct`,
              otherwise the model is told the neutral re-ask (so "right" is never leaked
              as a word, and a right answer can still be changed: Δc→i stays measurable).
- "verifier": after a wrong attempt, the checker's `Verdict.note` (e.g. "no answer found"),
              or the retry feedback when the note is empty; after a right attempt as "binary".

An unscorable attempt (`Verdict.correct is None`) is never called wrong: it gets the
neutral re-ask in every mode and never ends an episode early.

The last attempt of an episode (turn T, or the right attempt that ended it early) has no
feedback (`Turn.feedback is None`): nothing is said after it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

from sharpen.models.base import Completion, Policy, SamplingParams, with_prompt_seeds
from sharpen.models.formats import retry_messages, template_set_for
from sharpen.tasks.base import Message, Problem, Prompt, Task, Verdict

FEEDBACK_MODES = ("none", "binary", "verifier")


@dataclass(frozen=True)
class Turn:
    """One attempt in an episode, with what the model was told after it."""

    completion: Completion
    answer: Optional[str]
    """The label-free answer read by `task.extract` (None: nothing readable)."""
    correct: Optional[bool]
    """The checker's verdict; None means unscorable."""
    feedback: Optional[str]
    """What the model was told after this attempt; None if nothing (the episode's last turn)."""

    @property
    def tokens(self) -> int:
        """Tokens generated in this turn."""
        return self.completion.n_tokens


@dataclass(frozen=True)
class Episode:
    """A problem and the model's successive attempts at it (1 ≤ len(turns) ≤ T)."""

    problem: Problem
    turns: tuple[Turn, ...]

    @property
    def tokens(self) -> int:
        """Tokens generated over all turns (prompts and feedback are not counted)."""
        return sum(t.tokens for t in self.turns)

    @property
    def correct(self) -> tuple[Optional[bool], ...]:
        """The verdict of each turn."""
        return tuple(t.correct for t in self.turns)

    @property
    def answers(self) -> tuple[Optional[str], ...]:
        """The extracted answer of each turn."""
        return tuple(t.answer for t in self.turns)

    def prompt(self) -> Prompt:
        """What the model is asked for its next attempt: the problem's own prompt before the
        first turn, then the history in the retry format. Needs every turn to carry feedback."""
        return next_prompt(self.problem, self.turns)

    def messages(self) -> list[Message]:
        """The whole conversation in the retry format: the problem, then each attempt as an
        assistant message followed by its feedback as a user message (if any)."""
        fed = [t for t in self.turns if t.feedback is not None]
        messages = retry_messages(
            self.problem.prompt, [t.completion.text for t in fed], [t.feedback or "" for t in fed]
        )
        if self.turns and self.turns[-1].feedback is None:
            messages.append({"role": "assistant", "content": self.turns[-1].completion.text})
        return messages


def next_prompt(problem: Problem, turns: Sequence[Turn]) -> Prompt:
    """The prompt of the next attempt: `problem.prompt` unchanged for turn 1 (so turn 1 is
    exactly single-turn evaluation), else `retry_messages(prompt, attempts, feedback)`."""
    if not turns:
        return problem.prompt
    if any(t.feedback is None for t in turns):
        raise ValueError(f"episode of {problem.id!r} has a turn without feedback; it cannot continue")
    return retry_messages(problem.prompt, [t.completion.text for t in turns], [t.feedback or "" for t in turns])


def feedback_text(mode: str, verdict: Verdict, *, wrong: str, neutral: str) -> str:
    """What the model is told after an attempt with this verdict (rules in the module doc):
    `wrong` after a wrong attempt, `neutral` after any other."""
    if mode not in FEEDBACK_MODES:
        raise ValueError(f"unknown feedback mode {mode!r}; use one of {', '.join(FEEDBACK_MODES)}")
    if mode == "none" or verdict.correct is not False:
        return neutral
    if mode == "verifier":
        return verdict.note or wrong
    return wrong


def run_episodes(
    policy: Policy,
    task: Task,
    problems: Sequence[Problem],
    *,
    turns: int = 2,
    feedback: str = "binary",
    params: Optional[SamplingParams] = None,
    stop_when_correct: bool = False,
    seed: Optional[int] = 0,
    neutral: Optional[str] = None,
    stop_when_unscorable: bool = False,
) -> list[Episode]:
    """Roll out one episode of up to `turns` attempts per problem, in problem order.

    Batched by turn: turn t makes one `policy.generate` call with the prompts of every
    episode still live (not yet at `turns` attempts, not ended by `stop_when_correct`).
    `params` defaults to one sample with the task's `max_new_tokens` and stop strings; its
    `n` must be 1 (an episode is one path). Turn t (0-based) samples with seed `seed + t`
    (`seed=None` keeps `params.seed`), each live episode from its own seed within it
    (`with_prompt_seeds`).

    With `stop_when_correct`, an episode ends after its first right attempt (in any
    feedback mode: the checker is an oracle stopping rule). With `stop_when_unscorable`, an
    episode also ends at an attempt the checker cannot score (the oracle has nothing to say;
    the retry strategy's rule). Such episodes are shorter than `turns`; `evaluation.turns`
    carries their last answer forward.

    The feedback words are the policy's template set's (`formats.template_set_for`);
    `neutral` replaces its neutral re-ask.
    """
    if turns < 1:
        raise ValueError(f"run_episodes needs turns >= 1, got {turns}")
    if feedback not in FEEDBACK_MODES:
        raise ValueError(f"unknown feedback mode {feedback!r}; use one of {', '.join(FEEDBACK_MODES)}")
    if params is None:
        params = SamplingParams(n=1, max_new_tokens=task.max_new_tokens, stop=task.stop)
    if params.n != 1:
        raise ValueError(f"run_episodes samples one completion per turn; got SamplingParams.n={params.n}")
    templates = template_set_for(policy)
    said_to = {"wrong": templates.retry_feedback,
               "neutral": templates.neutral_feedback if neutral is None else neutral}
    histories: list[list[Turn]] = [[] for _ in problems]
    live = list(range(len(problems)))
    for t in range(turns):
        if not live:
            break
        call = params if seed is None else replace(params, seed=seed + t)
        groups = policy.generate([next_prompt(problems[i], histories[i]) for i in live],
                                 with_prompt_seeds(call, len(live)))
        if len(groups) != len(live) or any(len(g) != 1 for g in groups):
            raise ValueError(
                f"policy.generate returned {[len(g) for g in groups]} completions for {len(live)} prompts with n=1"
            )
        still_live = []
        for i, (completion,) in zip(live, groups):
            problem = problems[i]
            verdict = task.check(problem, completion.text)
            ends = (t == turns - 1 or (stop_when_correct and verdict.correct is True)
                    or (stop_when_unscorable and verdict.correct is None))
            said = None if ends else feedback_text(feedback, verdict, **said_to)
            histories[i].append(Turn(completion, task.extract(completion.text), verdict.correct, said))
            if not ends:
                still_live.append(i)
        live = still_live
    return [Episode(p, tuple(h)) for p, h in zip(problems, histories)]


__all__ = [
    "FEEDBACK_MODES",
    "Episode",
    "Turn",
    "feedback_text",
    "next_prompt",
    "run_episodes",
]
