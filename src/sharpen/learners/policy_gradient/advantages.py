"""Group advantage estimators and sample weightings for policy gradient (METHODS.md §1).

Every function here is a pure function of tensors. Convention: `rewards` has shape (P, G),
P problems × G completions per problem (one *group* per row), and an estimator returns
advantages of the same shape (P, G), one scalar per completion, to be put on every token of
that completion by the loss (`losses.clipped_surrogate` accepts (B,) advantages).

Two registries, chosen by name from a config:
- `ADVANTAGE_ESTIMATORS`: rewards (P, G) -> advantages (P, G).
- `SAMPLE_WEIGHTINGS`: rewards (P, G) -> per-completion coefficients w (P, G), detached.
  A weighting never changes an estimator; the learner multiplies: `advantages * w`.

    estimator = get_advantage_estimator("grpo")
    weighting = get_sample_weighting("w_reinforce")
    advantages = estimator(rewards) * weighting(rewards)      # (P, G)

Every estimator takes `mask` (P, G), True where a completion is scorable: the others are left
out of every group statistic (means, stds, BNPO's fit) and get advantage 0, so an unscorable
completion is never trained as wrong (DESIGN.md rule 3). Weightings are elementwise and take
any shape.

A third registry, `TOKEN_ADVANTAGE_ESTIMATORS`, holds the estimators of step rewards on tokens
(span rewards, process rewards): step rewards (P, G, T) and where they sit (P, G, T) ->
advantages (P, G, T), one per token (`process_grpo`).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

Tensor = torch.Tensor

BNPO_MAX_WEIGHT = 1e6
"""Upper clamp of BNPO's weight 1/BetaPDF(p_q; α, β) (reference implementation's value)."""


# ---------------------------------------------------------------------------------------------
# helpers


def _check_groups(rewards: Tensor, who: str, min_group: int = 1) -> None:
    """Raise a ValueError unless `rewards` is a floating (P, G) tensor with G >= min_group."""
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2:
        shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise ValueError(
            f"{who}: rewards must be a (P, G) tensor (P problems × G completions), got {shape}; "
            "reshape a flat batch with rewards.view(P, G)."
        )
    if not rewards.is_floating_point():
        raise ValueError(f"{who}: rewards must be a float tensor, got {rewards.dtype}; use rewards.float().")
    if rewards.shape[1] < min_group:
        raise ValueError(
            f"{who}: needs at least {min_group} completions per group, got G={rewards.shape[1]}."
        )


def _check_range(rewards: Tensor, r_min: float, r_max: float, who: str) -> None:
    """Raise a ValueError unless r_min < r_max and every reward lies in [r_min, r_max] (up to
    float rounding of a weighted sum: 1e-6 of the range)."""
    if not r_max > r_min:
        raise ValueError(f"{who}: the reward range needs r_min < r_max, got r_min={r_min}, r_max={r_max}.")
    lo, hi = rewards.min().item(), rewards.max().item()
    slack = 1e-6 * (r_max - r_min)
    if lo < r_min - slack or hi > r_max + slack:
        raise ValueError(
            f"{who}: rewards span [{lo}, {hi}] but the declared range is [{r_min}, {r_max}]; "
            "pass the reward's true range as r_min / r_max."
        )


def _kept(rewards: Tensor, mask: Optional[Tensor], who: str) -> Tensor:
    """`mask` as 1.0 (scorable) / 0.0 (left out), like `rewards`; all ones when None."""
    if mask is None:
        return torch.ones_like(rewards)
    if mask.shape != rewards.shape:
        raise ValueError(f"{who}: mask {tuple(mask.shape)} must have the shape of rewards {tuple(rewards.shape)}.")
    return mask.to(rewards.dtype)


def _group_mean(rewards: Tensor, kept: Tensor) -> Tensor:
    """(P, 1) mean of each group over its kept completions (0 for a group with none)."""
    return (rewards * kept).sum(dim=1, keepdim=True) / kept.sum(dim=1, keepdim=True).clamp(min=1)


def signed_rewards(rewards: Tensor, r_min: float = 0.0, r_max: float = 1.0) -> Tensor:
    """Map rewards from [r_min, r_max] onto [−1, +1]: s = 2(r − r_min)/(r_max − r_min) − 1.

    For binary rewards r ∈ {0, 1} (the defaults) this is s = 2r − 1 ∈ {−1, +1}, the reward of
    "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning". A completion is
    *positive* when s ≥ 0 and *negative* when s < 0 (TOPR's split R ≥ 0 / R < 0); for binary
    rewards: positive ⇔ correct (r = 1), negative ⇔ wrong (r = 0).
    """
    _check_range(rewards, r_min, r_max, "signed_rewards")
    return (2.0 * (rewards - r_min) / (r_max - r_min) - 1.0).clamp(-1.0, 1.0)  # (P, G)


# ---------------------------------------------------------------------------------------------
# estimators: rewards (P, G) -> advantages (P, G)


def reinforce_advantages(rewards: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """REINFORCE with the group-mean baseline: A_i = r_i − mean(r).

    Williams (1992), "Simple statistical gradient-following algorithms…", with the mean reward
    of the group as baseline (the mean over the kept completions).
    """
    _check_groups(rewards, "reinforce")
    kept = _kept(rewards, mask, "reinforce")  # (P, G)
    return (rewards - _group_mean(rewards, kept)) * kept  # (P, G)


def rloo_advantages(rewards: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """RLOO, leave-one-out baseline: A_i = r_i − (1/(n−1)) Σ_{j≠i} r_j over the n kept completions.

    Kool et al. (2019) "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian et al.
    (2024) "Back to Basics: Revisiting REINFORCE Style Optimization…". Needs G ≥ 2; a group
    with fewer than 2 kept completions gets A = 0. Equivalent to n/(n−1) · (r_i − mean(r)).
    """
    _check_groups(rewards, "rloo", min_group=MIN_GROUP_SIZE["rloo"])
    kept = _kept(rewards, mask, "rloo")  # (P, G)
    n = kept.sum(dim=1, keepdim=True)  # (P, 1)
    others = (rewards * kept).sum(dim=1, keepdim=True) - rewards  # (P, G)  Σ_{j≠i} r_j
    return (rewards - others / (n - 1).clamp(min=1)) * kept * (n >= 2)  # (P, G)


def grpo_advantages(rewards: Tensor, eps: float = 1e-4, unbiased: bool = True,
                    mask: Optional[Tensor] = None) -> Tensor:
    """GRPO: A_i = (r_i − mean(r)) / (std(r) + ε).

    Shao et al. (2024) "DeepSeekMath…" (Group Relative Policy Optimization).

    Which std: by default the *sample* standard deviation, with Bessel's correction
    std = sqrt(Σ (r_i − mean)² / (G − 1)) (`unbiased=True`). The paper only writes "std";
    TRL's GRPOTrainer and verl compute `torch.std` (unbiased), and we match them so that
    advantages agree with the implementations results are compared against. `unbiased=False`
    uses the population std (divide by G), which is the one for which BNPO with α = β = 3/2 is
    exactly π/8 × GRPO on binary rewards; the two differ by the constant sqrt(G/(G−1)).
    The sample std needs G ≥ 2. ε = 1e-4 as in TRL; all-equal groups get A = 0. Mean and std
    are over the kept completions; a group with a single kept one gets A = 0.
    """
    _check_groups(rewards, "grpo", min_group=MIN_GROUP_SIZE["grpo"] if unbiased else 1)
    kept = _kept(rewards, mask, "grpo")  # (P, G)
    n = kept.sum(dim=1, keepdim=True)  # (P, 1)
    centred = (rewards - _group_mean(rewards, kept)) * kept  # (P, G)
    var = (centred**2).sum(dim=1, keepdim=True) / (n - (1 if unbiased else 0)).clamp(min=1)  # (P, 1)
    return centred / (var.sqrt() + eps)  # (P, G)


def dr_grpo_advantages(rewards: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Dr. GRPO: A_i = r_i − mean(r), no division by the group std.

    Liu et al. (2025) "Understanding R1-Zero-Like Training: A Critical Perspective". The other
    half of Dr. GRPO is in the loss: token terms are summed and divided by a constant
    (the maximum completion length), not by each completion's length — use
    `losses.clipped_surrogate(..., aggregation="constant", max_len=...)`.
    """
    _check_groups(rewards, "dr_grpo")
    kept = _kept(rewards, mask, "dr_grpo")  # (P, G)
    return (rewards - _group_mean(rewards, kept)) * kept  # (P, G)


def signed_reward_advantages(rewards: Tensor, r_min: float = 0.0, r_max: float = 1.0,
                             mask: Optional[Tensor] = None) -> Tensor:
    """No baseline, the reward mapped to [−1, +1]: A_i = 2(r_i − r_min)/(r_max − r_min) − 1.

    The objective of "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning"
    (rewards ±1, no baseline): with the `psr` / `nsr` / `w_reinforce` weightings this is exactly
    the paper's PSR / NSR / W-REINFORCE. For r ∈ {0, 1}: A = 2r − 1.
    """
    _check_groups(rewards, "signed")
    kept = _kept(rewards, mask, "signed")  # (P, G)
    filled = torch.where(kept > 0, rewards, torch.full_like(rewards, r_min))  # left-out entries: any in-range value
    return signed_rewards(filled, r_min, r_max) * kept  # (P, G)


def beta_pdf(x: Tensor, alpha: float | Tensor, beta: float | Tensor) -> Tensor:
    """Density of Beta(α, β) at x ∈ [0, 1], computed in log space with lgamma.

    BetaPDF(x; α, β) = x^(α−1) (1−x)^(β−1) / B(α, β),
    log B(α, β) = lnΓ(α) + lnΓ(β) − lnΓ(α+β).
    `xlogy` makes 0 · log 0 = 0, so x = 0 with α = 1 (or x = 1 with β = 1) is finite.
    """
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)  # ()
    beta = torch.as_tensor(beta, dtype=x.dtype, device=x.device)  # ()
    log_norm = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)  # ()
    log_pdf = torch.xlogy(alpha - 1, x) + torch.xlogy(beta - 1, 1 - x) - log_norm  # like x
    return log_pdf.exp()  # like x


def _bnpo_group_means(rewards: Tensor, r_min: float, r_max: float, who: str,
                      mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """BNPO steps 1–2 over the kept completions: rescale rewards to [0, 1] and take p_q, in
    float64. Returns (r01 (P, G), p (P,), kept (P, G) as 0/1)."""
    _check_groups(rewards, who)
    kept = _kept(rewards.double(), mask, who)  # (P, G)
    filled = torch.where(kept > 0, rewards.double(), torch.full_like(kept, r_min))  # (P, G)
    _check_range(filled, r_min, r_max, who)
    r01 = ((filled - r_min) / (r_max - r_min)).clamp(0.0, 1.0)  # (P, G) in [0, 1]
    if r01.shape[1] == 1:  # reference implementation: p_q = 0 for a single-completion group
        p = torch.zeros_like(r01[:, 0])  # (P,)
    else:
        p = _group_mean(r01, kept)[:, 0].clamp(0.0, 1.0)  # (P,)
    return r01, p, kept


def bnpo_beta_parameters(group_means: Tensor) -> tuple[Tensor, Tensor]:
    """BNPO steps 3–4: α, β fitted to the batch's per-problem success rates p (P,).

    1. μ = mean(p), σ² = var(p) with Bessel's correction; with one problem (P = 1), μ = 0, σ² = 1.
    2. k = μ(1−μ)/σ² − 1;  a = k·μ;  b = k·(1−μ)   (method-of-moments Beta fit)
    3. α = max(1 + a/3, 1);  β = max(1 + b/3, 1)
    Xiao et al. (2025) "BNPO: Beta Normalization Policy Optimization"; reference implementation
    changyi7231/BNPO, `recipe/bnpo/src/bnpo_ray_trainer.py`.

    σ² = 0 (every problem has the same p, P ≥ 2; taken as σ² ≤ 1e-12): the fit is undefined
    (μ(1−μ)/0 is +∞, or 0/0 = NaN when μ ∈ {0, 1}). The formula's limit α, β → ∞ would put all
    Beta mass at μ and every weight 1/BetaPDF(μ) at 0, silently switching learning off for a batch
    whose problems happen to share one success rate. We return α = β = 1 instead — the
    uninformative fit, which makes BNPO the REINFORCE baseline p_q for that batch — and never NaN.
    Returned as 0-dim float64 tensors (log them as a learner diagnostic).
    """
    p = group_means.double()  # (P,)
    one = torch.ones((), dtype=torch.float64, device=p.device)
    if p.numel() > 1:
        mu, var = p.mean(), p.var(correction=1)  # (), ()
    else:
        mu, var = torch.zeros_like(one), one.clone()
    if var.item() <= 1e-12:
        return one.clone(), one.clone()
    k = mu * (1 - mu) / var - 1  # ()
    a, b = k * mu, k * (1 - mu)  # (), ()
    alpha = torch.clamp(1 + a / 3, min=1.0)  # ()
    beta = torch.clamp(1 + b / 3, min=1.0)  # ()
    return alpha, beta


def bnpo_with_params(
    rewards: Tensor,
    alpha: float | Tensor,
    beta: float | Tensor,
    r_min: float = 0.0,
    r_max: float = 1.0,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """BNPO advantage with fixed Beta parameters (steps 1, 2 and 5 of METHODS.md §1).

    r ← (r − r_min)/(r_max − r_min);  p_q = mean of the group (0 if G = 1);
    A_i = (r_i − p_q) · clamp(1 / BetaPDF(p_q; α, β), 0, 1e6).
    α = β = 1: BetaPDF ≡ 1, so A = r − p_q (REINFORCE with baseline, on rescaled rewards).
    α = β = 3/2: 1/BetaPDF(p) = (π/8)/sqrt(p(1−p)); for binary rewards sqrt(p(1−p)) is the group's
    population std, so A = (π/8) · GRPO(population std, ε = 0).
    Xiao et al. (2025) "BNPO: Beta Normalization Policy Optimization".
    """
    r01, p, kept = _bnpo_group_means(rewards, r_min, r_max, "bnpo", mask)  # (P, G), (P,), (P, G)
    weight = torch.clamp(1.0 / beta_pdf(p, alpha, beta), 0.0, BNPO_MAX_WEIGHT)  # (P,)
    advantages = (r01 - p[:, None]) * weight[:, None] * kept  # (P, G)
    return advantages.to(rewards.dtype)


def bnpo_advantages(rewards: Tensor, r_min: float = 0.0, r_max: float = 1.0,
                    mask: Optional[Tensor] = None) -> Tensor:
    """BNPO with α, β fitted to the batch (the full METHODS.md §1 recipe).

    1. r ← (r − r_min)/(r_max − r_min), with the reward's known range (not the batch's).
    2. p_q = mean of problem q's group (0 if G = 1).
    3.–4. α, β from μ, σ² of p over the batch: see `bnpo_beta_parameters` (σ² = 0 → α = β = 1).
    5. A_i = (r_i − p_q) · clamp(1 / BetaPDF(p_q; α, β), 0, 1e6), the same on every token.
    With `mask`, p_q is over the kept completions and the fit over the groups that keep any.
    Xiao et al. (2025) "BNPO: Beta Normalization Policy Optimization".
    """
    _, p, kept = _bnpo_group_means(rewards, r_min, r_max, "bnpo", mask)  # (P,), (P, G)
    alpha, beta = bnpo_beta_parameters(p[kept.sum(dim=1) > 0])  # (), ()
    return bnpo_with_params(rewards, alpha, beta, r_min, r_max, mask)  # (P, G)


def bnpo_decomposed(
    component_rewards: Tensor,
    ranges: Sequence[tuple[float, float]],
    weights: Optional[Sequence[float]] = None,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """BNPO advantage decomposition: A = Σ_c w_c · BNPO(r^(c)) / Σ_c |w_c|, each component
    rescaled by its own known range and with its own batch-fitted α_c, β_c.

    component_rewards (C, P, G): C reward components (e.g. correctness and format), unweighted;
    ranges: C pairs (r_min, r_max), each component's own range; weights: the C reward weights
    (default all 1: the plain mean (1/C) Σ_c of METHODS.md §1). Rescaling to [0, 1] erases a
    weight's size and sign, so the weight multiplies the component's advantage instead: a
    component of weight 0.2 counts a fifth of one of weight 1.0, and a negative weight (a
    penalty) pushes its component's high scores down. Returns (P, G).
    Xiao et al. (2025) "BNPO", §advantage decomposition.
    """
    if component_rewards.dim() != 3:
        raise ValueError(
            "bnpo_decomposed: component_rewards must be (C, P, G) "
            f"(components × problems × completions), got {tuple(component_rewards.shape)}."
        )
    C = component_rewards.shape[0]
    if len(ranges) != C:
        raise ValueError(
            f"bnpo_decomposed: got {C} reward components but {len(ranges)} ranges; "
            "give one (r_min, r_max) per component."
        )
    w = torch.ones(C, dtype=torch.float64) if weights is None else torch.tensor(list(weights), dtype=torch.float64)
    if w.shape != (C,) or not bool((w != 0).all()):
        raise ValueError(
            f"bnpo_decomposed: need one non-zero weight per component ({C}), got {list(w.tolist())}; "
            "leave weight-0 components out (they are logged, never summed)."
        )
    per_component = torch.stack(
        [bnpo_advantages(component_rewards[c], lo, hi, mask) for c, (lo, hi) in enumerate(ranges)]
    ).double()  # (C, P, G)
    combined = (w[:, None, None] * per_component).sum(dim=0) / w.abs().sum()  # (P, G)
    return combined.to(component_rewards.dtype)


def process_grpo_advantages(rewards: Tensor, steps: Tensor, eps: float = 1e-4, unbiased: bool = True,
                            mask: Optional[Tensor] = None, outcomes: Optional[Tensor] = None,
                            lengths: Optional[Tensor] = None) -> Tensor:
    """Process-supervised GRPO: step rewards normalised over the group, summed from each token on.

    Shao et al. (2024) "DeepSeekMath…" §4.1.3: with step rewards r_i^(j) at token positions
    index(j) of completion i and R all step rewards of the group,
        r̃ = (r − mean(R)) / (std(R) + ε),     Â_{i,t} = Σ_{j : index(j) ≥ t} r̃_i^(j).
    rewards (P, G, T): the step reward on each token (0 elsewhere); steps (P, G, T) bool: where
    a step reward sits (a step may be worth 0). std is the sample std over the group's steps
    (`unbiased`) and ε = 1e-4, as in `grpo_advantages`: with one step per completion on its last
    token this *is* GRPO's advantage on every token. A token after a completion's last step gets
    0 (no reward follows it). Unscorable completions (`mask` (P, G) False) are left out of R and
    get 0; a group with fewer than two kept steps gets 0.

    `outcomes` (P, G), with `lengths` (P, G) the completions' tokens: a sequence-level reward on
    each completion's last token, a second kind of step. Each kind is centred on its own group
    mean and both are scaled by one std over all the centred values, so the weights between them
    hold and neither's mean moves the other's: pooled into R, an outcome that is large and the same
    for most completions (a format reward) raises mean(R), every other step then counts below the
    mean, and each one more costs its completion advantage: a length penalty. The outcome's r̃
    is on every token of its completion. Without steps this is GRPO on the outcomes.
    """
    if rewards.dim() != 3 or steps.shape != rewards.shape:
        raise ValueError(
            f"process_grpo: rewards and steps must both be (P, G, T) (problems × completions × tokens), got "
            f"{tuple(rewards.shape)} and {tuple(steps.shape)}; place span rewards on tokens first "
            "(learners.policy_gradient.token_rewards)."
        )
    if not rewards.is_floating_point():
        raise ValueError(f"process_grpo: rewards must be a float tensor, got {rewards.dtype}; use rewards.float().")
    if (outcomes is None) != (lengths is None) or (
            outcomes is not None and not outcomes.shape == lengths.shape == rewards.shape[:2]):
        raise ValueError("process_grpo: outcomes and lengths go together, each (P, G) (problems × completions)")
    keep = _kept(rewards.sum(-1), mask, "process_grpo")  # (P, G)
    kept = keep[..., None] * steps.to(rewards.dtype)  # (P, G, T)
    n = kept.sum(dim=(1, 2), keepdim=True)  # (P, 1, 1) steps per group
    mean = (rewards * kept).sum(dim=(1, 2), keepdim=True) / n.clamp(min=1)  # (P, 1, 1)
    centred = (rewards - mean) * kept  # (P, G, T)
    squares = (centred**2).sum(dim=(1, 2), keepdim=True)  # (P, 1, 1)
    if outcomes is not None:
        outcomes = outcomes.to(rewards.dtype)
        centred_outcome = ((outcomes - _group_mean(outcomes, keep)) * keep)[..., None]  # (P, G, 1)
        n = n + keep.sum(dim=1)[:, None, None]
        squares = squares + (centred_outcome**2).sum(dim=(1, 2), keepdim=True)
    var = squares / (n - (1 if unbiased else 0)).clamp(min=1)  # (P, 1, 1)
    scale = (n >= 2) / (var.sqrt() + eps)  # (P, 1, 1)
    advantages = (centred * scale).flip(-1).cumsum(-1).flip(-1)  # (P, G, T)  Σ over steps at positions ≥ t
    if outcomes is not None:
        on_tokens = torch.arange(rewards.shape[-1]) < lengths[..., None]  # (P, G, T)
        advantages = advantages + centred_outcome * scale * on_tokens
    return advantages


AdvantageEstimator = Callable[..., Tensor]

ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "reinforce": reinforce_advantages,
    "rloo": rloo_advantages,
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "bnpo": bnpo_advantages,
    "signed": signed_reward_advantages,
}
"""name → estimator(rewards (P, G), mask=None, **options) -> advantages (P, G). An estimator
whose signature has `r_min`, `r_max` rescales by the reward's known range (bnpo, signed); the
learner passes the range to exactly those (`learners.base.accepted_options`)."""

DECOMPOSED_ESTIMATORS: dict[str, Callable[..., Tensor]] = {
    "bnpo": bnpo_decomposed,
}
"""name → its per-component form(component rewards (C, P, G), ranges, weights, mask) ->
advantages (P, G), used instead of the estimator when a reward has several weighted
components (`decompose`)."""

TOKEN_ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "process_grpo": process_grpo_advantages,
}
"""name → estimator(rewards (P, G, T), steps (P, G, T), mask=None, outcomes=None, lengths=None) ->
advantages (P, G, T): for rewards on tokens (span rewards: `Reward` → `RewardResult.spans` and
`.outcomes` → `token_rewards.StepRewards`)."""

MIN_GROUP_SIZE: dict[str, int] = {"rloo": 2, "grpo": 2}
"""name → the fewest completions per group the estimator needs (1 where absent): a
leave-one-out baseline and an unbiased standard deviation need two."""


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered under `name`; a ValueError lists the valid names."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; choose one of: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}."
        ) from None


def get_token_advantage_estimator(name: str) -> AdvantageEstimator:
    """The token-level estimator registered under `name`; a ValueError lists every estimator."""
    try:
        return TOKEN_ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        every = sorted(ADVANTAGE_ESTIMATORS) + sorted(TOKEN_ADVANTAGE_ESTIMATORS)
        raise ValueError(f"unknown advantage estimator {name!r}; choose one of: {', '.join(every)}.") from None


# ---------------------------------------------------------------------------------------------
# sample weightings: rewards (P, G) -> coefficients w (P, G), detached
#
# Design: a weighting returns per-completion coefficients w ≥ 0 and never sees the advantages;
# the learner uses A' = w · A with any estimator. "Positive" / "negative" are decided on the
# signed reward s = 2(r − r_min)/(r_max − r_min) − 1 (s = 2r − 1 for r ∈ {0, 1}): positive ⇔
# s ≥ 0, negative ⇔ s < 0 (see `signed_rewards`), so every completion is exactly one of the two
# and psr + nsr = 1 everywhere. The papers' exact objectives are these weightings on the
# `signed` estimator (A = s, no baseline); on a baseline estimator (reinforce, grpo, …) they
# select the same completions, whose advantage then carries the baseline.
# Every weighting takes the same keywords, so a learner can call any of them the same way
# (`none` ignores them, so that it needs no reward range). They are elementwise: `rewards` and
# the log-probs may have any shape, (P, G) or the (B,) completions of a minibatch.


def no_weighting(rewards: Tensor, **ignored: object) -> Tensor:
    """w = 1 for every completion (plain estimator); needs no range and reads no log-probs."""
    return torch.ones_like(rewards)  # (P, G)


def psr_weights(
    rewards: Tensor,
    *,
    policy_logprobs: Optional[Tensor] = None,
    behaviour_logprobs: Optional[Tensor] = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
) -> Tensor:
    """Positive Sample Reinforcement: w = 1[s ≥ 0] (keep only positive-reward terms).

    Zhu et al. (2025) "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning":
    L_PSR = −E[Σ_{y: r=+1} log π(y)]. Log-prob arguments are ignored.
    """
    s = signed_rewards(rewards, r_min, r_max)  # (P, G)
    return (s >= 0).to(rewards.dtype)  # (P, G)


def nsr_weights(
    rewards: Tensor,
    *,
    policy_logprobs: Optional[Tensor] = None,
    behaviour_logprobs: Optional[Tensor] = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
) -> Tensor:
    """Negative Sample Reinforcement: w = 1[s < 0] (keep only negative-reward terms).

    Zhu et al. (2025) "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning":
    L_NSR = −E[Σ_{y: r=−1} −log π(y)]. Log-prob arguments are ignored.
    """
    s = signed_rewards(rewards, r_min, r_max)  # (P, G)
    return (s < 0).to(rewards.dtype)  # (P, G)


def w_reinforce_weights(
    rewards: Tensor,
    *,
    policy_logprobs: Optional[Tensor] = None,
    behaviour_logprobs: Optional[Tensor] = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
    lam: float = 0.1,
) -> Tensor:
    """Weighted REINFORCE: w = λ·1[s ≥ 0] + 1[s < 0], i.e. λ·PSR + NSR, λ = 0.1 by default.

    Zhu et al. (2025) "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning":
    L_W-REINFORCE = λ·L_PSR + L_NSR. Log-prob arguments are ignored.
    """
    s = signed_rewards(rewards, r_min, r_max)  # (P, G)
    return torch.where(s >= 0, lam, 1.0).to(rewards.dtype)  # (P, G)


def topr_weights(
    rewards: Tensor,
    *,
    policy_logprobs: Optional[Tensor] = None,
    behaviour_logprobs: Optional[Tensor] = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
) -> Tensor:
    """Tapered Off-Policy REINFORCE: w = 1 if s ≥ 0, else clamp(π(y)/μ(y), 0, 1), detached.

    Le Roux et al. (2025) "Tapered Off-Policy REINFORCE": ∇J = Σ_{R≥0} μ(y) R ∇log π(y)
    + Σ_{R<0} μ(y) [π(y)/μ(y)]_0^1 R ∇log π(y); no KL term. `policy_logprobs` and
    `behaviour_logprobs` are *sequence* log-probs log π(y) and log μ(y), shaped like `rewards`
    (sum the token log-probs over each completion). The ratio is computed as exp(min(ℓ_π − ℓ_μ, 0)),
    which equals the clamp and cannot overflow.
    """
    if policy_logprobs is None or behaviour_logprobs is None:
        raise ValueError(
            "topr: needs policy_logprobs and behaviour_logprobs, the sequence log-probs log π(y) "
            "and log μ(y) shaped like rewards (sum of token log-probs over each completion)."
        )
    if policy_logprobs.shape != rewards.shape or behaviour_logprobs.shape != rewards.shape:
        raise ValueError(
            f"topr: rewards {tuple(rewards.shape)}, policy_logprobs {tuple(policy_logprobs.shape)} "
            f"and behaviour_logprobs {tuple(behaviour_logprobs.shape)} must have the same shape."
        )
    s = signed_rewards(rewards, r_min, r_max)  # (P, G)
    log_ratio = (policy_logprobs - behaviour_logprobs).detach()  # (P, G)
    tapered = log_ratio.clamp(max=0.0).exp()  # (P, G)  = clamp(π/μ, 0, 1)
    return torch.where(s >= 0, torch.ones_like(tapered), tapered).to(rewards.dtype)  # (P, G)


SampleWeighting = Callable[..., Tensor]

SAMPLE_WEIGHTINGS: dict[str, SampleWeighting] = {
    "none": no_weighting,
    "psr": psr_weights,
    "nsr": nsr_weights,
    "w_reinforce": w_reinforce_weights,
    "topr": topr_weights,
}
"""name → weighting(rewards (P, G), *, policy_logprobs, behaviour_logprobs, r_min, r_max)
-> coefficients (P, G); multiply them into the advantages."""


def get_sample_weighting(name: str) -> SampleWeighting:
    """The sample weighting registered under `name`; a ValueError lists the valid names."""
    try:
        return SAMPLE_WEIGHTINGS[name]
    except KeyError:
        raise ValueError(
            f"unknown sample weighting {name!r}; choose one of: {', '.join(sorted(SAMPLE_WEIGHTINGS))}."
        ) from None
