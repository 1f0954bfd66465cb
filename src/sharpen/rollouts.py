"""Where rollouts come from: a problem's group of completions, scored.

The loop asks a producer for scored groups and hands it nothing but data. Today's producer
samples in-process with the policy being trained (so new weights are seen at once); a
producer backed by worker processes or an OpenAI-compatible server fits the same two calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

from sharpen.models.base import Completion, SamplingParams
from sharpen.signals.base import Spans
from sharpen.signals.reward import Reward
from sharpen.tasks.base import Problem


@dataclass
class Rollout:
    """One problem and its scored group."""

    problem: Problem
    prompt_ids: list[int]
    completions: list[Completion]
    rewards: list[float]
    """The total reward of each completion."""
    components: dict[str, list[Optional[float]]] = field(default_factory=dict)
    """Each reward component's score of each completion (None: does not apply)."""
    unscorable: tuple[int, ...] = ()
    """Indices of the completions a weighted component could not score (`RewardResult.scorable`):
    their `rewards` entry is not a reward, and learners leave them out."""
    spans: list[Spans] = field(default_factory=list)
    """Each completion's total reward as weighted character spans (`RewardResult.spans`), what a
    token-level advantage estimator places on tokens."""


@dataclass
class RolloutBatch:
    """The rollouts of one step, with what producing them cost."""

    rollouts: list[Rollout]
    reward_summary: dict[str, float]
    generation_seconds: float
    scoring_seconds: float

    @property
    def generated_tokens(self) -> int:
        return sum(c.n_tokens for r in self.rollouts for c in r.completions)


class RolloutProducer(Protocol):
    def produce(self, problems: Sequence[Problem], params: SamplingParams) -> RolloutBatch: ...


class InProcessProducer:
    """Samples with the training policy itself and scores with the reward."""

    def __init__(self, policy, reward: Reward) -> None:
        self.policy = policy
        self.reward = reward

    def produce(self, problems: Sequence[Problem], params: SamplingParams) -> RolloutBatch:
        start = time.perf_counter()
        groups = self.policy.generate([p.prompt for p in problems], params)
        generated = time.perf_counter()
        result = self.reward(list(problems), groups)
        scored = time.perf_counter()
        rollouts = [
            Rollout(
                problem=p,
                prompt_ids=self.policy.encode(p.prompt),
                completions=list(g),
                rewards=list(result.total[i]),
                components={name: list(values[i]) for name, values in result.components.items()},
                unscorable=tuple(j for j, ok in enumerate(result.scorable[i]) if not ok),
                spans=list(result.spans[i]),
            )
            for i, (p, g) in enumerate(zip(problems, groups))
        ]
        return RolloutBatch(rollouts, result.summary(), generated - start, scored - generated)
