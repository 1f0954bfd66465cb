"""Policy-gradient losses as pure functions returning `(loss, diagnostics)` (METHODS.md §1).

Shapes: B completions × T completion-token positions. `logprobs`, `old_logprobs`,
`ref_logprobs` are per-token log-probabilities log π(y_t | x, y_<t) of the sampled tokens,
(B, T); `mask` (B, T) is 1 on completion tokens and 0 on padding. Diagnostics are detached
Python floats, ready to log.

Token losses are reduced to a scalar by a named aggregation from `LOSS_AGGREGATIONS`
(`token_mean` DAPO, `seq_mean` GRPO, `constant` Dr. GRPO).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# aggregations: token values (B, T), mask (B, T) -> scalar
#
# Each divides a sum over the rows it is given by a denominator of the whole batch, read from
# `batch_mask` (default: `mask`). Passed one micro-batch's rows and the batch's mask, it gives
# that micro-batch's share of the batch's loss: the shares sum to the loss of the whole batch,
# and so do their gradients (gradient accumulation, `learners.base.accumulated_step`).


def token_mean(values: Tensor, mask: Tensor, max_len: Optional[int] = None,
               batch_mask: Optional[Tensor] = None) -> Tensor:
    """Σ_{b,t} m_bt v_bt / Σ_{b,t} M_bt (M = batch_mask): every token in the batch weighs the same.

    DAPO (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale"),
    token-level policy gradient loss. `max_len` is ignored. An all-padding batch gives 0.
    """
    batch_mask = mask if batch_mask is None else batch_mask
    return (values * mask).sum() / batch_mask.sum().clamp(min=1.0)  # ()


def seq_mean(values: Tensor, mask: Tensor, max_len: Optional[int] = None,
             batch_mask: Optional[Tensor] = None) -> Tensor:
    """(1/B) Σ_b [Σ_t m_bt v_bt / Σ_t m_bt], B the batch's rows: mean over completions of
    per-completion token means.

    GRPO's objective (Shao et al. 2024, "DeepSeekMath"): 1/G Σ_i 1/|o_i| Σ_t. A completion
    with no tokens counts as 0 in the mean. `max_len` is ignored.
    """
    batch_mask = mask if batch_mask is None else batch_mask
    per_seq = (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (b,)
    return per_seq.sum() / batch_mask.shape[0]  # ()


def constant_norm(values: Tensor, mask: Tensor, max_len: Optional[int] = None,
                  batch_mask: Optional[Tensor] = None) -> Tensor:
    """Σ_{b,t} m_bt v_bt / (B · max_len), B the batch's rows: divide by a constant, not by
    completion lengths.

    Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective"):
    the per-length normalisation of GRPO biases towards long wrong answers; dividing by the
    generation budget `max_len` (max new tokens) removes that bias. `max_len` is required and
    must be at least the longest completion in the batch.
    """
    batch_mask = mask if batch_mask is None else batch_mask
    if max_len is None or max_len < 1:
        raise ValueError(
            f"aggregation 'constant' (Dr. GRPO) needs max_len >= 1, the generation budget "
            f"(max new tokens), got {max_len!r}."
        )
    longest = int(batch_mask.sum(dim=1).max().item()) if batch_mask.numel() else 0
    if longest > max_len:
        raise ValueError(
            f"aggregation 'constant': a completion has {longest} tokens but max_len={max_len}; "
            "pass the generation budget (max new tokens) as max_len."
        )
    return (values * mask).sum() / (batch_mask.shape[0] * max_len)  # ()


LossAggregation = Callable[..., Tensor]

LOSS_AGGREGATIONS: dict[str, LossAggregation] = {
    "token_mean": token_mean,
    "seq_mean": seq_mean,
    "constant": constant_norm,
}
"""name → aggregation(values (b, T), mask (b, T), max_len, batch_mask (B, T')) -> scalar."""


def get_loss_aggregation(name: str) -> LossAggregation:
    """The aggregation registered under `name`; a ValueError lists the valid names."""
    try:
        return LOSS_AGGREGATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown loss aggregation {name!r}; choose one of: {', '.join(sorted(LOSS_AGGREGATIONS))}."
        ) from None


# ---------------------------------------------------------------------------------------------
# losses


def k3(log_ratio: Tensor) -> Tensor:
    """Per-token k3 KL estimator: exp(d) − d − 1 for a log-ratio d = log(q(y)/p(y)), y ~ p.

    Estimates KL(p ‖ q) from samples of p; unbiased, always ≥ 0, and exactly 0 where d = 0.
    J. Schulman (2020), "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html).
    KL to the reference: d = ℓ_ref − ℓ. PPO's approx_kl (KL(π_old ‖ π), samples from π_old):
    d = ℓ − ℓ_old = log ρ, giving (ρ − 1) − log ρ.
    """
    return torch.exp(log_ratio) - log_ratio - 1  # like log_ratio


def truncated_importance_weights(prox_logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor,
                                 cap: float) -> Tensor:
    """TIS: per-token weights w_t = min(π_prox(y_t) / μ(y_t), C), detached; 0 on padding. (B, T)

    π_prox is the policy at the start of the update, μ the behaviour policy that sampled the
    tokens (older weights on an asynchronous worker, or the same weights rounded differently by
    the sampler). The PPO term is then clipped against π_prox and weighted by w (decoupled PPO,
    Hilton et al. 2021, "Batch size-invariance for policy optimization"; truncation: Yao et al.
    2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"; METHODS.md §9).
    """
    if cap <= 0:
        raise ValueError(f"truncated importance weights need cap C > 0, got {cap}")
    log_ratio = torch.where(mask > 0, prox_logprobs.detach() - behaviour_logprobs.detach(), 0.0)  # (B, T)
    return log_ratio.exp().clamp(max=cap) * (mask > 0)  # (B, T)


def _check_token_shapes(logprobs: Tensor, mask: Tensor, **others: Optional[Tensor]) -> None:
    """Raise a ValueError unless logprobs and mask are (B, T) and every other tensor matches."""
    if logprobs.dim() != 2:
        raise ValueError(
            f"clipped_surrogate: logprobs must be (B, T) token log-probs, got {tuple(logprobs.shape)}."
        )
    for name, t in {"mask": mask, **others}.items():
        if t is not None and t.shape != logprobs.shape:
            raise ValueError(
                f"clipped_surrogate: {name} has shape {tuple(t.shape)} but logprobs has "
                f"{tuple(logprobs.shape)}; they must match."
            )


def clipped_surrogate(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregation: str = "token_mean",
    max_len: Optional[int] = None,
    ref_logprobs: Optional[Tensor] = None,
    kl_coef: float = 0.0,
    batch_mask: Optional[Tensor] = None,
    is_weights: Optional[Tensor] = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate with asymmetric clip range and optional k3 KL to a reference.

    Per token, with ρ_t = π(y_t)/π_old(y_t) = exp(ℓ_t − ℓ_old,t):
        pg_t = −min(ρ_t A_t, clip(ρ_t, 1 − ε_low, 1 + ε_high) A_t)
        kl_t = exp(ℓ_ref,t − ℓ_t) − (ℓ_ref,t − ℓ_t) − 1        (k3, only if ref_logprobs given)
        loss = agg(w ⊙ pg) + β_KL · agg(kl)      w = is_weights (detached; 1 if not given, e.g.
                                                 `truncated_importance_weights`, with π_old = π_prox)
    Schulman et al. (2017) "Proximal Policy Optimization Algorithms"; ε_high = 0.28 is DAPO's
    "clip-higher"; KL to π_ref as in GRPO (DeepSeekMath). `aggregation` names an entry of
    `LOSS_AGGREGATIONS` (`constant` needs `max_len`).

    advantages: (B,) one per completion (put on every token) or (B, T) per token (span-level or
    process rewards). Padding positions (mask 0) never contribute, even if their log-probs are
    garbage: their log-ratios are set to 0 before exponentiating.

    batch_mask: when these B rows are one micro-batch of a larger batch, that batch's mask
    (B', T'): the denominators are the batch's, so the loss and every diagnostic below are this
    micro-batch's share, and summed over the micro-batches they are the batch's (default: `mask`).

    Diagnostics (detached floats; token means over the mask unless noted):
    - pg_loss: agg(pg), the policy-gradient part of the loss.
    - clip_frac: fraction of tokens where the clipped branch is the active one
      (ρ > 1+ε_high with A > 0, or ρ < 1−ε_low with A < 0), i.e. tokens whose gradient the
      clip zeroes. PPO's clipfrac as logged by cleanrl `ppo.py`, which counts |ρ − 1| > ε; we
      count only tokens where the clip changes the objective.
    - approx_kl: KL(π_old ‖ π) by k3 with samples from π_old, (ρ − 1) − log ρ
      (J. Schulman, "Approximating KL Divergence"; cleanrl's approx_kl).
    - ratio_mean: mean of ρ.
    - kl_ref (only with ref_logprobs): agg(kl), the value multiplied by kl_coef.
    - tis_weight_mean (only with is_weights): token mean of w.
    - loss: the returned loss.
    """
    _check_token_shapes(logprobs, mask, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, is_weights=is_weights)
    aggregate = get_loss_aggregation(aggregation)
    if not (0.0 <= eps_low < 1.0 and eps_high >= 0.0):
        raise ValueError(
            f"clipped_surrogate: need 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}."
        )
    m = mask.to(logprobs.dtype)  # (B, T)
    on = m > 0  # (B, T)
    if advantages.dim() == 1 and advantages.shape[0] == logprobs.shape[0]:
        adv = advantages[:, None].to(logprobs.dtype)  # (B, 1)
    elif advantages.shape == logprobs.shape:
        adv = advantages.to(logprobs.dtype)  # (B, T)
    else:
        raise ValueError(
            f"clipped_surrogate: advantages must be (B,) or (B, T) with (B, T) = {tuple(logprobs.shape)}, "
            f"got {tuple(advantages.shape)}."
        )
    adv = adv.detach()

    log_ratio = torch.where(on, logprobs - old_logprobs.detach(), 0.0)  # (B, T)
    ratio = log_ratio.exp()  # (B, T)
    pg_loss1 = -adv * ratio  # (B, T)
    pg_loss2 = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # (B, T)
    pg_tok = torch.maximum(pg_loss1, pg_loss2)  # (B, T)  = −min(ρA, clip(ρ)A)
    if is_weights is not None:
        pg_tok = pg_tok * is_weights.detach()  # (B, T)
    batch_m = m if batch_mask is None else batch_mask.to(logprobs.dtype)  # (B', T')
    pg_loss = aggregate(pg_tok, m, max_len, batch_m)  # ()
    loss = pg_loss

    kl_ref = None
    if ref_logprobs is not None:
        ref_diff = torch.where(on, ref_logprobs.detach() - logprobs, 0.0)  # (B, T)  ℓ_ref − ℓ
        kl_tok = k3(ref_diff)  # (B, T)
        kl_ref = aggregate(kl_tok, m, max_len, batch_m)  # ()
        loss = loss + kl_coef * kl_ref

    with torch.no_grad():
        n_tok = batch_m.sum().clamp(min=1.0)  # ()  the batch's tokens
        clipped = (pg_loss2 > pg_loss1) & on  # (B, T)
        diagnostics = {
            "loss": loss.item(),
            "pg_loss": pg_loss.item(),
            "clip_frac": (clipped.to(m.dtype).sum() / n_tok).item(),
            # TRL's split of the clipped tokens: below 1 − ε_low with A < 0, above 1 + ε_high with A > 0
            "clip_frac_low": (((ratio < 1.0 - eps_low) & (adv < 0) & on).to(m.dtype).sum() / n_tok).item(),
            "clip_frac_high": (((ratio > 1.0 + eps_high) & (adv > 0) & on).to(m.dtype).sum() / n_tok).item(),
            "approx_kl": (k3(log_ratio) * m).sum().div(n_tok).item(),
            "ratio_mean": (ratio * m).sum().div(n_tok).item(),
        }
        if kl_ref is not None:
            diagnostics["kl_ref"] = kl_ref.item()
        if is_weights is not None:
            diagnostics["tis_weight_mean"] = (is_weights * m).sum().div(n_tok).item()
    return loss, diagnostics

