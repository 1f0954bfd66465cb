"""Rejection-sampling selections and B-STaR monitoring on made-up groups (learners/rejection_sampling/selection.py)."""

from __future__ import annotations

import pytest

from sharpen.learners.rejection_sampling.selection import (
    BStarStats,
    best_by_likelihood,
    best_by_score,
    bstar_stats,
    keep_correct,
    sequence_logprob,
)
from sharpen.models.base import Completion
from sharpen.tasks.base import Verdict


def comp(text: str, logprobs: tuple[float, ...]) -> Completion:
    return Completion(text=text, token_ids=tuple(range(len(logprobs))), logprobs=logprobs,
                      finish_reason="stop")


def test_keep_correct_filters_dedups_and_caps():
    verdicts = [Verdict(True), Verdict(False), True, None, Verdict(True), True]
    assert keep_correct(verdicts) == [0, 2, 4, 5]  # None (unscorable) is not kept
    texts = ["a", "b", "c", "d", "a", "e"]
    assert keep_correct(verdicts, texts=texts) == [0, 2, 5]  # 4 repeats text "a" of 0
    assert keep_correct(verdicts, texts=texts, max_keep=2) == [0, 2]
    assert keep_correct([False, None]) == []
    with pytest.raises(ValueError, match="texts"):
        keep_correct([True], texts=["a", "b"])


def test_best_by_score_skips_none_and_ties_to_earliest():
    assert best_by_score([0.1, None, 0.7, 0.7, -1.0]) == 2
    assert best_by_score([None, None]) is None
    assert best_by_score([]) is None


def test_sharpening_picks_the_most_likely_sequence():
    group = [
        comp("short", (-0.5, -0.5)),           # Σ = −1.0, mean −0.5
        comp("long", (-0.2, -0.2, -0.2, -0.2)),  # Σ = −0.8, mean −0.2
        comp("one", (-0.9,)),                   # Σ = −0.9, mean −0.9
    ]
    assert sequence_logprob(group[0]) == pytest.approx(-1.0)
    assert sequence_logprob(group[1], normalize=True) == pytest.approx(-0.2)
    assert best_by_likelihood(group) == 1  # −0.8 > −0.9 > −1.0
    assert best_by_likelihood(group, normalize=True) == 1
    # by sum, "one" (−0.9) beats "short" (−1.0); by mean, "short" (−0.5) beats "one" (−0.9)
    assert best_by_likelihood([group[0], group[2]]) == 1
    assert best_by_likelihood([group[0], group[2]], normalize=True) == 0
    assert sequence_logprob(comp("", ()), normalize=True) == 0.0


def test_bstar_stats_by_hand():
    verdicts = [
        [True, False, True, True],    # q0: solved; correct texts {"x=2", "2"} → 2 distinct
        [False, False, None, False],  # q1: unsolved, one unscorable
        [True, False, False, False],  # q2: solved; 1 distinct correct
    ]
    responses = [
        ["x=2", "3", "2", "x=2"],
        ["1", "5", "?", "7"],
        ["9", "8", "8", "6"],
    ]
    # selection: q0 keeps {1, 2} (one wrong, one right), q1 keeps {2} (unscorable: not
    # counted), q2 keeps {0} (right)
    selected = [[1, 2], [2], [0]]
    stats = bstar_stats(verdicts, responses, selected, iteration=3)
    # pass@4 = 2 solved / 3 problems; distinct = (2 + 0 + 1)/3 = 1.0
    # selection accuracy = (1 + 1) correct / 3 scorable selected = 2/3
    assert stats == BStarStats(
        iteration=3, problems=3, k=4, pass_at_k=pytest.approx(2 / 3),
        distinct_correct=pytest.approx(1.0), selected=3,
        selection_accuracy=pytest.approx(2 / 3), unscorable=1,
    )


def test_bstar_stats_with_real_selections():
    verdicts = [[True, False, True], [False, False, False]]
    texts = [["a", "b", "a"], ["c", "d", "e"]]
    selected = [keep_correct(v, texts=t) for v, t in zip(verdicts, texts)]  # [[0], []]
    stats = bstar_stats(verdicts, texts, selected)
    # keep_correct only keeps correct ones: accuracy 1/1; pass@3 = 1/2; distinct = (1 + 0)/2
    assert (stats.pass_at_k, stats.distinct_correct, stats.selected, stats.selection_accuracy) == (
        0.5, 0.5, 1, 1.0)
    nothing = bstar_stats(verdicts, texts, [[], []])
    assert nothing.selection_accuracy is None and nothing.selected == 0


def test_bstar_stats_rejects_ragged_or_out_of_range_input():
    with pytest.raises(ValueError, match="K=2"):
        bstar_stats([[True, False], [True]], [["a", "b"], ["c"]], [[], []])
    with pytest.raises(ValueError, match="outside"):
        bstar_stats([[True, False]], [["a", "b"]], [[2]])
    with pytest.raises(ValueError, match="one of each"):
        bstar_stats([[True]], [["a"]], [])
    with pytest.raises(ValueError, match="at least one"):
        bstar_stats([], [], [])
