"""The three records every task speaks in: Problem, Verdict, Task.

A task is data plus functions, not a class to inherit from:

    Task(name="add2", problems=make_problems, check=check_answer)

`problems(split, n, seed)` returns problems of one split ("train" or "eval"), and
`check(problem, text)` says whether a completion's text answers the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

if TYPE_CHECKING:
    from sharpen.tasks.statements import FactCheck

Message = dict[str, str]
"""A chat message: {"role": "system" | "user" | "assistant", "content": str}."""

Prompt = Union[str, list[Message]]
"""A plain prompt string, or a list of chat messages."""

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Problem:
    """One question a task yields."""

    id: str
    """Stable identifier, unique within the task (e.g. "addition/eval/37+58")."""
    prompt: Prompt
    """What the model is asked: a string (one user turn) or chat messages."""
    answer: Optional[str] = None
    """The reference answer, or None for label-free problems."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Anything else a checker or a report may want (difficulty, source line, …)."""


@dataclass(frozen=True)
class Verdict:
    """What a checker says about one completion.

    `correct=None` means *unscorable* (the checker could not decide, e.g. the
    reference itself does not parse); it is counted and logged, never read as 0.
    """

    correct: Optional[bool]
    """True / False, or None when the completion could not be scored."""
    answer: Optional[str] = None
    """The answer read from the completion, in canonical form (None if none found)."""
    note: str = ""
    """Why, in a few words (e.g. "no number found", "reference unparsable")."""

    @property
    def reward(self) -> Optional[float]:
        """1.0 if correct, 0.0 if wrong, None if unscorable."""
        return None if self.correct is None else float(self.correct)


Problems = Callable[[str, int, int], list[Problem]]
"""problems(split, n, seed) -> up to n problems of that split, deterministic for the seed."""
Checker = Callable[[Problem, str], Verdict]
"""check(problem, completion_text) -> Verdict; may read problem.answer."""
Extractor = Callable[[str], Optional[str]]
"""extract(completion_text) -> canonical answer or None; never reads a reference."""


@dataclass(frozen=True)
class Task:
    """A named source of problems plus a checker."""

    name: str
    problems: Problems
    check: Checker
    extract: Extractor
    """Label-free answer reading, used by majority vote and self-consistency."""
    description: str = ""
    max_new_tokens: int = 32
    """A generation budget that fits the task's answers."""
    stop: tuple[str, ...] = ()
    """Stop strings that end an answer for this task (besides the end-of-sequence token)."""
    solution: Optional[Callable[[Problem], str]] = None
    """A gold completion text for a problem (worked steps and answer), where the task can
    write one; used to build the embedded default model and for supervised warm starts."""
    check_facts: Optional[Callable[[Problem, str], "FactCheck"]] = None
    """For a fact task: the completion split into sentences and atomic statements, each
    labelled against the task's knowledge (`sharpen.tasks.statements`); what fact precision
    (`sharpen eval`) and the `fact_feedback` reward read."""


CHECKER_RAISED = "the checker raised"
"""How the note of the unscorable verdict given for a checker that raised begins."""


@dataclass
class GuardedChecker:
    """A task's checker that turns an exception into an unscorable verdict (DESIGN.md rule 3:
    counted and logged, never a silent 0), so one odd completion does not end a run.

    A checker that has raised on every completion it was given, `fatal_after` of them, is
    broken rather than unlucky: that raises a UserCodeError naming the checker, its file,
    the problem and what it raised."""

    check: Checker
    task: str
    fatal_after: int = 16
    checked: int = 0
    raised: int = 0

    def __call__(self, problem: Problem, text: str) -> Verdict:
        self.checked += 1
        try:
            return self.check(problem, text)
        except Exception as error:
            from sharpen.specs import UserCodeError, describe_function, raised

            self.raised += 1
            if self.raised == self.checked >= self.fatal_after:
                raise UserCodeError(
                    f"task {self.task!r}: its checker {describe_function(self.check)} raised on every one of the "
                    f"{self.checked} completions it was given; the last, on problem {problem.id!r}: {raised(error)}"
                ) from error
            return Verdict(correct=None, note=f"{CHECKER_RAISED} {raised(error)}")


def guard_checker(task: Task) -> Task:
    """The task with its checker guarded (see GuardedChecker)."""
    if isinstance(task.check, GuardedChecker):
        return task
    return replace(task, check=GuardedChecker(task.check, task.name))
