"""Preference-pair builders on made-up groups (learners/preference/pairs.py)."""

from __future__ import annotations

import pytest

from sharpen.learners.preference.pairs import (
    PAIR_BUILDERS,
    PreferencePair,
    consistency_pairs,
    correctness_pairs,
    judge_pairs,
)
from sharpen.models.base import Completion
from sharpen.tasks.base import Problem, Verdict


def comp(text: str) -> Completion:
    return Completion(text=text, token_ids=(1, 2), logprobs=(-0.1, -0.2), finish_reason="stop")


def group(*texts: str) -> list[Completion]:
    return [comp(x) for x in texts]


PROBLEM = Problem(id="p0", prompt="1+1=", answer="2")


class Untouchable:
    """A reference answer that fails loudly if anything reads it."""

    def _boom(self, *args, **kwargs):
        raise AssertionError("a label-free builder read problem.answer")

    __eq__ = __ne__ = __lt__ = __gt__ = __le__ = __ge__ = _boom
    __str__ = __repr__ = __format__ = __bool__ = __len__ = _boom
    __hash__ = _boom  # type: ignore[assignment]


def test_sentinel_really_raises():
    with pytest.raises(AssertionError):
        str(Untouchable())
    with pytest.raises(AssertionError):
        _ = Untouchable() == "2"


# --- correctness (IRPO) ------------------------------------------------------------------------


def test_correctness_pairs_zip_correct_with_incorrect_in_order():
    g = group("a", "b", "c", "d", "e", "f")
    verdicts = [Verdict(True), Verdict(False), Verdict(True), Verdict(None), Verdict(False), False]
    pairs = correctness_pairs(PROBLEM, g, verdicts)
    # correct: 0, 2; incorrect: 1, 4, 5 (3 is unscorable, takes no side) → (0,1), (2,4)
    assert [(p.chosen.text, p.rejected.text) for p in pairs] == [("a", "b"), ("c", "e")]
    assert all(p.weight == 1.0 and p.problem is PROBLEM for p in pairs)


def test_correctness_pairs_need_both_sides():
    g = group("a", "b")
    assert correctness_pairs(PROBLEM, g, [True, True]) == []
    assert correctness_pairs(PROBLEM, g, [False, None]) == []
    with pytest.raises(ValueError, match="verdicts"):
        correctness_pairs(PROBLEM, g, [True])


# --- consistency (ScPO) ------------------------------------------------------------------------


def test_consistency_pairs_most_vs_least_voted_with_vote_margin():
    g = group("y0", "y1", "y2", "y3", "y4", "y5")
    answers = ["4", "5", "4", None, "4", "6"]
    (pair,) = consistency_pairs(PROBLEM, g, answers)
    # votes: "4" → 3, "5" → 1, "6" → 1 (None does not vote); n = 6
    # chosen: first completion answering "4" = y0; least voted: "5" and "6" tie at 1,
    # "5" was seen first → rejected = y1; weight = (3 − 1)/6 = 1/3
    assert (pair.chosen.text, pair.rejected.text) == ("y0", "y1")
    assert pair.weight == pytest.approx(1 / 3)


def test_consistency_pairs_tie_at_the_top_goes_to_the_earliest():
    g = group("y0", "y1", "y2", "y3", "y4")
    answers = ["7", "8", "8", "7", "9"]
    (pair,) = consistency_pairs(PROBLEM, g, answers)
    # votes 7 → 2, 8 → 2, 9 → 1: "7" seen first wins the top; chosen y0, rejected y4
    # weight = (2 − 1)/5 = 0.2
    assert (pair.chosen.text, pair.rejected.text, pair.weight) == ("y0", "y4", pytest.approx(0.2))


def test_consistency_pairs_none_when_all_agree_or_unreadable():
    assert consistency_pairs(PROBLEM, group("a", "b", "c"), ["3", "3", "3"]) == []
    assert consistency_pairs(PROBLEM, group("a", "b", "c"), ["3", None, "3"]) == []
    assert consistency_pairs(PROBLEM, group("a", "b"), [None, None]) == []


def test_consistency_pairs_never_read_the_reference_answer():
    problem = Problem(id="secret", prompt="?", answer=Untouchable())  # type: ignore[arg-type]
    g = group("y0", "y1", "y2", "y3")
    (pair,) = consistency_pairs(problem, g, ["1", "2", "1", "1"])
    # votes 1 → 3, 2 → 1; weight (3 − 1)/4 = 0.5
    assert pair.problem is problem
    assert (pair.chosen.text, pair.rejected.text, pair.weight) == ("y0", "y1", 0.5)
    assert consistency_pairs(problem, g, ["1"] * 4) == []


# --- judge (Self-Rewarding) --------------------------------------------------------------------


def test_judge_pairs_best_vs_worst_with_ties_to_the_earliest():
    g = group("y0", "y1", "y2", "y3", "y4")
    scores = [3.0, 5.0, None, 1.0, 5.0]
    (pair,) = judge_pairs(PROBLEM, g, scores)
    # best 5.0 at 1 and 4 → earliest y1; worst 1.0 at y3; None is skipped
    assert (pair.chosen.text, pair.rejected.text, pair.weight) == ("y1", "y3", 1.0)


def test_judge_pairs_none_when_tied_or_unscored():
    assert judge_pairs(PROBLEM, group("a", "b", "c"), [4.0, 4.0, None]) == []
    assert judge_pairs(PROBLEM, group("a", "b"), [None, 2.0]) == []


def test_judge_pairs_do_not_read_the_reference_answer():
    problem = Problem(id="secret", prompt="?", answer=Untouchable())  # type: ignore[arg-type]
    (pair,) = judge_pairs(problem, group("a", "b"), [0.0, 1.0])
    assert (pair.chosen.text, pair.rejected.text) == ("b", "a")


def test_registry_and_record():
    assert PAIR_BUILDERS == {
        "correctness": correctness_pairs,
        "consistency": consistency_pairs,
        "judge": judge_pairs,
    }
    pair = PreferencePair(PROBLEM, comp("a"), comp("b"))
    assert pair.weight == 1.0
