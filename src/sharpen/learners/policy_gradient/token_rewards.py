"""Span rewards placed on tokens: the (P, G, T) step rewards of a token-level estimator.

A span's value goes on the token that covers its last character (Fine-Grained RLHF: each
segment's reward on its last token; RLFH, AlignRM/RLFH `source/feedback/reward.py`); a span
whose last character is past the text (`Span.at_end`, where a scalar reward sits) goes on the
last token; the values of spans that land on one token add up to one step reward.
Character-to-token alignment: `sharpen.models.alignment` (incremental decoding).
"""

from __future__ import annotations

from typing import Sequence

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


def step_reward_tensors(rollouts: Sequence[Rollout], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, steps), each (P, G, T) with T the longest completion in tokens: every
    completion's spans (`Rollout.spans`) placed on its tokens; steps is True where a step
    reward sits (0 and False on padding and on completions without tokens)."""
    T = max((len(c.token_ids) for r in rollouts for c in r.completions), default=0)
    G = len(rollouts[0].completions) if rollouts else 0
    rewards = torch.zeros((len(rollouts), G, T), dtype=torch.float64)  # (P, G, T)
    steps = torch.zeros((len(rollouts), G, T), dtype=torch.bool)  # (P, G, T)
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
    return rewards, steps
