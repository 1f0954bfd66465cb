"""The policy as its own judge (LLM-as-judge, pointwise).

Each completion is shown back to the policy in sharpen's judge format
(`formats.judge_messages`: "<question><answer> right?") and the score is the policy's
probability of answering yes, normalised over the two replies:

    s = P(yes) / (P(yes) + P(no)) = softmax(log P(yes), log P(no))_0

computed from the first token of each reply, for all P × G completions in batched forward
passes (`policy.choice_logprobs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sharpen.models.base import Completion
from sharpen.models.formats import JUDGE_NO, JUDGE_YES, judge_messages
from sharpen.signals.base import Scores, ScoringPolicy, SignalOptionError, check_groups, regroup
from sharpen.tasks.base import Problem

JUDGING = ("tokenizer", "choice_logprobs")
"""What judging with the policy needs from it."""


@dataclass
class SelfJudge:
    """The policy's normalised probability that a completion is right, in [0, 1]."""

    policy: ScoringPolicy
    yes: str = JUDGE_YES
    """The reply that means "right" (its first token is read)."""
    no: str = JUDGE_NO
    """The reply that means "wrong"."""
    name: str = "self_judge"

    def __post_init__(self) -> None:
        if not self.yes or not self.no or self.yes == self.no:
            raise SignalOptionError(
                f"signal {self.name!r}: options 'yes' and 'no' must be two different non-empty replies, "
                f"got {self.yes!r} and {self.no!r}"
            )
        first = [self.policy.tokenizer(r, add_special_tokens=False)["input_ids"][:1] for r in (self.yes, self.no)]
        if first[0] == first[1]:
            raise SignalOptionError(
                f"signal {self.name!r}: replies {self.yes!r} and {self.no!r} start with the same token "
                f"{first[0]}, so the judge's odds cannot tell them apart; choose replies that differ in their first token."
            )

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> Scores:
        check_groups(self.name, problems, groups)
        prompts = [judge_messages(p.prompt, c.text) for p, group in zip(problems, groups) for c in group]
        if not prompts:
            return [[] for _ in groups]
        logp = self.policy.choice_logprobs(prompts, (self.yes, self.no)).float()  # (N, 2)
        p_yes = logp.softmax(-1)[:, 0]  # (N,)
        return regroup(p_yes.tolist(), groups)
