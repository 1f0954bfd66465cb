"""What a signal is, the errors signals raise, and the small helpers they share.

A *signal* scores groups of completions:

    signal(problems, groups) -> scores        # scores[i][j] scores groups[i][j]

`problems` has P entries and `groups[i]` holds the completions of `problems[i]`; scores has
the same P × G shape (groups may differ in size). A score is a float, or `None` when the
signal does not apply to that completion (e.g. the checker could not decide); `None` is
left out of means, never read as 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol, Sequence

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


class Signal(Protocol):
    """Anything that scores groups of completions.

    A signal may declare `score_range`, the range its scores always lie in (METHODS.md §1:
    BNPO and the signed weightings rescale by the reward's *known* range, never the batch's).
    A signal without one (a user function) gets it from its reward component's `range`.
    """

    name: str

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> Scores:
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
