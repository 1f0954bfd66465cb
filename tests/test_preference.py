"""Hand-derived checks of the DPO-family preference losses (learners/preference/losses.py)."""

from __future__ import annotations

import math

import pytest
import torch

from sharpen.learners.preference.losses import (
    PREFERENCE_LOSSES,
    dpo_loss,
    get_preference_loss,
    ipo_loss,
    irpo_loss,
)


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float) -> float:  # −log σ(−x) = log(1 + e^x)
    return math.log1p(math.exp(x))


# Three pairs:
#   ℓθ(y_w) = [-1, -2, -3],   ℓref(y_w) = [-1.5, -2, -2]   → chosen log-ratio   [ 0.5,  0.0, -1.0]
#   ℓθ(y_l) = [-2, -1, -3],   ℓref(y_l) = [-1.5, -1.5, -4] → rejected log-ratio [-0.5,  0.5,  1.0]
#   h = chosen − rejected = [1.0, -0.5, -2.0]
PC, PR, RC, RR = [-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0], [-1.5, -2.0, -2.0], [-1.5, -1.5, -4.0]
H = [1.0, -0.5, -2.0]


def args():
    return t(PC), t(PR), t(RC), t(RR)


def test_dpo_value_and_diagnostics_by_hand():
    loss, d = dpo_loss(*args(), beta=1.0)
    # −log σ(h) = log(1 + e^{−h}): log(1+e^{-1}) = 0.31326, log(1+e^{0.5}) = 0.97408,
    # log(1+e^{2}) = 2.12693; mean = 3.41427 / 3 = 1.13809
    expected = (softplus(-1.0) + softplus(0.5) + softplus(2.0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.13809, abs=1e-5)
    # implicit rewards β·log-ratio with β = 1: chosen mean (0.5 + 0 − 1)/3 = −1/6,
    # rejected mean (−0.5 + 0.5 + 1)/3 = 1/3, margin mean (1 − 0.5 − 2)/3 = −0.5,
    # accuracy: only pair 0 has a positive margin → 1/3
    assert d["chosen_reward"] == pytest.approx(-1 / 6, abs=1e-6)
    assert d["rejected_reward"] == pytest.approx(1 / 3, abs=1e-6)
    assert d["reward_margin"] == pytest.approx(-0.5, abs=1e-6)
    assert d["reward_accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    assert d["log_ratio_diff"] == pytest.approx(-0.5, abs=1e-6)
    assert d["loss"] == pytest.approx(loss.item())


def test_dpo_beta_scales_rewards_and_loss():
    loss, d = dpo_loss(*args(), beta=0.5)
    # −log σ(0.5 h): log(1+e^{-0.5}) + log(1+e^{0.25}) + log(1+e^{1}), over 3
    expected = (softplus(-0.5) + softplus(0.25) + softplus(1.0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert d["reward_margin"] == pytest.approx(0.5 * -0.5, abs=1e-6)  # β · mean h


def test_dpo_weighted_mean():
    w = t([2.0, 1.0, 0.0])
    loss, _ = dpo_loss(*args(), beta=1.0, weights=w)
    # (2·log(1+e^{-1}) + 1·log(1+e^{0.5}) + 0·…) / (2 + 1 + 0) = (0.62652 + 0.97408)/3 = 0.53353
    expected = (2 * softplus(-1.0) + softplus(0.5)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.53353, abs=1e-5)


def test_dpo_gradient_matches_hand_formula():
    beta, w = 0.5, [2.0, 1.0, 0.0]
    pc, pr = t(PC).requires_grad_(), t(PR).requires_grad_()
    rc, rr = t(RC).requires_grad_(), t(RR).requires_grad_()
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=beta, weights=t(w))
    loss.backward()
    # ∂L/∂ℓθ(y_w,i) = −β σ(−β h_i) w_i / Σw, Σw = 3; ∂L/∂ℓθ(y_l,i) is its negative
    # pair 0: −0.5·σ(−0.5)·2/3 = −0.5·0.37754·0.66667 = −0.12585
    hand = [-beta * sigmoid(-beta * h) * wi / 3 for h, wi in zip(H, w)]
    assert hand[0] == pytest.approx(-0.12585, abs=1e-5)
    torch.testing.assert_close(pc.grad, t(hand))
    torch.testing.assert_close(pr.grad, -t(hand))
    assert rc.grad is None and rr.grad is None  # the reference is a constant


def test_dpo_is_stable_for_huge_margins():
    big = t([1000.0, -1000.0])
    zero = torch.zeros(2)
    loss, _ = dpo_loss(big, zero, zero, zero, beta=1.0)
    # pair 0: −log σ(1000) ≈ 0; pair 1: −log σ(−1000) = 1000 (softplus); mean = 500
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(500.0, rel=1e-6)


def test_ipo_value_and_gradient():
    beta, w = 0.5, [1.0, 1.0, 2.0]
    pc = t(PC).requires_grad_()
    loss, d = ipo_loss(pc, t(PR), t(RC), t(RR), beta=beta, weights=t(w))
    # target 1/(2β) = 1; (h − 1)² = [0, 2.25, 9]; weighted mean (0 + 2.25 + 18)/4 = 5.0625
    assert loss.item() == pytest.approx(5.0625, rel=1e-6)
    loss.backward()
    # ∂L/∂ℓθ(y_w,i) = 2(h_i − 1) w_i / Σw = [0, 2·(−1.5)/4, 2·(−3)·2/4] = [0, −0.75, −3]
    torch.testing.assert_close(pc.grad, t([0.0, -0.75, -3.0]))
    unweighted, _ = ipo_loss(*args(), beta=beta)
    assert unweighted.item() == pytest.approx(11.25 / 3, rel=1e-6)  # (0 + 2.25 + 9)/3 = 3.75
    assert d["reward_accuracy"] == pytest.approx(1 / 3)


def test_irpo_adds_length_normalised_nll_of_chosen():
    lengths = t([2.0, 4.0, 3.0])
    pc = t(PC).requires_grad_()
    loss, d = irpo_loss(pc, t(PR), t(RC), t(RR), beta=1.0, chosen_lengths=lengths, alpha=1.0)
    # NLL(y_w)/|y_w| = [1/2, 2/4, 3/3] = [0.5, 0.5, 1.0], mean 2/3
    # DPO part (β = 1) as above: 1.13809; total = 1.13809 + 0.66667 = 1.80476
    dpo = (softplus(-1.0) + softplus(0.5) + softplus(2.0)) / 3
    assert loss.item() == pytest.approx(dpo + 2 / 3, rel=1e-6)
    assert d["dpo_loss"] == pytest.approx(dpo, rel=1e-6)
    assert d["nll_loss"] == pytest.approx(2 / 3, rel=1e-6)
    loss.backward()
    # ∂L/∂ℓθ(y_w,i) = (−β σ(−β h_i) − α/|y_w,i|) / P
    hand = [(-sigmoid(-h) - 1 / n) / 3 for h, n in zip(H, [2.0, 4.0, 3.0])]
    torch.testing.assert_close(pc.grad, t(hand))


def test_irpo_alpha_and_weights():
    lengths = t([2.0, 4.0, 3.0])
    w = t([1.0, 0.0, 1.0])
    loss, _ = irpo_loss(*args(), beta=1.0, weights=w, chosen_lengths=lengths, alpha=0.5)
    # pairs 0 and 2: (log(1+e^{-1}) + 0.5·0.5) and (log(1+e^{2}) + 0.5·1.0), over Σw = 2
    expected = ((softplus(-1.0) + 0.25) + (softplus(2.0) + 0.5)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_irpo_needs_lengths():
    with pytest.raises(ValueError, match="chosen_lengths"):
        irpo_loss(*args())


def test_registry_and_shared_signature():
    assert set(PREFERENCE_LOSSES) == {"dpo", "ipo", "irpo"}
    assert get_preference_loss("dpo") is dpo_loss
    with pytest.raises(ValueError, match="dpo, ipo, irpo"):
        get_preference_loss("kto")
    for fn in PREFERENCE_LOSSES.values():
        loss, d = fn(*args(), beta=0.1, weights=None, chosen_lengths=t([1.0, 1.0, 1.0]))
        assert loss.dim() == 0 and {"loss", "reward_margin", "reward_accuracy"} <= set(d)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": 0.0}, "beta"),
        ({"weights": t([1.0, 1.0])}, "weights"),
        ({"weights": t([1.0, -1.0, 1.0])}, "weights"),
        ({"weights": t([0.0, 0.0, 0.0])}, "weights"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dpo_loss(*args(), **kwargs)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match=r"\(P,\)"):
        dpo_loss(t(PC), t(PR[:2]), t(RC), t(RR))
