"""Majority vote over a group: the label-free reward of test-time RL.

    r_i = 1[ extract(y_i) = majority answer of the group ]

("Unsupervised Post-Training for Multi-Modal LLM Reasoning via GRPO"; "TTRL: Test-Time
Reinforcement Learning"). Nothing here reads a reference answer: the group votes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

from sharpen.models.base import Completion
from sharpen.signals.base import UNIT_RANGE, ScoreRange, Scores, SignalOptionError, check_groups
from sharpen.tasks.base import Problem, Task


def majority_answer(answers: Sequence[Optional[str]]) -> Optional[str]:
    """The most common answer; `None` answers do not vote.

    Ties go to the answer seen first. Returns None when no answer was read at all.

        majority_answer(["3", None, "4", "4", "3"]) == "3"    # 2 votes each, "3" came first
    """
    counts: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            counts[answer] = counts.get(answer, 0) + 1
    if not counts:
        return None
    # dicts keep insertion order and max() returns the first maximum: the earliest answer wins
    return max(counts, key=counts.__getitem__)


@dataclass
class MajorityVote:
    """1.0 if a completion's answer equals its group's majority answer, else 0.0.

    A completion whose answer cannot be read scores 0.0 (it agrees with nothing), as does
    every completion of a group where no answer can be read. With `min_share` > 0, a group
    whose majority answer holds less than that share of the group's completions gets None
    (no consensus, so no pseudo-label: the group does not vote on itself), like the
    confidence threshold of self-consistency-based self-training.
    """

    task: Task
    min_share: float = 0.0
    name: str = "majority_vote"
    score_range: ClassVar[ScoreRange] = UNIT_RANGE

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_share <= 1.0:
            raise SignalOptionError(f"majority_vote: min_share must be in [0, 1], got {self.min_share}")

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> Scores:
        check_groups(self.name, problems, groups)
        scores: Scores = []
        for group in groups:  # problems are never read: the vote is label-free
            answers = [self.task.extract(c.text) for c in group]
            winner = majority_answer(answers)
            share = answers.count(winner) / len(answers) if winner is not None else 0.0
            if self.min_share and share < self.min_share:
                scores.append([None] * len(answers))
            else:
                scores.append([float(a is not None and a == winner) for a in answers])
        return scores
