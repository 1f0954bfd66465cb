"""The model's confidence in its own completions: self-certainty and sequence likelihood.

Both are means over the generated tokens y_1..y_T (the end-of-sequence token included when
one was sampled) of a per-token score under the policy π at temperature 1:

- self-certainty ("Scalable Best-of-N Selection for Large Language Models via
  Self-Certainty", Kang et al. 2025):
      SC(y) = (1/T) Σ_t KL(U ‖ p_t) = (1/T) Σ_t [ −log V − (1/V) Σ_j log p_t(j) ]
- sequence likelihood ("Self-Improvement in Language Models: The Sharpening Mechanism",
  Huang et al. 2024):
      L(y) = (1/T) Σ_t log π(y_t | x, y_<t)

Scoring with the policy is one batched forward pass over all P × G completions, cut into
chunks of `batch_size` rows (sorted by length, so chunks carry little padding).
A completion with no tokens gets None: a mean over nothing does not apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch

from sharpen.models.base import Completion
from sharpen.signals.base import (Score, ScoreRange, Scores, ScoringPolicy, SignalOptionError, check_groups, regroup,
                                  require_policy)
from sharpen.tasks.base import Problem

SCORING = ("tokenizer", "encode", "score_tokens")
"""What scoring completions with the policy (`mean_token_scores`) needs from it."""


def completion_ids(policy: ScoringPolicy, completion: Completion) -> list[int]:
    """The completion's sampled token ids; if it carries none (e.g. from an HTTP backend),
    its text tokenized by the policy's tokenizer."""
    if completion.token_ids:
        return list(completion.token_ids)
    if not completion.text:
        return []
    return list(policy.tokenizer(completion.text, add_special_tokens=False)["input_ids"])


def mean_token_scores(
    policy: ScoringPolicy,
    problems: Sequence[Problem],
    groups: Sequence[Sequence[Completion]],
    kind: str,
    batch_size: int,
) -> Scores:
    """Per completion, the mean over its tokens of `TokenScores.<kind>` ("logprobs" or
    "self_certainty") from `policy.score_tokens`, in batches of `batch_size` rows."""
    prompts = [policy.encode(p.prompt) for p in problems]
    rows = [(prompts[i], completion_ids(policy, c)) for i, group in enumerate(groups) for c in group]
    flat: list[Score] = [None] * len(rows)
    todo = sorted((k for k, (_, ids) in enumerate(rows) if ids), key=lambda k: len(rows[k][0]) + len(rows[k][1]))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        with torch.no_grad():
            scores = policy.score_tokens(
                [rows[k][0] for k in chunk], [rows[k][1] for k in chunk], extras=kind == "self_certainty"
            )
        per_token = getattr(scores, kind).float()  # (b, T), 0 on padding
        mask = scores.mask.float()  # (b, T)
        means = (per_token * mask).sum(-1) / mask.sum(-1)  # (b,)
        for k, value in zip(chunk, means.tolist()):
            flat[k] = value
    return regroup(flat, groups)


def _check_batch_size(who: str, batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SignalOptionError(f"signal {who!r}: option 'batch_size' must be an integer >= 1, got {batch_size!r}")


@dataclass
class SelfCertainty:
    """Mean over generated tokens of KL(Uniform ‖ p_t) under the policy; higher = surer."""

    policy: ScoringPolicy
    batch_size: int = 64
    """Completions per forward pass."""
    name: str = "self_certainty"
    score_range: ClassVar[ScoreRange] = (0.0, math.inf)

    def __post_init__(self) -> None:
        _check_batch_size(self.name, self.batch_size)

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> Scores:
        check_groups(self.name, problems, groups)
        return mean_token_scores(self.policy, problems, groups, "self_certainty", self.batch_size)


LIKELIHOOD_SOURCES = ("completion", "policy")


@dataclass
class Likelihood:
    """Mean token log-probability (1/T) Σ_t log π(y_t | x, y_<t).

    source="completion" reads `Completion.logprobs` (recorded while sampling, no forward
    pass); source="policy" rescores the completions with the policy as it is now.
    """

    policy: Optional[ScoringPolicy] = None
    source: str = "completion"
    batch_size: int = 64
    """Completions per forward pass (source="policy")."""
    name: str = "likelihood"
    score_range: ClassVar[ScoreRange] = (-math.inf, 0.0)

    def __post_init__(self) -> None:
        if self.source not in LIKELIHOOD_SOURCES:
            raise SignalOptionError(
                f"signal {self.name!r}: option 'source' must be one of {LIKELIHOOD_SOURCES}, got {self.source!r}"
            )
        if self.source == "policy" and self.policy is None:
            raise SignalOptionError(
                f"signal {self.name!r} with source='policy' rescores completions with the policy, but no "
                "policy was given; pass policy=… or use source='completion'."
            )
        if self.source == "policy":
            require_policy(self.name, self.policy, SCORING)
        _check_batch_size(self.name, self.batch_size)

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> Scores:
        check_groups(self.name, problems, groups)
        if self.source == "policy":
            return mean_token_scores(self.policy, problems, groups, "logprobs", self.batch_size)
        return [[self.recorded(p, c) for c in group] for p, group in zip(problems, groups)]

    def recorded(self, problem: Problem, completion: Completion) -> Score:
        if completion.logprobs:
            return sum(completion.logprobs) / len(completion.logprobs)
        if completion.token_ids or completion.text:
            raise SignalOptionError(
                f"signal {self.name!r}: a completion of problem {problem.id!r} carries no logprobs "
                "(its backend did not record them); use source='policy' to rescore it."
            )
        return None
