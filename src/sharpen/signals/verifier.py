"""Signals from the task itself: correctness (its checker) and format (its answer reader)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Sequence

from sharpen.models.base import Completion
from sharpen.signals.base import UNIT_RANGE, ScoreRange, Scores, SignalOptionError, check_groups
from sharpen.specs import UserCodeError
from sharpen.tasks.base import Problem, Task, Verdict, guard_checker


@dataclass
class Correctness:
    """`task.check`: 1.0 if correct, 0.0 if wrong, None if the checker could not decide.

    Unscorable verdicts are counted (`unscorable`, and `notes` by the checker's reason) so a
    run can log them; a checker that raises gives an unscorable verdict (tasks.base.GuardedChecker),
    and one that raises on every completion stops the run with the problem named.
    """

    task: Task
    name: str = "correctness"
    score_range: ClassVar[ScoreRange] = UNIT_RANGE
    checked: int = 0
    """Completions checked so far."""
    unscorable: int = 0
    """Completions the checker could not score so far."""
    notes: Counter = field(default_factory=Counter)
    """Why completions were unscorable: checker note → count."""

    def __post_init__(self) -> None:
        self.task = guard_checker(self.task)

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> Scores:
        check_groups(self.name, problems, groups)
        scores: Scores = []
        for problem, group in zip(problems, groups):
            row: list[Optional[float]] = []
            for completion in group:
                verdict = self.check(problem, completion.text)
                self.checked += 1
                if verdict.correct is None:
                    self.unscorable += 1
                    self.notes[verdict.note or "no reason given"] += 1
                row.append(verdict.reward)
            scores.append(row)
        return scores

    def check(self, problem: Problem, text: str) -> Verdict:
        verdict = self.task.check(problem, text)
        if not isinstance(verdict, Verdict):
            raise UserCodeError(
                f"task {self.task.name!r}: check() must return a Verdict, got {type(verdict).__name__} "
                f"on problem {problem.id!r}; return Verdict(correct=None, note=…) when it cannot decide."
            )
        return verdict


@dataclass
class Format:
    """1.0 if the completion has the expected layout, else 0.0.

    Without `pattern`, the layout is "the task can read an answer" (`task.extract` is not
    None). With `pattern`, the stripped text must fullmatch that regex (`.` also matches a
    newline), e.g. r"<think>.*</think>\\s*<answer>.*</answer>".
    """

    task: Task
    pattern: Optional[str] = None
    name: str = "format"
    score_range: ClassVar[ScoreRange] = UNIT_RANGE

    def __post_init__(self) -> None:
        self.regex: Optional[re.Pattern] = None
        if self.pattern is not None:
            try:
                self.regex = re.compile(self.pattern, re.DOTALL)
            except re.error as error:
                raise SignalOptionError(f"signal 'format': option 'pattern' {self.pattern!r} is not a regex: {error}")

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> Scores:
        check_groups(self.name, problems, groups)
        return [[self.score(c.text) for c in group] for group in groups]

    def score(self, text: str) -> float:
        if self.regex is not None:
            return float(self.regex.fullmatch(text.strip()) is not None)
        return float(self.task.extract(text) is not None)
