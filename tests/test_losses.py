"""Hand-derived checks of the clipped surrogate, its aggregations, k3 KL and entropy."""

from __future__ import annotations

import math

import pytest
import torch

from sharpen.learners.policy_gradient.losses import (
    LOSS_AGGREGATIONS,
    clipped_surrogate,
    get_loss_aggregation,
    k3,
)


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def close(a: torch.Tensor, b, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b if isinstance(b, torch.Tensor) else t(b), atol=atol, rtol=1e-5)


def grad_of(logprobs, old, adv, mask, **kw):
    lp = logprobs.clone().requires_grad_()
    loss, diag = clipped_surrogate(lp, old, adv, mask, **kw)
    loss.backward()
    return loss, lp.grad, diag


ONES = torch.ones(1, 3)


def test_inside_clip_range_gradient_is_minus_a_over_n():
    old = t([[-1.0, -2.0, -0.5]])
    # ρ = 1 on every token, A = 2, N = 3: loss = −(1/3)·Σ ρ_t·2 = −2
    # ∂loss/∂ℓ_t = −A·ρ_t/N = −2/3
    loss, grad, diag = grad_of(old, old, t([2.0]), ONES)
    assert loss.item() == pytest.approx(-2.0)
    close(grad, [[-2 / 3, -2 / 3, -2 / 3]])
    assert diag["clip_frac"] == 0.0 and diag["ratio_mean"] == pytest.approx(1.0)
    assert diag["approx_kl"] == pytest.approx(0.0) and diag["pg_loss"] == pytest.approx(-2.0)


def test_above_clip_range_with_positive_advantage_has_zero_gradient():
    old = torch.zeros(1, 3)
    lp = torch.full((1, 3), math.log(1.5))  # ρ = 1.5 > 1 + 0.2
    # −min(1.5·1, 1.2·1) = −1.2 per token, constant branch → gradient 0
    loss, grad, diag = grad_of(lp, old, t([1.0]), ONES)
    assert loss.item() == pytest.approx(-1.2)
    close(grad, torch.zeros(1, 3))
    assert diag["clip_frac"] == 1.0
    # approx_kl = (ρ − 1) − log ρ = 0.5 − 0.405465 = 0.094535
    assert diag["approx_kl"] == pytest.approx(0.5 - math.log(1.5), abs=1e-6)
    assert diag["ratio_mean"] == pytest.approx(1.5)


def test_above_clip_range_with_negative_advantage_keeps_the_gradient():
    old = torch.zeros(1, 1)
    lp = torch.full((1, 1), math.log(1.5))  # ρ = 1.5, A = −1
    # min(1.5·(−1), 1.2·(−1)) = −1.5 (unclipped branch) → loss 1.5; ∂/∂ℓ = −A·ρ = 1.5
    loss, grad, diag = grad_of(lp, old, t([-1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(1.5)
    close(grad, [[1.5]])
    assert diag["clip_frac"] == 0.0


def test_below_clip_range():
    old = torch.zeros(1, 1)
    lp = torch.full((1, 1), math.log(0.5))  # ρ = 0.5 < 1 − 0.2
    # A = −1: min(−0.5, 0.8·(−1) = −0.8) = −0.8 → clipped, loss 0.8, gradient 0
    loss, grad, diag = grad_of(lp, old, t([-1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.8)
    close(grad, [[0.0]])
    assert diag["clip_frac"] == 1.0
    # A = +1: min(0.5, 0.8) = 0.5 → unclipped, loss −0.5, ∂/∂ℓ = −A·ρ = −0.5
    loss, grad, diag = grad_of(lp, old, t([1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(-0.5)
    close(grad, [[-0.5]])
    assert diag["clip_frac"] == 0.0


def test_clip_higher_widens_the_upper_bound():
    old = torch.zeros(1, 1)
    lp = torch.full((1, 1), math.log(1.25))  # ρ = 1.25, A = 1
    _, grad, diag = grad_of(lp, old, t([1.0]), torch.ones(1, 1))  # ε_high = 0.2: clipped
    close(grad, [[0.0]])
    _, grad, diag = grad_of(lp, old, t([1.0]), torch.ones(1, 1), eps_high=0.28)  # DAPO: inside
    close(grad, [[-1.25]])  # −A·ρ
    assert diag["clip_frac"] == 0.0


def test_per_token_advantages():
    old = torch.zeros(1, 2)
    # ρ = 1, A = (1, −1) per token, N = 2 → ∂/∂ℓ = (−1/2, +1/2), loss = −(1 − 1)/2 = 0
    loss, grad, _ = grad_of(old, old, t([[1.0, -1.0]]), torch.ones(1, 2))
    assert loss.item() == pytest.approx(0.0)
    close(grad, [[-0.5, 0.5]])


# Two completions of unequal length: 4 tokens with A = +1, 1 token with A = −1, ρ = 1.
MASK = t([[1, 1, 1, 1], [1, 0, 0, 0]])
ADV = t([1.0, -1.0])
ZERO = torch.zeros(2, 4)


def test_aggregations_differ_on_unequal_lengths():
    # per-token pg = −A: four tokens of −1, one token of +1
    # token_mean = (−4 + 1)/5 = −0.6
    # seq_mean   = mean(−4/4, +1/1) = 0
    # constant   = (−4 + 1)/(B·max_len) = −3/(2·4) = −0.375, or −3/16 with max_len 8
    def loss(**kw):
        return clipped_surrogate(ZERO, ZERO, ADV, MASK, **kw)[0].item()

    assert loss(aggregation="token_mean") == pytest.approx(-0.6)
    assert loss(aggregation="seq_mean") == pytest.approx(0.0)
    assert loss(aggregation="constant", max_len=4) == pytest.approx(-0.375)
    assert loss(aggregation="constant", max_len=8) == pytest.approx(-3 / 16)


def test_aggregation_gradients_weigh_tokens_as_documented():
    # ∂loss/∂ℓ_bt = −A_b · (token weight): token_mean 1/5; seq_mean 1/(B·|y_b|) = 1/8, 1/2;
    # constant 1/(B·max_len) = 1/8; padding gets 0
    _, g, _ = grad_of(ZERO, ZERO, ADV, MASK, aggregation="token_mean")
    close(g, [[-0.2, -0.2, -0.2, -0.2], [0.2, 0, 0, 0]])
    _, g, _ = grad_of(ZERO, ZERO, ADV, MASK, aggregation="seq_mean")
    close(g, [[-1 / 8, -1 / 8, -1 / 8, -1 / 8], [0.5, 0, 0, 0]])
    _, g, _ = grad_of(ZERO, ZERO, ADV, MASK, aggregation="constant", max_len=4)
    close(g, [[-1 / 8, -1 / 8, -1 / 8, -1 / 8], [1 / 8, 0, 0, 0]])


def test_constant_aggregation_needs_a_sufficient_max_len():
    with pytest.raises(ValueError, match="max_len"):
        clipped_surrogate(ZERO, ZERO, ADV, MASK, aggregation="constant")
    with pytest.raises(ValueError, match="4 tokens but max_len=3"):
        clipped_surrogate(ZERO, ZERO, ADV, MASK, aggregation="constant", max_len=3)


def test_aggregation_registry():
    assert set(LOSS_AGGREGATIONS) == {"token_mean", "seq_mean", "constant"}
    with pytest.raises(ValueError, match="unknown loss aggregation 'sum'.*seq_mean"):
        get_loss_aggregation("sum")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        clipped_surrogate(ZERO, ZERO, ADV, MASK, aggregation="sum")


def test_padding_garbage_never_leaks():
    lp = t([[-1.0, float("-inf")]])  # padding position holds −inf
    old = t([[-1.0, 50.0]])
    mask = t([[1, 0]])
    loss, grad, diag = grad_of(lp, old, t([1.0]), mask, ref_logprobs=t([[-1.0, 7.0]]), kl_coef=0.1)
    assert loss.item() == pytest.approx(-1.0)  # only the real token: −ρ·A = −1
    assert torch.isfinite(grad).all() and grad[0, 1].item() == 0.0
    assert all(math.isfinite(v) for v in diag.values())


def test_k3_kl_to_reference():
    lp = t([[-1.0, -2.0]])
    mask = torch.ones(1, 2)
    # policy = reference → k3 = e^0 − 0 − 1 = 0; the loss is unchanged by kl_coef
    loss0, diag0 = clipped_surrogate(lp, lp, t([1.0]), mask)
    loss1, diag1 = clipped_surrogate(lp, lp, t([1.0]), mask, ref_logprobs=lp, kl_coef=0.5)
    assert diag1["kl_ref"] == pytest.approx(0.0) and loss1.item() == pytest.approx(loss0.item())
    assert "kl_ref" not in diag0
    # ℓ_ref − ℓ = (log 2, −log 2): k3 = (2 − log 2 − 1, 1/2 + log 2 − 1) = (0.306853, 0.193147)
    ref = lp + t([[math.log(2), -math.log(2)]])
    kl_tok = [1 - math.log(2), math.log(2) - 0.5]
    loss, diag = clipped_surrogate(lp, lp, t([1.0]), mask, ref_logprobs=ref, kl_coef=0.5)
    assert diag["kl_ref"] == pytest.approx(sum(kl_tok) / 2) and diag["kl_ref"] > 0
    # pg part: −1 (ρ = 1, A = 1); total = −1 + 0.5·0.25 = −0.875
    assert loss.item() == pytest.approx(-1.0 + 0.5 * sum(kl_tok) / 2)
    assert diag["pg_loss"] == pytest.approx(-1.0) and diag["loss"] == pytest.approx(loss.item())
    close(k3(t([math.log(2), -math.log(2), 0.0])), kl_tok + [0.0])


def test_kl_gradient_pulls_towards_reference():
    lp0 = t([[0.0]])
    ref = t([[math.log(2)]])
    # d/dℓ [e^(ref−ℓ) − (ref−ℓ) − 1] = −e^(ref−ℓ) + 1 = −2 + 1 = −1 at ℓ = 0
    # with A = 0 and kl_coef = 1 the gradient is −1 (descent raises ℓ towards ℓ_ref)
    _, grad, _ = grad_of(lp0, lp0, t([0.0]), torch.ones(1, 1), ref_logprobs=ref, kl_coef=1.0)
    close(grad, [[-1.0]])


def test_diagnostics_are_floats_and_loss_has_grad():
    lp = torch.randn(3, 5, requires_grad=True)
    old = lp.detach() + 0.1
    loss, diag = clipped_surrogate(lp, old, torch.randn(3), torch.ones(3, 5), ref_logprobs=lp.detach())
    assert loss.requires_grad
    assert set(diag) == {"loss", "pg_loss", "clip_frac", "clip_frac_low", "clip_frac_high", "approx_kl", "ratio_mean",
                         "kl_ref"}
    assert all(type(v) is float for v in diag.values())


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="advantages must be"):
        clipped_surrogate(ZERO, ZERO, t([1.0, 2.0, 3.0]), MASK)
    with pytest.raises(ValueError, match="old_logprobs has shape"):
        clipped_surrogate(ZERO, torch.zeros(2, 3), ADV, MASK)
