"""Atomic statements of a completion, judged against a knowledge source (FActScore, RLFH).

A fact task's `check_facts(problem, text)` splits a completion into sentences and each
sentence into atomic statements, and labels each statement against the task's knowledge:

    FactCheck(
        sentences=((0, 33), (34, 65)),            # character spans [start, end) in `text`
        statements=(Statement(0, 18, 0, "correct", 5), Statement(23, 32, 0, "wrong", 5), …),
    )

Labels (RLFH's truthfulness classes, "On-Policy Self-Alignment with Fine-grained Knowledge
Feedback for Hallucination Mitigation"): `correct` (the knowledge supports it), `wrong` (the
knowledge contradicts it), `unverifiable` (RLFH's "vague": the knowledge cannot decide it).
Informativeness is RLFH's 1-5 scale: 5 answers the question, 1 is useless.
A completion with no statement abstains (FActScore's abstention).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Label = Literal["correct", "wrong", "unverifiable"]
LABELS: tuple[Label, ...] = ("correct", "wrong", "unverifiable")
INFORMATIVENESS = (1, 2, 3, 4, 5)
"""RLFH's informativeness scale: 5 = answers the question, 1 = useless."""

_SENTENCE_RE = re.compile(r"[^.!?\n]*[^.!?\n\s][^.!?\n]*(?:[.!?]+|$)")


@dataclass(frozen=True)
class Statement:
    """One atomic statement of a completion, with its truthfulness and informativeness."""

    start: int
    """First character of the statement in the completion text."""
    end: int
    """One past its last character (its reward goes on the token covering end − 1)."""
    sentence: int
    """Index of the sentence it belongs to (`FactCheck.sentences`)."""
    label: Label
    informativeness: int
    """1 (useless) … 5 (answers the question)."""

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"statement label {self.label!r}: use one of {', '.join(LABELS)}")
        if self.informativeness not in INFORMATIVENESS:
            raise ValueError(f"statement informativeness {self.informativeness!r}: use an integer 1-5")
        if not 0 <= self.start < self.end:
            raise ValueError(f"statement span [{self.start}, {self.end}) is empty or negative")


@dataclass(frozen=True)
class FactCheck:
    """A completion split into sentences and judged atomic statements."""

    sentences: tuple[tuple[int, int], ...]
    """Character spans [start, end) of the sentences, in order."""
    statements: tuple[Statement, ...]

    @property
    def abstained(self) -> bool:
        """Whether the completion makes no statement at all."""
        return not self.statements

    def count(self, label: Label) -> int:
        return sum(s.label == label for s in self.statements)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the sentences of `text`: runs that end with . ! ? (kept
    in the sentence), a newline or the end of the text; leading spaces are not part of a span,
    and runs without a visible character are no sentence.

    >>> split_sentences("Kavo lives in Holt. I do not know its pet.")
    [(0, 19), (20, 43)]
    """
    out = []
    for match in _SENTENCE_RE.finditer(text):
        start = match.start() + len(match.group()) - len(match.group().lstrip())
        out.append((start, match.end()))
    return out
