"""Answer reading and matching: hand-checked tricky strings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest

from sharpen.tasks import (
    answer_verdict,
    answers_match,
    extract_answer,
    extract_boxed,
    extract_number,
    normalize_answer,
    parse_number,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The total is 1,234 apples.", "1234"),
        ("It costs $42.", "42"),
        ("It costs \\$1,000,000 in all", "1000000"),
        ("so x = -7", "-7"),
        ("a loss of -$5", "-5"),
        ("5-3 is 2", "2"),
        ("the gap is 10 - 7", "7"),  # a minus between numbers is not a sign
        ("The answer is 42.0", "42"),
        ("The answer is: $3.50$.", "3.5"),
        ("The answer is 12 apples, not 13.", "12"),
        ("The answer is unclear, so I guess 9", "9"),
        ("It is 007", "7"),
        ("0.50 of it", "0.5"),
        ("half is .5", "0.5"),
        ("48/2 = 24 clips\n#### 1,234", "1234"),
        ("#### 72\nThe end, 99 words.", "72"),
        ("\\boxed{\\frac{1}{2}}", "1/2"),
        ("so $\\boxed{1{,}024}$ in total", "1024"),
        ("6/8 of the cake", "3/4"),
        ("First 3, then 5, finally 12", "12"),
        ("\\boxed{12} and then \\boxed{13", "12"),  # the last box is cut off
        ("\\boxed{x+y}, not 5", None),  # a box decides: no number in it, no answer
        ("1,2345", "2345"),  # not a thousands separator
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_number(text: str, expected: str | None) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{ \\sqrt{\\frac{a}{b}} }", "\\sqrt{\\frac{a}{b}}"),
        ("$\\boxed 5$", "5"),
        ("\\boxed{unfinished", None),
        ("no box", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_answer_reads_latex_boxes_and_bare_answers() -> None:
    assert extract_answer("thus $\\boxed{x^2 +  1}$") == "x^2 + 1"
    assert extract_answer("\\boxed{\\dfrac{3}{2}}") == "3/2"
    assert extract_answer("x^2+1") == "x^2+1"  # a bare answer is taken whole
    assert extract_answer("  \\frac{\\pi}{2}\n") == "\\frac{\\pi}{2}"
    assert extract_answer("So it is 12 in the end") == "12"  # words: not bare, last number
    assert extract_answer("steps\n#### 1,234") == "1234"
    assert extract_answer("nothing") is None


def test_normalize_and_parse_number() -> None:
    assert normalize_answer(" $1,234.$ ") == "1234"
    assert normalize_answer("x  +  1") == "x + 1"
    assert parse_number("$1,234.") == (Fraction(1234), True)
    assert parse_number("-3.50") == (Fraction(-7, 2), False)
    assert parse_number("\\frac{3}{4}") == (Fraction(3, 4), False)
    assert parse_number("3 apples") is None
    assert parse_number("1/0") is None


@pytest.mark.parametrize(
    "pred, ref, expected",
    [
        ("1,234", "1234", True),
        ("42.0", "42", True),
        ("007", "7", True),
        ("43", "42", False),
        ("0.5", "1/2", True),
        ("42.00000001", "42", True),  # decimals compare within a relative 1e-6
        ("41.9999", "42", False),
        ("\\frac{1}{2}", "0.5", True),
        ("0.5", "\\frac{1}{2}", True),
        ("\\sqrt{4}", "2", True),
        ("2", "\\sqrt{4}", True),
        ("3", "\\sqrt{4}", False),
        ("1+x^{2}", "x^2+1", True),
        ("x^2+2", "x^2+1", False),
        ("\\pi/2", "\\frac{\\pi}{2}", True),
        ("(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        (None, "5", False),
    ],
)
def test_answers_match(pred: str | None, ref: str, expected: bool) -> None:
    assert answers_match(pred, ref) is expected


@pytest.mark.parametrize("ref", ["\\frac{", "", "   ", None])
def test_unparsable_reference_is_unscorable(ref: str | None) -> None:
    assert answers_match("5", ref) is None
    verdict = answer_verdict("5", ref)
    assert verdict.correct is None and verdict.reward is None


def test_answer_verdict_notes() -> None:
    assert answer_verdict("95", "95").reward == 1.0
    wrong = answer_verdict("96", "95")
    assert wrong.reward == 0.0 and wrong.answer == "96"
    missing = answer_verdict(None, "95")
    assert missing.reward == 0.0 and missing.note == "no answer found"


def test_costly_prediction_is_refused_not_evaluated() -> None:
    # sympy would try to expand 9^(9^9), a number of 370 million digits
    assert answers_match("9^{9^{9}}", "x+1") is False
    assert answers_match("(10^{10})!", "\\sqrt{2}") is False


def test_model_text_is_never_executed(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    attack = "__import__('os').system('touch pwned')"
    assert answers_match(attack, "\\frac{1}{2}") is False
    assert extract_answer(attack) is None
    assert not (tmp_path / "pwned").exists()


def test_latex_matching_works_outside_the_main_thread() -> None:
    pairs = [("\\frac{1}{2}", "0.5"), ("\\sqrt{4}", "2"), ("x^2+1", "1+x^{2}"), ("3", "\\sqrt{4}")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda pair: answers_match(*pair), pairs))
    assert results == [True, True, True, False]


# found by timing math_verify 0.9.0: sympy spends ≈ 16 s (alone on the CPU) telling these apart
SLOW_PAIR = ("(x+1)^{60}(y+1)^{60}", "(x+2)^{60}(y+3)^{60}")


def test_a_comparison_past_its_deadline_is_unscorable_and_the_next_one_works(monkeypatch) -> None:
    from sharpen.tasks import answers, verify_pool

    monkeypatch.setattr(answers, "VERIFY_SECONDS", 2.0)
    verify_pool._stop_workers()  # an empty pool: the stalled comparison's worker is the only one
    verdict = answer_verdict(*SLOW_PAIR)
    assert verdict.correct is None and verdict.reward is None
    assert verdict.note == f"math-verify took over 2 s comparing {SLOW_PAIR[0]!r} with {SLOW_PAIR[1]!r}"
    assert answers_match("\\sqrt{9}", "3") is True  # a fresh worker took the stalled one's place
    assert len(verify_pool._idle) == 1  # the stalled worker was killed, not put back
    assert verify_pool._idle[0].process.poll() is None


def test_deadlines_hold_inside_worker_threads(monkeypatch) -> None:
    from sharpen.tasks import answers

    monkeypatch.setattr(answers, "VERIFY_SECONDS", 2.0)
    slow = (SLOW_PAIR[0].replace("y", "z"), SLOW_PAIR[1].replace("y", "z"))  # not in the cache
    pairs = [slow, ("\\sqrt{16}", "4"), ("x^2+3", "3+x^{2}"), ("\\sqrt{25}", "6")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda pair: answer_verdict(*pair), pairs))
    assert [v.correct for v in verdicts] == [None, True, True, False]
    assert verdicts[0].note.startswith("math-verify took over 2 s")


def test_a_worker_that_died_while_idle_is_replaced() -> None:
    from sharpen.tasks import verify_pool

    assert answers_match("\\sqrt{36}", "6") is True
    for worker in verify_pool._idle:
        worker.process.kill()
        worker.process.wait()
    assert answer_verdict("\\sqrt{49}", "7").correct is True
