"""Supervised fine-tuning on the model's own selected completions: the update step of
rejection sampling (RFT, ReST-EM, STaR, sharpening) and of RISE's reward-weighted regression.

    loss = Σ_i w_i Σ_t −log π(y_it | x_i, y_i,<t) / Σ_i w_i |y_i|

a weighted token mean: with all w_i = 1 it is the usual SFT loss over the batch's tokens;
with w_i = exp(r_i / τ) it is reward-weighted regression (Peters & Schaal, 2007, as used by
RISE).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

from sharpen.learners.base import accumulated_step


@dataclass(frozen=True)
class Example:
    """One training sequence: a prompt, the completion to imitate, and its weight."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    weight: float = 1.0


def weighted_nll(logprobs: Tensor, mask: Tensor, weights: Tensor,
                 denominator: Optional[float] = None) -> tuple[Tensor, dict[str, float]]:
    """Weighted token-mean negative log-likelihood.

    logprobs, mask: (B, T) token log-probs and 1 where a token is real; weights: (B,) ≥ 0.
    Returns Σ_i w_i Σ_t −ℓ_it m_it / D and diagnostics, D = Σ_i w_i Σ_t m_it of these rows, or
    `denominator`: the whole batch's D when these rows are one micro-batch of it (then the loss
    and its `nll` are this micro-batch's share, and its `tokens` its own count: both sum over
    the micro-batches to the batch's).
    """
    if logprobs.shape != mask.shape or weights.shape != logprobs.shape[:1]:
        raise ValueError(
            f"weighted_nll: logprobs {tuple(logprobs.shape)}, mask {tuple(mask.shape)} and weights "
            f"{tuple(weights.shape)} must be (B, T), (B, T) and (B,)"
        )
    if bool((weights < 0).any()):
        raise ValueError(f"weighted_nll: weights must be >= 0, got {weights.tolist()}")
    w = weights.to(logprobs.dtype)
    nll = -(logprobs * mask).sum(-1)  # (B,)
    tokens = mask.sum(-1)  # (B,)
    if denominator is None:
        denominator = (w * tokens).sum()
    loss = (w * nll).sum() / max(float(denominator), 1e-12)
    return loss, {"nll": loss.item(), "tokens": tokens.sum().item()}


def fine_tune(
    policy, optimizer, examples: Sequence[Example], *, epochs: int, batch_size: int, lr: float,
    grad_clip: float, seed: int,
) -> dict[str, float]:
    """`epochs` shuffled passes over `examples` in minibatches of `batch_size`, each one
    optimizer step scored in micro-batches (`policy.micro_batches`) with the minibatch's
    denominator; returns the mean loss (left out when there was nothing to train on),
    optimizer steps, trained tokens and seconds."""
    start = time.perf_counter()
    rng = random.Random(seed)
    order = list(range(len(examples)))
    losses, tokens, steps = [], 0.0, 0
    policy.model.train()
    try:
        for _ in range(epochs):
            rng.shuffle(order)
            for lo in range(0, len(order), batch_size):
                batch = [examples[i] for i in order[lo : lo + batch_size]]
                _, diag = accumulated_step(policy.model, optimizer, micro_batch_losses(policy, batch), grad_clip, lr)
                losses.append(diag["nll"])
                tokens += diag["tokens"]
                steps += 1
    finally:
        policy.model.eval()
    seconds = time.perf_counter() - start
    out = {"sft/updates": float(steps), "sft/examples": float(len(examples)), "sft/tokens": tokens,
           "sft/seconds": seconds}
    if losses:
        out["sft/loss"] = sum(losses) / len(losses)
    return out


def micro_batch_losses(policy, batch: Sequence[Example]) -> Iterator[tuple[Tensor, dict[str, float]]]:
    """`weighted_nll` of each micro-batch of `batch`, with the batch's denominator Σ w_i |y_i|."""
    prompts, completions = [e.prompt_ids for e in batch], [e.completion_ids for e in batch]
    denominator = sum(e.weight * len(e.completion_ids) for e in batch)
    for rows in policy.micro_batches(prompts, completions):
        scores = policy.score_tokens([prompts[i] for i in rows], [completions[i] for i in rows])
        weights = torch.tensor([batch[i].weight for i in rows], device=scores.logprobs.device)
        yield weighted_nll(scores.logprobs, scores.mask, weights, denominator)
