"""Span rewards placed on tokens: the (P, G, T) step rewards of a token-level estimator.

A span's value goes on the token that covers its last character (Fine-Grained RLHF: each
segment's reward on its last token; RLFH, AlignRM/RLFH `source/feedback/reward.py`); a span
whose last character is past the text goes on the last token; the values of spans that land on
one token add up to one step reward. The reward's scalar components (its outcome,
`Rollout.outcomes`) are kept apart: they belong on the last token, but as another kind of
reward, which the estimator normalises on its own. Character-to-token alignment:
`sharpen.models.alignment` (incremental decoding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from sharpen.models.alignment import covering_token, token_char_ends
from sharpen.rollouts import Rollout
from sharpen.signals.base import Span


def span_token_rewards(tokenizer, token_ids: Sequence[int], spans: Sequence[Span]) -> tuple[list[float], list[bool]]:
    """(rewards, steps) per token of one completion: rewards[k] = Σ of the values of the spans
    whose last character (end − 1) token k covers; steps[k] = whether any span lands on it."""
    ends = token_char_ends(tokenizer, token_ids)
    rewards, steps = [0.0] * len(token_ids), [False] * len(token_ids)
    for span in spans:
        k = covering_token(ends, span.end - 1)
        rewards[k] += span.value
        steps[k] = True
    return rewards, steps


@dataclass(frozen=True)
class StepRewards:
    """A batch's rewards for a token-level estimator."""

    rewards: torch.Tensor
    """(P, G, T) each completion's span rewards on its tokens (0 elsewhere), T the longest completion."""
    steps: torch.Tensor
    """(P, G, T) bool: where a step reward sits (False on padding)."""
    lengths: torch.Tensor
    """(P, G) each completion's tokens."""
    outcomes: Optional[torch.Tensor]
    """(P, G) each completion's outcome (the weighted scalar components), on its last token;
    None when the reward has no scalar component."""


def step_reward_tensors(rollouts: Sequence[Rollout], tokenizer) -> StepRewards:
    """Every completion's spans (`Rollout.spans`) placed on its tokens, and its outcome."""
    T = max((len(c.token_ids) for r in rollouts for c in r.completions), default=0)
    G = len(rollouts[0].completions) if rollouts else 0
    rewards = torch.zeros((len(rollouts), G, T), dtype=torch.float64)  # (P, G, T)
    steps = torch.zeros((len(rollouts), G, T), dtype=torch.bool)  # (P, G, T)
    lengths = torch.tensor([[len(c.token_ids) for c in r.completions] for r in rollouts], dtype=torch.long)  # (P, G)
    for i, rollout in enumerate(rollouts):
        if len(rollout.spans) != len(rollout.completions):
            raise ValueError(
                f"rollout of problem {rollout.problem.id!r} has spans for {len(rollout.spans)} of its "
                f"{len(rollout.completions)} completions; a token-level estimator needs the reward's spans "
                "(RewardResult.spans) for every completion"
            )
        for j, (completion, spans) in enumerate(zip(rollout.completions, rollout.spans)):
            if not completion.token_ids:
                continue
            r, s = span_token_rewards(tokenizer, completion.token_ids, spans)
            rewards[i, j, : len(r)] = torch.tensor(r, dtype=torch.float64)
            steps[i, j, : len(s)] = torch.tensor(s)
    with_outcomes = [bool(r.outcomes) for r in rollouts]
    if any(with_outcomes) and not all(with_outcomes):
        raise ValueError("some rollouts of the batch have outcomes (scalar reward components) and some not; "
                         "score a batch with one reward")
    outcomes = (torch.tensor([r.outcomes for r in rollouts], dtype=torch.float64)
                if rollouts and all(with_outcomes) else None)  # (P, G)
    return StepRewards(rewards, steps, lengths, outcomes)
