"""Label-free estimates of whole evaluations: estimate next to truth, cross-model agreement, the line."""

import numpy as np
import pytest

from sharpen.evaluation import EvalResult, Metric, ProblemRecord
from sharpen.evaluation.agreement import normal_cdf, probit
from sharpen.evaluation.label_free import agreement_on_the_line, cross_agreements, label_free, label_free_metrics


def result(groups, truth=None, ids=None):
    """An EvalResult of 4-sample groups; `truth` the labelled (pass@1, maj@4) or None (no labels)."""
    n = len(groups[0])
    records = [ProblemRecord(ids[i] if ids else f"p{i}", "?", tuple(g), tuple(g),
                             tuple([None] * n if truth is None else [False] * n), 0, {})
               for i, g in enumerate(groups)]
    metrics = {} if truth is None else {"pass@1": Metric(truth[0], (0, 1)), f"maj@{n}": Metric(truth[1], (0, 1))}
    unscorable = len(groups) * n if truth is None else 0
    return EvalResult(metrics, 0.0, len(groups), n, unscorable, 0.0, records)


GROUPS = [["7", "7", "7", "8"], ["1", "2", "1", "2"]]  # agreement 6/12 and 4/12; top share 3/4 and 2/4


def test_label_free_puts_the_estimate_next_to_the_truth():
    est = label_free(result(GROUPS, truth=(0.5, 0.25)))
    assert est["pass@1"].estimate.value == pytest.approx((6 / 12 + 4 / 12) / 2)
    assert est["pass@1"].truth == 0.5
    assert est["pass@1"].abs_error == pytest.approx(abs(5 / 12 - 0.5))
    assert est["maj@4"].estimate.value == pytest.approx(0.625)
    assert est["maj@4"].abs_error == pytest.approx(0.375)


def test_without_labels_there_is_no_truth_and_no_error():
    est = label_free(result(GROUPS))
    assert est["pass@1"].truth is None and est["pass@1"].abs_error is None
    flat = label_free_metrics(result(GROUPS))
    assert flat["eval/label_free/pass@1"] == pytest.approx(5 / 12)
    assert "eval/label_free/pass@1/abs_error" not in flat
    assert flat["eval/label_free/pass@1/lo"] <= flat["eval/label_free/pass@1"] <= flat["eval/label_free/pass@1/hi"]
    assert label_free_metrics(result(GROUPS, truth=(0.5, 0.25)))["eval/label_free/maj@4/abs_error"] == pytest.approx(0.375)


def test_cross_agreements_of_every_pair_and_same_problems_required():
    a, b = result([["7", "7"], ["1", "2"]]), result([["7", "8"], ["3", "3"]])
    got = cross_agreements([a, b])
    assert list(got) == [(0, 1)]
    assert got[(0, 1)].value == pytest.approx((2 / 4 + 0) / 2)
    with pytest.raises(ValueError, match="same problems"):
        cross_agreements([a, result([["7", "8"], ["3", "3"]], ids=["x", "y"])])


def test_agreement_on_the_line_needs_three_labelled_models():
    r = result(GROUPS, truth=(0.5, 0.5))
    with pytest.raises(ValueError, match="K >= 3"):
        agreement_on_the_line([r, r], [r, r])
    with pytest.raises(ValueError, match="labels on the source"):
        agreement_on_the_line([result(GROUPS)] * 3, [result(GROUPS)] * 3)


def test_agreement_on_the_line_fits_synthetic_models_on_a_known_line():
    # Three models; each answers one problem. Model k's answer distribution on the source is
    # p_k on the right answer "r", the rest spread over private wrong answers, so pair
    # agreement on the source is p_i p_j. On the target the right-answer shares are shifted
    # along the line Φ⁻¹ q = a Φ⁻¹ p + b (approximately, through the sample counts).
    n = 1000
    p = [0.3, 0.5, 0.8]

    def model(share, k):
        right = round(share * n)
        return [["r"] * right + [f"w{k}-{i}" for i in range(n - right)]]

    src = [result(model(s, k), truth=(s, s)) for k, s in enumerate(p)]
    line = agreement_on_the_line(src, src)  # target = source: the identity line
    assert line.slope == pytest.approx(1.0, abs=1e-9) and line.intercept == pytest.approx(0.0, abs=1e-9)
    assert line.aline_s == pytest.approx(p, abs=1e-9)
    assert line.aline_d == pytest.approx(p, abs=1e-9)
    assert line.r2 == pytest.approx(1.0)


def test_eval_label_free_in_a_run_config_needs_two_samples(tmp_path):
    from sharpen.config import ConfigError, load_config
    from sharpen.loop import RunConfig

    cfg = tmp_path / "c.yaml"
    cfg.write_text("eval:\n  samples: 1\n  label_free: true\n")
    with pytest.raises(ConfigError, match=r"c.yaml:1: eval: .*label_free needs samples >= 2"):
        load_config(cfg, RunConfig)
    assert load_config(cfg, RunConfig, ["eval.samples=2", "eval.ks=[1,2]"]).eval.label_free
