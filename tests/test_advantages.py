"""Hand-computed checks of the advantage estimators and sample weightings (METHODS.md §1)."""

from __future__ import annotations

import math

import pytest
import torch

from sharpen.learners.policy_gradient.advantages import (
    ADVANTAGE_ESTIMATORS,
    SAMPLE_WEIGHTINGS,
    beta_pdf,
    bnpo_advantages,
    bnpo_beta_parameters,
    bnpo_decomposed,
    bnpo_with_params,
    dr_grpo_advantages,
    get_advantage_estimator,
    get_sample_weighting,
    grpo_advantages,
    nsr_weights,
    psr_weights,
    reinforce_advantages,
    rloo_advantages,
    signed_reward_advantages,
    signed_rewards,
    topr_weights,
    w_reinforce_weights,
)


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def close(a: torch.Tensor, b, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b if isinstance(b, torch.Tensor) else t(b), atol=atol, rtol=1e-5)


# one problem per difficulty: p = 1/4, 1/2, 3/4 (G = 4)
STAIRS = t([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]])


def random_binary(P: int = 6, G: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs = torch.linspace(0.1, 0.9, P)[:, None].expand(P, G)
    return torch.bernoulli(probs, generator=g)


# --------------------------------------------------------------------------- simple estimators


def test_reinforce_subtracts_the_group_mean():
    r = t([[1, 0, 0, 1], [0.5, 0.0, 1.0, 0.5]])
    # both means are 0.5: row 0 → ±0.5; row 1 → (0, −0.5, 0.5, 0)
    close(reinforce_advantages(r), [[0.5, -0.5, -0.5, 0.5], [0.0, -0.5, 0.5, 0.0]])


def test_dr_grpo_is_the_centred_reward():
    r = t([[1, 0, 0, 0]])
    # mean 0.25 → (0.75, −0.25, −0.25, −0.25); no std division
    close(dr_grpo_advantages(r), [[0.75, -0.25, -0.25, -0.25]])


def test_rloo_leave_one_out_baseline():
    r = t([[1, 0, 0, 0], [2, 0, 1, 1]])
    # row 0: A_0 = 1 − (0+0+0)/3 = 1;  A_j = 0 − (1+0+0)/3 = −1/3
    # row 1: A_0 = 2 − (0+1+1)/3 = 4/3; A_1 = 0 − 4/3 = −4/3; A_2 = A_3 = 1 − 3/3 = 0
    close(rloo_advantages(r), [[1, -1 / 3, -1 / 3, -1 / 3], [4 / 3, -4 / 3, 0, 0]])
    # identity: RLOO = G/(G−1) · (r − mean)
    close(rloo_advantages(r), 4 / 3 * reinforce_advantages(r))


def test_rloo_needs_two_completions():
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(t([[1.0], [0.0]]))


def test_grpo_sample_std_by_default():
    r = t([[1, 0, 0, 0], [1, 1, 1, 1]])
    # row 0: mean 0.25, squared deviations 0.5625 + 3·0.0625 = 0.75
    #   sample std = sqrt(0.75/3) = 0.5 → A = (0.75/0.5, −0.25/0.5) = (1.5, −0.5)
    # row 1: all equal → 0 / (0 + ε) = 0
    close(grpo_advantages(r, eps=0.0)[0], [1.5, -0.5, -0.5, -0.5])
    close(grpo_advantages(r)[1], [0.0, 0.0, 0.0, 0.0])
    # default ε = 1e-4: 0.75 / 0.5001
    close(grpo_advantages(r)[0, 0], t(0.75 / 0.5001))


def test_grpo_population_std_option():
    r = t([[1, 0, 0, 0]])
    # population std = sqrt(0.75/4) = sqrt(3)/4 → A_0 = 0.75·4/sqrt(3) = sqrt(3), A_j = −1/sqrt(3)
    s3 = math.sqrt(3)
    close(grpo_advantages(r, eps=0.0, unbiased=False), [[s3, -1 / s3, -1 / s3, -1 / s3]])


def test_grpo_sample_std_needs_two_completions():
    with pytest.raises(ValueError, match="at least 2"):
        grpo_advantages(t([[1.0]]))
    close(grpo_advantages(t([[1.0]]), unbiased=False), [[0.0]])


def test_signed_estimator_maps_binary_rewards_to_plus_minus_one():
    close(signed_reward_advantages(t([[1, 0, 1]])), [[1, -1, 1]])  # 2r − 1
    close(signed_reward_advantages(t([[2, 0, 1]]), r_min=0, r_max=2), [[1, -1, 0]])


def test_estimators_reject_flat_rewards_and_wrong_dtype():
    with pytest.raises(ValueError, match=r"\(P, G\)"):
        reinforce_advantages(t([1, 0, 1]))
    with pytest.raises(ValueError, match="float"):
        reinforce_advantages(torch.tensor([[1, 0]]))


def test_registry_lookup_and_clear_error():
    assert set(ADVANTAGE_ESTIMATORS) >= {"reinforce", "rloo", "grpo", "dr_grpo", "bnpo"}
    assert get_advantage_estimator("rloo") is rloo_advantages
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'.*bnpo.*grpo"):
        get_advantage_estimator("ppo")


# --------------------------------------------------------------------------- BNPO


def test_beta_pdf_closed_forms():
    x = t([0.0, 0.1, 0.5, 0.9, 1.0])
    close(beta_pdf(x, 1.0, 1.0), [1, 1, 1, 1, 1])  # uniform, finite at the ends
    close(beta_pdf(x, 2.0, 1.0), 2 * x)  # Beta(2,1) = 2x
    close(beta_pdf(x, 2.0, 3.0), 12 * x * (1 - x) ** 2)  # 1/B(2,3) = Γ(5)/(Γ(2)Γ(3)) = 24/2 = 12
    # Beta(3/2, 3/2): B = Γ(3/2)²/Γ(3) = (√π/2)²/2 = π/8 → pdf = (8/π)·sqrt(x(1−x))
    close(beta_pdf(x, 1.5, 1.5), 8 / math.pi * torch.sqrt(x * (1 - x)))


def test_bnpo_beta_parameters_from_batch_statistics():
    # p = (1/4, 1/2, 3/4): μ = 1/2, σ² = (1/16 + 0 + 1/16)/2 = 1/16
    # k = μ(1−μ)/σ² − 1 = (1/4)/(1/16) − 1 = 3; a = b = 3·1/2 = 3/2; α = β = 1 + (3/2)/3 = 3/2
    alpha, beta = bnpo_beta_parameters(t([0.25, 0.5, 0.75]))
    assert alpha.item() == pytest.approx(1.5) and beta.item() == pytest.approx(1.5)
    # p = (0, 1/2): μ = 1/4, σ² = (1/16 + 1/16)/1 = 1/8; k = (3/16)/(1/8) − 1 = 1/2
    # a = 1/2·1/4 = 1/8 → α = 1 + 1/24 = 25/24; b = 1/2·3/4 = 3/8 → β = 1 + 1/8 = 9/8
    alpha, beta = bnpo_beta_parameters(t([0.0, 0.5]))
    assert alpha.item() == pytest.approx(25 / 24) and beta.item() == pytest.approx(9 / 8)
    # large spread: p = (0, 1, 1/2): μ = 1/2, σ² = (1/4+1/4+0)/2 = 1/4 → k = 0 → α = β = 1
    alpha, beta = bnpo_beta_parameters(t([0.0, 1.0, 0.5]))
    assert (alpha.item(), beta.item()) == (1.0, 1.0)
    # one problem: μ = 0, σ² = 1 → k = −1; a = 0, b = −1 → α = 1, β = max(1 − 1/3, 1) = 1
    alpha, beta = bnpo_beta_parameters(t([0.3]))
    assert (alpha.item(), beta.item()) == (1.0, 1.0)


def test_bnpo_batch_path_hand_values_at_three_halves():
    # α = β = 3/2 (previous test) → weight 1/pdf(p) = (π/8)/sqrt(p(1−p))
    #   p = 1/4 or 3/4: sqrt(3/16) = √3/4 → weight π/(2√3) ≈ 0.9069
    #   p = 1/2:        sqrt(1/4) = 1/2  → weight π/4       ≈ 0.7854
    w14, w12 = math.pi / (2 * math.sqrt(3)), math.pi / 4
    expected = [
        [0.75 * w14, -0.25 * w14, -0.25 * w14, -0.25 * w14],
        [0.5 * w12, 0.5 * w12, -0.5 * w12, -0.5 * w12],
        [0.25 * w14, 0.25 * w14, 0.25 * w14, -0.75 * w14],
    ]
    close(bnpo_advantages(STAIRS), expected)


def test_bnpo_batch_path_equals_reinforce_when_stats_give_alpha_beta_one():
    r = t([[0, 0], [1, 1], [0, 1]])  # p = (0, 1, 1/2) → α = β = 1 → A = r − p_q
    close(bnpo_advantages(r), [[0, 0], [0, 0], [-0.5, 0.5]])
    # one-problem batch → α = β = 1: A = r − 1/3
    close(bnpo_advantages(t([[1, 0, 0]])), [[2 / 3, -1 / 3, -1 / 3]])


def test_bnpo_batch_path_asymmetric_parameters():
    r = t([[0, 0], [0, 1]])  # p = (0, 1/2) → α = 25/24, β = 9/8 (see above)
    a, b = 25 / 24, 9 / 8
    B = math.gamma(a) * math.gamma(b) / math.gamma(a + b)
    pdf_half = 0.5 ** (a - 1) * 0.5 ** (b - 1) / B
    # row 0: p = 0 → pdf(0) = 0 (α > 1) → weight clamped to 1e6, but r − p = 0 → A = 0, no NaN
    # row 1: A = ±0.5 / pdf(1/2)
    close(bnpo_advantages(r), [[0, 0], [-0.5 / pdf_half, 0.5 / pdf_half]])


def test_bnpo_zero_variance_falls_back_to_alpha_beta_one():
    # p = (1/2, 1/2): σ² = 0 → documented fallback α = β = 1 → A = r − 1/2
    close(bnpo_advantages(t([[1, 0], [0, 1]])), [[0.5, -0.5], [-0.5, 0.5]])
    # μ ∈ {0, 1} with σ² = 0 would be 0/0 in the formula: all-equal groups → exactly 0, no NaN
    close(bnpo_advantages(t([[1, 1], [1, 1]])), [[0, 0], [0, 0]])
    close(bnpo_advantages(t([[0, 0], [0, 0]])), [[0, 0], [0, 0]])


def test_bnpo_single_completion_groups_use_p_zero():
    # G = 1: p_q = 0 (reference implementation) → p = (0, 0, 0), σ² = 0 → α = β = 1 → A = r
    close(bnpo_advantages(t([[1], [0], [1]])), [[1], [0], [1]])


def test_bnpo_rescales_with_the_known_range():
    # rewards in [−1, 1]: r01 = (r + 1)/2 = (1, 0); one problem → α = β = 1 → A = (0.5, −0.5)
    close(bnpo_advantages(t([[1, -1]]), r_min=-1, r_max=1), [[0.5, -0.5]])
    # same rewards on a 0..2 scale, halved, give the same advantages as the 0..1 scale
    close(bnpo_advantages(2 * STAIRS, r_min=0, r_max=2), bnpo_advantages(STAIRS))
    with pytest.raises(ValueError, match="declared range"):
        bnpo_advantages(t([[1, -1]]))


def test_bnpo_with_alpha_beta_one_is_reinforce():
    r = random_binary()
    close(bnpo_with_params(r, 1.0, 1.0), reinforce_advantages(r))


def test_bnpo_with_three_halves_is_proportional_to_grpo():
    r = random_binary(P=8, G=8, seed=1)
    informative = r.max(dim=1).values != r.min(dim=1).values  # exclude all-equal groups (0/0)
    assert informative.sum() >= 4
    p = r.mean(dim=1)
    assert len(set(p[informative].tolist())) >= 3  # several different p
    bnpo = bnpo_with_params(r, 1.5, 1.5)[informative]
    # population std, ε = 0: 1/pdf(p) = (π/8)/sqrt(p(1−p)) and sqrt(p(1−p)) IS the binary group's
    # population std → BNPO = (π/8) · GRPO exactly
    grpo_pop = grpo_advantages(r, eps=0.0, unbiased=False)[informative]
    close(bnpo / grpo_pop, torch.full_like(bnpo, math.pi / 8))
    # the default sample std is sqrt(G/(G−1)) larger: the ratio is still one constant for all
    # groups, (π/8)·sqrt(8/7)
    grpo_sample = grpo_advantages(r, eps=0.0)[informative]
    close(bnpo / grpo_sample, torch.full_like(bnpo, math.pi / 8 * math.sqrt(8 / 7)))


def test_bnpo_decomposition_is_the_mean_of_per_component_advantages():
    correctness = STAIRS  # range (0, 1)
    fmt = t([[2, 2, 0, 0], [0, 0, 0, 0], [2, 0, 2, 0]])  # range (0, 2)
    expected = (bnpo_advantages(correctness) + bnpo_advantages(fmt, r_min=0, r_max=2)) / 2
    got = bnpo_decomposed(torch.stack([correctness, fmt]), [(0, 1), (0, 2)])
    close(got, expected)
    # hand check of one entry: format p = (1/2, 0, 1/2): μ = 1/3, σ² = (1/36+1/9+1/36)/2 = 1/12
    # k = (2/9)/(1/12) − 1 = 5/3; a = 5/9 → α = 1 + 5/27; b = 10/9 → β = 1 + 10/27
    a, b = 1 + 5 / 27, 1 + 10 / 27
    pdf_half = 0.5 ** (a - 1) * 0.5 ** (b - 1) * math.gamma(a + b) / (math.gamma(a) * math.gamma(b))
    fmt_00 = 0.5 / pdf_half  # r01 = 1, p = 1/2
    corr_00 = 0.75 * math.pi / (2 * math.sqrt(3))  # from the α = β = 3/2 test
    close(got[0, 0], t((fmt_00 + corr_00) / 2))
    with pytest.raises(ValueError, match="2 reward components but 1 ranges"):
        bnpo_decomposed(torch.stack([correctness, fmt]), [(0, 1)])


# --------------------------------------------------------------------------- sample weightings


def test_signed_rewards_definition():
    close(signed_rewards(t([[1, 0]])), [[1, -1]])  # 2r − 1
    close(signed_rewards(t([[1, -1, 0]]), -1, 1), [[1, -1, 0]])


def test_psr_nsr_w_reinforce_on_binary_rewards():
    r = t([[1, 0, 1, 0]])  # s = (+1, −1, +1, −1)
    close(psr_weights(r), [[1, 0, 1, 0]])
    close(nsr_weights(r), [[0, 1, 0, 1]])
    close(w_reinforce_weights(r), [[0.1, 1, 0.1, 1]])  # λ = 0.1 on positives
    close(w_reinforce_weights(r, lam=0.5), [[0.5, 1, 0.5, 1]])
    close(psr_weights(r) + nsr_weights(r), [[1, 1, 1, 1]])  # a partition


def test_weightings_with_a_declared_range_and_the_midpoint():
    r = t([[1, -1, 0]])  # in [−1, 1]: s = (1, −1, 0); the midpoint s = 0 counts as positive
    close(psr_weights(r, r_min=-1, r_max=1), [[1, 0, 1]])
    close(nsr_weights(r, r_min=-1, r_max=1), [[0, 1, 0]])


def test_w_reinforce_on_signed_estimator_is_the_papers_objective():
    r = t([[1, 0, 0]])
    # A' = w · (2r − 1) = (0.1·1, 1·(−1), 1·(−1))
    weighting = get_sample_weighting("w_reinforce")
    close(get_advantage_estimator("signed")(r) * weighting(r), [[0.1, -1, -1]])
    # on top of REINFORCE: A = (2/3, −1/3, −1/3) → (0.0667, −1/3, −1/3)
    close(reinforce_advantages(r) * weighting(r), [[0.2 / 3, -1 / 3, -1 / 3]])


def test_topr_tapers_only_negative_samples():
    r = t([[1, 0, 0, 1, 0]])
    pi = t([[-1.0, -2.0, -3.0, -1.0, -1.0]]).requires_grad_()
    mu = t([[-2.0, -1.0, -3.0, -0.5, -3.0]])
    # log π/μ = (1, −1, 0, −0.5, 2)
    # positives (0, 3): weight 1 whatever the ratio (e^1 and e^−0.5 ignored)
    # negatives: e^−1 ≈ 0.3679; e^0 = 1; e^2 clamped to 1
    w = topr_weights(r, policy_logprobs=pi, behaviour_logprobs=mu)
    close(w, [[1, math.exp(-1), 1, 1, 1]])
    assert not w.requires_grad  # the ratio is detached
    with pytest.raises(ValueError, match="policy_logprobs and behaviour_logprobs"):
        topr_weights(r)


def test_every_weighting_takes_the_same_call():
    r = t([[1, 0]])
    lp = t([[-1.0, -1.0]])
    for name, fn in SAMPLE_WEIGHTINGS.items():
        w = fn(r, policy_logprobs=lp, behaviour_logprobs=lp, r_min=0.0, r_max=1.0)
        assert w.shape == r.shape, name
    close(get_sample_weighting("none")(r), [[1, 1]])
    with pytest.raises(ValueError, match="unknown sample weighting 'dpo'.*psr"):
        get_sample_weighting("dpo")
