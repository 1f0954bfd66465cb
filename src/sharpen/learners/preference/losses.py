"""Preference losses (DPO family) as pure functions returning `(loss, diagnostics)` (METHODS.md §3).

Shapes: P preference pairs. Every log-prob argument is a *summed sequence* log-probability
ℓ(y) = Σ_t log π(y_t | x, y_<t) of a whole completion, shape (P,):

    policy_chosen   ℓ_θ(y_w)      policy_rejected   ℓ_θ(y_l)
    ref_chosen      ℓ_ref(y_w)    ref_rejected      ℓ_ref(y_l)

Reference log-probs are treated as constants (detached). All losses share the log-ratio
difference

    h = (ℓ_θ(y_w) − ℓ_ref(y_w)) − (ℓ_θ(y_l) − ℓ_ref(y_l))                     (P,)

and reduce per-pair losses L_i by a weighted mean Σ_i w_i L_i / Σ_i w_i (plain mean when
`weights` is None). Per-pair weights carry ScPO's vote margins ("Self-Consistency Preference
Optimization", Prasad et al. 2024).

`batch_weights` (P',): when these P pairs are one micro-batch of a batch of P' pairs, the
weights of all the batch's pairs (ones for a loss without weights). The denominators are then
the batch's, Σ_j W_j and P', so the loss and every diagnostic are this micro-batch's share,
and summed over the micro-batches they are the batch's (gradient accumulation).

Diagnostics (detached floats, unweighted means over pairs):
- loss: the returned loss.
- chosen_reward / rejected_reward: mean implicit reward r(y) = β (ℓ_θ(y) − ℓ_ref(y)).
- reward_margin: mean of r(y_w) − r(y_l) = β h.
- reward_accuracy: fraction of pairs with a positive margin (β h > 0).
- log_ratio_diff: mean of h.
IRPO adds `dpo_loss` and `nll_loss` (its two terms, weighted means).

    loss_fn = get_preference_loss("dpo")
    loss, diagnostics = loss_fn(pc, pr, rc, rr, beta=0.1, weights=w)
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# helpers


def _check_pairs(who: str, beta: float, weights: Optional[Tensor], **logprobs: Tensor) -> None:
    """Raise a ValueError unless every log-prob tensor is (P,) with the same P, β > 0 and the
    weights are (P,), non-negative, with a positive sum."""
    if not beta > 0:
        raise ValueError(f"{who}: beta must be > 0, got {beta}.")
    shapes = {name: tuple(t.shape) for name, t in logprobs.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(s != first for s in shapes.values()):
        raise ValueError(
            f"{who}: the sequence log-probs must all be (P,) tensors of the same P (one summed "
            f"log-prob per pair), got {shapes}."
        )
    if weights is not None:
        if tuple(weights.shape) != first:
            raise ValueError(f"{who}: weights must be (P,) = {first}, got {tuple(weights.shape)}.")
        if bool((weights < 0).any()) or not float(weights.sum()) > 0:
            raise ValueError(
                f"{who}: weights must be >= 0 with a positive sum, got {weights.tolist()}."
            )


def _weighted_mean(values: Tensor, weights: Optional[Tensor], batch_weights: Optional[Tensor] = None) -> Tensor:
    """Σ_i w_i v_i / Σ_j W_j with W the batch's weights (default: `weights`; all ones when
    weights is None: the plain mean)."""
    w = torch.ones_like(values) if weights is None else weights.detach().to(values.dtype)  # (P,)
    total = w.sum() if batch_weights is None else batch_weights.detach().to(values.dtype).sum()
    return (w * values).sum() / total  # ()


def _log_ratios(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor
) -> tuple[Tensor, Tensor]:
    """(ℓ_θ(y_w) − ℓ_ref(y_w), ℓ_θ(y_l) − ℓ_ref(y_l)), each (P,), references detached."""
    chosen = policy_chosen - ref_chosen.detach()  # (P,)
    rejected = policy_rejected - ref_rejected.detach()  # (P,)
    return chosen, rejected


def _diagnostics(loss: Tensor, chosen: Tensor, rejected: Tensor, beta: float,
                 batch_weights: Optional[Tensor] = None) -> dict[str, float]:
    """Detached implicit-reward diagnostics from the two log-ratios (P,): means over the
    batch's pairs (P' = len(batch_weights), default P)."""
    pairs = chosen.shape[0] if batch_weights is None else batch_weights.shape[0]
    with torch.no_grad():
        chosen_reward = beta * chosen  # (P,)
        rejected_reward = beta * rejected  # (P,)
        margin = chosen_reward - rejected_reward  # (P,)  = β h
        return {
            "loss": loss.item(),
            "chosen_reward": chosen_reward.sum().item() / pairs,
            "rejected_reward": rejected_reward.sum().item() / pairs,
            "reward_margin": margin.sum().item() / pairs,
            "reward_accuracy": (margin > 0).float().sum().item() / pairs,
            "log_ratio_diff": (chosen - rejected).sum().item() / pairs,
        }


# ---------------------------------------------------------------------------------------------
# losses


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
    weights: Optional[Tensor] = None,
    chosen_lengths: Optional[Tensor] = None,
    batch_weights: Optional[Tensor] = None,
) -> tuple[Tensor, dict[str, float]]:
    """Direct Preference Optimization: L_i = −log σ(β h_i), L = Σ w_i L_i / Σ w_i.

    Rafailov et al. (2023) "Direct Preference Optimization: Your Language Model is Secretly a
    Reward Model", eq. 7, with h = (ℓ_θ(y_w) − ℓ_ref(y_w)) − (ℓ_θ(y_l) − ℓ_ref(y_l)) of summed
    sequence log-probs. −log σ is computed as −logsigmoid, stable for any |β h|.
    Gradient: ∂L/∂ℓ_θ(y_w,i) = −β σ(−β h_i) · w_i / Σ w. `chosen_lengths` is ignored (it is
    accepted so every entry of `PREFERENCE_LOSSES` takes the same arguments).
    """
    _check_pairs("dpo", beta, weights, policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                 ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    chosen, rejected = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)  # (P,) ×2
    h = chosen - rejected  # (P,)
    per_pair = -F.logsigmoid(beta * h)  # (P,)
    loss = _weighted_mean(per_pair, weights, batch_weights)  # ()
    return loss, _diagnostics(loss, chosen, rejected, beta, batch_weights)


def ipo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
    weights: Optional[Tensor] = None,
    chosen_lengths: Optional[Tensor] = None,
    batch_weights: Optional[Tensor] = None,
) -> tuple[Tensor, dict[str, float]]:
    """Identity Preference Optimization: L_i = (h_i − 1/(2β))², L = Σ w_i L_i / Σ w_i.

    Azar et al. (2023) "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", eq. 17 (their τ is our β): regress the log-ratio difference h onto the
    target 1/(2β) instead of pushing it to infinity. h uses *summed* sequence log-probs as in
    the paper (some libraries average per token instead; that is a different loss).
    Gradient: ∂L/∂ℓ_θ(y_w,i) = 2 (h_i − 1/(2β)) · w_i / Σ w. `chosen_lengths` is ignored.
    """
    _check_pairs("ipo", beta, weights, policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                 ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    chosen, rejected = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)  # (P,) ×2
    h = chosen - rejected  # (P,)
    per_pair = (h - 1.0 / (2.0 * beta)) ** 2  # (P,)
    loss = _weighted_mean(per_pair, weights, batch_weights)  # ()
    return loss, _diagnostics(loss, chosen, rejected, beta, batch_weights)


def irpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
    weights: Optional[Tensor] = None,
    chosen_lengths: Optional[Tensor] = None,
    alpha: float = 1.0,
    batch_weights: Optional[Tensor] = None,
) -> tuple[Tensor, dict[str, float]]:
    """Iterative Reasoning Preference Optimization: DPO plus a length-normalised NLL on y_w.

        L_i = −log σ(β h_i) + α · (−ℓ_θ(y_w,i)) / |y_w,i|,     L = Σ w_i L_i / Σ w_i

    Pang et al. (2024) "Iterative Reasoning Preference Optimization", eq. 1 (α = 1 in the
    paper); pairs are (correct, incorrect) completions of the model itself
    (`pairs.correctness_pairs`). `chosen_lengths` (P,) is |y_w|, the number of tokens summed
    in ℓ_θ(y_w), and is required.
    Gradient: ∂L/∂ℓ_θ(y_w,i) = (−β σ(−β h_i) − α/|y_w,i|) · w_i / Σ w.
    """
    if chosen_lengths is None:
        raise ValueError(
            "irpo: needs chosen_lengths, the token count |y_w| of each chosen completion (P,), "
            "to normalise the NLL term."
        )
    _check_pairs("irpo", beta, weights, policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                 ref_chosen=ref_chosen, ref_rejected=ref_rejected, chosen_lengths=chosen_lengths)
    if bool((chosen_lengths <= 0).any()):
        raise ValueError(f"irpo: chosen_lengths must all be >= 1 token, got {chosen_lengths.tolist()}.")
    chosen, rejected = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)  # (P,) ×2
    h = chosen - rejected  # (P,)
    dpo_term = -F.logsigmoid(beta * h)  # (P,)
    nll_term = -policy_chosen / chosen_lengths.to(policy_chosen.dtype)  # (P,)  NLL(y_w)/|y_w|
    per_pair = dpo_term + alpha * nll_term  # (P,)
    loss = _weighted_mean(per_pair, weights, batch_weights)  # ()
    diagnostics = _diagnostics(loss, chosen, rejected, beta, batch_weights)
    with torch.no_grad():
        diagnostics["dpo_loss"] = _weighted_mean(dpo_term, weights, batch_weights).item()
        diagnostics["nll_loss"] = _weighted_mean(nll_term, weights, batch_weights).item()
    return loss, diagnostics


PreferenceLoss = Callable[..., tuple[Tensor, dict[str, float]]]

PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "irpo": irpo_loss,
}
"""name → loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, weights,
chosen_lengths, batch_weights) -> (loss, diagnostics); all log-probs (P,) summed over each completion."""


def get_preference_loss(name: str) -> PreferenceLoss:
    """The preference loss registered under `name`; a ValueError lists the valid names."""
    try:
        return PREFERENCE_LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown preference loss {name!r}; choose one of: {', '.join(sorted(PREFERENCE_LOSSES))}."
        ) from None
