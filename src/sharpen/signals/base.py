"""What a signal is, the errors signals raise, and the small helpers they share.

A *signal* scores groups of completions:

    signal(problems, groups) -> scores        # scores[i][j] scores groups[i][j]

`problems` has P entries and `groups[i]` holds the completions of `problems[i]`; scores has
the same P × G shape (groups may differ in size). A score is a float, or `None` when the
signal does not apply to that completion (e.g. the checker could not decide); `None` is
left out of means, never read as 0.

A *span signal* gives fine-grained feedback instead: `SpanScores`, per completion a tuple of
`Span(start, end, value)` on character spans of its text (per statement, per sentence, per
step), or None where it does not apply. Its scalar score of a completion is the sum of its
span values, so a learner that reads one float per completion sees the same judgements summed
(onto the last token); a token-level learner puts each value on the token that covers the
span's last character (Fine-Grained RLHF, RLFH; `sharpen.models.alignment`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol, Sequence, Union

from sharpen.models.base import Completion
from sharpen.tasks.base import Problem, Prompt

if TYPE_CHECKING:
    import torch

    from sharpen.models.base import TokenScores

Score = Optional[float]
Scores = list[list[Score]]
"""P × G scores: one per completion, None where the signal does not apply."""
ScoreRange = tuple[float, float]
"""(lowest, highest) score a signal can give; an end may be ±inf (e.g. a log-likelihood)."""
UNIT_RANGE: ScoreRange = (0.0, 1.0)


@dataclass(frozen=True)
class Span:
    """A reward on the characters [start, end) of a completion's text; a token-level learner
    puts `value` on the token that covers character end − 1 (the last token when that is past
    the text)."""

    start: int
    end: int
    value: float

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a span needs 0 <= start < end, got [{self.start}, {self.end})")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ValueError(f"span [{self.start}, {self.end}) has value {self.value!r}; use a finite float")

    def scaled(self, weight: float) -> "Span":
        return Span(self.start, self.end, weight * self.value)


Spans = tuple[Span, ...]
"""The spans of one completion."""


@dataclass(frozen=True)
class SpanScores:
    """What a span signal returns: P × G span tuples, None where the signal does not apply."""

    spans: list[list[Optional[Spans]]]

    def scalars(self) -> Scores:
        """P × G scalar scores: each completion's sum of span values (None stays None)."""
        return [[None if s is None else float(sum(span.value for span in s)) for s in row] for row in self.spans]


SignalOutput = Union[Scores, SpanScores]


class Signal(Protocol):
    """Anything that scores groups of completions.

    A signal may declare `score_range`, the range its scores always lie in (METHODS.md §1:
    BNPO and the signed weightings rescale by the reward's *known* range, never the batch's).
    A signal without one (a user function) gets it from its reward component's `range`.
    """

    name: str

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> SignalOutput:
        ...


class ScoringPolicy(Protocol):
    """What the self-signals need from a policy (`sharpen.models.hf.HFPolicy` provides it)."""

    tokenizer: object

    def encode(self, prompt: Prompt) -> list[int]:
        ...

    def score_tokens(
        self,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]],
        *,
        temperature: float = 1.0,
        extras: bool = False,
    ) -> "TokenScores":
        ...

    def choice_logprobs(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> "torch.Tensor":
        ...


# ---- errors ---------------------------------------------------------------------------------


class UnknownSignalError(KeyError):
    """No signal is registered under a name, and the name is not a `module:function` spec."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class SignalOptionError(ValueError):
    """A signal was given an option it does not have, a value it cannot use, or no policy
    although it needs one."""


class RewardFunctionError(ValueError):
    """A user reward function could not be loaded, or returned something that is not one
    float-or-None per completion."""


# ---- helpers --------------------------------------------------------------------------------


def check_groups(who: str, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> None:
    """Raise a ValueError unless there is exactly one group per problem."""
    if len(problems) != len(groups):
        raise ValueError(
            f"signal {who!r}: got {len(problems)} problems but {len(groups)} groups; "
            "pass one group of completions per problem."
        )


def require_policy(who: str, policy: Optional[object], needs: Sequence[str]) -> object:
    """The policy, or a SignalOptionError saying that `who` needs one, or needs the
    attributes `needs` (of ScoringPolicy) which it lacks, e.g. a policy behind an HTTP server."""
    if policy is None:
        raise SignalOptionError(
            f"signal {who!r} scores completions with the policy itself, but no policy was given; "
            "pass policy=… to build_signal / Reward.from_specs."
        )
    missing = [name for name in needs if not hasattr(policy, name)]
    if missing:
        raise SignalOptionError(
            f"signal {who!r} scores completions with the model's own forward pass, but "
            f"{type(policy).__name__} has no {', '.join(missing)} (an HTTP server only samples); use a "
            "local model, or a signal that needs no forward pass, such as likelihood (source='completion': "
            "the logprobs returned with the samples) or majority_vote"
        )
    return policy


def regroup(flat: Sequence[Score], groups: Sequence[Sequence[object]]) -> Scores:
    """Cut a flat list (one entry per completion, group after group) back into groups."""
    out: Scores = []
    start = 0
    for group in groups:
        out.append(list(flat[start : start + len(group)]))
        start += len(group)
    return out
