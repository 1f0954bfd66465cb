"""Rejection-sampling selections and B-STaR monitoring on made-up groups (learners/rejection_sampling/selection.py)."""

from __future__ import annotations

import pytest

from sharpen.learners.rejection_sampling.selection import (
    BStarStats,
    best_by_score,
    bstar_stats,
    keep_correct,
)
from sharpen.tasks.base import Verdict


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
