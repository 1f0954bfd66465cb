"""Label-free agreement estimators on hand-counted answers, and the probit line fits."""

import math

import numpy as np
import pytest

from sharpen.evaluation.agreement import (
    aline_d, cross_agreement, estimate_from_groups, fit_agreement_line, mean_cross_agreement, normal_cdf,
    pairwise_agreement, probit, top_vote_share,
)


def test_pairwise_agreement_counts_agreeing_pairs_by_hand():
    # counts {7: 3, 8: 1}: 3·2 + 1·0 = 6 ordered agreeing pairs of 4·3 = 12
    assert pairwise_agreement(["7", "7", "8", "7"]) == pytest.approx(6 / 12)
    # {7: 2, 8: 2}: (2 + 2) / 12
    assert pairwise_agreement(["7", "8", "7", "8"]) == pytest.approx(4 / 12)
    assert pairwise_agreement(["5", "5"]) == 1.0
    assert pairwise_agreement(["1", "2", "3"]) == 0.0


def test_pairwise_agreement_none_counts_in_n_but_agrees_with_nothing():
    # {7: 2} of n = 4 (two unreadable): 2 / 12
    assert pairwise_agreement(["7", None, "7", None]) == pytest.approx(2 / 12)


def test_pairwise_agreement_is_unbiased_for_the_chance_two_draws_agree():
    # exact expectation over all 3-sample groups from p = (0.5, 0.3, 0.2): Σ p_a² = 0.38
    p = {"a": 0.5, "b": 0.3, "c": 0.2}
    expected = 0.0
    for x in p:
        for y in p:
            for z in p:
                expected += p[x] * p[y] * p[z] * pairwise_agreement([x, y, z])
    assert expected == pytest.approx(sum(v * v for v in p.values()))


def test_pairwise_agreement_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_agreement(["7"])


def test_top_vote_share_by_hand():
    assert top_vote_share(["7", "7", "8", "7"]) == pytest.approx(3 / 4)
    assert top_vote_share(["7", None, None, "8"]) == pytest.approx(1 / 4)
    assert top_vote_share([None, None]) == 0.0


def test_cross_agreement_by_hand():
    # A: {7: 2, 8: 1}; B: {7: 1, 9: 1}: (2·1) / (3·2)
    assert cross_agreement(["7", "8", "7"], ["7", "9"]) == pytest.approx(2 / 6)
    assert cross_agreement(["1"], ["2"]) == 0.0
    assert cross_agreement([None], [None]) == 0.0


def test_estimates_average_over_problems_with_an_interval():
    groups = [["7", "7", "7", "7"], ["1", "2", "3", "4"]]  # agreement 1 and 0; top share 1 and 1/4
    est = estimate_from_groups(groups)
    assert est["pass@1"].value == pytest.approx(0.5)
    assert est["maj@4"].value == pytest.approx(0.625)
    lo, hi = est["pass@1"].ci
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0 and lo < hi
    assert mean_cross_agreement(groups, [["7"], ["9"]]).value == pytest.approx(0.5)


def test_probit_and_cdf_invert_each_other_and_clip():
    p = np.array([0.1, 0.5, 0.9])
    assert normal_cdf(probit(p)) == pytest.approx(p)
    assert probit(0.5) == pytest.approx(0.0)
    assert math.isfinite(float(probit(0.0))) and math.isfinite(float(probit(1.0)))


def test_agreement_line_recovers_a_known_line_and_aline_s_predicts_accuracy():
    # synthetic models whose source/target accuracies and pair agreements lie on
    # Φ⁻¹(target) = 0.8 · Φ⁻¹(source) − 0.3
    slope, intercept = 0.8, -0.3
    shift = lambda s: float(normal_cdf(slope * probit(s) + intercept))
    agr_source = np.array([0.35, 0.5, 0.62, 0.71, 0.83])
    agr_target = np.array([shift(a) for a in agr_source])
    fit = fit_agreement_line(agr_source, agr_target)
    assert fit.slope == pytest.approx(slope, abs=1e-9)
    assert fit.intercept == pytest.approx(intercept, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    acc_source = np.array([0.3, 0.55, 0.9])
    assert fit.predict(acc_source) == pytest.approx([shift(a) for a in acc_source], abs=1e-9)


def test_aline_d_solves_every_models_target_accuracy():
    # three models; on the source and target the probit gap between accuracy and agreement is
    # consistent with the line of slope a, so ALine-D recovers the true target accuracies
    a = 0.9
    z_acc_s = np.array([-0.5, 0.2, 0.8])
    z_acc_t = np.array([-0.9, -0.2, 0.4])
    pairs = [(0, 1), (0, 2), (1, 2)]
    gaps_s = np.array([0.3, 0.5, 0.2])  # ½[z acc_s(h)+z acc_s(h′)] − z agr_s(h,h′), chosen freely
    z_agr_s = np.array([0.5 * (z_acc_s[i] + z_acc_s[j]) for i, j in pairs]) - gaps_s
    z_agr_t = np.array([0.5 * (z_acc_t[i] + z_acc_t[j]) for i, j in pairs]) - a * gaps_s
    got = aline_d(normal_cdf(z_acc_s), pairs, normal_cdf(z_agr_s), normal_cdf(z_agr_t), a)
    assert got == pytest.approx(normal_cdf(z_acc_t), abs=1e-9)


def test_agreement_line_needs_two_points():
    with pytest.raises(ValueError, match="at least 2"):
        fit_agreement_line([0.5], [0.5])
